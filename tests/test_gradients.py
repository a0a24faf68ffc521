"""Every gradient against its definition: finite differences, hand-computed rules, plain autograd."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import compiled
from gluoncam.explainer import _Recordings, _shared_outputs as shared_outputs
from conftest import batch, parameters_untouched, small_net


def float64_twin(net):
    """The same network in float64, where central differences are accurate to ~1e-9 (the explanation itself
    runs in float32 through MKLDNN)."""
    twin = small_net()
    for (name, param), (_, own) in zip(twin.collect_params().items(), net.collect_params().items()):
        param.set_data(own.data())
    twin.cast('float64')
    return twin


def predict(net, x):
    return net(nd.array(x, dtype='float64')).asnumpy()


def central_difference(f, x, direction, eps):
    return (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)


def test_input_gradient_matches_finite_differences(net, x):
    classes = [1, 3]
    result = gluoncam.Explainer(net).backprop(x, classes)
    grad = result.input_gradients['normal'].asnumpy()
    x64 = x.asnumpy().astype(np.float64)
    net = float64_twin(net)
    rng = np.random.RandomState(0)
    worst = 0.0
    for _ in range(12):
        direction = rng.randn(*x64.shape)
        numeric = central_difference(lambda v: predict(net, v)[[0, 1], classes].sum(),
                                     x64, direction, 1e-4)
        analytic = float((grad * direction).sum())
        worst = max(worst, abs(numeric - analytic))
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-5)
    print(f"max |analytic - finite difference| (input, directional): {worst:.2e}")


def test_layer_gradient_matches_finite_differences(net, x):
    """The gradient at the pooling layer's output, checked by perturbing that output and running the rest."""
    result = gluoncam.Explainer(net).backprop(x, 2, layers=['3'])
    grad = result.gradients['normal']['3'].asnumpy()
    activation = result.activations['3'].asnumpy().astype(np.float64)
    twin = float64_twin(net)
    rest = lambda a: predict(twin[4:], a)[:, 2].sum()
    rng = np.random.RandomState(1)
    worst = 0.0
    for _ in range(12):
        direction = rng.randn(*activation.shape)
        numeric = central_difference(rest, activation, direction, 1e-4)
        analytic = float((grad * direction).sum())
        worst = max(worst, abs(numeric - analytic))
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-5)
    print(f"max |analytic - finite difference| (layer, directional): {worst:.2e}")


def test_single_coordinates_match_finite_differences(net, x):
    result = gluoncam.Explainer(net).backprop(x, 0)
    grad = result.input_gradients['normal'].asnumpy()
    x64 = x.asnumpy().astype(np.float64)
    twin = float64_twin(net)
    f = lambda v: predict(twin, v)[:, 0].sum()
    for index in [(0, 0, 0, 0), (0, 1, 5, 4), (1, 2, 11, 9), (1, 0, 6, 3)]:
        direction = np.zeros_like(x64)
        direction[index] = 1
        assert grad[index] == pytest.approx(central_difference(f, x64, direction, 1e-4), rel=1e-4, abs=1e-6)


def relu_net():
    """x -> Dense(4, relu) -> Dense(3, relu) -> Dense(2): small enough to compute every rule by hand."""
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(4, activation='relu', in_units=3), gluoncam.Dense(3, in_units=4),
            gluoncam.Activation('relu'), gluoncam.Dense(2, in_units=3))
    net.initialize(mx.init.Normal(1.0))
    return net


RULES = {'normal': lambda g, z: g * (z > 0),
         'guided': lambda g, z: np.maximum(g, 0) * (z > 0),
         'deconv': lambda g, z: np.maximum(g, 0)}


def hand_rules(net, x, cls):
    w1, b1 = net[0].weight.data().asnumpy(), net[0].bias.data().asnumpy()
    w2, b2 = net[1].weight.data().asnumpy(), net[1].bias.data().asnumpy()
    w3 = net[3].weight.data().asnumpy()
    z1 = w1 @ x + b1
    z2 = w2 @ np.maximum(z1, 0) + b2
    out = {}
    for mode, rule in RULES.items():
        g = rule(w3[cls], z2)
        g = rule(w2.T @ g, z1)
        out[mode] = w1.T @ g
    return out


@pytest.mark.parametrize('seed', range(5))
def test_backward_modes_match_hand_computed_rules(seed):
    mx.random.seed(seed)
    net = relu_net()
    x = np.random.RandomState(seed).randn(3, 3).astype(np.float32)
    explainer = gluoncam.Explainer(net)
    for call in range(3):  # imperative, imperative and compiled pieces (checked), compiled pieces
        result = explainer.backprop(x, [0, 1, 0], modes=('normal', 'guided', 'deconv'))
        for i in range(3):
            expected = hand_rules(net, x[i], [0, 1, 0][i])
            for mode in ('normal', 'guided', 'deconv'):
                got = result.input_gradients[mode].asnumpy()[i]
                np.testing.assert_allclose(got, expected[mode], rtol=1e-5, atol=1e-6, err_msg=f'call {call}, {mode}')
    assert [type(entry) for entry in _Recordings._by_net[net].values()] == [compiled.Pieces]


class Skip(HybridBlock):
    """``relu(dense(x)) + x``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.dense = gluoncam.Dense(4, in_units=4)

    def hybrid_forward(self, F, x):
        return F.relu(self.dense(x)) + x


def skip_net():
    """The skip's input, a linear layer's output, is read by two pieces of a recording cut at ReLUs (the one ending
    at the skip's ReLU and the last one), however the ReLUs are cut."""
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(4, activation='relu', in_units=3), gluoncam.Dense(4, in_units=4), Skip(),
            gluoncam.Dense(2, in_units=4))
    net.initialize(mx.init.Normal(1.0))
    return net


def hand_rules_with_skip(net, x, cls):
    (w1, b1), (w2, b2), (w3, b3) = [(dense.weight.data().asnumpy(), dense.bias.data().asnumpy())
                                    for dense in (net[0], net[1], net[2].dense)]
    w4 = net[3].weight.data().asnumpy()
    z1 = w1 @ x + b1
    z3 = w3 @ (w2 @ np.maximum(z1, 0) + b2) + b3
    out = {}
    for mode, rule in RULES.items():
        g = w4[cls]
        g = w3.T @ rule(g, z3) + g  # the skip adds the gradient of the sum
        out[mode] = w1.T @ rule(w2.T @ g, z1)
    return out


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('modes', [('normal', 'guided'), ('normal', 'guided', 'deconv')])
def test_a_value_two_pieces_read_is_cut_and_back_propagated_once(seed, modes):
    """The first recording finds the skip's input read by two pieces; the recordings that count cut it there,
    and so do the compiled pieces of the later calls. Every call gives the hand-computed rules."""
    mx.random.seed(seed)
    net = skip_net()
    x = np.random.RandomState(seed).randn(3, 3).astype(np.float32)
    explainer = gluoncam.Explainer(net)
    results = []
    for call in range(3):
        result = explainer.backprop(x, [0, 1, 0], modes=modes)
        results.append(result.input_gradients)
        for i in range(3):
            expected = hand_rules_with_skip(net, x[i], [0, 1, 0][i])
            for mode in modes:
                np.testing.assert_allclose(result.input_gradients[mode].asnumpy()[i], expected[mode], rtol=1e-5,
                                           atol=1e-6, err_msg=f'call {call}, {mode}')
        assert list(shared_outputs[net].values()) == [{id(net[1])}]
    assert [type(entry) for entry in _Recordings._by_net[net].values()] == [compiled.Pieces]
    for mode in modes:  # the first call records again once it knows where to cut: the same sums, bit for bit
        for result in results[1:]:
            np.testing.assert_array_equal(results[0][mode].asnumpy(), result[mode].asnumpy())


def hand_layer_rules(net, x, cls):
    """relu_net's gradients at Dense(3)'s output z2 (the ReLU's input) and at the ReLU's output, by mode."""
    w1, b1 = net[0].weight.data().asnumpy(), net[0].bias.data().asnumpy()
    w2, b2 = net[1].weight.data().asnumpy(), net[1].bias.data().asnumpy()
    z2 = w2 @ np.maximum(w1 @ x + b1, 0) + b2
    at_output = net[3].weight.data().asnumpy()[cls]
    return {mode: {'1': rule(at_output, z2), '2': at_output} for mode, rule in RULES.items()}


def hand_skip_input_rules(net, x, cls):
    """skip_net's gradient at the skip's input (Dense 1's output, read by the skip's body and by its sum)."""
    (w1, b1), (w2, b2), (w3, b3) = [(dense.weight.data().asnumpy(), dense.bias.data().asnumpy())
                                    for dense in (net[0], net[1], net[2].dense)]
    z3 = w3 @ (w2 @ np.maximum(w1 @ x + b1, 0) + b2) + b3
    g = net[3].weight.data().asnumpy()[cls]
    return {mode: {'1': w3.T @ rule(g, z3) + g} for mode, rule in RULES.items()}


@pytest.mark.parametrize('make, layers, hand', [(relu_net, ['1', '2'], hand_layer_rules),
                                                (skip_net, ['1'], hand_skip_input_rules)], ids=['relu', 'skip'])
@pytest.mark.parametrize('modes', [('normal', 'guided'), ('guided', 'normal', 'deconv')])
def test_captured_layers_gradients_match_hand_computed_rules(make, layers, hand, modes):
    """The gradients returned at captured layers (a ReLU's input, a ReLU's output, a value two pieces read) stay
    what the rules give, in every mode, while the sweeps write over the totals they no longer need."""
    mx.random.seed(3)
    net = make()
    x = np.random.RandomState(3).randn(3, 3).astype(np.float32)
    explainer = gluoncam.Explainer(net)
    for call in range(3):  # imperative, imperative and compiled pieces (checked), compiled pieces
        result = explainer.backprop(x, [0, 1, 0], layers=layers, modes=modes)
        for i in range(3):
            expected = hand(net, x[i], [0, 1, 0][i])
            for mode in modes:
                for layer in layers:
                    np.testing.assert_allclose(result.gradients[mode][layer].asnumpy()[i], expected[mode][layer],
                                               rtol=1e-5, atol=1e-6, err_msg=f'call {call}, {mode}, layer {layer}')
    assert [type(entry) for entry in _Recordings._by_net[net].values()] == [compiled.Pieces]


def test_normal_mode_equals_plain_autograd_with_inference_layers(net, x):
    """Plain autograd with Dropout removed and BatchNorm on global statistics computes the same function."""
    result = gluoncam.Explainer(net).backprop(x, [4, 1])
    reference = stock.HybridSequential()
    for block in net:
        if isinstance(block, stock.Dropout):
            continue
        if isinstance(block, stock.BatchNorm):
            block._kwargs['use_global_stats'] = True
        reference.add(block)
    x2 = x.copy()
    x2.attach_grad()
    with autograd.record():
        out = reference(x2)
    out.backward(nd.one_hot(nd.array([4, 1]), 5))
    net[1]._kwargs['use_global_stats'] = False
    np.testing.assert_allclose(result.input_gradients['normal'].asnumpy(), x2.grad.asnumpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.output.asnumpy(), net(x).asnumpy(), rtol=1e-6)


def test_parameters_batchnorm_and_grad_req_untouched(net, x):
    with parameters_untouched(net):
        gluoncam.Explainer(net).backprop(x, modes=('normal', 'guided', 'deconv'), layers=['4'])


def test_repeated_calls_give_identical_maps(net, x):
    explainer = gluoncam.Explainer(net)
    first = explainer.backprop(x, layers=['4'], modes=('normal', 'guided'))
    for _ in range(3):
        again = explainer.backprop(x, layers=['4'], modes=('normal', 'guided'))
        for mode in ('normal', 'guided'):
            np.testing.assert_array_equal(first.input_gradients[mode].asnumpy(),
                                          again.input_gradients[mode].asnumpy())
            np.testing.assert_array_equal(first.gradients[mode]['4'].asnumpy(),
                                          again.gradients[mode]['4'].asnumpy())


def test_each_sample_of_a_batch_equals_its_own_explanation(net):
    x = batch(4)
    explainer = gluoncam.Explainer(net)
    together = explainer.backprop(x, layers=['4'], modes=('normal', 'guided'))
    for i in range(4):
        alone = explainer.backprop(x[i:i + 1], layers=['4'], modes=('normal', 'guided'))
        assert alone.classes.asnumpy()[0] == together.classes.asnumpy()[i]
        for mode in ('normal', 'guided'):
            np.testing.assert_allclose(alone.input_gradients[mode].asnumpy()[0],
                                       together.input_gradients[mode].asnumpy()[i], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(alone.gradients[mode]['4'].asnumpy()[0],
                                       together.gradients[mode]['4'].asnumpy()[i], rtol=1e-5, atol=1e-7)
