"""Deep Feature Factorization (gluoncam.dff): the factorization against the activations it factorizes, the
concepts' classes against the classifier, determinism, bad input, and the rendering."""
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import dff as D
from conftest import batch, parameters_untouched, small_net

CLASSES = 7


def gap_net(seed=0):
    """Convolutions with ReLUs, global average pooling and a Dense classifier taking the last 8 channels."""
    mx.random.seed(seed)
    net = stock.HybridSequential(prefix='gap_')
    with net.name_scope():
        net.add(gluoncam.Conv2D(6, 3, padding=1, activation='relu'), stock.MaxPool2D(2),
                gluoncam.Conv2D(8, 3, padding=1, activation='relu'), stock.GlobalAvgPool2D(),
                gluoncam.Dense(CLASSES))
    net.initialize(mx.init.Xavier(magnitude=2))
    net(nd.zeros((1, 3, 12, 10)))
    return net


def activations(net, x, stop):
    out = x
    for block in list(net._children.values())[:stop]:
        out = block(out)
    return out.asnumpy()


def factorized(net, x, layer, k, **options):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # scikit-learn's ConvergenceWarning where max_iter is small
        return D.dff(net, x, layer, n_components=k, **options)


def reconstruction(result):
    """sum_k maps[n, k] * concepts[k], N x C x h x w."""
    return np.einsum('nkhw,kc->nchw', result.maps.asnumpy(), result.concepts.asnumpy())


def test_maps_times_concepts_reconstruct_the_activations():
    net, x = gap_net(), batch(3)
    activation = activations(net, x, 3)
    for k in (2, 5):
        result = factorized(net, x, net[2], k, max_iter=500)
        assert result.concepts.shape == (k, 8) and result.maps.shape == (3, k, 6, 5)
        assert result.concepts.min().asscalar() >= 0 and result.maps.min().asscalar() >= 0
        residual = np.linalg.norm(activation - reconstruction(result))
        np.testing.assert_allclose(residual, result.error, rtol=1e-3)
        np.testing.assert_allclose(result.relative_error, result.error / np.linalg.norm(activation), rtol=1e-5)
    assert result.relative_error < 0.5


def test_reconstruction_error_falls_as_k_grows():
    net, x = gap_net(), batch(3)
    errors = [factorized(net, x, net[2], k, max_iter=1000).error for k in (1, 2, 4, 8)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.05 * errors[0]  # K = C: (nearly) exact


def test_concept_classes_are_the_classifier_on_the_concepts():
    net, x = gap_net(), batch(2)
    result = factorized(net, x, net[2], 4, top_k=3)  # default classifier: the last Dense layer (8 inputs)
    outputs = net[4](result.concepts).asnumpy()
    np.testing.assert_allclose(result.outputs.asnumpy(), outputs, rtol=1e-6)
    probabilities = np.exp(outputs) / np.exp(outputs).sum(axis=1, keepdims=True)
    expected = np.argsort(-probabilities, axis=1)[:, :3]
    np.testing.assert_array_equal(result.classes.asnumpy(), expected)
    np.testing.assert_allclose(result.scores.asnumpy(), np.take_along_axis(probabilities, expected, axis=1),
                               rtol=1e-5)
    assert result.labels()[0] == ', '.join(f"{c}: {p:.2f}" for c, p in zip(expected[0],
                                                                          probabilities[0][expected[0]]))
    names = [f"class{c}" for c in range(CLASSES)]
    assert result.labels(names)[1].startswith(f"class{expected[1][0]}: ")


def test_a_given_classifier_and_none():
    net, x = gap_net(), batch(2)
    result = factorized(net, x, net[2], 3, classifier=lambda concepts: concepts[:, :4] * 2, top_k=1)
    np.testing.assert_allclose(result.outputs.asnumpy(), result.concepts.asnumpy()[:, :4] * 2, rtol=1e-6)
    np.testing.assert_array_equal(result.classes.asnumpy()[:, 0], result.concepts.asnumpy()[:, :4].argmax(axis=1))
    for options in (dict(classifier=False), dict()):
        layer = net[2] if options else net[0]  # the first layer has 6 channels: the Dense layer takes 8
        plain = factorized(net, x, layer, 3, **options)
        assert plain.classes is None and plain.outputs is None and plain.scores is None
        assert plain.labels() == ['concept 0', 'concept 1', 'concept 2']
    with pytest.raises(ValueError, match='the classifier must map the K x C concepts'):
        factorized(net, x, net[2], 3, classifier=lambda concepts: concepts[0])


def test_determinism_with_a_seed():
    net, x = gap_net(), batch(2)
    first, again = (factorized(net, x, net[2], 3, seed=1) for _ in range(2))
    np.testing.assert_array_equal(first.concepts.asnumpy(), again.concepts.asnumpy())
    np.testing.assert_array_equal(first.maps.asnumpy(), again.maps.asnumpy())
    other = factorized(net, x, net[2], 3, seed=2)
    assert not np.allclose(first.concepts.asnumpy(), other.concepts.asnumpy())


def test_negative_activations():
    net, x = small_net(), batch(2)  # net[1] is a BatchNorm: negative values
    with pytest.raises(ValueError, match="negative activations .* choose a layer after a ReLU, or pass "
                                         "negative='clip'"):
        D.dff(net, x, net[1], n_components=2)
    activation = activations(net, x, 2)
    clipped = factorized(net, x, net[1], 6, negative='clip', max_iter=1000)
    assert np.linalg.norm(np.maximum(activation, 0) - reconstruction(clipped)) < 0.05 * np.linalg.norm(activation)
    shifted = factorized(net, x, net[1], 6, negative='shift', max_iter=1000)
    offset = activation.min(axis=(0, 2, 3))
    np.testing.assert_allclose(shifted.offset.asnumpy(), offset, rtol=1e-6)
    rebuilt = np.einsum('nkhw,kc->nchw', shifted.maps.asnumpy(), shifted.concepts.asnumpy() - offset) + \
        offset[None, :, None, None]
    assert np.linalg.norm(activation - rebuilt) < 0.05 * np.linalg.norm(activation)


def test_bad_inputs():
    net, x = gap_net(), batch(1)
    for k in (0, 9, -1):
        with pytest.raises(ValueError, match='n_components must be'):
            D.dff(net, x, net[2], n_components=k)
    with pytest.raises(ValueError, match=r"4-D \(N, C, h, w\) output; .* gives \(1, 7\)"):
        D.dff(net, x, net[4], n_components=2)
    with pytest.raises(ValueError, match="unknown negative 'abs'; valid: raise, clip, shift"):
        D.dff(net, x, net[2], negative='abs')
    with pytest.raises(ValueError, match='top_k and max_iter must be at least 1'):
        D.dff(net, x, net[2], top_k=0)


def test_network_untouched():
    net, x = gap_net(), batch(2)
    with parameters_untouched(net):
        factorized(net, x, net[2], 3)


@pytest.mark.parametrize('size', [(12, 10), (120, 100), (301, 257)])
def test_rendering_has_the_image_size(size):
    net, x = gap_net(), batch(2)
    result = factorized(net, x, net[2], 3)
    image = np.random.RandomState(0).randint(0, 256, size + (3,)).astype(np.uint8)
    picture = D.show_factorization(image, result, index=1)
    assert picture.shape == size + (3,) and picture.dtype == np.uint8
    plain = D.show_factorization(image, result, index=1, legend=False)
    assert not np.array_equal(picture, plain)  # the legend is drawn
    np.testing.assert_array_equal(D.show_factorization(image, result, image_weight=1, legend=False), image)


def test_rendering_colours_each_pixel_by_its_strongest_concept():
    net, x = gap_net(), batch(2)
    result = factorized(net, x, net[2], 3)
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    picture = D.show_factorization(np.zeros((6, 5, 3)), result, index=0, image_weight=0, legend=False,
                                   colors=colors)
    maps = result.maps.asnumpy()[0]  # at the layer's resolution: no resize
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    strength = (maps - low) / np.where(high > low, high - low, 1)
    strongest = strength.argmax(axis=0)
    expected = np.round(colors[strongest] * strength.max(axis=0)[..., None] * 255)
    np.testing.assert_allclose(picture, expected, atol=1)
    assert len(np.unique(strongest)) > 1
    with pytest.raises(ValueError, match='image must be H x W x 3 RGB'):
        D.show_factorization(np.zeros((6, 5)), result)
    with pytest.raises(ValueError, match='index 2 out of range for a batch of 2'):
        D.show_factorization(np.zeros((6, 5, 3)), result, index=2)
