"""The catalog of methods (``gluoncam.methods``): every method runs by name, draws, and is in the README's table."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn

from gluoncam import cams, methods
from gluoncam.visualize import RENDERING, render

from conftest import REPO, parameters_untouched

LAYER = 'features.3'


class Tiny(nn.HybridBlock):
    """Two convolutions with ReLUs and a max pool, global pooling, three classes: every method is cheap on it."""

    def __init__(self):
        super().__init__(prefix='tiny_')
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='features_')
            self.features.add(nn.Conv2D(4, 3, padding=1, activation='relu'), nn.MaxPool2D(2),
                              nn.Conv2D(4, 3, padding=1), nn.Activation('relu'))
            self.pool = nn.GlobalAvgPool2D()
            self.output = nn.Dense(3)

    def hybrid_forward(self, F, x):
        return self.output(self.pool(self.features(x)))


def tiny_net():
    mx.random.seed(3)
    net = Tiny()
    net.initialize(mx.init.Xavier(magnitude=2))
    return net


@pytest.fixture(scope='module')
def tiny():
    net = tiny_net()
    x = nd.array(np.random.default_rng(0).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32))
    net(x)
    return net, x


def test_every_cam_method_is_in_the_catalog():
    assert set(cams.CAM_METHODS) <= set(methods.METHODS)
    assert set(RENDERING) == set(methods.METHODS)


@pytest.mark.parametrize('name', list(methods.METHODS))
def test_every_method_runs_by_name_and_draws(tiny, name):
    net, x = tiny
    with parameters_untouched(net):
        raw = methods.make(name, net, x, LAYER, batch_size=16)
    values = raw.asnumpy()
    assert values.shape[0] == 2 and np.isfinite(values).all()
    assert values.ndim in (3, 4)
    picture = render(np.zeros((20, 24, 3), np.uint8), values[0], name)
    assert picture.shape[:2] == (20, 24) and picture.dtype == np.uint8


def test_an_unknown_name_lists_the_valid_ones(tiny):
    with pytest.raises(ValueError, match="unknown method 'nope'; valid: gradcam, gradcam\\+\\+"):
        methods.make('nope', *tiny, LAYER)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        render(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), 'nope')


def test_the_readme_shows_the_catalog():
    with open(os.path.join(REPO, 'README.md')) as readme:
        assert methods.table() in readme.read()
