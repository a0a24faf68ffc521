import contextlib
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock

import gluoncam


def small_net(classes=5, seed=0):
    """Conv, BatchNorm, ReLU, max pool, fused conv ReLU, Dropout, Dense ReLU, Dense: every kind of layer the
    gradients must get through. Batch-norm statistics are set away from their defaults."""
    mx.random.seed(seed)
    net = stock.HybridSequential(prefix='small_')
    with net.name_scope():
        net.add(gluoncam.Conv2D(6, 3, padding=1), stock.BatchNorm(), gluoncam.Activation('relu'),
                stock.MaxPool2D(2), gluoncam.Conv2D(8, 3, padding=1, activation='relu'), stock.Dropout(0.5),
                gluoncam.Dense(16, activation='relu'), stock.Dropout(0.3), gluoncam.Dense(classes))
    net.initialize(mx.init.Xavier(magnitude=2))
    net(nd.zeros((1, 3, 12, 10)))
    bn = net[1]
    bn.running_mean.set_data(nd.random.normal(0, 0.3, shape=bn.running_mean.shape))
    bn.running_var.set_data(nd.random.uniform(0.5, 2, shape=bn.running_var.shape))
    bn.gamma.set_data(nd.random.uniform(0.5, 1.5, shape=bn.gamma.shape))
    bn.beta.set_data(nd.random.normal(0, 0.2, shape=bn.beta.shape))
    return net


def batch(n=2, shape=(3, 12, 10), seed=1):
    return nd.array(np.random.RandomState(seed).randn(n, *shape).astype(np.float32))


@pytest.fixture
def net():
    return small_net()


@pytest.fixture
def x():
    return batch()


@contextlib.contextmanager
def parameters_untouched(net):
    """Whatever runs inside the block must leave every parameter of ``net`` (BatchNorm's running statistics
    included) with the same data and grad_req, and write no gradient: each is set to 7 before and checked after."""
    params = net.collect_params()
    for param in params.values():
        if param.grad_req != 'null':
            param.grad()[:] = 7
    before = {name: param.data().asnumpy().copy() for name, param in params.items()}
    reqs = {name: param.grad_req for name, param in params.items()}
    yield params
    for name, param in params.items():
        assert param.grad_req == reqs[name]
        np.testing.assert_array_equal(param.data().asnumpy(), before[name], err_msg=name)
        if param.grad_req != 'null':
            assert (param.grad().asnumpy() == 7).all(), f"{name}'s gradient was computed"


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def data_root():
    """Where MNIST and Fashion-MNIST are: $GLUONCAM_DATA, else ../shared/data beside the repository (CI), else
    gluoncam's default (MXNet's folder, downloading when online)."""
    from gluoncam.datasets import data_root as default_root
    shared = os.path.join(REPO, '..', 'shared', 'data')
    if not os.environ.get('GLUONCAM_DATA') and os.path.isdir(shared):
        return os.path.abspath(shared)
    return default_root()
