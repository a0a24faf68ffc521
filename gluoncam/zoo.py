"""GluonCV model-zoo networks: loading them (offline-aware), the task each performs, and sensible defaults for
explaining it (CAM layer, input size, class or keypoint names)."""
import os
import textwrap
import warnings
from typing import List, Tuple

import mxnet as mx
from mxnet.gluon import Block


TASKS = ('classify', 'detect', 'segment', 'pose')
KEYPOINTS = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
             'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
             'right_knee', 'left_ankle', 'right_ankle')  # COCO's order, as SimplePose predicts them

# Per architecture (class name): the task and the layer whose output a CAM explains by default (the backbone's
# last 4-D stage, before the task head).
ARCHITECTURES = {
    'SSD': ('detect', 'features.stages.5'),  # VGG-16's fc7; SSDs on other backbones are SymbolBlocks
    'YOLOV3': ('detect', 'stages.2'),
    'FasterRCNN': ('detect', 'features'),
    'CenterNet': ('detect', 'base_network'),
    'FCN': ('segment', 'layer4'),
    'PSPNet': ('segment', 'layer4'),
    'DeepLabV3': ('segment', 'layer4'),
    'DeepLabV3Plus': ('segment', 'layer4'),
    'SimplePoseResNet': ('pose', 'deconv_layers'),
}
INPUT_SIZES = {'detect': (512, 512), 'segment': (480, 480), 'pose': (256, 192), 'classify': (224, 224)}


def names() -> List[str]:
    """Every model name GluonCV's zoo knows."""
    from gluoncv import model_zoo
    return list(model_zoo.get_model_list())


def get_model(name: str, pretrained: bool = True, ctx: mx.Context = mx.cpu(),
              root: str = os.path.join(mx.base.data_dir(), 'models')) -> Block:
    """A GluonCV model-zoo network on ``ctx``: its pretrained weights from ``root`` (downloaded when online), or
    random weights (Xavier) with ``pretrained=False``."""
    if name.lower() not in names():
        raise ValueError(f"no GluonCV model named {name!r} (see gluoncv.model_zoo.get_model_list())")
    if not pretrained:
        net = _build(name, pretrained=False)
        with warnings.catch_warnings():  # some heads (FCN's) initialise themselves
            warnings.filterwarnings('ignore', message='.*is already initialized')
            net.initialize(mx.init.Xavier(), ctx=ctx)
        return net
    try:
        return _build(name, pretrained=True, root=root, ctx=ctx)
    except Exception as error:  # GluonCV raises whatever its downloader met: no single exception type
        reason = textwrap.shorten(str(error).splitlines()[0] if str(error) else '', 160)
        raise RuntimeError(f"cannot load the pretrained weights of {name!r} from {root} ({type(error).__name__}: "
                           f"{reason}): put GluonCV's weight file there or pass --params") from None


def _build(name: str, **kwargs) -> Block:
    """The network, without a separately pretrained backbone (the whole model's weights hold it, or none are
    wanted); models without a backbone option refuse ``pretrained_base``."""
    from gluoncv import model_zoo
    try:
        return model_zoo.get_model(name, pretrained_base=False, **kwargs)
    except (TypeError, Warning):
        return model_zoo.get_model(name, **kwargs)


def task_of(net: Block) -> str:
    """'detect', 'segment', 'pose' or 'classify' (anything else) by the network's architecture."""
    return ARCHITECTURES.get(type(net).__name__, ('classify', None))[0]


def default_layer(net: Block) -> str:
    """The layer a CAM explains by default: the model's ``cam_layer`` if it names one, the backbone's last stage
    for GluonCV's detection, segmentation and pose networks, else the last child of ``features``."""
    if getattr(net, 'cam_layer', None):
        return net.cam_layer
    layer = ARCHITECTURES.get(type(net).__name__, (None, None))[1]
    if layer is not None:
        return layer
    features = getattr(net, 'features', None)
    parent, prefix = (features, 'features.') if isinstance(features, Block) and features._children else (net, '')
    candidates = [(prefix + key, child) for key, child in parent._children.items()]
    while candidates and _is_head(candidates[-1][1]):
        candidates.pop()
    if not candidates:
        raise ValueError(f"no default CAM layer for {type(net).__name__}: pass one (see --layer list)")
    return candidates[-1][0]


def _is_head(block: Block) -> bool:
    """Pooling, flattening, dropout and dense layers end a classifier."""
    kind = type(block).__name__
    return kind.endswith('Pool2D') or kind in ('Flatten', 'Dropout', 'Dense', 'HybridLambda', 'Lambda')


def input_size(net: Block) -> Tuple[int, int]:
    """(height, width) to resize images to: the segmentation model's crop size, or the task's usual size."""
    task = task_of(net)
    if task == 'segment' and getattr(net, 'crop_size', None):
        return (net.crop_size, net.crop_size)
    return INPUT_SIZES[task]


def class_names(net: Block) -> List[str]:
    """The classes a GluonCV network was built for (its ``classes``), else ImageNet's."""
    classes = getattr(net, 'classes', None)
    if classes:
        return list(classes)
    from gluoncv.data import ImageNet1kAttr
    return list(ImageNet1kAttr().classes)
