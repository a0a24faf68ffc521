"""Infidelity and max-sensitivity (gluoncam.metrics.robustness), the pointing game and the energy-based pointing
game (gluoncam.metrics.localization) against hand computations: linear models where the exact value is known,
perturbations redrawn from the documented generator, a two-unit ReLU net near its kink, maps and boxes with a
known answer."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import gradients as G
from gluoncam.metrics import localization as L
from gluoncam.metrics import robustness as R
from conftest import batch, parameters_untouched, small_net
from test_gradient_methods import linear_net


def saliency(net, rows, target):
    return G.saliency(net, rows, target)


def signed_gradient(net, rows, target):
    return G.gradient(net, rows, target)


def scores_of(net, x, classes):
    return net(nd.array(x)).asnumpy().astype(np.float64)[np.arange(len(classes)), classes]


# ----------------------------------------------------------------------------------------------------------
# infidelity


def test_infidelity_of_a_linear_models_gradient_is_zero_and_a_random_maps_is_not():
    net, x = linear_net(), batch(2)
    gradient = G.gradient(net, x)
    exact = R.infidelity(net, x, gradient, n_perturb_samples=8, stdev=0.1, seed=0).asnumpy()
    assert exact.shape == (2,) and (exact < 1e-8).all()
    noise = nd.array(np.random.RandomState(4).randn(*x.shape).astype(np.float32))
    assert (R.infidelity(net, x, noise, n_perturb_samples=8, stdev=0.1, seed=0).asnumpy() > 1e-3).all()


def infidelity_by_hand(net, x, phi, samples, stdev, seed, normalize=False):
    """The definition on the documented draws: one generator, standard normal rows image-major, times stdev."""
    x = x.asnumpy()
    n = x.shape[0]
    classes = net(nd.array(x)).asnumpy().argmax(axis=1)
    noise = np.random.default_rng(seed).standard_normal((n * samples,) + x.shape[1:]) * stdev
    noise = noise.astype(np.float32).reshape((n, samples) + x.shape[1:])
    out = np.zeros(n)
    for i in range(n):
        explained = np.array([(noise[i, k] * phi[i]).sum(dtype=np.float64) for k in range(samples)])
        drops = np.array([scores_of(net, x[i:i + 1], classes[i:i + 1])[0]
                          - scores_of(net, x[i:i + 1] - noise[i, k:k + 1], classes[i:i + 1])[0]
                          for k in range(samples)])
        if normalize:
            explained *= (explained * drops).sum() / np.square(explained).sum()
        out[i] = np.mean(np.square(explained - drops))
    return out


@pytest.mark.parametrize('normalize', [False, True])
def test_infidelity_by_hand_for_two_perturbations(normalize):
    net, x = small_net(), batch(3)
    phi = np.random.RandomState(5).randn(*x.shape).astype(np.float32)
    got = R.infidelity(net, x, phi, n_perturb_samples=2, stdev=0.1, seed=7, normalize=normalize).asnumpy()
    expected = infidelity_by_hand(net, x, phi, 2, 0.1, 7, normalize)
    assert (expected > 1e-6).all()
    np.testing.assert_allclose(got, expected, rtol=1e-3 if normalize else 1e-4)


def test_infidelity_of_a_cam_repeats_it_on_every_channel():
    """A constant 3 x 4 CAM becomes c on every pixel and channel: I . phi = c sum(I)."""
    net, x = small_net(), batch(2)
    cam = np.stack([np.full((3, 4), 0.5), np.full((3, 4), -2.0)]).astype(np.float32)
    full = np.broadcast_to(np.array([0.5, -2.0], np.float32).reshape((2, 1, 1, 1)), x.shape).copy()
    got = R.infidelity(net, x, cam, n_perturb_samples=3, stdev=0.05, seed=1).asnumpy()
    np.testing.assert_allclose(got, infidelity_by_hand(net, x, full, 3, 0.05, 1), rtol=1e-4)
    one_channel = R.infidelity(net, x, full[:, :1], n_perturb_samples=3, stdev=0.05, seed=1).asnumpy()
    np.testing.assert_allclose(one_channel, got, rtol=1e-6)


def test_infidelity_normalized_ignores_the_scale_of_the_maps():
    net, x = small_net(), batch(2)
    phi = G.saliency(net, x, per_channel=True)
    options = dict(n_perturb_samples=6, stdev=0.05, seed=2, normalize=True)
    once, thrice = (R.infidelity(net, x, m, **options).asnumpy() for m in (phi, 3 * phi))
    np.testing.assert_allclose(thrice, once, rtol=1e-4)
    assert not np.allclose(R.infidelity(net, x, 3 * phi, **dict(options, normalize=False)).asnumpy(), once,
                           rtol=1e-2)


def test_infidelity_of_an_all_zero_map_is_the_mean_squared_score_change():
    net, x = small_net(), batch(2)
    zero = np.zeros(x.shape, np.float32)
    got = R.infidelity(net, x, zero, n_perturb_samples=4, stdev=0.1, seed=3).asnumpy()
    np.testing.assert_allclose(got, infidelity_by_hand(net, x, zero, 4, 0.1, 3), rtol=1e-4)
    normalized = R.infidelity(net, x, zero, n_perturb_samples=4, stdev=0.1, seed=3, normalize=True).asnumpy()
    np.testing.assert_allclose(normalized, got, rtol=1e-6)
    assert np.isfinite(normalized).all()


def squares_by_hand(height, width, sides):
    return [(s, top, left) for s in sides for top in range(height - s + 1) for left in range(width - s + 1)]


def test_square_removal_by_hand_and_zero_for_a_linear_models_input_x_gradient():
    net, x = linear_net(), batch(2)
    baseline = 0.5
    exact = (x - baseline) * G.gradient(net, x)  # global attribution: f(x) - f(x') = w . (mask (x - b))
    options = dict(perturbation='square', n_perturb_samples=5, seed=11, baseline=baseline, square_sizes=(2, 3))
    assert (R.infidelity(net, x, exact, **options).asnumpy() < 1e-9).all()

    phi = np.random.RandomState(2).randn(*x.shape).astype(np.float32)
    got = R.infidelity(net, x, phi, **options).asnumpy()
    squares = squares_by_hand(12, 10, (2, 3))
    drawn = np.random.default_rng(11).integers(len(squares), size=10)
    xs, classes = x.asnumpy(), net(x).asnumpy().argmax(axis=1)
    expected = []
    for i in range(2):
        errors = []
        for k in range(5):
            side, top, left = squares[drawn[i * 5 + k]]
            mask = np.zeros(x.shape[1:], np.float32)
            mask[:, top:top + side, left:left + side] = 1
            removed = xs[i] * (1 - mask) + baseline * mask
            drop = scores_of(net, xs[i:i + 1], classes[i:i + 1]) - scores_of(net, removed[None], classes[i:i + 1])
            errors.append(((mask * phi[i]).sum() - drop[0]) ** 2)
        expected.append(np.mean(errors))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_infidelity_takes_a_perturbation_function():
    """A fixed perturbation of 0.05 everywhere: I . phi = 0.05 sum(phi)."""
    net, x = small_net(), batch(2)
    phi = np.random.RandomState(6).randn(*x.shape).astype(np.float32)

    def constant(rows, rng):
        change = nd.full(rows.shape, 0.05)
        return change, rows - change

    got = R.infidelity(net, x, phi, perturbation=constant, n_perturb_samples=2).asnumpy()
    xs, classes = x.asnumpy(), net(x).asnumpy().argmax(axis=1)
    drops = scores_of(net, xs, classes) - scores_of(net, xs - np.float32(0.05), classes)
    np.testing.assert_allclose(got, np.square(0.05 * phi.reshape((2, -1)).sum(axis=1) - drops), rtol=1e-4)


def test_infidelity_does_not_depend_on_batch_size_and_repeats_with_a_seed():
    net, x = small_net(), batch(3)
    phi = G.saliency(net, x)
    for perturbation in ('gaussian', 'square'):
        runs = [R.infidelity(net, x, phi, batch_size=size, n_perturb_samples=4, stdev=0.1, seed=9,
                             perturbation=perturbation).asnumpy() for size in (1, 5, 32)]
        for run in runs[1:]:
            np.testing.assert_allclose(run, runs[0], rtol=1e-5)
        again = R.infidelity(net, x, phi, batch_size=5, n_perturb_samples=4, stdev=0.1, seed=9,
                             perturbation=perturbation).asnumpy()
        np.testing.assert_array_equal(again, runs[1])
        other = R.infidelity(net, x, phi, n_perturb_samples=4, stdev=0.1, seed=10, perturbation=perturbation)
        assert not np.allclose(other.asnumpy(), runs[0])


def test_infidelity_leaves_the_network_unchanged():
    net, x = small_net(), batch(2)
    phi = G.saliency(net, x)
    with parameters_untouched(net):
        R.infidelity(net, x, phi, n_perturb_samples=3, seed=0)


@pytest.mark.parametrize('maps, options, message', [
    (np.zeros((2, 3, 12, 9)), {}, 'maps must be'),
    (np.zeros((3, 3, 12, 10)), {}, 'image'),
    (np.zeros((2, 2, 12, 10)), {}, 'maps must be'),
    (np.full((2, 3, 4), np.nan), {}, 'NaN'),
    (np.zeros((2, 3, 4)), {'perturbation': 'uniform'}, 'unknown perturbation'),
    (np.zeros((2, 3, 4)), {'n_perturb_samples': 0}, 'n_perturb_samples'),
    (np.zeros((2, 3, 4)), {'batch_size': 0}, 'batch_size'),
    (np.zeros((2, 3, 4)), {'stdev': -1.0}, 'stdev'),
    (np.zeros((2, 3, 4)), {'perturbation': 'square', 'square_sizes': (11,)}, 'square_sizes'),
    (np.zeros((2, 3, 4)), {'perturbation': 'square', 'square_sizes': ()}, 'square_sizes'),
    (np.zeros((2, 3, 4)), {'perturbation': 'square', 'baseline': np.zeros(5)}, 'baseline'),
    (np.zeros((2, 3, 4)), {'score': 'probabilities'}, 'unknown score'),
    (np.zeros((2, 3, 4)), {'perturbation': lambda rows, rng: rows}, 'pair'),
])
def test_infidelity_rejects_bad_input(maps, options, message):
    net, x = small_net(), batch(2)
    with pytest.raises(ValueError, match=message):
        R.infidelity(net, x, maps, **options)


# ----------------------------------------------------------------------------------------------------------
# max-sensitivity


def test_max_sensitivity_of_a_linear_models_gradient_is_zero():
    net, x = linear_net(), batch(2)
    got = R.max_sensitivity(net, x, explain=signed_gradient, radius=0.5, seed=0).asnumpy()
    np.testing.assert_array_equal(got, [0, 0])


def kinked_net():
    """Two inputs, two ReLU units, two classes: h = relu(W1 x), S_0 = h_0 + 2 h_1. At x = (0.01, 0.3) unit 0 sits
    0.01 above its kink: dS_0/dx = (1 [x_0 > 0] + 1, 2)."""
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(2, in_units=2, activation='relu'), gluoncam.Dense(2, in_units=2))
    net.initialize()
    net[0].weight.set_data(nd.array([[1, 0], [0.5, 1]]))
    net[0].bias.set_data(nd.zeros(2))
    net[1].weight.set_data(nd.array([[1, 2], [-1, 1]]))
    net[1].bias.set_data(nd.zeros(2))
    return net


def test_max_sensitivity_near_a_relu_kink_by_hand():
    net = kinked_net()
    x = np.array([[0.01, 0.3], [2.0, 0.3]], np.float32)  # the second is far from any kink
    radius, samples, seed = 0.02, 10, 1
    got = R.max_sensitivity(net, x, explain=signed_gradient, radius=radius, n_perturb_samples=samples,
                            seed=seed).asnumpy()
    noise = np.random.default_rng(seed).uniform(-radius, radius, size=(2 * samples, 2)).astype(np.float32)
    first = x[0, 0] + noise[:samples, 0]
    ratios = np.where(first > 0, 0.0, 1 / np.sqrt(8))  # |(2, 2) - (1, 2)| / |(2, 2)|
    assert ratios.max() > 0  # the draws cross the kink
    np.testing.assert_allclose(got, [ratios.max(), 0.0], rtol=1e-6)


def test_max_sensitivity_by_hand_with_another_norm_and_no_division_by_a_zero_map():
    """With the L1 norm: |(2, 2) - (1, 2)|_1 / |(2, 2)|_1 = 1/4 (the same draws as above cross the kink). An
    explanation that is zero at the clean input is not divided: the largest perturbed norm, |(2, 2)| = sqrt(8)."""
    net = kinked_net()
    x = np.array([[0.01, 0.3]], np.float32)
    got = R.max_sensitivity(net, x, explain=signed_gradient, norm=1, n_perturb_samples=10, seed=1).asnumpy()
    np.testing.assert_allclose(got, [0.25], rtol=1e-6)

    def zero_at_clean(net, rows, target):
        gradient = G.gradient(net, rows, target)
        return gradient * (nd.abs(rows - nd.array(x)).sum(axis=1, keepdims=True) > 0)

    zero = R.max_sensitivity(net, x, explain=zero_at_clean, n_perturb_samples=4, seed=1).asnumpy()
    np.testing.assert_allclose(zero, [np.sqrt(8)], rtol=1e-6)


def test_max_sensitivity_with_given_maps_equals_computed_and_is_batch_size_invariant():
    net, x = small_net(), batch(3)
    options = dict(explain=saliency, n_perturb_samples=5, radius=0.1, seed=3)
    computed = R.max_sensitivity(net, x, **options).asnumpy()
    assert (computed > 0).all()
    given = R.max_sensitivity(net, x, G.saliency(net, x), **options).asnumpy()
    np.testing.assert_allclose(given, computed, rtol=1e-5)
    for size in (1, 4):
        np.testing.assert_allclose(R.max_sensitivity(net, x, batch_size=size, **options).asnumpy(), computed,
                                   rtol=1e-5)
    np.testing.assert_array_equal(R.max_sensitivity(net, x, **options).asnumpy(), computed)
    assert not np.allclose(R.max_sensitivity(net, x, **dict(options, seed=4)).asnumpy(), computed)


def test_max_sensitivity_passes_the_clean_images_classes_and_leaves_the_network_unchanged():
    net, x = small_net(), batch(2)
    seen = []

    def recording(net, rows, target):
        seen.append(np.asarray(target).tolist())
        return G.saliency(net, rows, target)

    with parameters_untouched(net):
        R.max_sensitivity(net, x, target=[4, 1], explain=recording, n_perturb_samples=3, batch_size=4, seed=0)
    assert seen == [[4, 1], [4, 4, 4, 1], [1, 1]]


@pytest.mark.parametrize('options, message', [
    ({'explain': 'saliency'}, 'explain must be'),
    ({'radius': -0.1}, 'radius'),
    ({'norm': 'nuc'}, 'unknown norm'),
    ({'norm': 0.5}, 'norm must be'),
    ({'n_perturb_samples': 1.5}, 'n_perturb_samples'),
    ({'maps': np.zeros((3, 12, 10))}, 'image'),
    ({'maps': np.zeros((2, 6, 5))}, 'same explain'),
    ({'explain': lambda net, rows, target: nd.zeros((1, 2))}, 'one map per row'),
])
def test_max_sensitivity_rejects_bad_input(options, message):
    net, x = small_net(), batch(2)
    options = dict({'explain': saliency, 'n_perturb_samples': 2}, **options)
    with pytest.raises(ValueError, match=message):
        R.max_sensitivity(net, x, **options)


# ----------------------------------------------------------------------------------------------------------
# pointing game


def images(n=2, size=40):
    return nd.zeros((n, 3, size, size))


def peak_maps(points, size=40):
    """N x H x W maps with their maximum at the (x, y) points."""
    maps = np.random.RandomState(0).uniform(0, 0.5, (len(points), size, size)).astype(np.float32)
    for k, (column, row) in enumerate(points):
        maps[k, row, column] = 1
    return maps


def test_pointing_game_hits_and_misses_by_hand_with_the_tolerance():
    net = small_net()
    maps = peak_maps([(20, 20), (20, 20), (20, 20), (20, 20)])
    boxes = [(18, 18, 25, 25),  # on the object
             [(35, 35, 40, 40), (34, 20, 40, 30)],  # nearest object pixel (34, 20): 14 pixels away
             (35, 20, 40, 30),  # 15 pixels away: a miss (TorchRay's strict rule)
             (30, 30, 40, 40)]  # (30, 30) is sqrt(200) ~ 14.1 pixels away
    result = L.pointing_game(net, images(4), maps, boxes=boxes)
    np.testing.assert_array_equal(result.hits.asnumpy(), [1, 1, 0, 1])
    np.testing.assert_array_equal(result.points.asnumpy(), [[20, 20]] * 4)
    assert result.accuracy == pytest.approx(0.75)
    strict = L.pointing_game(net, images(4), maps, boxes=boxes, tolerance=0)
    np.testing.assert_array_equal(strict.hits.asnumpy(), [1, 0, 0, 0])
    wider = L.pointing_game(net, images(4), maps, boxes=boxes, tolerance=16)
    np.testing.assert_array_equal(wider.hits.asnumpy(), [1, 1, 1, 1])


def test_pointing_game_box_edges_and_masks():
    """Box (x1, y1, x2, y2) covers columns x1..x2-1 and rows y1..y2-1."""
    net = small_net()
    maps = peak_maps([(24, 10), (25, 10)])
    boxes = [(20, 5, 25, 15), (20, 5, 25, 15)]
    np.testing.assert_array_equal(L.pointing_game(net, images(), maps, boxes=boxes, tolerance=0).hits.asnumpy(),
                                  [1, 0])
    masks = np.zeros((2, 40, 40), bool)
    masks[:, 5:15, 20:25] = True
    by_mask = L.pointing_game(net, images(), nd.array(maps), masks=masks, tolerance=0)
    np.testing.assert_array_equal(by_mask.hits.asnumpy(), [1, 0])
    shared = L.pointing_game(net, images(), maps, masks=masks[0].astype(np.float32), tolerance=1.5)
    np.testing.assert_array_equal(shared.hits.asnumpy(), [1, 1])


def test_pointing_game_sums_channels_upsamples_cams_and_breaks_ties_row_major():
    net = small_net()
    maps = np.zeros((1, 3, 40, 40), np.float32)
    maps[0, 0, 3, 3] = 5  # the largest single value, cancelled by another channel
    maps[0, 1, 3, 3] = -5
    maps[0, 0, 30, 8] = maps[0, 1, 30, 8] = 2
    result = L.pointing_game(net, images(1), maps, boxes=[(8, 30, 9, 31)], tolerance=0)
    np.testing.assert_array_equal(result.points.asnumpy(), [[8, 30]])
    assert result.hits.asnumpy()[0] == 1

    cam = np.zeros((1, 4, 4), np.float32)
    cam[0, 3, 0] = 1  # the bottom-left cell: pixels rows 30..39, columns 0..9 at 40 x 40
    point = L.pointing_game(net, images(1), cam, boxes=[(0, 30, 10, 40)], tolerance=0)
    column, row = point.points.asnumpy()[0]
    assert 0 <= column < 10 and 30 <= row < 40 and point.hits.asnumpy()[0] == 1

    constant = L.pointing_game(net, images(2), np.ones((2, 5, 5)), boxes=[(0, 0, 2, 2), (20, 20, 30, 30)])
    np.testing.assert_array_equal(constant.points.asnumpy(), [[0, 0], [0, 0]])
    np.testing.assert_array_equal(constant.hits.asnumpy(), [1, 0])


# ----------------------------------------------------------------------------------------------------------
# energy-based pointing game


def test_energy_pointing_game_by_hand():
    net = small_net()
    maps = np.zeros((3, 40, 40), np.float32)
    maps[0, 10, 10], maps[0, 30, 30], maps[0, 12, 12] = 3, 1, -4  # the negative value is dropped
    maps[1] = 2.0  # constant: the union's share of the area
    maps[2] = -1.0  # no positive energy: scored as a uniform map
    boxes = [[(5, 5, 15, 15), (8, 8, 20, 20)],  # overlapping: counted once
             [(0, 0, 10, 10), (5, 0, 15, 10)],  # union 15 x 10 = 150 pixels
             (0, 0, 40, 4)]
    got = L.energy_pointing_game(net, images(3), maps, boxes=boxes).asnumpy()
    np.testing.assert_allclose(got, [3 / 4, 150 / 1600, 160 / 1600], rtol=1e-6)
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 30, 30] = masks[1, :10, :15] = masks[2, :4] = True
    np.testing.assert_allclose(L.energy_pointing_game(net, images(3), maps, masks=masks).asnumpy(),
                               [1 / 4, 150 / 1600, 160 / 1600], rtol=1e-6)


def test_localization_metrics_do_not_depend_on_batch_size():
    net = small_net()
    maps = np.random.RandomState(3).randn(3, 5, 5).astype(np.float32)
    boxes = [(0, 0, 20, 20), (10, 10, 40, 40), (5, 25, 15, 40)]
    together = L.energy_pointing_game(net, images(3), maps, boxes=boxes).asnumpy()
    hits = L.pointing_game(net, images(3), maps, boxes=boxes).hits.asnumpy()
    for k in range(3):
        one = slice(k, k + 1)
        np.testing.assert_allclose(L.energy_pointing_game(net, images(1), maps[one], boxes=boxes[one]).asnumpy(),
                                   together[one], rtol=1e-6)
        assert L.pointing_game(net, images(1), maps[one], boxes=boxes[one]).hits.asnumpy()[0] == hits[k]


@pytest.mark.parametrize('objects, options, message', [
    ({'boxes': [(0, 0, 41, 10), (0, 0, 5, 5)]}, {}, 'not inside'),
    ({'boxes': [(-1, 0, 10, 10), (0, 0, 5, 5)]}, {}, 'not inside'),
    ({'boxes': [(10, 0, 10, 10), (0, 0, 5, 5)]}, {}, 'not inside'),
    ({'boxes': [(0.6, 0, 1.4, 1), (0, 0, 5, 5)]}, {}, 'covers no pixel'),
    ({'boxes': [(0, 0, 5, 5)]}, {}, 'boxes for 1'),
    ({'boxes': [(0, 0, 5), (0, 0, 5, 5)]}, {}, 'k x 4'),
    ({'boxes': [np.zeros((0, 4)), (0, 0, 5, 5)]}, {}, 'k x 4'),
    ({'masks': np.zeros((2, 40, 40))}, {}, 'covers no pixel'),
    ({'masks': np.ones((2, 40, 39))}, {}, 'masks has shape'),
    ({'masks': np.ones((40, 40)), 'boxes': [(0, 0, 5, 5)] * 2}, {}, 'one of the two'),
    ({}, {}, 'one of the two'),
    ({'boxes': [(0, 0, 5, 5)] * 2}, {'tolerance': -1}, 'tolerance'),
])
def test_localization_rejects_bad_input(objects, options, message):
    net, maps = small_net(), np.ones((2, 5, 5))
    with pytest.raises(ValueError, match=message):
        L.pointing_game(net, images(), maps, **objects, **options)
    if not options:
        with pytest.raises(ValueError, match=message):
            L.energy_pointing_game(net, images(), maps, **objects)


@pytest.mark.parametrize('maps, message', [
    (np.ones((2, 3, 40, 41)), 'maps must be'),
    (np.ones((3, 5, 5)), 'image'),
    (np.ones((2, 5)), 'maps must be'),
    (np.full((2, 5, 5), np.inf), 'NaN or infinite'),
])
def test_localization_rejects_maps_that_do_not_fit(maps, message):
    with pytest.raises(ValueError, match=message):
        L.energy_pointing_game(small_net(), images(), maps, boxes=[(0, 0, 5, 5)] * 2)


def test_kinked_net_is_what_its_docstring_says():
    net = kinked_net()
    gradient = G.gradient(net, np.array([[0.01, 0.3], [-0.01, 0.3]], np.float32), [0, 0]).asnumpy()
    np.testing.assert_allclose(gradient, [[2, 2], [1, 2]])
    assert mx.nd.argmax(net(nd.array([[0.01, 0.3]])), axis=1).asscalar() == 0
