"""The noise tunnel (gradients.noise_tunnel) over any attribution method: SmoothGrad reproduced, the aggregates
computed by hand from per-sample maps, targets fixed by the clean images, batch-size invariance."""
import numpy as np
import pytest
from mxnet import nd

from gluoncam import gradients as G
from gluoncam import layer_attribution as L
from conftest import batch, parameters_untouched, small_net

CLASSES = [1, 3]


def given_noise(samples, seed=4, scale=0.5):
    return np.random.RandomState(seed).randn(samples, 3, 12, 10).astype(np.float32) * scale


def per_sample_maps(method, net, x, classes, noise, **options):
    """method on each image plus each noise sample, one call each, for the image's class: n x samples x map."""
    xs = x.asnumpy()
    out = []
    for i, c in enumerate(classes):
        maps = []
        for e in noise:
            result = method(net, nd.array(xs[i:i + 1] + e[None]), target=[c], **options)
            maps.append((result[0] if isinstance(result, tuple) else result).asnumpy()[0])
        out.append(maps)
    return np.array(out)


@pytest.mark.parametrize('options', [dict(seed=3), dict(seed=5, stdev=0.4), dict(noise=given_noise(4))])
def test_smoothgrad_of_the_gradient_is_smoothgrad(options):
    net, x = small_net(), batch(2)
    got = G.noise_tunnel(G.gradient, net, x, CLASSES, samples=4, batch_size=3, **options).asnumpy()
    expected = G.smoothgrad(net, x, CLASSES, samples=4, **options).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)
    assert np.abs(expected).max() > 1e-3
    squared = G.noise_tunnel(G.gradient, net, x, CLASSES, kind='smoothgrad_sq', samples=4, **options).asnumpy()
    np.testing.assert_allclose(squared, G.smoothgrad(net, x, CLASSES, samples=4, average='square', **options)
                               .asnumpy(), rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize('kind, aggregate', [('smoothgrad', lambda m: m.mean(axis=1)),
                                             ('smoothgrad_sq', lambda m: np.square(m).mean(axis=1)),
                                             ('vargrad', lambda m: m.var(axis=1))])
def test_aggregates_of_per_sample_maps(kind, aggregate):
    net, x, noise = small_net(), batch(2), given_noise(5)
    maps = per_sample_maps(G.saliency, net, x, CLASSES, noise)
    got = G.noise_tunnel(G.saliency, net, x, CLASSES, kind=kind, samples=5, noise=noise, batch_size=4).asnumpy()
    assert got.shape == (2, 12, 10)
    np.testing.assert_allclose(got, aggregate(maps), rtol=1e-4, atol=1e-9)


def test_vargrad_of_integrated_gradients_drops_the_delta():
    net, x, noise = small_net(), batch(2), given_noise(3)
    maps = per_sample_maps(G.integrated_gradients, net, x, CLASSES, noise, steps=4)
    got = G.noise_tunnel(G.integrated_gradients, net, x, CLASSES, kind='vargrad', samples=3, noise=noise, steps=4)
    np.testing.assert_allclose(got.asnumpy(), maps.var(axis=1), rtol=1e-4, atol=1e-10)
    assert maps.var(axis=1).max() > 1e-6


def test_a_layer_method_with_its_options():
    net, x, noise = small_net(), batch(2), given_noise(3)
    maps = per_sample_maps(L.layer_gradient_x_activation, net, x, CLASSES, noise, layer=net[4])
    got = G.noise_tunnel(L.layer_gradient_x_activation, net, x, CLASSES, samples=3, noise=noise, layer=net[4])
    assert got.shape == (2, 8, 6, 5)
    np.testing.assert_allclose(got.asnumpy(), maps.mean(axis=1), rtol=1e-4, atol=1e-8)


def test_batch_size_invariant():
    net, x = small_net(), batch(3)
    results = [G.noise_tunnel(G.input_x_gradient, net, x, kind='vargrad', samples=5, seed=2, batch_size=size)
               .asnumpy() for size in (1, 4, 100)]
    for got in results[1:]:
        np.testing.assert_allclose(got, results[0], rtol=1e-4, atol=1e-10)


def test_targets_fixed_by_the_clean_images():
    """The method sees each noisy row with the clean image's class (the predicted one by default), or the
    target function as it is, and batch_size rows at a time."""
    net, x = small_net(), batch(3)
    seen = []

    def recording(net, rows, target=None, score='logits'):
        seen.append((rows.shape[0], target))
        return nd.zeros((rows.shape[0], 2))

    G.noise_tunnel(recording, net, x, samples=4, noise_level=5.0, seed=0, batch_size=5)
    predicted = net(x).asnumpy().argmax(axis=1)
    assert [size for size, _ in seen] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate([t for _, t in seen]), np.repeat(predicted, 4))
    seen.clear()
    G.noise_tunnel(recording, net, x, [4, 0, 2], samples=2, seed=0)
    np.testing.assert_array_equal(seen[0][1], [4, 4, 0, 0, 2, 2])
    seen.clear()

    def score_function(out):
        return out[:, 0]
    G.noise_tunnel(recording, net, x, score_function, samples=2, seed=0)
    assert seen[0][1] is score_function


def test_network_untouched():
    net, x = small_net(), batch(2)
    with parameters_untouched(net):
        G.noise_tunnel(G.gradient, net, x, samples=3, seed=0, mode='guided')
        G.noise_tunnel(G.integrated_gradients, net, x, kind='vargrad', samples=2, seed=0, steps=3)


def test_bad_arguments():
    net, x = small_net(), batch(1)
    with pytest.raises(ValueError, match="unknown kind 'median'; valid: smoothgrad, smoothgrad_sq, vargrad"):
        G.noise_tunnel(G.gradient, net, x, kind='median')
    for options in (dict(samples=0), dict(batch_size=0), dict(noise_level=-1), dict(stdev=-0.1)):
        with pytest.raises(ValueError, match='samples and batch_size must be at least 1'):
            G.noise_tunnel(G.gradient, net, x, **options)
    with pytest.raises(ValueError, match='method must be a function'):
        G.noise_tunnel('saliency', net, x)
