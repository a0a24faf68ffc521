"""Drop-in compatibility with the model zoo, and gluoncam.models."""
import hashlib
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import model_store, vision

import gluoncam
from gluoncam import Activation, Conv2D  # the two swapped imports


class UserVGG16(HybridBlock):
    """A user's own VGG-16 definition, as in the MXNet Grad-CAM tutorial: stock Gluon except the two imports."""

    def __init__(self, classes=1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='')
            for count, channels in zip([2, 2, 3, 3, 3], [64, 128, 256, 512, 512]):
                for _ in range(count):
                    self.features.add(Conv2D(channels, kernel_size=3, padding=1))
                    self.features.add(Activation('relu'))
                self.features.add(nn.MaxPool2D(strides=2))
            self.features.add(nn.Dense(4096, activation='relu'))
            self.features.add(nn.Dropout(rate=0.5))
            self.features.add(nn.Dense(4096, activation='relu'))
            self.features.add(nn.Dropout(rate=0.5))
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


@pytest.fixture(scope='module')
def zoo_vgg16(tmp_path_factory):
    """A model-zoo VGG-16 (random weights: no download here) and its weights written as the zoo's files are:
    legacy format, parameter names without the network prefix."""
    mx.random.seed(3)
    zoo = vision.vgg16()
    zoo.initialize(mx.init.Normal(0.01))
    zoo(nd.zeros((1, 3, 224, 224)))
    path = str(tmp_path_factory.mktemp('zoo') / 'vgg16.params')
    zoo.collect_params().save(path, strip_prefix=zoo.prefix)
    return zoo, path


def test_users_vgg16_with_swapped_imports_loads_the_zoo_file(zoo_vgg16):
    zoo, path = zoo_vgg16
    net = UserVGG16()
    net.load_parameters(path)
    x = nd.random.uniform(shape=(1, 3, 224, 224))
    np.testing.assert_allclose(net(x).asnumpy(), zoo(x).asnumpy(), rtol=1e-5, atol=1e-6)
    stripped = lambda params, prefix: sorted(name[len(prefix):] for name in params.keys())
    assert stripped(net.collect_params(), net.prefix) == stripped(zoo.collect_params(), zoo.prefix)
    heatmap, guided, saliency = gluoncam.visualize(net, x, np.zeros((224, 224, 3), np.uint8), 'features.28')
    assert heatmap.shape == (224, 224, 3) and guided.shape == (224, 224, 3) and saliency.shape == (224, 224)


def test_gluoncam_vgg16_loads_structural_and_legacy_files(zoo_vgg16, tmp_path):
    zoo, legacy = zoo_vgg16
    structural = str(tmp_path / 'structural.params')
    zoo.save_parameters(structural)
    x = nd.random.uniform(shape=(1, 3, 224, 224))
    for path in (legacy, structural):
        net = gluoncam.models.get_model('vgg16')
        net.load_parameters(path)
        np.testing.assert_allclose(net(x).asnumpy(), zoo(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_pretrained_weights_come_from_the_model_store(zoo_vgg16, tmp_path, monkeypatch):
    """The real loading path (model_store.get_model_file checks the file's sha1), on a file written here."""
    zoo, path = zoo_vgg16
    with open(path, 'rb') as params_file:
        sha1 = hashlib.sha1(params_file.read()).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, 'vgg16', sha1)
    os.symlink(path, tmp_path / f'vgg16-{sha1[:8]}.params')
    net = gluoncam.models.get_model('vgg16', pretrained=True, root=str(tmp_path), ctx=mx.cpu())
    x = nd.random.uniform(shape=(1, 3, 224, 224))
    np.testing.assert_allclose(net(x).asnumpy(), zoo(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_missing_pretrained_weights_say_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match=r"'vgg11_bn-[0-9a-f]{8}\.params' are not in .*Copy that file"):
        gluoncam.models.get_model('vgg11_bn', pretrained=True, root=str(tmp_path))


@pytest.mark.parametrize('name', sorted(name for name in gluoncam.models.MODELS if name.startswith('vgg')))
def test_every_vgg_has_the_model_zoo_structure(name):
    ours, zoo = gluoncam.models.get_model(name), vision.get_model(name)
    for net in (ours, zoo):
        net.initialize()
        net(nd.zeros((1, 3, 32, 32)))
    shapes = lambda net: [(key[len(net.prefix):], param.shape) for key, param in net.collect_params().items()]
    assert shapes(ours) == shapes(zoo)
    assert [type(block).__name__ for block in ours.features] == [type(block).__name__ for block in zoo.features]
    assert all(type(block) is not nn.Conv2D for block in ours.features)


def test_unknown_models_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet50'; available: vgg11, vgg11_bn, .*efficientnet_lite0"):
        gluoncam.models.get_model('resnet50')
    with pytest.raises(ValueError, match="valid depths: 11, 13, 16, 19"):
        gluoncam.models.get_vgg(15)
