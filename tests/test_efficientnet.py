"""EfficientNet-Lite0: the port (padding, ReLU6 rules, weight conversion) and its ImageNet predictions."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam.images import preprocess, read_rgb
from gluoncam.models import efficientnet
from gluoncam.models.efficientnet import ConvBN, convert_state_dict

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'images')
BUNDLED = os.path.join(os.path.dirname(__file__), '..', 'data', 'images')


@pytest.fixture(scope='module')
def lite0(tmp_path_factory):
    return gluoncam.models.get_model('efficientnet_lite0', pretrained=True, root=str(tmp_path_factory.mktemp('models')))


def top5(net, image):
    probabilities = nd.softmax(net(preprocess(image, net)))[0].asnumpy()
    return list(np.argsort(-probabilities)[:5]), probabilities


@pytest.mark.parametrize('name, label', [('hummingbird', 94), ('jellyfish', 107), ('snow_leopard', 289)])
def test_photos_get_their_imagenet_class(lite0, name, label):
    folder = SHARED if os.path.isdir(SHARED) else BUNDLED
    top, probabilities = top5(lite0, read_rgb(os.path.join(folder, name + '.jpg')))
    assert top[0] == label and probabilities[label] > 0.5, (top, probabilities[label])


def test_the_volcano_is_the_hard_one(lite0):
    """The old tutorial's VGG-16 misses it too; the true class stays near the top."""
    probabilities = top5(lite0, read_rgb(os.path.join(BUNDLED, 'volcano.jpg')))[1]
    assert int((probabilities > probabilities[980]).sum()) < 10


def test_scikit_image_photos(lite0):
    data = pytest.importorskip('skimage.data')
    cat, _ = top5(lite0, data.chelsea())
    assert cat[0] in (281, 282, 285) and 281 in cat  # tabby, tiger cat, Egyptian cat; tabby in the top 5
    coffee, probabilities = top5(lite0, data.coffee())
    assert coffee[0] == 967 and probabilities[967] > 0.5  # espresso


def test_conversion_is_cached_and_covers_every_parameter(lite0, tmp_path):
    net = efficientnet.EfficientNetLite()
    net.initialize()
    net(nd.zeros((1, 3, 224, 224)))
    converted = convert_state_dict(efficientnet.load_legacy_checkpoint(efficientnet._checkpoint_path()))
    structural = {name: param.shape for name, param in net._collect_params_with_prefix().items()}
    assert {name: value.shape for name, value in converted.items()} == structural
    first = efficientnet._converted_weights(str(tmp_path))
    mtime = os.path.getmtime(first)
    assert efficientnet._converted_weights(str(tmp_path)) == first and os.path.getmtime(first) == mtime


def test_unknown_checkpoint_names_are_refused():
    with pytest.raises(ValueError, match="unexpected parameter '_se_reduce.weight'"):
        convert_state_dict({'_se_reduce.weight': np.zeros(1)})


@pytest.mark.parametrize('size, kernel', [(8, 3), (8, 5), (7, 3), (9, 5)])
def test_strided_convolutions_pad_like_tensorflow_same(size, kernel):
    block = ConvBN(2, kernel, 2, relu6=False)
    block.initialize(mx.init.Normal(1))
    x = nd.random.normal(shape=(1, 3, size, size))
    out = block(x).asnumpy()
    total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)  # TensorFlow's formula
    before, after = total // 2, total - total // 2
    padded = nd.pad(x, mode='constant', pad_width=(0, 0, 0, 0, before, after, before, after))
    expected = block.bn(nd.Convolution(padded, block.conv.weight.data(), kernel=(kernel, kernel), stride=(2, 2),
                                       num_filter=2, no_bias=True)).asnumpy()
    assert out.shape[2:] == (-(-size // 2),) * 2
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def relu6_net():
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(5, in_units=3), gluoncam.ReLU6(), gluoncam.Dense(2, in_units=5))
    net.initialize(mx.init.Normal(3.0))
    return net


@pytest.mark.parametrize('seed', range(4))
def test_relu6_rules_match_hand_computation(seed):
    mx.random.seed(seed)
    net = relu6_net()
    x = np.random.RandomState(seed).randn(4, 3).astype(np.float32) * 2
    w1, b1 = net[0].weight.data().asnumpy(), net[0].bias.data().asnumpy()
    w2 = net[2].weight.data().asnumpy()
    result = gluoncam.Explainer(net).backprop(x, 1, modes=('normal', 'guided', 'deconv'))
    z = x @ w1.T + b1
    active = (z > 0) & (z < 6)
    assert active.any() and (~active).any()
    g = np.tile(w2[1], (4, 1))
    expected = {'normal': (g * active) @ w1, 'guided': (np.maximum(g, 0) * active) @ w1,
                'deconv': np.maximum(g, 0) @ w1}
    for mode, value in expected.items():
        np.testing.assert_allclose(result.input_gradients[mode].asnumpy(), value, rtol=1e-5, atol=1e-5)


class FunctionalReLU6(HybridBlock):
    """GluonCV's RELU6 style: ``F.clip(x, 0, 6)`` inside a foreign block."""

    def hybrid_forward(self, F, x):
        return F.clip(x, 0, 6)


def test_functional_clip_in_foreign_blocks_is_a_relu6():
    net = relu6_net()
    x = np.random.RandomState(0).randn(4, 3).astype(np.float32) * 2
    expected = gluoncam.Explainer(net).backprop(x, 0, modes=('guided',)).input_gradients['guided'].asnumpy()
    foreign = stock.HybridSequential()
    foreign.add(net[0], FunctionalReLU6(), net[2])
    got = gluoncam.Explainer(foreign).backprop(x, 0, modes=('guided',)).input_gradients['guided'].asnumpy()
    np.testing.assert_array_equal(got, expected)


def test_lite0_gradients_match_finite_differences(lite0, tmp_path):
    """Depthwise convolutions, same padding, ReLU6, residual adds: directional derivatives of the real model,
    taken on a float64 twin with tiny steps (at 1e-3 the steps already cross many ReLU6 kinks)."""
    x = preprocess(read_rgb(os.path.join(BUNDLED, 'jellyfish.jpg')), lite0)
    grad = gluoncam.Explainer(lite0).backprop(x, 107).input_gradients['normal'].asnumpy().astype(np.float64)
    twin = gluoncam.models.get_model('efficientnet_lite0', pretrained=True, root=str(tmp_path))
    twin.cast('float64')
    x64 = x.asnumpy().astype(np.float64)
    score = lambda v: twin(nd.array(v, dtype='float64'))[0, 107].asscalar()
    rng = np.random.RandomState(0)
    for _ in range(3):
        direction = rng.randn(*x.shape)
        numeric = (score(x64 + 1e-7 * direction) - score(x64 - 1e-7 * direction)) / 2e-7
        assert float((grad * direction).sum()) == pytest.approx(numeric, rel=5e-3)


def test_pretrained_loading_converts_a_synthetic_checkpoint(tmp_path, monkeypatch):
    """End to end on a checkpoint written here in the legacy format: reader, name conversion, cached params."""
    import sys
    from test_checkpoint import FAKE_TORCH, FAKE_UTILS, Storage, Tensor, write
    monkeypatch.setitem(sys.modules, 'torch', FAKE_TORCH)  # what the writer pickles its globals by
    monkeypatch.setitem(sys.modules, 'torch._utils', FAKE_UTILS)
    net = efficientnet.EfficientNetLite()
    net.initialize(mx.init.Normal(0.1))
    net(nd.zeros((1, 3, 32, 32)))
    real_names = efficientnet.load_legacy_checkpoint(efficientnet._checkpoint_path())
    inverse = convert_state_dict({name: name for name in real_names})  # gluon name -> checkpoint name
    rng = np.random.RandomState(0)
    expected = {name: rng.randn(*param.shape).astype(np.float32)
                for name, param in net._collect_params_with_prefix().items()}
    state = {inverse[name]: Tensor(Storage(value, name), 0, value.shape, tuple(s // 4 for s in value.strides))
             for name, value in expected.items()}
    checkpoint = write(tmp_path / 'lite0.pth', state)
    monkeypatch.setattr(efficientnet, '_checkpoint_path', lambda: str(checkpoint))
    loaded = gluoncam.models.get_model('efficientnet_lite0', pretrained=True, root=str(tmp_path / 'models'))
    for name, param in loaded._collect_params_with_prefix().items():
        np.testing.assert_array_equal(param.data().asnumpy(), expected[name], err_msg=name)
    assert len(os.listdir(tmp_path / 'models')) == 1
