"""VGG (Simonyan & Zisserman) from gluoncam blocks; the same structure and parameter names as
``mxnet.gluon.model_zoo.vision.vgg``, so the model-zoo weight files load unchanged."""
import os

from mxnet import base, cpu
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as stock
from mxnet.initializer import Xavier

from .. import nn
from ..images import IMAGENET_MEAN, IMAGENET_STD
from .store import load_pretrained

__all__ = ['VGG', 'get_vgg', 'VGG_SPEC']

VGG_SPEC = {11: ([1, 1, 2, 2, 2], [64, 128, 256, 512, 512]),
            13: ([2, 2, 2, 2, 2], [64, 128, 256, 512, 512]),
            16: ([2, 2, 3, 3, 3], [64, 128, 256, 512, 512]),
            19: ([2, 2, 4, 4, 4], [64, 128, 256, 512, 512])}


class VGG(HybridBlock):
    """VGG network: ``features`` (convolutions, pooling and the two 4096-wide dense layers) then ``output``.

    Parameters
    ----------
    layers : list of int
        Convolutions in each of the five stages.
    filters : list of int
        Channels of each stage.
    classes : int, default 1000
        Number of classes.
    batch_norm : bool, default False
        Add BatchNorm after every convolution.
    """
    input_mean, input_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, layers, filters, classes=1000, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        if len(layers) != len(filters):
            raise ValueError(f"layers and filters differ in length: {len(layers)} and {len(filters)}")
        with self.name_scope():
            self.features = stock.HybridSequential(prefix='')
            for count, channels in zip(layers, filters):
                for _ in range(count):
                    self.features.add(nn.Conv2D(channels, kernel_size=3, padding=1, bias_initializer='zeros',
                                                weight_initializer=Xavier(rnd_type='gaussian', factor_type='out',
                                                                          magnitude=2)))
                    if batch_norm:
                        self.features.add(stock.BatchNorm())
                    self.features.add(nn.Activation('relu'))
                self.features.add(stock.MaxPool2D(strides=2))
            for _ in range(2):
                self.features.add(nn.Dense(4096, activation='relu', weight_initializer='normal',
                                           bias_initializer='zeros'))
                self.features.add(stock.Dropout(rate=0.5))
            self.output = nn.Dense(classes, weight_initializer='normal', bias_initializer='zeros')
        # the last convolution's output (pre-ReLU), as in the MXNet Grad-CAM tutorial
        last_conv = max(i for i, block in enumerate(self.features) if isinstance(block, stock.Conv2D))
        self.cam_layer = f'features.{last_conv}'

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def get_vgg(num_layers: int, pretrained: bool = False, ctx=cpu(),
            root: str = os.path.join(base.data_dir(), 'models'), batch_norm: bool = False, **kwargs) -> VGG:
    """VGG-11/13/16/19, with or without BatchNorm, optionally with the model-zoo ImageNet weights.

    Parameters
    ----------
    num_layers : int
        11, 13, 16 or 19.
    pretrained : bool, default False
        Load the MXNet model-zoo weights: the file under ``root`` if it is there, else downloaded into it.
    ctx : Context, default CPU
        Context of the loaded weights.
    root : str, default ``$MXNET_HOME/models``
        Folder of the weight files.
    batch_norm : bool, default False
        The ``_bn`` variant.
    """
    if num_layers not in VGG_SPEC:
        raise ValueError(f"no VGG-{num_layers}; valid depths: {', '.join(map(str, VGG_SPEC))}")
    layers, filters = VGG_SPEC[num_layers]
    net = VGG(layers, filters, batch_norm=batch_norm, **kwargs)
    if pretrained:
        load_pretrained(net, f"vgg{num_layers}{'_bn' if batch_norm else ''}", ctx, root)
    return net
