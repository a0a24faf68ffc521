"""Networks built from gluoncam blocks, with a GluonCV-style ``get_model`` registry."""
from functools import partial
from typing import Callable, Dict

from mxnet.gluon import Block

from .efficientnet import EfficientNetLite, get_efficientnet_lite0
from .vgg import VGG, get_vgg

__all__ = ['EfficientNetLite', 'VGG', 'get_efficientnet_lite0', 'get_vgg', 'get_model', 'MODELS']

MODELS: Dict[str, Callable[..., Block]] = {
    f"vgg{depth}{suffix}": partial(get_vgg, depth, batch_norm=bool(suffix))
    for depth in (11, 13, 16, 19) for suffix in ('', '_bn')
}
MODELS['efficientnet_lite0'] = get_efficientnet_lite0


def get_model(name: str, **kwargs) -> Block:
    """A network by name (``'efficientnet_lite0'``, ``'vgg16'``, ``'vgg16_bn'``, ...), e.g.
    ``get_model('vgg16', pretrained=True, ctx=ctx)``.

    Keyword arguments go to the model's constructor: ``pretrained``, ``ctx``, ``root``, ``classes``. Each model
    has ``cam_layer`` (its usual Grad-CAM layer) and ``input_mean`` / ``input_std`` (its input normalisation,
    for ``gluoncam.images.preprocess``).
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[key](**kwargs)
