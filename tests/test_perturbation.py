"""The perturbation family (gluoncam.perturbation) against its definitions: occlusion and feature ablation by hand,
Shapley values by brute force over every order of 3-4 feature groups, KernelSHAP and LIME on a linear network
whose scores are linear in the coalition, LIME's similarity kernel recomputed from the perturbed images."""
import itertools

import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import Block
from sklearn.linear_model import LinearRegression

from gluoncam import perturbation as P
from conftest import batch, parameters_untouched, small_net
from test_gradient_methods import linear_net

CLASSES = [1, 3]


def linear_scores(net, images, classes):
    weight, bias = net[0].weight.data().asnumpy(), net[0].bias.data().asnumpy()
    flat = np.asarray(images, dtype=np.float64).reshape((len(classes), -1))
    return (weight[classes] * flat).sum(axis=1) + bias[classes]


def net_scores(net, images, classes):
    """The network's scores outside any explanation (inference mode: BatchNorm on running statistics)."""
    return net(nd.array(np.asarray(images, dtype=np.float32))).asnumpy()[np.arange(len(classes)), classes]


def blocks(groups_down, groups_across, shape=(12, 10)):
    """A label map of groups_down x groups_across rectangles."""
    rows = np.minimum(np.arange(shape[0]) * groups_down // shape[0], groups_down - 1)
    cols = np.minimum(np.arange(shape[1]) * groups_across // shape[1], groups_across - 1)
    return rows[:, None] * groups_across + cols[None, :]


THREE = np.where(blocks(2, 2) == 3, 2, blocks(2, 2))  # quadrants, two of them one group
FOUR = blocks(2, 2)
SIX = blocks(2, 3)


def coalition_image(image, base, mask, coalition):
    """The image on the groups in ``coalition``, the baseline elsewhere."""
    return np.where(np.isin(mask, list(coalition))[None], image, base)


def brute_force_shapley(score_of, k):
    """Shapley values as the mean over all k! orders of each group's marginal contribution."""
    values = np.zeros(k)
    orders = list(itertools.permutations(range(k)))
    for order in orders:
        for step, group in enumerate(order):
            values[group] += score_of(order[:step + 1]) - score_of(order[:step])
    return values / len(orders)


def per_group(attribution, mask):
    """The value of each group in a C x H x W map, checked constant over the group and the channels."""
    values = []
    for g in range(mask.max() + 1):
        inside = attribution[:, mask == g]
        np.testing.assert_allclose(inside, inside.flat[0], rtol=1e-6, atol=1e-7)
        values.append(inside.flat[0])
    return np.array(values)


def shapley_by_brute_force(net, x, base, mask, classes, scores=net_scores):
    out = []
    for i, cls in enumerate(classes):
        def score_of(coalition):
            return scores(net, coalition_image(x[i], base[i], mask, coalition)[None], [cls])[0]
        out.append(brute_force_shapley(score_of, mask.max() + 1))
    return np.array(out)


# ----------------------------------------------------------------------------------------------------------
# superpixels


def test_superpixels_give_consecutive_labels_per_image():
    x = batch(3)
    labels = P.superpixels(x, n_segments=6)
    assert labels.shape == (3, 12, 10) and labels.dtype == np.int64
    for image_labels in labels:
        found = np.unique(image_labels)
        assert len(found) >= 2
        np.testing.assert_array_equal(found, np.arange(len(found)))
    np.testing.assert_array_equal(P.superpixels(x.asnumpy(), n_segments=6), labels)
    np.testing.assert_array_equal(P.superpixels(x, n_segments=6, start_label=1), labels + 1)


def test_superpixels_of_uint8_channels_last_images_follow_the_colours():
    image = np.zeros((20, 24, 3), dtype=np.uint8)
    image[:, 12:] = (255, 0, 0)
    labels = P.superpixels(image, n_segments=2, compactness=0.1)
    assert labels.shape == (1, 20, 24)
    assert len(np.unique(labels[0, :, :12])) == 1 and len(np.unique(labels[0, :, 12:])) == 1
    assert labels[0, 0, 0] != labels[0, 0, -1]


def test_superpixels_bad_input():
    with pytest.raises(ValueError, match='n_segments must be at least 2'):
        P.superpixels(batch(1), n_segments=1)
    with pytest.raises(ValueError, match='found 1 superpixel in image 0'):
        P.superpixels(np.full((1, 1, 3), 9, dtype=np.uint8))
    with pytest.raises(ValueError, match='N x C x H x W'):
        P.superpixels(np.zeros((4, 4)))


# ----------------------------------------------------------------------------------------------------------
# occlusion


def occlusion_by_hand(net, x, base, classes, window, strides):
    """Every window position (captum's: starts every stride, the last cut at the edge), its score drop added to
    the elements it covers, divided by how many windows cover each."""
    n, shape = x.shape[0], x.shape[1:]
    original = linear_scores(net, x, classes)
    total, count = np.zeros(x.shape), np.zeros(shape)
    starts = [list(range(0, size - w + stride, stride)) for size, w, stride in zip(shape, window, strides)]
    for c, i, j in itertools.product(*starts):
        box = (slice(c, c + window[0]), slice(i, i + window[1]), slice(j, j + window[2]))
        occluded = x.copy()
        for k in range(n):
            occluded[k][box] = base[k][box]
        drop = original - linear_scores(net, occluded, classes)
        for k in range(n):
            total[k][box] += drop[k]
        count[box] += 1
    assert count.min() >= 1
    return total / count


@pytest.mark.parametrize('window, strides, expected_strides', [
    ((4, 3), (2, 2), (3, 2, 2)), ((2, 5, 4), (1, 3, 3), (1, 3, 3)), ((3, 12, 10), 1, (1, 1, 1)),
    ((2, 5, 4), (3, 3), (2, 3, 3)), ((4, 4), None, (3, 2, 2))])
def test_occlusion_by_hand_on_a_linear_net(window, strides, expected_strides):
    net, x = linear_net(), batch(2)
    base = np.random.RandomState(5).randn(2, 3, 12, 10)
    got = P.occlusion(net, x, CLASSES, window=window, strides=strides, baseline=base).asnumpy()
    full_window = window if len(window) == 3 else (3,) + window
    expected = occlusion_by_hand(net, x.asnumpy().astype(np.float64), base, CLASSES, full_window, expected_strides)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_occlusion_closed_forms():
    net, x = linear_net(), batch(2)
    weight = net[0].weight.data().asnumpy()[CLASSES].reshape((2, 3, 12, 10))
    single = P.occlusion(net, x, CLASSES, window=(1, 1, 1), strides=1, baseline=0.5).asnumpy()
    np.testing.assert_allclose(single, weight * (x.asnumpy() - 0.5), rtol=1e-4, atol=1e-5)
    whole = P.occlusion(net, x, CLASSES, window=(12, 10), baseline=0.0).asnumpy()
    drop = linear_scores(net, x.asnumpy(), CLASSES) - linear_scores(net, np.zeros((2, 3, 12, 10)), CLASSES)
    np.testing.assert_allclose(whole, np.broadcast_to(drop[:, None, None, None], whole.shape), rtol=1e-4, atol=1e-4)


def test_occlusion_bad_input():
    net, x = small_net(), batch(1)
    with pytest.raises(ValueError, match=r'larger than the image \(3, 12, 10\)'):
        P.occlusion(net, x, window=(13, 2))
    with pytest.raises(ValueError, match='larger than the image'):
        P.occlusion(net, x, window=(4, 2, 2))
    with pytest.raises(ValueError, match='each at least 1'):
        P.occlusion(net, x, window=(3, 3), strides=0)
    with pytest.raises(ValueError, match='each at least 1'):
        P.occlusion(net, x, window=(3, 3), strides=(1, -1))
    with pytest.raises(ValueError, match='never be occluded'):
        P.occlusion(net, x, window=(3, 3), strides=4)
    with pytest.raises(ValueError, match='positive sizes'):
        P.occlusion(net, x, window=(0, 3))


# ----------------------------------------------------------------------------------------------------------
# feature ablation


def test_feature_ablation_by_hand_on_a_nonlinear_net():
    net, x = small_net(), batch(2)
    masks = np.stack([SIX, THREE])
    got = P.feature_ablation(net, x, CLASSES, feature_mask=masks, baseline=0.25).asnumpy()
    images = x.asnumpy()
    original = net_scores(net, images, CLASSES)
    for i, cls in enumerate(CLASSES):
        expected = np.zeros((3, 12, 10))
        for g in range(masks[i].max() + 1):
            ablated = np.where(masks[i] == g, 0.25, images[i])
            expected[:, masks[i] == g] = original[i] - net_scores(net, ablated[None], [cls])[0]
        np.testing.assert_allclose(got[i], expected, rtol=1e-4, atol=1e-5)
    assert np.abs(got).max() > 1e-3


def test_feature_ablation_on_a_linear_net_and_labels_that_are_not_consecutive():
    net, x = linear_net(), batch(2)
    base = np.random.RandomState(2).randn(3, 12, 10).astype(np.float32)
    got = P.feature_ablation(net, x, CLASSES, feature_mask=SIX * 7 - 3, baseline=base).asnumpy()
    weight = net[0].weight.data().asnumpy()[CLASSES].reshape((2, 3, 12, 10))
    contribution = weight * (x.asnumpy() - base)
    for i in range(2):
        expected = [contribution[i][:, SIX == g].sum() for g in range(6)]
        np.testing.assert_allclose(per_group(got[i], SIX), expected, rtol=1e-4, atol=1e-4)


def test_default_feature_mask_is_superpixels_of_the_input():
    net, x = small_net(), batch(2)
    expected = P.feature_ablation(net, x, feature_mask=P.superpixels(x)).asnumpy()
    np.testing.assert_array_equal(P.feature_ablation(net, x).asnumpy(), expected)


def test_targets_none_int_per_sample_and_callable():
    net, x = small_net(), batch(2)
    predicted = net(x).asnumpy().argmax(axis=1)
    by_class = P.feature_ablation(net, x, list(predicted), feature_mask=SIX).asnumpy()
    np.testing.assert_allclose(P.feature_ablation(net, x, None, feature_mask=SIX).asnumpy(), by_class)
    fixed = P.feature_ablation(net, x, 2, feature_mask=SIX).asnumpy()
    np.testing.assert_allclose(P.feature_ablation(net, x, lambda out: out[:, 2], feature_mask=SIX).asnumpy(), fixed,
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(fixed, P.feature_ablation(net, x, 4, feature_mask=SIX).asnumpy())


# ----------------------------------------------------------------------------------------------------------
# Shapley value sampling


@pytest.mark.parametrize('mask', [THREE, FOUR])
def test_shapley_values_over_every_order_equal_brute_force(mask):
    net, x = small_net(), batch(2)
    base = np.full((2, 3, 12, 10), -0.3)
    got = P.shapley_value_sampling(net, x, CLASSES, feature_mask=mask, baseline=-0.3, n_samples=None).asnumpy()
    expected = shapley_by_brute_force(net, x.asnumpy(), base, mask, CLASSES)
    for i in range(2):
        np.testing.assert_allclose(per_group(got[i], mask), expected[i], rtol=1e-4, atol=1e-5)
    assert np.abs(expected).max() > 1e-2


def test_shapley_sampling_approaches_brute_force_and_each_order_is_complete():
    net, x = small_net(), batch(2)
    expected = shapley_by_brute_force(net, x.asnumpy(), np.zeros((2, 3, 12, 10)), THREE, CLASSES)
    few = P.shapley_value_sampling(net, x, CLASSES, feature_mask=THREE, n_samples=3, seed=0).asnumpy()
    many = P.shapley_value_sampling(net, x, CLASSES, feature_mask=THREE, n_samples=3000, seed=0).asnumpy()
    drop = net_scores(net, x.asnumpy(), CLASSES) - net_scores(net, np.zeros((2, 3, 12, 10)), CLASSES)
    scale = np.abs(expected).max()
    for i in range(2):
        np.testing.assert_allclose(per_group(few[i], THREE).sum(), drop[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(per_group(many[i], THREE), expected[i], atol=0.05 * scale)


def test_shapley_sampling_is_exact_on_a_linear_net():
    net, x = linear_net(), batch(2)
    got = P.shapley_value_sampling(net, x, CLASSES, feature_mask=SIX, n_samples=2, seed=3).asnumpy()
    contribution = net[0].weight.data().asnumpy()[CLASSES].reshape((2, 3, 12, 10)) * x.asnumpy()
    for i in range(2):
        expected = [contribution[i][:, SIX == g].sum() for g in range(6)]
        np.testing.assert_allclose(per_group(got[i], SIX), expected, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# KernelSHAP


@pytest.mark.parametrize('mask', [THREE, FOUR])
def test_kernel_shap_with_every_coalition_equals_brute_force_shapley(mask):
    net, x = small_net(), batch(2)
    base = np.random.RandomState(4).randn(3, 12, 10).astype(np.float32) * 0.5
    got = P.kernel_shap(net, x, CLASSES, feature_mask=mask, baseline=base, n_samples=16).asnumpy()
    expected = shapley_by_brute_force(net, x.asnumpy(), np.stack([base, base]), mask, CLASSES)
    for i in range(2):
        np.testing.assert_allclose(per_group(got[i], mask), expected[i], rtol=1e-4, atol=1e-5)
    assert np.abs(expected).max() > 1e-2


def test_kernel_shap_sampled_is_exact_on_a_linear_net_and_complete_on_any():
    lin, x = linear_net(), batch(2)
    got = P.kernel_shap(lin, x, CLASSES, feature_mask=SIX, n_samples=40, seed=1).asnumpy()  # 40 < 2^6: sampled
    contribution = lin[0].weight.data().asnumpy()[CLASSES].reshape((2, 3, 12, 10)) * x.asnumpy()
    for i in range(2):
        expected = [contribution[i][:, SIX == g].sum() for g in range(6)]
        np.testing.assert_allclose(per_group(got[i], SIX), expected, rtol=1e-4, atol=1e-4)
    net = small_net()
    sampled = P.kernel_shap(net, x, CLASSES, feature_mask=SIX, n_samples=30, seed=1).asnumpy()
    drop = net_scores(net, x.asnumpy(), CLASSES) - net_scores(net, np.zeros((2, 3, 12, 10)), CLASSES)
    for i in range(2):
        np.testing.assert_allclose(per_group(sampled[i], SIX).sum(), drop[i], rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# LIME


class RecordingRegression(LinearRegression):
    """A LinearRegression that keeps what each fit was given (LIME clones its surrogate)."""
    fits = []

    def fit(self, X, y, sample_weight=None):
        RecordingRegression.fits.append((X.copy(), y.copy(), sample_weight.copy()))
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize('n_samples', [50, 64])  # sampled (50 < 2^6) and every coalition
def test_lime_recovers_a_linear_nets_contributions(n_samples):
    net, x = linear_net(), batch(2)
    contribution = net[0].weight.data().asnumpy()[CLASSES].reshape((2, 3, 12, 10)) * (x.asnumpy() - 0.1)
    expected = [[contribution[i][:, SIX == g].sum() for g in range(6)] for i in range(2)]
    exact = P.lime(net, x, CLASSES, feature_mask=SIX, n_samples=n_samples, baseline=0.1, seed=0,
                   surrogate='linear').asnumpy()
    lasso = P.lime(net, x, CLASSES, feature_mask=SIX, n_samples=n_samples, baseline=0.1, seed=0).asnumpy()
    for i in range(2):
        np.testing.assert_allclose(per_group(exact[i], SIX), expected[i], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(per_group(lasso[i], SIX), expected[i], atol=0.2)
    assert np.abs(expected).max() > 2


def test_lime_weights_are_the_exponential_kernel_of_the_cosine_distance():
    net, x = small_net(), batch(2)
    RecordingRegression.fits.clear()
    P.lime(net, x, CLASSES, feature_mask=SIX, n_samples=20, kernel_width=0.7, baseline=0.2, seed=5,
           surrogate=RecordingRegression())
    assert len(RecordingRegression.fits) == 2
    for i, (rows, scores, weights) in enumerate(RecordingRegression.fits):
        assert set(np.unique(rows)) <= {0.0, 1.0}
        images = np.stack([coalition_image(x.asnumpy()[i], 0.2, SIX, np.nonzero(row)[0]) for row in rows])
        flat, original = images.reshape((len(rows), -1)).astype(np.float64), x.asnumpy()[i].reshape(-1)
        cosine = flat @ original / (np.linalg.norm(flat, axis=1) * np.linalg.norm(original))
        kernel = np.exp(-(1 - cosine) ** 2 / (2 * 0.7 ** 2))
        ratio = weights / kernel  # a coalition drawn m times weighs m kernels
        np.testing.assert_allclose(ratio, np.round(ratio), rtol=1e-6)
        assert np.round(ratio).min() >= 1 and np.round(ratio).sum() == 20
        np.testing.assert_allclose(scores, net_scores(net, images, [CLASSES[i]] * len(rows)), rtol=1e-4, atol=1e-5)


def test_lime_bad_input():
    net, x = small_net(), batch(1)
    with pytest.raises(ValueError, match='unknown surrogate'):
        P.lime(net, x, feature_mask=SIX, surrogate='forest')
    with pytest.raises(ValueError, match='kernel_width must be positive'):
        P.lime(net, x, feature_mask=SIX, kernel_width=0)
    with pytest.raises(ValueError, match='unknown distance'):
        P.lime(net, x, feature_mask=SIX, distance='manhattan')


# ----------------------------------------------------------------------------------------------------------
# shared behaviour


def methods():
    return {
        'occlusion': lambda net, x, **kw: P.occlusion(net, x, CLASSES, window=(4, 4), strides=2, **kw),
        'ablation': lambda net, x, **kw: P.feature_ablation(net, x, CLASSES, feature_mask=SIX, **kw),
        'shapley': lambda net, x, **kw: P.shapley_value_sampling(net, x, CLASSES, feature_mask=SIX, n_samples=4,
                                                                 seed=7, **kw),
        'kernelshap': lambda net, x, **kw: P.kernel_shap(net, x, CLASSES, feature_mask=SIX, n_samples=30, seed=7,
                                                         **kw),
        'lime': lambda net, x, **kw: P.lime(net, x, CLASSES, feature_mask=SIX, n_samples=30, seed=7, **kw),
    }


@pytest.mark.parametrize('name', list(methods()))
def test_batch_size_invariance_and_network_unchanged(name):
    net, x = small_net(), batch(2)
    method = methods()[name]
    with parameters_untouched(net):
        one = method(net, x, batch_size=1).asnumpy()
        many = method(net, x, batch_size=64).asnumpy()
    assert one.shape == (2, 3, 12, 10) and np.isfinite(one).all() and np.abs(one).max() > 1e-3
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-5)


class Uncompiled(Block):
    """A plain Block around a network: it cannot be traced, so passes run through Explainer.forward."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize('name', ['occlusion', 'kernelshap'])
def test_networks_that_cannot_be_compiled_give_the_same_maps(name):
    net, x = small_net(), batch(2)
    method = methods()[name]
    np.testing.assert_allclose(method(Uncompiled(net), x).asnumpy(), method(net, x).asnumpy(), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize('name', ['shapley', 'kernelshap', 'lime'])
def test_seeded_runs_repeat_and_seeds_differ(name):
    net, x = small_net(), batch(2)
    sampled = {'shapley': P.shapley_value_sampling, 'kernelshap': P.kernel_shap, 'lime': P.lime}[name]
    run = lambda seed: sampled(net, x, CLASSES, feature_mask=SIX, n_samples=8, seed=seed).asnumpy()  # noqa: E731
    np.testing.assert_array_equal(run(11), run(11))
    assert not np.allclose(run(11), run(12))


def test_baselines_of_every_valid_shape_and_the_wrong_one():
    net, x = linear_net(), batch(2)
    image = np.random.RandomState(8).randn(3, 12, 10).astype(np.float32)
    run = lambda base: P.feature_ablation(net, x, CLASSES, feature_mask=SIX, baseline=base).asnumpy()  # noqa: E731
    per_image = run(np.stack([image, image]))
    np.testing.assert_allclose(run(image), per_image, rtol=1e-6)
    np.testing.assert_allclose(run(nd.array(image)), per_image, rtol=1e-6)
    np.testing.assert_allclose(run(np.float32(0.5)), run(np.full((2, 3, 12, 10), 0.5)), rtol=1e-6)
    for bad in (np.zeros((12, 10)), np.zeros((3, 3, 12, 10)), np.zeros((1, 3, 10, 12))):
        with pytest.raises(ValueError, match=r'valid: a scalar, one image \(3, 12, 10\) .* \(2, 3, 12, 10\)'):
            run(bad)
    with pytest.raises(ValueError, match='NaN'):
        run(np.nan)


def test_bad_arguments():
    net, x = small_net(), batch(2)
    with pytest.raises(ValueError, match=r'feature_mask has shape \(12, 11\).*\(12, 10\)'):
        P.feature_ablation(net, x, feature_mask=np.zeros((12, 11), int))
    with pytest.raises(ValueError, match='integer labels'):
        P.feature_ablation(net, x, feature_mask=SIX + 0.5)
    with pytest.raises(ValueError, match='batch_size must be at least 1'):
        P.feature_ablation(net, x, feature_mask=SIX, batch_size=0)
    with pytest.raises(ValueError, match='unknown score'):
        P.occlusion(net, x, score='probabilities')
    with pytest.raises(ValueError, match='n_samples must be an integer of at least 1'):
        P.shapley_value_sampling(net, x, feature_mask=SIX, n_samples=0)
    with pytest.raises(ValueError, match='at least 2'):
        P.kernel_shap(net, x, feature_mask=SIX, n_samples=1)
    with pytest.raises(ValueError, match='at most 16 allowed'):
        P.shapley_value_sampling(net, x, feature_mask=blocks(4, 5), n_samples=None)
    with pytest.raises(ValueError, match='class id 7 out of range'):
        P.feature_ablation(net, x, 7, feature_mask=SIX)
    with pytest.raises(ValueError, match='one score per sample'):
        P.feature_ablation(net, x, lambda out: out, feature_mask=SIX)


def test_progress_bar_on_stderr(capsys):
    net, x = small_net(), batch(1)
    P.feature_ablation(net, x, feature_mask=SIX, batch_size=1, progress=True)
    assert 'feature ablation' in capsys.readouterr().err
    P.feature_ablation(net, x, feature_mask=SIX, batch_size=1, progress=False)
    P.feature_ablation(net, x, feature_mask=SIX, batch_size=1)  # 6 batches: no bar by default
    assert capsys.readouterr().err == ''
    P.occlusion(net, x, window=(2, 2), strides=2, batch_size=2)  # 30 positions, 15 batches
    assert 'occlusion' in capsys.readouterr().err
