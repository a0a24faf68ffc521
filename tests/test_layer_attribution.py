"""Layer attributions (gluoncam.layer_attribution) against their definitions: closed forms where the network is
linear after the layer, gradients taken by hand on the network's tail, completeness, batch-size invariance."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd
from mxnet.gluon import HybridBlock

import gluoncam
from gluoncam import layer_attribution as L
from conftest import batch, parameters_untouched, small_net

CLASSES = [1, 3]


def tail_weights(net, classes):
    """The last Dense layer's weight rows for the classes: the gradient of the logits at the output of net[6]
    (Dropout is off in inference)."""
    return net[8].weight.data().asnumpy()[classes]


def layer_output(net, x, stop):
    """The output of net[stop - 1], computed block by block in inference."""
    out = x
    for block in list(net._children.values())[:stop]:
        out = block(out)
    return out.asnumpy()


def tail_gradient(net, activation, classes):
    """The gradient of the classes' logits at the output of net[4], by autograd on the network's tail."""
    point = nd.array(activation)
    point.attach_grad()
    with autograd.record(train_mode=False):
        picked = nd.pick(net[8](net[7](net[6](net[5](point)))), nd.array(classes), axis=1).sum()
    return autograd.grad(picked, [point], train_mode=False)[0].asnumpy()


def scores(net, x, classes):
    return net(x).asnumpy()[np.arange(len(classes)), classes]


def test_gradient_x_activation_by_hand():
    net, x = small_net(), batch(2)
    got = L.layer_gradient_x_activation(net, x, net[6], CLASSES).asnumpy()
    activation = layer_output(net, x, 7)
    np.testing.assert_allclose(got, activation * tail_weights(net, CLASSES), rtol=1e-5, atol=1e-7)
    # the tail is linear: the units' contributions add up to the logit minus the bias
    bias = net[8].bias.data().asnumpy()[CLASSES]
    np.testing.assert_allclose(got.sum(axis=1), scores(net, x, CLASSES) - bias, rtol=1e-4, atol=1e-5)
    assert np.abs(got).max() > 1e-3


def test_gradient_x_activation_on_a_convolution_by_hand():
    net, x = small_net(), batch(2)
    activation = layer_output(net, x, 5)
    got = L.layer_gradient_x_activation(net, x, net[4], CLASSES).asnumpy()
    assert got.shape == (2, 8, 6, 5)
    np.testing.assert_allclose(got, activation * tail_gradient(net, activation, CLASSES), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('steps', [1, 7])
def test_layer_integrated_gradients_with_a_linear_tail_is_exact(steps):
    net, x = small_net(), batch(2)
    base = batch(1, seed=9)
    attributions, delta = L.layer_integrated_gradients(net, x, net[6], CLASSES, baseline=base, steps=steps)
    change = layer_output(net, x, 7) - layer_output(net, base, 7)
    np.testing.assert_allclose(attributions.asnumpy(), change * tail_weights(net, CLASSES), rtol=1e-5, atol=1e-7)
    gap = scores(net, x, CLASSES) - scores(net, base.broadcast_to(x.shape), CLASSES)
    assert (np.abs(gap) > 0.05).all()
    assert np.abs(delta.asnumpy()).max() < 1e-4


def test_layer_integrated_gradients_target_function():
    net, x = small_net(), batch(2)
    attributions, delta = L.layer_integrated_gradients(net, x, net[6], lambda out: 2 * out[:, 0] - out[:, 3],
                                                       steps=2)
    w = net[8].weight.data().asnumpy()
    expected = layer_output(net, x, 7) * (2 * w[0] - w[3])[None]  # baseline zeros: A(0) = relu(bias), see below
    expected -= layer_output(net, nd.zeros_like(x), 7) * (2 * w[0] - w[3])[None]
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-5, atol=1e-7)
    assert np.abs(delta.asnumpy()).max() < 1e-4


def test_layer_integrated_gradients_by_hand_on_a_convolution():
    """The midpoint rule written out: the tail of the network run on interpolated layer outputs, its gradient
    taken by autograd at each point."""
    net, x, steps = small_net(), batch(2), 4
    start, end = layer_output(net, nd.zeros_like(x), 5), layer_output(net, x, 5)
    total = np.zeros_like(end)
    for alpha in (np.arange(steps) + 0.5) / steps:
        total += tail_gradient(net, start + alpha * (end - start), CLASSES) / steps
    attributions, _ = L.layer_integrated_gradients(net, x, net[4], CLASSES, steps=steps, batch_size=3)
    np.testing.assert_allclose(attributions.asnumpy(), (end - start) * total, rtol=1e-4, atol=1e-7)


class Gated(HybridBlock):
    """S = b(a(x)) * c(x): the path through ``a`` meets a branch that bypasses it."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.a = gluoncam.Dense(4, activation='relu', in_units=6)
            self.b = gluoncam.Dense(3, in_units=4)
            self.c = gluoncam.Dense(3, in_units=6)

    def hybrid_forward(self, F, x):
        return self.b(self.a(x)) * self.c(x)


def test_layer_integrated_gradients_runs_the_rest_of_the_network_on_x():
    """As captum's forward hook: only the layer's output moves along the path; the bypass sees x throughout,
    so with S linear in a, the attributions are (a(x) - a(x')) * w_b * c(x) and the delta is what the bypass
    adds."""
    mx.random.seed(3)
    net = Gated()
    net.initialize(mx.init.Normal(1.0))
    x = nd.array(np.random.RandomState(0).rand(2, 6) + 0.5)
    base = nd.array(np.random.RandomState(1).rand(1, 6) - 0.5)
    attributions, delta = L.layer_integrated_gradients(net, x, net.a, [0, 2], baseline=base, steps=3)
    w_b = net.b.weight.data().asnumpy()[[0, 2]]
    gate = net.c(x).asnumpy()[[0, 1], [0, 2]]
    change = net.a(x).asnumpy() - net.a(base).asnumpy()
    np.testing.assert_allclose(attributions.asnumpy(), change * w_b * gate[:, None], rtol=1e-5, atol=1e-7)
    gap = net(x).asnumpy()[[0, 1], [0, 2]] - net(base.broadcast_to(x.shape)).asnumpy()[[0, 1], [0, 2]]
    np.testing.assert_allclose(delta.asnumpy(), attributions.asnumpy().sum(axis=1) - gap, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('method', [L.layer_integrated_gradients, L.layer_conductance])
def test_completeness_as_steps_grow(method):
    net, x = small_net(), batch(2)
    base = np.full((3, 12, 10), -0.4, np.float32)
    gap = scores(net, x, CLASSES) - scores(net, nd.array(np.broadcast_to(base, x.shape)), CLASSES)
    assert (np.abs(gap) > 0.05).all()
    errors = []
    for steps in (2, 128):
        attributions, delta = method(net, x, net[2], CLASSES, baseline=base, steps=steps, batch_size=64)
        # delta is what it says
        np.testing.assert_allclose(delta.asnumpy(), attributions.asnumpy().reshape((2, -1)).sum(axis=1) - gap,
                                   rtol=1e-3, atol=1e-5)
        errors.append(np.abs(delta.asnumpy()))
    assert (errors[1] < 0.03 * np.abs(gap)).all()
    assert errors[1].sum() < errors[0].sum()


@pytest.mark.parametrize('rule', ['trapezoid', 'gausslegendre'])
def test_conductance_by_hand(rule):
    """sum_k G(x_k) * (A(x_{k+1}) - A(x_k)) over steps + 1 points, the layer's output and gradient computed by
    hand at each point."""
    net, x, steps = small_net(), batch(2), 3
    alphas = np.linspace(0, 1, steps + 1) if rule == 'trapezoid' else \
        (np.polynomial.legendre.leggauss(steps + 1)[0] + 1) / 2
    values = [layer_output(net, nd.array(x.asnumpy() * alpha), 5) for alpha in alphas]
    grads = [tail_gradient(net, value, CLASSES) for value in values]
    expected = sum(grads[k] * (values[k + 1] - values[k]) for k in range(steps))
    got, _ = L.layer_conductance(net, x, net[4], CLASSES, steps=steps, batch_size=5, rule=rule)
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-4, atol=1e-6)


def test_conductance_with_a_linear_tail_equals_layer_integrated_gradients():
    net, x = small_net(), batch(2)
    conductance, _ = L.layer_conductance(net, x, net[6], CLASSES, steps=5)
    integrated, _ = L.layer_integrated_gradients(net, x, net[6], CLASSES, steps=5)
    np.testing.assert_allclose(conductance.asnumpy(), integrated.asnumpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('method', [L.layer_integrated_gradients, L.layer_conductance])
def test_batch_size_invariant_and_per_sample(method):
    net, x = small_net(), batch(3)
    results = [method(net, x, net[4], [1, 3, 0], steps=6, batch_size=size) for size in (1, 4, 64)]
    for attributions, delta in results[1:]:
        np.testing.assert_allclose(attributions.asnumpy(), results[0][0].asnumpy(), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(delta.asnumpy(), results[0][1].asnumpy(), rtol=1e-4, atol=1e-7)
    alone = method(net, x[2:3], net[4], [0], steps=6)[0].asnumpy()
    np.testing.assert_allclose(results[0][0].asnumpy()[2:3], alone, rtol=1e-5, atol=1e-8)
    # the default target is the predicted class
    predicted = net(x).asnumpy().argmax(axis=1)
    np.testing.assert_allclose(method(net, x, net[4], None, steps=6)[0].asnumpy(),
                               method(net, x, net[4], predicted, steps=6)[0].asnumpy(), rtol=1e-6, atol=1e-9)


def test_network_untouched():
    net, x = small_net(), batch(2)
    with parameters_untouched(net):
        L.layer_gradient_x_activation(net, x, net[4])
        L.layer_integrated_gradients(net, x, net[2], steps=3)
        L.layer_conductance(net, x, net[4], steps=3, rule='gausslegendre')


@pytest.mark.parametrize('method', [L.layer_integrated_gradients, L.layer_conductance])
def test_bad_arguments(method):
    net, x = small_net(), batch(2)
    with pytest.raises(ValueError, match='steps and batch_size must be at least 1'):
        method(net, x, net[4], steps=0)
    with pytest.raises(ValueError, match='steps and batch_size must be at least 1'):
        method(net, x, net[4], batch_size=0)
    with pytest.raises(ValueError, match="unknown rule 'simpson'; valid: "):
        method(net, x, net[4], rule='simpson')
    with pytest.raises(ValueError, match=r"the baseline must have shape"):
        method(net, x, net[4], baseline=batch(3))
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        method(net, x, 'nope')
