"""The sanity checks of Adebayo et al. 2018 (gluoncam.metrics.randomization): which layers are random at each step
(read from the parameters inside ``explain``), the similarities by hand, the paper's point on a linear model,
determinism, the network restored bit for bit (also through exceptions), and bad inputs."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock
from scipy.stats import spearmanr
from skimage.feature import hog

import gluoncam
from gluoncam import gradients as G
from gluoncam import methods
from gluoncam.metrics import randomization as R
from conftest import batch, parameters_untouched, small_net

TOP_FIRST = ['small_dense1', 'small_dense0', 'small_conv1', 'small_conv0']


def gradient(net, x, target):
    return G.gradient(net, x, target)


def linear_net(classes=4, seed=0):
    mx.random.seed(seed)
    net = stock.HybridSequential(prefix='linear_')
    with net.name_scope():
        net.add(gluoncam.Dense(classes, in_units=3 * 12 * 10))
    net.initialize(mx.init.Normal(0.5))
    return net


def weights_of(net):
    return {block.name: block.weight.data().asnumpy().copy() for block in R._weighted_blocks(net)}


def clone(net):
    """A second small_net carrying ``net``'s current parameter values (so nothing it caches is shared)."""
    twin = small_net()
    for (name, param), (_, twin_param) in zip(net.collect_params().items(), twin.collect_params().items()):
        twin_param.set_data(param.data().copy())
    return twin


# ----------------------------------------------------------------------------------------------------------
# similarities by hand


def test_similarity_of_a_map_with_itself_and_with_its_negative():
    maps = nd.array(np.random.RandomState(0).randn(2, 3, 16, 12))
    same = R.map_similarity(maps, maps)
    for name in R.SIMILARITIES:
        np.testing.assert_allclose(same[name].asnumpy(), 1, rtol=0, atol=1e-6, err_msg=name)
    negative = R.map_similarity(maps, -maps)
    np.testing.assert_allclose(negative['spearman'].asnumpy(), -1, atol=1e-6)
    for name in ('spearman_abs', 'ssim', 'hog'):  # these see |m|, the same for m and -m
        np.testing.assert_allclose(negative[name].asnumpy(), 1, atol=1e-6, err_msg=name)


def test_spearman_by_hand_and_absolute_variant_reduces_channels_of_absolute_values():
    a = np.arange(9, dtype=np.float64).reshape(1, 3, 3)
    b = np.array([[[0, 2, 1], [3, 4, 5], [8, 7, 6]]], dtype=np.float64)  # rank differences 0,1,1,0,0,0,2,0,2
    rho = 1 - 6 * (1 + 1 + 4 + 4) / (9 * 80)
    assert R.map_similarity(a, b)['spearman'].asscalar() == pytest.approx(rho, abs=1e-6)
    rng = np.random.RandomState(1)
    first, second = rng.randn(2, 3, 8, 8), rng.randn(2, 3, 8, 8)
    got = R.map_similarity(first, second)
    for i in range(2):
        expected_abs = spearmanr(np.abs(first[i]).sum(0).ravel(), np.abs(second[i]).sum(0).ravel())[0]
        expected = spearmanr(first[i].sum(0).ravel(), second[i].sum(0).ravel())[0]
        assert got['spearman_abs'][i].asscalar() == pytest.approx(expected_abs, abs=1e-6)
        assert got['spearman'][i].asscalar() == pytest.approx(expected, abs=1e-6)
    assert not np.allclose(got['spearman'].asnumpy(), got['spearman_abs'].asnumpy())


def test_ssim_by_hand_on_a_3x3_map():
    """A 3 x 3 map gets a 3 x 3 window: one valid position, SSIM = (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)
    (sx^2 + sy^2 + C2)), sample (co)variances, C1 = 0.01^2, C2 = 0.03^2, on |m| / max |m|."""
    rng = np.random.RandomState(2)
    a, b = rng.randn(3, 3), rng.randn(3, 3)
    u, v = np.abs(a) / np.abs(a).max(), np.abs(b) / np.abs(b).max()
    mu, mv = u.mean(), v.mean()
    cov = np.cov(u.ravel(), v.ravel(), ddof=1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = (2 * mu * mv + c1) * (2 * cov[0, 1] + c2) / ((mu ** 2 + mv ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2))
    got = R.map_similarity(a[None], b[None])['ssim'].asscalar()
    assert got == pytest.approx(expected, rel=1e-5)


def test_hog_similarity_is_pearson_of_hog_descriptors():
    rng = np.random.RandomState(3)
    a, b = rng.rand(32, 32), rng.rand(32, 32)
    da = hog(a / a.max(), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3))
    db = hog(b / b.max(), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3))
    got = R.map_similarity(a[None], b[None])['hog'].asscalar()
    assert got == pytest.approx(np.corrcoef(da, db)[0, 1], abs=1e-6)
    other = R.map_similarity(a[None], b[None], hog_options={'pixels_per_cell': (4, 4)})['hog'].asscalar()
    assert other != pytest.approx(got, abs=1e-4)


def test_constant_maps_score_without_nan():
    flat, zero, varied = np.full((1, 8, 8), 3.0), np.zeros((1, 8, 8)), np.random.RandomState(4).rand(1, 8, 8)
    both = R.map_similarity(flat, zero)
    one = R.map_similarity(varied, zero)
    for name in ('spearman', 'spearman_abs', 'hog'):
        assert both[name].asscalar() == 1 and one[name].asscalar() == 0, name
    for result in (both, one):
        assert all(np.isfinite(value.asnumpy()).all() for value in result.values())


def test_cam_sized_maps_are_upsampled_and_small_maps_fit():
    cams = nd.array(np.random.RandomState(5).rand(2, 3, 2))
    result = R.map_similarity(cams, cams, size=(12, 10))
    np.testing.assert_allclose(result['ssim'].asnumpy(), 1, atol=1e-6)
    tiny = np.random.RandomState(6).rand(1, 2, 2)
    assert np.isfinite(R.map_similarity(tiny, tiny[:, ::-1])['hog'].asnumpy()).all()


# ----------------------------------------------------------------------------------------------------------
# the model-parameter randomization test


def test_linear_model_gradient_changes_while_a_map_ignoring_the_net_stays():
    net, x = linear_net(), batch(4)
    with parameters_untouched(net):
        changed = R.model_randomization(net, x, gradient)
        unchanged = R.model_randomization(net, x, lambda n, images, t: images)
    assert changed.layers == ['linear_dense0']
    assert changed.spearman.shape == (1, 4)
    assert np.abs(changed.spearman.asnumpy()).max() < 0.3  # the gradient of a linear model is its weight row
    assert changed.ssim.asnumpy().max() < 0.5 and changed.hog.asnumpy().max() < 0.5
    for name in R.SIMILARITIES:
        np.testing.assert_allclose(getattr(unchanged, name).asnumpy(), 1, atol=1e-6, err_msg=name)


def random_layers_log(net, trained):
    """An explain function that records, at each call, which layers differ from their trained values, and checks
    its map against a fresh network with the same values (nothing cached keeps the trained weights)."""
    log = []

    def explain(current, x, target):
        now = weights_of(current)
        log.append([name for name in TOP_FIRST if not np.array_equal(now[name], trained[name])])
        maps = G.gradient(current, x, target)
        np.testing.assert_allclose(maps.asnumpy(), G.gradient(clone(current), x, target).asnumpy(),
                                   rtol=1e-5, atol=1e-7)
        return maps
    return explain, log


def test_cascading_randomizes_from_the_top_down_cumulatively():
    net, x = small_net(), batch(3)
    explain, log = random_layers_log(net, weights_of(net))
    with parameters_untouched(net):
        result = R.model_randomization(net, x, explain, keep_maps=True)
    assert result.layers == TOP_FIRST and result.mode == 'cascading'
    assert log == [[]] + [TOP_FIRST[:k + 1] for k in range(4)]
    for name in R.SIMILARITIES:
        assert getattr(result, name).shape == (4, 3)
    assert (result.spearman.asnumpy() < 0.9).all()
    assert len(result.maps) == 4 and result.trained_maps.shape == (3, 3, 12, 10)
    expected = R.map_similarity(result.trained_maps, result.maps[2])
    np.testing.assert_array_equal(result.spearman[2].asnumpy(), expected['spearman'].asnumpy())
    np.testing.assert_array_equal(result.classes.asnumpy(), net(x).argmax(axis=1).asnumpy())


def test_independent_randomizes_exactly_one_layer_per_step_and_subsets():
    net, x = small_net(), batch(2)
    explain, log = random_layers_log(net, weights_of(net))
    with parameters_untouched(net):
        result = R.model_randomization(net, x, explain, mode='independent')
    assert log == [[]] + [[name] for name in TOP_FIRST]
    assert result.maps is None and result.trained_maps is None
    explain, log = random_layers_log(net, weights_of(net))
    with parameters_untouched(net):
        chosen = R.model_randomization(net, x, explain, layers=['0', net[6]])  # a path and a block, in that order
    assert chosen.layers == ['small_conv0', 'small_dense0']
    assert log == [[], ['small_conv0'], ['small_dense0', 'small_conv0']]  # log in TOP_FIRST order


def test_class_is_fixed_by_the_trained_network_and_targets_pass_through():
    net, x = small_net(), batch(3)
    seen = []

    def explain(current, images, target):
        seen.append(target)
        return G.gradient(current, images, target)
    with parameters_untouched(net):
        R.model_randomization(net, x, explain, layers=['small_dense1'])
    predicted = net(x).argmax(axis=1).asnumpy()
    assert all(np.array_equal(t.asnumpy(), predicted) for t in seen) and len(seen) == 2
    seen.clear()
    with parameters_untouched(net):
        given = R.model_randomization(net, x, explain, target=[4, 0, 2], layers=['small_dense1'])
    assert given.classes.asnumpy().tolist() == [4, 0, 2] and seen[1].asnumpy().tolist() == [4, 0, 2]
    score = lambda out: out[:, 1]  # noqa: E731
    seen.clear()
    assert R.model_randomization(net, x, explain, target=score, layers=['small_dense1']).classes is None
    assert seen == [score, score]


def test_redrawn_values_follow_the_trained_spread_or_the_initializer():
    net, x = small_net(), batch(2)
    trained = net[6].weight.data().asnumpy()
    drawn = {}

    def explain(current, images, target):
        drawn[len(drawn)] = (current[6].weight.data().asnumpy().copy(), current[6].bias.data().asnumpy().copy())
        return G.gradient(current, images, target)
    R.model_randomization(net, x, explain, layers=['small_dense0'])
    weight, _ = drawn[1]
    assert abs(weight.std() / trained.std() - 1) < 0.1 and abs(weight.mean()) < 0.1 * trained.std()
    drawn.clear()
    with parameters_untouched(net):
        R.model_randomization(net, x, explain, layers=['small_dense0'], init=mx.init.Uniform(0.01))
    weight, bias = drawn[1]
    assert np.abs(weight).max() <= 0.01 and weight.std() > 0.004 and (bias == 0).all()


def test_seed_makes_the_test_repeatable_and_a_layer_gets_the_same_values_in_both_modes():
    net, x = small_net(), batch(2)
    first = R.model_randomization(net, x, gradient, seed=3, keep_maps=True)
    again = R.model_randomization(net, x, gradient, seed=3, keep_maps=True)
    other = R.model_randomization(net, x, gradient, seed=4)
    for name in R.SIMILARITIES:
        np.testing.assert_array_equal(getattr(first, name).asnumpy(), getattr(again, name).asnumpy())
    assert not np.array_equal(first.spearman.asnumpy(), other.spearman.asnumpy())
    independent = R.model_randomization(net, x, gradient, seed=3, mode='independent', keep_maps=True)
    np.testing.assert_array_equal(independent.maps[0].asnumpy(), first.maps[0].asnumpy())  # the top layer alone
    with_initializer = [R.model_randomization(net, x, gradient, seed=5, init=mx.init.Xavier()).spearman.asnumpy()
                        for _ in range(2)]
    np.testing.assert_array_equal(*with_initializer)


def test_per_image_results_do_not_depend_on_the_batch():
    net, x = small_net(), batch(3)
    whole = R.model_randomization(net, x, gradient, layers=['small_dense0', 'small_conv0'])
    single = R.model_randomization(net, x[1:2], gradient, layers=['small_dense0', 'small_conv0'])
    for name in R.SIMILARITIES:
        np.testing.assert_allclose(getattr(single, name).asnumpy()[:, 0], getattr(whole, name).asnumpy()[:, 1],
                                   atol=1e-5, err_msg=name)


def test_cam_maps_through_a_compiled_method():
    net, x = small_net(), batch(2)
    gradcam = lambda n, images, t: methods.make('gradcam', n, images, 'small_conv1', t)  # noqa: E731
    with parameters_untouched(net):
        result = R.model_randomization(net, x, gradcam, layers=['small_dense1', 'small_dense0'], keep_maps=True)
    assert result.maps[0].shape == (2, 6, 5)
    assert (result.spearman_abs.asnumpy() < 0.99).any()


def test_network_restored_when_explain_raises_midway():
    net, x = small_net(), batch(2)
    calls = []
    bn = net[1]

    def explain(current, images, target):
        calls.append(1)
        bn.running_mean.set_data(nd.ones(bn.running_mean.shape) * 5)  # statistics disturbed, then restored
        if len(calls) == 3:
            raise RuntimeError('boom')
        return G.gradient(current, images, target)
    for mode in R.MODES:
        calls.clear()
        with parameters_untouched(net):
            with pytest.raises(RuntimeError, match='boom'):
                R.model_randomization(net, x, explain, mode=mode)
        assert len(calls) == 3


@pytest.mark.parametrize('returned, message', [
    (lambda x: None, 'NDArray or numpy'),
    (lambda x: x[:1], r'1 image\(s\) and 2'),
    (lambda x: x[:, :, :5], 'N x h x w'),
    (lambda x: x * np.nan, 'NaN'),
])
def test_bad_maps_from_explain_raise_and_restore(returned, message):
    net, x = small_net(), batch(2)
    calls = []

    def explain(current, images, target):
        calls.append(1)
        return G.gradient(current, images, target) if len(calls) == 1 else returned(images)
    with parameters_untouched(net):
        with pytest.raises(ValueError, match=message):
            R.model_randomization(net, x, explain)


def test_bad_arguments():
    net, x = small_net(), batch(2)
    with parameters_untouched(net):
        with pytest.raises(ValueError, match="valid: cascading, independent"):
            R.model_randomization(net, x, gradient, mode='top-down')
        with pytest.raises(ValueError, match='explain must be a function'):
            R.model_randomization(net, x, 'saliency')
        with pytest.raises(ValueError, match="no layer 'fc'.*small_dense1, small_dense0, small_conv1, small_conv0"):
            R.model_randomization(net, x, gradient, layers=['fc'])
        with pytest.raises(ValueError, match="'1' has no weight.*small_dense1"):
            R.model_randomization(net, x, gradient, layers=['1'])
        with pytest.raises(ValueError, match='listed twice'):
            R.model_randomization(net, x, gradient, layers=['0', 'small_conv0'])
        with pytest.raises(ValueError, match='no layer to randomize'):
            R.model_randomization(net, x, gradient, layers=[])
        with pytest.raises(ValueError, match="init must be 'normal'"):
            R.model_randomization(net, x, gradient, init='xavier')
        with pytest.raises(ValueError, match='out of range'):
            R.model_randomization(net, x, gradient, target=9)
    weightless = stock.HybridSequential()
    weightless.add(stock.Flatten())
    with pytest.raises(ValueError, match='no layer with a weight'):
        R.model_randomization(weightless, x, gradient)
    with pytest.raises(ValueError, match='differ'):
        R.map_similarity(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match='do not fit'):
        R.map_similarity(np.ones((1, 8, 8)), np.ones((1, 8, 8)), hog_options={'pixels_per_cell': (16, 16)})


# ----------------------------------------------------------------------------------------------------------
# the data randomization test and the random baseline


def test_data_randomization_compares_two_networks_each_with_its_own_prediction():
    net, shuffled, x = small_net(), small_net(seed=6), batch(3)  # it predicts other classes
    with parameters_untouched(net), parameters_untouched(shuffled):
        result = R.data_randomization(net, shuffled, x, gradient, keep_maps=True)
        same = R.data_randomization(net, net, x, gradient)
        given = R.data_randomization(net, shuffled, x, gradient, target=2)
    np.testing.assert_array_equal(result.classes.asnumpy(), net(x).argmax(axis=1).asnumpy())
    np.testing.assert_array_equal(result.random_classes.asnumpy(), shuffled(x).argmax(axis=1).asnumpy())
    assert not np.array_equal(result.classes.asnumpy(), result.random_classes.asnumpy())
    expected = R.map_similarity(G.gradient(net, x), G.gradient(shuffled, x))
    for name in R.SIMILARITIES:
        np.testing.assert_allclose(getattr(result, name).asnumpy(), expected[name].asnumpy(), atol=1e-6)
        np.testing.assert_allclose(getattr(same, name).asnumpy(), 1, atol=1e-6)
    assert result.spearman.shape == (3,) and (result.spearman.asnumpy() < 0.9).all()
    assert given.classes.asnumpy().tolist() == given.random_classes.asnumpy().tolist() == [2, 2, 2]
    assert result.maps.shape == result.random_maps.shape == (3, 3, 12, 10)


def test_data_randomization_bad_inputs():
    net, x = small_net(), batch(2)
    with pytest.raises(ValueError, match="outputs differ"):
        R.data_randomization(net, small_net(classes=3), x, gradient)
    with pytest.raises(ValueError, match='explain must be a function'):
        R.data_randomization(net, net, x, None)
    with pytest.raises(ValueError, match='input channels'):
        R.data_randomization(net, net, batch(2, shape=(1, 12, 10)), gradient)


def test_random_map_is_seeded_uniform_noise_without_a_pass():
    net, x = small_net(), batch(3)

    def no_pass(*args):
        raise AssertionError('the network ran')
    net.forward = no_pass
    maps = R.random_map(net, x)
    assert maps.shape == (3, 12, 10) and maps.dtype == np.float32 and maps.context == x.context
    values = maps.asnumpy()
    assert values.min() >= 0 and values.max() < 1 and abs(values.mean() - 0.5) < 0.1
    np.testing.assert_array_equal(values, R.random_map(net, x, target=2).asnumpy())
    assert not np.array_equal(values, R.random_map(net, x, seed=1).asnumpy())
    del net.forward
    with parameters_untouched(net):
        floor = R.model_randomization(net, x, lambda n, images, t: R.random_map(n, images, t),
                                      layers=['small_dense1'])
    np.testing.assert_allclose(floor.spearman.asnumpy(), 1, atol=1e-6)  # noise that ignores the net: the same
