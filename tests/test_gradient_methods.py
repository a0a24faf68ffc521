"""The gradient family (gluoncam.gradients) against its definitions: finite differences, the explainer's own
backward modes, hand-applied modifiers, manually reproduced SmoothGrad noise and Integrated Gradients paths."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import gradients as G
from gluoncam import modifiers
from conftest import batch, parameters_untouched, small_net
from test_gradients import float64_twin, predict

CLASSES = [1, 3, 0]


def linear_net(classes=5, seed=0):
    """One Dense layer, no activation: S(x) = w_c . x + b_c, so every attribution is known in closed form."""
    mx.random.seed(seed)
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(classes, in_units=3 * 12 * 10))
    net.initialize(mx.init.Normal(0.5))
    net[0].bias.set_data(nd.random.normal(0, 1, shape=(classes,)))
    return net


def weights(net, classes):
    """Per sample, the linear network's weight row of its class, shaped like an image."""
    return net[0].weight.data().asnumpy()[classes].reshape((len(classes), 3, 12, 10))


def scores(net, x, classes):
    return net(nd.array(x)).asnumpy()[np.arange(len(classes)), classes]


def smoothgrad_by_hand(net, x, classes, noise_level, samples, seed, mode='normal'):
    """SmoothGrad written out: the noise the implementation draws (one local generator over all images' rows,
    image-major), sigma per image from its own range, one gradient() call per noisy sample for the clean
    image's class, averaged."""
    x = x.asnumpy()
    n = x.shape[0]
    noise = np.random.default_rng(seed).standard_normal((n * samples,) + x.shape[1:], dtype=np.float32)
    noise = noise.reshape((n, samples) + x.shape[1:])
    out = np.zeros_like(x)
    for i in range(n):
        sigma = np.float32(noise_level) * (x[i].max() - x[i].min())
        for k in range(samples):
            noisy = x[i:i + 1] + noise[i, k:k + 1] * sigma
            out[i] += G.gradient(net, nd.array(noisy), [classes[i]], mode).asnumpy()[0]
    return out / samples


# ----------------------------------------------------------------------------------------------------------
# gradient()


def test_gradient_matches_finite_differences_on_a_batch():
    net, x = small_net(), batch(3)
    grad = G.gradient(net, x, CLASSES).asnumpy()
    assert grad.shape == (3, 3, 12, 10)
    twin = float64_twin(net)
    x64 = x.asnumpy().astype(np.float64)
    score = lambda v: predict(twin, v)[np.arange(3), CLASSES]  # noqa: E731
    rng = np.random.RandomState(0)
    for _ in range(6):
        direction = rng.randn(*x64.shape)
        numeric = (score(x64 + 1e-4 * direction) - score(x64 - 1e-4 * direction)) / 2e-4  # per sample
        analytic = (grad * direction).reshape((3, -1)).sum(axis=1)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mode', ['normal', 'guided', 'deconv'])
def test_gradient_equals_explainer_backprop(mode):
    net, x = small_net(), batch(3)
    expected = gluoncam.Explainer(net).backprop(x, CLASSES, modes=(mode,)).input_gradients[mode].asnumpy()
    np.testing.assert_array_equal(G.gradient(net, x, CLASSES, mode).asnumpy(), expected)


def test_gradient_modes_differ():
    """guided and deconv are really different rules here, so the test above is not vacuous."""
    net, x = small_net(), batch(3)
    grads = {mode: G.gradient(net, x, CLASSES, mode).asnumpy() for mode in ('normal', 'guided', 'deconv')}
    assert not np.allclose(grads['normal'], grads['guided'])
    assert not np.allclose(grads['guided'], grads['deconv'])


# ----------------------------------------------------------------------------------------------------------
# saliency() and modifiers


HAND_MODIFIERS = {
    'absolute': np.abs,
    'relu': lambda g: np.maximum(g, 0),
    'negate': lambda g: -g,
    'invert': lambda g: 1 / (g + np.float32(1e-7)),
    'small_values': lambda g: np.abs(1 / (g + np.float32(1e-7))),
    None: lambda g: g,
}


@pytest.mark.parametrize('modifier', list(HAND_MODIFIERS), ids=str)
@pytest.mark.parametrize('mode', ['normal', 'guided'])
def test_saliency_is_max_over_channels_of_modified_gradient(modifier, mode):
    net, x = small_net(), batch(3)
    g = G.gradient(net, x, CLASSES, mode).asnumpy()
    got = G.saliency(net, x, CLASSES, mode, modifier=modifier).asnumpy()
    assert got.shape == (3, 12, 10)
    np.testing.assert_allclose(got, HAND_MODIFIERS[modifier](g).max(axis=1), rtol=1e-6, atol=1e-12)


def test_saliency_negate_is_max_of_minus_gradient_and_none_keeps_signs():
    net, x = small_net(), batch(3)
    g = G.gradient(net, x, CLASSES).asnumpy()
    np.testing.assert_array_equal(G.saliency(net, x, CLASSES, modifier='negate').asnumpy(), (-g).max(axis=1))
    np.testing.assert_array_equal(G.saliency(net, x, CLASSES, modifier='negate').asnumpy(), -g.min(axis=1))
    signed = G.saliency(net, x, CLASSES, modifier=None).asnumpy()
    np.testing.assert_array_equal(signed, g.max(axis=1))
    assert (signed < 0).any() and (signed > 0).any()
    assert (G.saliency(net, x, CLASSES).asnumpy() >= 0).all()  # the default: absolute


def test_saliency_unknown_modifier_lists_valid_ones():
    net, x = small_net(), batch(1)
    with pytest.raises(ValueError) as error:
        G.saliency(net, x, modifier='absolut')
    message = str(error.value)
    assert "'absolut'" in message
    for name in modifiers.MODIFIERS:
        assert name in message
    with pytest.raises(ValueError, match='absolute'):
        modifiers.apply('bogus', nd.ones((1, 3, 2, 2)))


def test_saliency_callable_modifier():
    net, x = small_net(), batch(3)
    g = G.gradient(net, x, CLASSES).asnumpy()
    got = G.saliency(net, x, CLASSES, modifier=lambda grad: grad ** 2 - grad).asnumpy()
    np.testing.assert_allclose(got, (g ** 2 - g).max(axis=1), rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# input_x_gradient()


def test_input_x_gradient_is_x_times_gradient():
    net, x = small_net(), batch(3)
    expected = x.asnumpy() * G.gradient(net, x, CLASSES).asnumpy()
    np.testing.assert_array_equal(G.input_x_gradient(net, x, CLASSES).asnumpy(), expected)
    # numpy input and one C x H x W image
    one = G.input_x_gradient(net, x.asnumpy()[1], [3]).asnumpy()
    np.testing.assert_allclose(one[0], expected[1], rtol=1e-5, atol=1e-8)


def test_input_x_gradient_of_linear_net_is_x_times_weights():
    net, x = linear_net(), batch(3)
    np.testing.assert_allclose(G.input_x_gradient(net, x, CLASSES).asnumpy(),
                               x.asnumpy() * weights(net, CLASSES), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# smoothgrad()


@pytest.mark.parametrize('mode', ['normal', 'guided'])
def test_smoothgrad_without_noise_is_the_gradient(mode):
    net, x = small_net(), batch(3)
    # up to the float32 rounding of a mean of identical values (~1e-8)
    np.testing.assert_allclose(G.smoothgrad(net, x, CLASSES, noise_level=0, samples=5, mode=mode).asnumpy(),
                               G.gradient(net, x, CLASSES, mode).asnumpy(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize('mode', ['normal', 'guided'])
def test_smoothgrad_equals_manual_noisy_average(mode):
    net, x = small_net(), batch(2)
    got = G.smoothgrad(net, x, [1, 3], noise_level=0.2, samples=6, mode=mode, seed=11).asnumpy()
    expected = smoothgrad_by_hand(net, x, [1, 3], 0.2, 6, 11, mode)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # it is not the plain gradient
    assert not np.allclose(got, G.gradient(net, x, [1, 3], mode).asnumpy(), rtol=1e-3)


def test_smoothgrad_seed_repeatable_and_seeds_differ():
    net, x = small_net(), batch(2)
    first = G.smoothgrad(net, x, samples=4, seed=5).asnumpy()
    np.testing.assert_array_equal(G.smoothgrad(net, x, samples=4, seed=5).asnumpy(), first)
    assert not np.allclose(G.smoothgrad(net, x, samples=4, seed=6).asnumpy(), first)


def test_smoothgrad_target_is_fixed_by_the_clean_image():
    """With noise this large the noisy copies' predictions change, yet every copy explains the clean class."""
    net, x = small_net(), batch(2)
    clean = net(x).asnumpy().argmax(axis=1)
    noisy = x.asnumpy()[0] + 2.0 * (x.asnumpy()[0].max() - x.asnumpy()[0].min()) * \
        np.random.default_rng(0).standard_normal((8, 3, 12, 10), dtype=np.float32)
    assert (net(nd.array(noisy)).asnumpy().argmax(axis=1) != clean[0]).any()
    got = G.smoothgrad(net, x, noise_level=2.0, samples=8, seed=0).asnumpy()
    np.testing.assert_array_equal(got, G.smoothgrad(net, x, list(clean), noise_level=2.0, samples=8,
                                                    seed=0).asnumpy())
    np.testing.assert_allclose(got, smoothgrad_by_hand(net, x, clean, 2.0, 8, 0), rtol=1e-5, atol=1e-7)


def test_smoothgrad_batch_size_invariant():
    net, x = small_net(), batch(2)
    results = [G.smoothgrad(net, x, [1, 3], samples=10, batch_size=size, seed=3).asnumpy() for size in (1, 3, 64)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-8)


def test_smoothgrad_batch_samples_equal_their_own_results():
    """The noise is drawn for the whole batch at once (image-major), so with one seed the first image gets the
    same noise alone and in the batch, and every image gets its own slice of the batch's noise."""
    net, x = small_net(), batch(3)
    together = G.smoothgrad(net, x, CLASSES, noise_level=0.1, samples=4, seed=2).asnumpy()
    alone = G.smoothgrad(net, x[0:1], CLASSES[:1], noise_level=0.1, samples=4, seed=2).asnumpy()
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-5, atol=1e-7)
    noise = np.random.default_rng(2).standard_normal((12, 3, 12, 10), dtype=np.float32)
    for i in range(3):
        xi = x.asnumpy()[i:i + 1]
        sigma = np.float32(0.1) * (xi.max() - xi.min())
        own = np.mean([G.gradient(net, nd.array(xi + noise[4 * i + k] * sigma), [CLASSES[i]]).asnumpy()[0]
                       for k in range(4)], axis=0)
        np.testing.assert_allclose(together[i], own, rtol=1e-5, atol=1e-7)
    # without noise the seed does not matter: each image equals its own result exactly as alone
    zero = G.smoothgrad(net, x, CLASSES, noise_level=0, samples=3).asnumpy()
    for i in range(3):
        np.testing.assert_allclose(zero[i], G.smoothgrad(net, x[i:i + 1], [CLASSES[i]], noise_level=0,
                                                         samples=3).asnumpy()[0], rtol=1e-5, atol=1e-8)


def test_smoothgrad_of_linear_net_is_the_weights():
    net, x = linear_net(), batch(2)
    np.testing.assert_allclose(G.smoothgrad(net, x, [2, 4], samples=5, seed=0).asnumpy(), weights(net, [2, 4]),
                               rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# integrated_gradients()


def test_integrated_gradients_completeness_improves_with_steps():
    net, x = small_net(), batch(4)
    out = net(x).asnumpy()
    classes = out.argmax(axis=1)
    gap = np.abs(out[np.arange(4), classes] - net(nd.zeros_like(x)).asnumpy()[np.arange(4), classes])
    coarse = np.abs(G.integrated_gradients(net, x, steps=16)[1].asnumpy())
    fine = np.abs(G.integrated_gradients(net, x, steps=256)[1].asnumpy())
    print(f"|S(x) - S(0)|: {gap}\n|delta| steps 16: {coarse}\n|delta| steps 256: {fine}")
    assert (fine < 0.02 * gap).all()
    assert (fine < coarse).all()
    assert fine.sum() < 0.2 * coarse.sum()


def test_integrated_gradients_is_midpoint_rule_and_delta_is_completeness_error():
    net, x = small_net(), batch(2)
    steps = 4
    attributions, delta = G.integrated_gradients(net, x, [1, 3], steps=steps)
    xs = x.asnumpy()
    grads = [G.gradient(net, nd.array(xs * ((k + 0.5) / steps)), [1, 3]).asnumpy() for k in range(steps)]
    expected = xs * np.mean(grads, axis=0)
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-5, atol=1e-7)
    gap = scores(net, xs, [1, 3]) - scores(net, np.zeros_like(xs), [1, 3])
    np.testing.assert_allclose(delta.asnumpy(), expected.reshape((2, -1)).sum(axis=1) - gap, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('steps', [1, 3, 50])
def test_integrated_gradients_of_linear_net_is_exact(steps):
    net, x = linear_net(), batch(3)
    baseline = batch(1, seed=7)[0] * 0.5
    for base in (None, baseline):
        attributions, delta = G.integrated_gradients(net, x, CLASSES, baseline=base, steps=steps)
        b = np.zeros((3, 3, 12, 10), np.float32) if base is None else np.broadcast_to(base.asnumpy(), (3, 3, 12, 10))
        np.testing.assert_allclose(attributions.asnumpy(), (x.asnumpy() - b) * weights(net, CLASSES),
                                   rtol=1e-5, atol=1e-6)
        assert np.abs(delta.asnumpy()).max() < 5e-5
        # the gap the delta is measured against really is there
        assert (np.abs(scores(net, x.asnumpy(), CLASSES) - scores(net, b, CLASSES)) > 0.1).all()


def test_integrated_gradients_linear_net_with_target_function():
    net, x = linear_net(), batch(2)
    attributions, delta = G.integrated_gradients(net, x, lambda out: 2 * out[:, 0] - out[:, 3], steps=2)
    w = net[0].weight.data().asnumpy()
    expected = x.asnumpy() * (2 * w[0] - w[3]).reshape((1, 3, 12, 10))
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(delta.asnumpy()).max() < 5e-5


def test_integrated_gradients_custom_baseline():
    net, x = small_net(), batch(2)
    base = np.full((3, 12, 10), -0.3, np.float32)  # one C x H x W baseline (numpy) for the whole batch
    attributions, delta = G.integrated_gradients(net, x, [1, 3], baseline=base, steps=64)
    gap = scores(net, x.asnumpy(), [1, 3]) - scores(net, np.broadcast_to(base, (2, 3, 12, 10)), [1, 3])
    np.testing.assert_allclose(delta.asnumpy(), attributions.asnumpy().reshape((2, -1)).sum(axis=1) - gap,
                               rtol=1e-4, atol=1e-6)
    assert (np.abs(gap) > 0.05).all()
    assert (np.abs(delta.asnumpy()) < 0.02 * np.abs(gap)).all()
    # a per-sample baseline batch and the zero baseline made explicit
    per_sample = nd.array(np.broadcast_to(base, (2, 3, 12, 10)).copy())
    again = G.integrated_gradients(net, x, [1, 3], baseline=per_sample, steps=64)
    np.testing.assert_allclose(again[0].asnumpy(), attributions.asnumpy(), rtol=1e-5, atol=1e-8)
    default = G.integrated_gradients(net, x, [1, 3], steps=8)[0].asnumpy()
    np.testing.assert_allclose(G.integrated_gradients(net, x, [1, 3], baseline=nd.zeros_like(x), steps=8)[0]
                               .asnumpy(), default, rtol=1e-6, atol=1e-9)
    # and it differs from the zero baseline's
    assert not np.allclose(G.integrated_gradients(net, x, [1, 3], baseline=base, steps=8)[0].asnumpy(), default)


def test_integrated_gradients_batch_size_invariant():
    net, x = small_net(), batch(2)
    results = [G.integrated_gradients(net, x, [1, 3], steps=10, batch_size=size) for size in (1, 3, 64)]
    for attributions, delta in results[1:]:
        np.testing.assert_allclose(attributions.asnumpy(), results[0][0].asnumpy(), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(delta.asnumpy(), results[0][1].asnumpy(), rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# batches


def test_every_function_per_sample_equals_single_image():
    net, x = small_net(), batch(3)
    checks = {
        'gradient': lambda v, t: G.gradient(net, v, t).asnumpy(),
        'guided': lambda v, t: G.gradient(net, v, t, 'guided').asnumpy(),
        'saliency': lambda v, t: G.saliency(net, v, t).asnumpy(),
        'saliency invert': lambda v, t: G.saliency(net, v, t, modifier='invert').asnumpy(),
        'input_x_gradient': lambda v, t: G.input_x_gradient(net, v, t).asnumpy(),
        'smoothgrad (no noise)': lambda v, t: G.smoothgrad(net, v, t, noise_level=0, samples=2).asnumpy(),
        'integrated_gradients': lambda v, t: G.integrated_gradients(net, v, t, steps=8)[0].asnumpy(),
        'integrated_gradients delta': lambda v, t: G.integrated_gradients(net, v, t, steps=8)[1].asnumpy(),
    }
    for target in (CLASSES, None):
        for name, fn in checks.items():
            together = fn(x, target)
            for i in range(3):
                alone = fn(x[i:i + 1], None if target is None else [target[i]])
                # 1 / g magnifies the float32 noise between batch sizes; delta is a difference of sums
                tol = dict(rtol=1e-4, atol=1e-6) if 'delta' in name or 'invert' in name else \
                    dict(rtol=1e-5, atol=1e-8)
                np.testing.assert_allclose(together[i], alone[0], err_msg=f"{name}, sample {i}", **tol)


# ----------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize('kwargs', [dict(samples=0), dict(batch_size=0), dict(noise_level=-0.1), dict(samples=-2)])
def test_smoothgrad_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        G.smoothgrad(small_net(), batch(1), **kwargs)


@pytest.mark.parametrize('kwargs', [dict(steps=0), dict(batch_size=0), dict(steps=-1)])
def test_integrated_gradients_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        G.integrated_gradients(small_net(), batch(1), **kwargs)


# ----------------------------------------------------------------------------------------------------------
# no side effects


def test_no_parameter_gradients_and_batchnorm_statistics_unchanged():
    net, x = small_net(), batch(2)
    with parameters_untouched(net) as params:  # running statistics included
        G.smoothgrad(net, x, samples=5, batch_size=3, seed=0)
        G.smoothgrad(net, x, samples=3, mode='guided', seed=1)
        G.integrated_gradients(net, x, steps=7, batch_size=4)
        G.integrated_gradients(net, x, baseline=batch(1, seed=3), steps=3)
        G.saliency(net, x, modifier='relu')
        G.input_x_gradient(net, x)
    assert any('running_mean' in name for name in params) and any('running_var' in name for name in params)


# ----------------------------------------------------------------------------------------------------------
# inputs that are not images


def test_smoothgrad_and_integrated_gradients_on_flat_inputs():
    mx.random.seed(0)
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(3, in_units=4))
    net.initialize(mx.init.Normal(1.0))
    x = nd.array(np.random.RandomState(0).randn(2, 4))
    w = net[0].weight.data().asnumpy()[[0, 1]]
    np.testing.assert_allclose(G.gradient(net, x, [0, 1]).asnumpy(), w, rtol=1e-6)  # works
    np.testing.assert_allclose(G.smoothgrad(net, x, [0, 1], samples=3, seed=0).asnumpy(), w, rtol=1e-5)
    attributions, delta = G.integrated_gradients(net, x, [0, 1], steps=4)
    np.testing.assert_allclose(attributions.asnumpy(), x.asnumpy() * w, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_gauss_legendre_rule():
    """captum's default: nodes (t_k + 1) / 2 and weights w_k / 2 of the Gauss-Legendre rule on [-1, 1]."""
    net, x = small_net(), batch(2)
    steps = 5
    attributions, delta = G.integrated_gradients(net, x, [1, 3], steps=steps, rule='gausslegendre')
    xs = x.asnumpy()
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    grads = [G.gradient(net, nd.array(xs * ((t + 1) / 2)), [1, 3]).asnumpy() for t in nodes]
    expected = xs * sum(w / 2 * g for w, g in zip(weights, grads))
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-5, atol=1e-7)
    gap = scores(net, xs, [1, 3]) - scores(net, np.zeros_like(xs), [1, 3])
    np.testing.assert_allclose(delta.asnumpy(), expected.reshape((2, -1)).sum(axis=1) - gap, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown rule 'simpson'; valid: midpoint, gausslegendre"):
        G.integrated_gradients(net, x, rule='simpson')


def test_saliency_per_channel_keeps_the_channels():
    net, x = small_net(), batch(3)
    g = G.gradient(net, x, CLASSES).asnumpy()
    got = G.saliency(net, x, CLASSES, per_channel=True).asnumpy()
    np.testing.assert_allclose(got, np.abs(g), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize('average, of', [('gradient', lambda g: g), ('square', np.square), ('absolute', np.abs)])
def test_smoothgrad_with_given_noise_averages_what_it_is_asked_to(average, of):
    """The caller's noise (one set for every image), and the mean of g, g^2 or |g| over the noisy copies."""
    net, x = small_net(), batch(2)
    noise = np.random.RandomState(4).randn(3, 3, 12, 10).astype(np.float32) * 0.5
    got = G.smoothgrad(net, x, [1, 3], samples=3, noise=noise, average=average).asnumpy()
    xs = x.asnumpy()
    expected = [np.mean([of(G.gradient(net, nd.array(xs[i:i + 1] + e[None]), [c]).asnumpy()[0]) for e in noise],
                        axis=0) for i, c in enumerate([1, 3])]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_smoothgrad_absolute_sigma_is_the_drawn_noise_times_stdev():
    net, x = small_net(), batch(2)
    drawn = np.random.default_rng(9).standard_normal((2 * 4, 3, 12, 10), dtype=np.float32)
    got = G.smoothgrad(net, x, [1, 3], samples=4, seed=9, stdev=0.3).asnumpy()
    expected = G.smoothgrad(net, x, [1, 3], samples=4, noise=drawn * np.float32(0.3)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"noise must have shape \(4, 3, 12, 10\) or \(8, 3, 12, 10\)"):
        G.smoothgrad(net, x, samples=4, noise=drawn[:3])
    with pytest.raises(ValueError, match="unknown average 'median'; valid: gradient, square, absolute"):
        G.smoothgrad(net, x, average='median')
