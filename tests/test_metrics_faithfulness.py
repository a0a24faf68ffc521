"""Faithfulness metrics (gluoncam.metrics.faithfulness, gluoncam.metrics.confidence) against hand computations:
deletion and insertion curves of linear networks on 2 x 2 and 4 x 4 images, their trapezoid areas, ROAD's imputation
solved by hand, its percentile convention against pytorch-grad-cam's threshold, average drop / increase / win /
confidence change from the probabilities written out."""
import math

import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock
from scipy.ndimage import gaussian_filter

import gluoncam
from gluoncam.metrics import confidence as C
from gluoncam.metrics import faithfulness as F
from conftest import batch, parameters_untouched, small_net
from test_gradient_methods import linear_net


def tiny_linear(weight):
    """S(x) = W x on the flattened image, no bias: scores known exactly."""
    weight = np.asarray(weight, dtype=np.float32)
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(weight.shape[0], in_units=weight.shape[1], use_bias=False))
    net.initialize()
    net[0].weight.set_data(nd.array(weight))
    return net


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


W2 = np.array([[1.0, -2.0, 3.0, 0.5], [0.2, 0.1, -0.3, 0.4]])  # two classes of a 1 x 2 x 2 image
X2 = np.array([[[[2.0, 1.0], [-1.0, 4.0]]]])  # contributions to class 0: 2, -2, -3, 2
MAP2 = np.array([[[0.3, 0.9], [0.1, 0.6]]])  # order: pixel 1, 3, 0, 2


def curve_by_hand(net_weight, image, order, substrate, inserting, probability, target=0, step=1):
    """Replace (or reveal) pixels in ``order``, ``step`` at a time, scoring each state by hand."""
    flat, base = image.reshape(-1).copy(), np.broadcast_to(substrate, image.shape).reshape(-1)
    state = base.copy() if inserting else flat.copy()
    values = []
    counts = list(range(0, len(flat), step)) + [len(flat)]
    for k in counts:
        state = base.copy() if inserting else flat.copy()
        taken = order[:k]
        state[taken] = (flat if inserting else base)[taken]
        logits = net_weight @ state
        values.append(softmax(logits)[target] if probability else logits[target])
    moved = np.array(counts) / len(flat)
    return np.array(values), moved


# ----------------------------------------------------------------------------------------------------------
# deletion and insertion


@pytest.mark.parametrize('probability', [False, True])
def test_deletion_curve_by_hand_on_a_2x2_linear_net(probability):
    net = tiny_linear(W2)
    result = F.deletion(net, X2, MAP2, target=0, step=1, probability=probability)
    expected, fractions = curve_by_hand(W2, X2[0], [1, 3, 0, 2], 0.0, False, probability)
    if not probability:  # 5, then minus -2, minus 2 (pixel 3), minus 2 (pixel 0), minus -3
        np.testing.assert_allclose(expected, [-1.0, 1.0, -1.0, -3.0, 0.0])
    np.testing.assert_allclose(result.curve.asnumpy()[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.fractions.asnumpy(), [0, 0.25, 0.5, 0.75, 1])
    trapezoid = (expected.sum() - expected[0] / 2 - expected[-1] / 2) / 4  # RISE's auc() with even spacing
    np.testing.assert_allclose(result.auc.asnumpy()[0], trapezoid, rtol=1e-5, atol=1e-6)


def test_insertion_curve_by_hand_with_a_value_substrate():
    net = tiny_linear(W2)
    result = F.insertion(net, X2, MAP2, target=1, step=1, substrate=0.5, probability=True)
    expected, _ = curve_by_hand(W2, X2[0], [1, 3, 0, 2], 0.5, True, True, target=1)
    np.testing.assert_allclose(result.curve.asnumpy()[0], expected, rtol=1e-5, atol=1e-6)
    assert result.curve.asnumpy()[0, 0] == pytest.approx(softmax(W2 @ np.full(4, 0.5))[1], rel=1e-5)
    assert result.curve.asnumpy()[0, -1] == pytest.approx(softmax(W2 @ X2.reshape(-1))[1], rel=1e-5)


def test_partial_last_step_and_fractional_step_on_4x4_use_the_true_fractions():
    rng = np.random.RandomState(3)
    weight, image = rng.randn(3, 16), rng.randn(1, 1, 4, 4)
    pixel_map = rng.rand(1, 4, 4)
    order = list(np.argsort(-pixel_map.reshape(-1), kind='stable'))
    net = tiny_linear(weight)
    expected, fractions = curve_by_hand(weight, image[0], order, 0.0, False, False, target=2, step=3)
    np.testing.assert_allclose(fractions, [0, 3 / 16, 6 / 16, 9 / 16, 12 / 16, 15 / 16, 1])
    for step in (3, 0.17):  # 0.17 of 16 pixels rounds up to 3
        result = F.deletion(net, image, pixel_map, target=2, step=step, probability=False)
        np.testing.assert_allclose(result.curve.asnumpy()[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.fractions.asnumpy(), fractions, rtol=1e-6)
        area = sum((fractions[i + 1] - fractions[i]) * (expected[i] + expected[i + 1]) / 2 for i in range(6))
        np.testing.assert_allclose(result.auc.asnumpy()[0], area, rtol=1e-5, atol=1e-6)
    default = F.deletion(net, image, pixel_map, target=2, probability=False)  # one row (4 pixels) a step
    np.testing.assert_allclose(default.fractions.asnumpy(), [0, 0.25, 0.5, 0.75, 1])


def test_ties_go_in_row_major_order_and_a_constant_map_deletes_row_by_row():
    net = tiny_linear(W2)
    tied = F.deletion(net, X2, np.array([[[0.5, 0.9], [0.5, 0.5]]]), target=0, step=1, probability=False)
    expected, _ = curve_by_hand(W2, X2[0], [1, 0, 2, 3], 0.0, False, False)
    np.testing.assert_allclose(tied.curve.asnumpy()[0], expected, rtol=1e-5, atol=1e-6)
    flat = F.deletion(net, X2, np.full((1, 2, 2), 7.0), target=0, step=1, probability=False)
    expected, _ = curve_by_hand(W2, X2[0], [0, 1, 2, 3], 0.0, False, False)
    np.testing.assert_allclose(flat.curve.asnumpy()[0], expected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(flat.auc.asnumpy()).all()

    net, x = linear_net(), batch(1)  # 120 pixels: past the size where an unstable sort still keeps ties in order
    levels = np.random.RandomState(16).randint(0, 3, size=(1, 12, 10)).astype(np.float64)
    order = np.concatenate([np.flatnonzero(levels.reshape(-1) == value) for value in (2, 1, 0)])
    contributions = (net[0].weight.data().asnumpy()[2].reshape(3, 12, 10) * x.asnumpy()[0]).sum(axis=0)
    bias = net[0].bias.data().asnumpy()[2]
    removed = np.concatenate([[0], np.cumsum(contributions.reshape(-1)[order])])
    expected = contributions.sum() + bias - removed
    result = F.deletion(net, x, levels, target=2, step=1, probability=False, batch_size=128)
    np.testing.assert_allclose(result.curve.asnumpy()[0], expected, rtol=1e-4, atol=1e-4)

def test_mean_and_blur_substrates():
    rng = np.random.RandomState(4)
    image = rng.randn(1, 2, 5, 6)
    weight = rng.randn(2, 60)
    net = tiny_linear(weight)
    pixel_map = rng.rand(1, 5, 6)
    means = np.broadcast_to(image.mean(axis=(2, 3), keepdims=True), image.shape)
    start = F.insertion(net, image, pixel_map, target=0, substrate='mean', probability=False).curve.asnumpy()
    assert start[0, 0] == pytest.approx(weight[0] @ means.reshape(-1), rel=1e-5)
    for sigma, radius in ((5.0, 5), (1.0, 2)):
        blurred = gaussian_filter(image[0], sigma=(0, sigma, sigma), mode='nearest', truncate=radius / sigma)
        start = F.insertion(net, image, pixel_map, target=0, sigma=sigma, radius=radius, probability=False)
        assert start.curve.asnumpy()[0, 0] == pytest.approx(weight[0] @ blurred.reshape(-1), rel=1e-4)
        assert start.curve.asnumpy()[0, -1] == pytest.approx(weight[0] @ image.reshape(-1), rel=1e-5)
    blurred = F.deletion(net, image, pixel_map, target=0, substrate='blur', sigma=1.0, radius=2, probability=False)
    assert blurred.curve.asnumpy()[0, -1] == pytest.approx(start.curve.asnumpy()[0, 0], rel=1e-5)


def exact_and_random_maps(net, x, classes, seed=0):
    weight = net[0].weight.data().asnumpy()[classes].reshape(x.shape)
    exact = (weight * x.asnumpy()).sum(axis=1)  # input x gradient, summed over channels: each pixel's share
    return exact, np.random.default_rng(seed).standard_normal(exact.shape)


def test_exact_attribution_of_a_linear_net_beats_a_random_map():
    net, x, classes = linear_net(), batch(2), [1, 3]
    exact, random_map = exact_and_random_maps(net, x, classes)
    for probability in (False, True):
        run = lambda metric, m, **kw: metric(net, x, m, classes, probability=probability, step=6,  # noqa: E731
                                             **kw).auc.asnumpy()
        assert (run(F.deletion, exact) < run(F.deletion, random_map)).all()
        assert (run(F.insertion, exact, substrate='black') > run(F.insertion, random_map, substrate='black')).all()
        # the exact order is the greedy one: on the raw score its deletion curve is the lowest at every point
        if not probability:
            lowest = F.deletion(net, x, exact, classes, step=6, probability=False).curve.asnumpy()
            other = F.deletion(net, x, random_map, classes, step=6, probability=False).curve.asnumpy()
            assert (lowest <= other + 1e-4).all()
    exact_road = F.road(net, x, exact, classes, seed=0, probability=False)
    random_road = F.road(net, x, random_map, classes, seed=0, probability=False)
    assert (exact_road.combined.asnumpy() > random_road.combined.asnumpy()).all()
    assert (exact_road.morf_average.asnumpy() < random_road.morf_average.asnumpy()).all()
    assert (exact_road.lerf_average.asnumpy() > random_road.lerf_average.asnumpy()).all()


# ----------------------------------------------------------------------------------------------------------
# ROAD


def test_imputation_fills_a_surrounded_pixel_with_the_weighted_mean_of_its_neighbours():
    image = np.arange(2 * 3 * 3, dtype=np.float64).reshape((2, 3, 3)) ** 1.5
    keep = np.ones((3, 3), bool)
    keep[1, 1] = False
    filled = F.noisy_linear_imputation(image, keep, noise=0).asnumpy()
    for c in range(2):
        edges = image[c, 0, 1] + image[c, 1, 0] + image[c, 1, 2] + image[c, 2, 1]
        corners = image[c, 0, 0] + image[c, 0, 2] + image[c, 2, 0] + image[c, 2, 2]
        assert filled[c, 1, 1] == pytest.approx(edges / 6 + corners / 12, rel=1e-5)
    kept = keep[None].repeat(2, 0)
    np.testing.assert_array_equal(filled[kept], image[kept])
    constant = np.full((1, 3, 3), 2.5)
    constant[0, 1, 1] = -100
    assert F.noisy_linear_imputation(constant, keep, noise=0).asnumpy()[0, 1, 1] == pytest.approx(2.5)


def test_imputation_solves_removed_neighbours_together_and_renormalises_at_the_border():
    row = np.array([[[3.0, -50.0, 99.0, 9.0]]])  # 1 x 1 x 4: the middle two removed, only left/right neighbours
    keep = np.array([[True, False, False, True]])
    filled = F.noisy_linear_imputation(row, keep, noise=0).asnumpy()[0, 0]
    np.testing.assert_allclose(filled, [3, 5, 7, 9], rtol=1e-5)  # u1 = (3 + u2) / 2, u2 = (u1 + 9) / 2
    image = np.random.RandomState(5).randn(1, 3, 3)
    keep = np.ones((3, 3), bool)
    keep[0, 0] = False
    corner = F.noisy_linear_imputation(image, keep, noise=0).asnumpy()[0, 0, 0]
    assert corner == pytest.approx((image[0, 0, 1] / 6 + image[0, 1, 0] / 6 + image[0, 1, 1] / 12) / (5 / 12),
                                   rel=1e-5)


def test_imputation_noise_is_seeded_and_only_on_removed_pixels():
    image = np.random.RandomState(6).randn(2, 3, 4, 5).astype(np.float32)
    keep = np.random.RandomState(7).rand(2, 4, 5) > 0.5
    clean = F.noisy_linear_imputation(image, keep, noise=0).asnumpy()
    noisy = F.noisy_linear_imputation(nd.array(image), keep, noise=0.5, seed=3).asnumpy()
    np.testing.assert_array_equal(noisy, F.noisy_linear_imputation(image, keep, noise=0.5, seed=3).asnumpy())
    kept = np.broadcast_to(keep[:, None], image.shape)
    np.testing.assert_array_equal(noisy[kept], image[kept])
    assert np.abs(noisy - clean)[~kept].min() > 0
    assert not np.allclose(noisy, F.noisy_linear_imputation(image, keep, noise=0.5, seed=4).asnumpy())
    everything = F.noisy_linear_imputation(image, np.zeros((4, 5), bool), noise=0).asnumpy()
    np.testing.assert_array_equal(everything, 0)


def test_road_by_hand_follows_pytorch_grad_cams_percentile_threshold():
    rng = np.random.RandomState(8)
    weight, image = rng.randn(3, 2 * 5 * 4), rng.randn(1, 2, 5, 4).astype(np.float32)
    pixel_map = rng.rand(1, 5, 4)
    net, percentiles = tiny_linear(weight), (10, 35, 50, 90)
    result = F.road(net, image, pixel_map, target=2, percentiles=percentiles, noise=0, probability=False)
    original = weight[2] @ image.reshape(-1)
    morf, lerf = [], []
    for p in percentiles:
        keep_morf = pixel_map[0] < np.percentile(pixel_map[0], p)  # pytorch-grad-cam's RemoveMostRelevantFirst
        keep_lerf = (1 - pixel_map[0]) < np.percentile(1 - pixel_map[0], p)  # its RemoveLeastRelevantFirst
        assert keep_morf.sum() == math.ceil(p * 19 / 100)
        for keep, out in ((keep_morf, morf), (keep_lerf, lerf)):
            out.append(weight[2] @ F.noisy_linear_imputation(image[0], keep, noise=0).asnumpy().reshape(-1)
                       - original)
    np.testing.assert_allclose(result.morf.asnumpy()[0], morf, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.lerf.asnumpy()[0], lerf, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.morf_average.asnumpy()[0], np.mean(morf), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.combined.asnumpy()[0], (np.mean(lerf) - np.mean(morf)) / 2, rtol=1e-4,
                               atol=1e-4)
    assert result.percentiles == (10.0, 35.0, 50.0, 90.0)


def test_road_with_a_constant_map_scores_zero_and_seeds_repeat():
    net, x = small_net(), batch(2)
    flat = F.road(net, x, np.ones((2, 12, 10)), seed=1)
    np.testing.assert_array_equal(flat.combined.asnumpy(), 0)
    assert np.isfinite(flat.morf.asnumpy()).all()
    pixel_map = np.random.RandomState(9).rand(2, 6, 5)
    once, again = (F.road(net, x, pixel_map, seed=2).morf.asnumpy() for _ in range(2))
    np.testing.assert_array_equal(once, again)
    assert not np.allclose(once, F.road(net, x, pixel_map, seed=3).morf.asnumpy())
    edges = F.road(net, x, pixel_map, percentiles=[0, 100], seed=2, noise=0)  # everything removed; one pixel
    assert np.isfinite(edges.morf.asnumpy()).all()


# ----------------------------------------------------------------------------------------------------------
# average drop, increase in confidence, win, confidence change


def masked_by_hand(image, pixel_map):
    scaled = (pixel_map - pixel_map.min()) / (pixel_map.max() - pixel_map.min())
    return (image * scaled[None]).reshape(-1)


def test_average_drop_increase_and_change_by_hand():
    rng = np.random.RandomState(10)
    weight, images = rng.randn(3, 8), rng.randn(4, 2, 2, 2)
    maps = rng.rand(4, 2, 2)
    net = tiny_linear(weight)
    full = softmax(images.reshape(4, -1) @ weight.T)
    classes = full.argmax(axis=1)
    masked = softmax(np.stack([masked_by_hand(images[i], maps[i]) for i in range(4)]) @ weight.T)
    y, o = full[np.arange(4), classes], masked[np.arange(4), classes]
    drop = 100 * np.maximum(0, y - o) / y
    increase = 100.0 * (o > y)
    assert 0 < increase.sum() < 400 and drop.max() > 0  # the seed exercises both branches
    np.testing.assert_allclose(C.average_drop(net, images, maps).asnumpy(), drop, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(C.increase_in_confidence(net, images, maps).asnumpy(), increase)
    np.testing.assert_allclose(C.confidence_change(net, images, maps).asnumpy(), o - y, rtol=1e-4, atol=1e-6)
    everything = C.confidence_metrics(net, images, maps)
    np.testing.assert_allclose(everything['drop'].asnumpy(), drop, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(everything['full'].asnumpy(), y, rtol=1e-5)
    np.testing.assert_allclose(everything['masked'].asnumpy(), o, rtol=1e-5)
    raw = C.confidence_change(net, images, maps, target=1, probability=False).asnumpy()
    by_hand = np.array([weight[1] @ masked_by_hand(images[i], maps[i]) - weight[1] @ images[i].reshape(-1)
                        for i in range(4)])
    np.testing.assert_allclose(raw, by_hand, rtol=1e-4, atol=1e-5)
    unscaled = C.confidence_change(net, images, maps * 3, target=1, probability=False, scale=False).asnumpy()
    by_hand = [weight[1] @ (images[i] * 3 * maps[i]).reshape(-1) - weight[1] @ images[i].reshape(-1)
               for i in range(4)]
    np.testing.assert_allclose(unscaled, by_hand, rtol=1e-4, atol=1e-5)


def test_increase_and_drop_on_a_map_that_raises_the_score():
    net = tiny_linear([[1.0, 1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    image = np.array([[[[1.0, 1.0], [1.0, 1.0]]]])
    good = np.array([[[1.0, 1.0], [0.0, 0.0]]])  # keeps the positive pixels: logit 0 -> 2
    bad = np.array([[[0.0, 0.0], [1.0, 1.0]]])  # keeps the negative ones: logit 0 -> -2
    assert C.increase_in_confidence(net, image, good, target=0).asnumpy()[0] == 100
    assert C.average_drop(net, image, good, target=0).asnumpy()[0] == 0
    assert C.increase_in_confidence(net, image, bad, target=0).asnumpy()[0] == 0
    expected = 100 * (0.5 - softmax(np.array([-2.0, 0.0]))[0]) / 0.5
    assert C.average_drop(net, image, bad, target=0).asnumpy()[0] == pytest.approx(expected, rel=1e-5)
    shares = C.win(net, image, {'good': good, 'bad': bad, 'same': good * 2 + 1}, target=0)
    assert shares['good'].asnumpy()[0] == pytest.approx(50) and shares['same'].asnumpy()[0] == pytest.approx(50)
    assert shares['bad'].asnumpy()[0] == 0


def test_win_by_hand_over_images():
    rng = np.random.RandomState(11)
    weight, images = rng.randn(3, 12), rng.randn(6, 3, 2, 2)
    maps = {name: rng.rand(6, 2, 2) for name in ('a', 'b', 'c')}
    net = tiny_linear(weight)
    full = softmax(images.reshape(6, -1) @ weight.T)
    classes, rows = full.argmax(axis=1), np.arange(6)
    drops = []
    for pixel_map in maps.values():
        masked = softmax(np.stack([masked_by_hand(images[i], pixel_map[i]) for i in rows]) @ weight.T)
        drops.append(np.maximum(0, full[rows, classes] - masked[rows, classes]) / full[rows, classes])
    drops = np.round(np.stack(drops), 5)  # several methods tie at 0 where their maps raise the confidence
    winners = drops == drops.min(axis=0)
    assert (winners.sum(axis=0) == 1).any() and (winners.sum(axis=0) > 1).any()
    shares = C.win(net, images, maps)
    for k, name in enumerate(maps):
        np.testing.assert_allclose(shares[name].asnumpy(), 100.0 * winners[k] / winners.sum(axis=0), rtol=1e-6)
    assert sum(s.asnumpy().mean() for s in shares.values()) == pytest.approx(100)


def test_constant_maps_give_finite_values():
    net, x = small_net(), batch(2)
    for value in (0.0, 3.0):
        constant = np.full((2, 6, 5), value)
        values = C.confidence_metrics(net, x, constant)
        assert all(np.isfinite(v.asnumpy()).all() for v in values.values())
        zeros = nd.zeros_like(x)
        np.testing.assert_allclose(values['masked'].asnumpy(),
                                   nd.softmax(net(zeros)).asnumpy()[np.arange(2), net(x).argmax(axis=1).asnumpy()
                                                                    .astype(int)], rtol=1e-5)
        for metric in (F.deletion, F.insertion):
            assert np.isfinite(metric(net, x, constant).auc.asnumpy()).all()


# ----------------------------------------------------------------------------------------------------------
# shared behaviour


def runs():
    pixel_map = np.random.RandomState(12).rand(3, 6, 5)
    other = np.random.RandomState(13).randn(3, 3, 12, 10)
    return {
        'deletion': lambda net, x, **kw: F.deletion(net, x, pixel_map, step=0.1, **kw).curve,
        'insertion': lambda net, x, **kw: F.insertion(net, x, other, step=13, **kw).curve,
        'road': lambda net, x, **kw: F.road(net, x, pixel_map, percentiles=(20, 70), seed=5, **kw).morf,
        'confidence': lambda net, x, **kw: C.confidence_metrics(net, x, pixel_map, **kw)['masked'],
        'win': lambda net, x, **kw: C.win(net, x, {'a': pixel_map, 'b': other}, **kw)['a'],
    }


@pytest.mark.parametrize('name', list(runs()))
def test_batch_size_invariance_and_network_unchanged(name):
    net, x = small_net(), batch(3)
    run = runs()[name]
    with parameters_untouched(net):
        one = run(net, x, batch_size=1).asnumpy()
        many = run(net, x, batch_size=64).asnumpy()
    assert np.isfinite(one).all()
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-6)


def test_targets_and_maps_of_every_kind():
    net, x = small_net(), batch(2)
    cam = np.random.RandomState(14).rand(2, 6, 5)
    upsampled = gluoncam.maps.upsample(nd.array(cam), (12, 10)).asnumpy()
    channels = np.repeat(upsampled[:, None] / 3, 3, axis=1)
    runs_of = [F.deletion(net, x, m, target=[1, 3], step=12).curve.asnumpy() for m in (cam, upsampled, channels)]
    np.testing.assert_allclose(runs_of[0], runs_of[1], rtol=1e-5)
    np.testing.assert_allclose(runs_of[0], runs_of[2], rtol=1e-5)
    class_one = lambda output: nd.softmax(output)[:, 1]  # noqa: E731  (used as it is, no second softmax)
    by_function = F.deletion(net, x, cam, target=class_one, step=12).curve.asnumpy()
    np.testing.assert_allclose(by_function, F.deletion(net, x, cam, target=1, step=12).curve.asnumpy(), rtol=1e-5)


def test_bad_inputs():
    net, x = small_net(), batch(2)
    good = np.random.RandomState(15).rand(2, 6, 5)
    cases = [
        (lambda: F.deletion(net, x, np.ones((3, 6, 5))), 'one map per image'),
        (lambda: F.deletion(net, x, np.ones((2, 3, 5, 5))), 'N x h x w'),
        (lambda: F.insertion(net, x, good * np.nan), 'NaN'),
        (lambda: F.deletion(net, x, good, step=0), 'at least 1'),
        (lambda: F.deletion(net, x, good, step=1.5), r'\(0, 1\]'),
        (lambda: F.deletion(net, x, good, step=True), 'pixel count'),
        (lambda: F.deletion(net, x, good, substrate='white'), "unknown substrate 'white'"),
        (lambda: F.deletion(net, x, good, substrate=np.zeros((2, 2))), 'baseline has shape'),
        (lambda: F.insertion(net, x, good, sigma=0), 'sigma'),
        (lambda: F.insertion(net, x, good, radius=-1), 'radius'),
        (lambda: F.deletion(net, x, good, score='probs'), "unknown score 'probs'"),
        (lambda: F.deletion(net, x, good, batch_size=0), 'batch_size'),
        (lambda: F.deletion(net, x, good, target=9), 'out of range'),
        (lambda: F.road(net, x, good, percentiles=[10, 120]), '0..100'),
        (lambda: F.road(net, x, good, percentiles=[-5]), '0..100'),
        (lambda: F.road(net, x, good, percentiles=[]), '0..100'),
        (lambda: F.road(net, x, good, percentiles=['ten']), '0..100'),
        (lambda: F.road(net, x, good, noise=-1), 'noise'),
        (lambda: F.noisy_linear_imputation(np.zeros((1, 3, 4, 4)), np.ones((3, 3), bool)), 'keep has shape'),
        (lambda: C.win(net, x, {'only': good}), 'at least two'),
        (lambda: C.win(net, x, [good, good]), 'at least two'),
        (lambda: C.average_drop(net, x, good[:1]), 'one map per image'),
        (lambda: C.average_drop(tiny_linear(-np.ones((1, 360))), np.abs(x.asnumpy()), good, probability=False),
         'must be positive'),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_networks_that_cannot_be_compiled_score_the_same():
    from test_perturbation import Uncompiled
    net, x = small_net(), batch(3)
    for name in ('deletion', 'road', 'confidence'):
        run = runs()[name]
        np.testing.assert_allclose(run(Uncompiled(net), x).asnumpy(), run(net, x).asnumpy(), rtol=1e-5, atol=1e-6)
