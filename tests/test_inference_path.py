"""While a network is explained it runs its inference path, and a block shared by several parents is handled once."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam.nn import walk
from conftest import batch, parameters_untouched


class TrainingBranch(HybridBlock):
    """Returns another value, with an added term, when its own code sees ``autograd.is_training()``: as GluonCV's
    detectors do (their training path even takes other inputs)."""

    def __init__(self):
        super().__init__()
        self.seen = []
        with self.name_scope():
            self.conv = stock.Conv2D(4, 3, padding=1, activation='relu')
            self.dense = stock.Dense(3)

    def hybrid_forward(self, F, x):
        training = autograd.is_training()
        self.seen.append(training)
        out = self.dense(self.conv(x))
        if training:
            return out * 3 + F.sum(x, axis=(1, 2, 3), keepdims=True)
        return out


def plain_inference_gradient(net, x, classes):
    """Plain autograd of the inference function (no max pooling here, so predict mode is right on MKLDNN)."""
    x = x.copy()
    x.attach_grad()
    with autograd.record(train_mode=False):
        out = net(x)
    out.backward(nd.one_hot(nd.array(classes), out.shape[1]), train_mode=False)
    return x.grad.asnumpy()


def test_the_network_sees_predict_mode_and_runs_its_inference_path():
    net = TrainingBranch()
    net.initialize(mx.init.Xavier())
    x = batch(2, (3, 6, 6))
    expected_output = net(x).asnumpy()
    expected_gradient = plain_inference_gradient(net, x, [1, 2])
    net.seen.clear()
    result = gluoncam.Explainer(net).backprop(x, [1, 2], modes=('normal', 'guided'))
    assert net.seen == [False, False]  # the recorded pass; first, the trace that finds the mode its graphs run in
    np.testing.assert_allclose(result.output.asnumpy(), expected_output, rtol=1e-6)
    np.testing.assert_allclose(result.input_gradients['normal'].asnumpy(), expected_gradient, rtol=1e-5, atol=1e-7)
    output, _ = gluoncam.Explainer(net).forward(x)
    np.testing.assert_allclose(output.asnumpy(), expected_output, rtol=1e-6)


def test_batchnorm_statistics_stay_when_the_caller_is_in_train_mode(net, x):
    """The caller's own mode does not leak into the explanation: BatchNorm still uses (and keeps) its running
    statistics and the maps are those of predict mode."""
    expected = gluoncam.Explainer(net).backprop(x, [1, 2]).input_gradients['normal'].asnumpy()
    with parameters_untouched(net), autograd.train_mode():
        got = gluoncam.Explainer(net).backprop(x, [1, 2]).input_gradients['normal'].asnumpy()
    np.testing.assert_array_equal(got, expected)


class SharedActivation(HybridBlock):
    """Xception-style: one ``Activation`` block is a child of the network and of each of its two units."""

    def __init__(self, shared=True):
        super().__init__()
        with self.name_scope():
            self.relu = stock.Activation('relu')
            self.units = stock.HybridSequential()
            for _ in range(2):
                unit = stock.HybridSequential()
                unit.add(stock.Conv2D(4, 3, padding=1), self.relu if shared else stock.Activation('relu'))
                self.units.add(unit)
            self.dense = stock.Dense(3)

    def hybrid_forward(self, F, x):
        return self.dense(self.units(self.relu(x)))


def shared_and_unshared():
    shared = SharedActivation()
    shared.initialize(mx.init.Xavier())
    unshared = SharedActivation(shared=False)
    unshared.initialize(mx.init.Xavier())
    x = batch(2, (3, 6, 6))
    shared(x), unshared(x)
    for mine, theirs in zip(unshared.collect_params().values(), shared.collect_params().values()):
        mine.set_data(theirs.data())
    return shared, unshared, x


@pytest.mark.parametrize('hybridize', [False, True])
def test_a_block_shared_by_several_parents_is_prepared_and_restored_once(hybridize):
    shared, unshared, x = shared_and_unshared()
    assert sum(block is shared.relu for block in walk(shared)) == 1
    if hybridize:
        shared.hybridize()
        shared(x)
    modes = ('normal', 'guided', 'deconv')
    got = gluoncam.Explainer(shared).backprop(x, 1, ['units.1.0'], modes)
    expected = gluoncam.Explainer(unshared).backprop(x, 1, ['units.1.0'], modes)
    for mode in modes:
        np.testing.assert_array_equal(got.input_gradients[mode].asnumpy(), expected.input_gradients[mode].asnumpy())
        np.testing.assert_array_equal(got.gradients[mode]['units.1.0'].asnumpy(),
                                      expected.gradients[mode]['units.1.0'].asnumpy())
    for block in walk(shared):
        assert 'hybrid_forward' not in vars(block), block.name
    assert shared._active == hybridize


def test_a_shared_block_that_runs_several_times_cannot_be_captured():
    shared, _, x = shared_and_unshared()
    for name in ('relu', 'units.0.1', shared.relu.name):
        with pytest.raises(ValueError, match="runs more than once in one forward pass"):
            gluoncam.Explainer(shared).backprop(x, 1, [name])
