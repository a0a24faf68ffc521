"""Detectors explained box by box: one forward pass, then one map per detected box.

Gradient CAMs (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, Layer-CAM) explain each box's score
(:class:`gluoncam.targets.DetectionScore`) with one backward sweep per box over the same forward pass. Eigen-CAM
needs no gradient (pytorch-grad-cam's YOLO tutorial uses it because detector outputs are awkward to
differentiate): one map per image, and per box that map renormalised to [0, 1] inside the box and zero outside.
"""
from typing import List, Optional, Sequence

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from . import cams, maps
from .explainer import Explainer
from .inputs import as_batch
from .layers import LayerRef, display_name
from .targets import DetectionScore, detections, ranked, selected
from .threads import serialized

# CAMs made from the layer's activation and gradient alone: one backward sweep per box serves them
GRADIENT_METHODS = tuple(name for name, method in cams.CAM_METHODS.items()
                         if method.needs_gradient and not method.own_passes)
METHODS = GRADIENT_METHODS + ('eigencam',)


class BoxMaps:
    """One map per detected box. Arrays are numpy except ``maps`` (on the input's context).

    Attributes
    ----------
    ids, scores : N x K
        Class id and score of each image's K most confident detections, by decreasing score.
    boxes : N x K x 4
        Their corners (xmin, ymin, xmax, ymax) in the network input's pixels.
    valid : N x K bool
        False where an image has fewer detections (or scores under ``min_score``); their maps are zero.
    maps : NDArray, N x K x h x w
        The CAM of each box at the layer's resolution.
    image_maps : NDArray or None
        Eigen-CAM only: the map of each whole image, N x h x w.
    """

    def __init__(self, ids, scores, boxes, valid, maps, image_maps=None):
        self.ids, self.scores, self.boxes, self.valid = ids, scores, boxes, valid
        self.maps: NDArray = maps
        self.image_maps = image_maps


@serialized
def explain_boxes(net, x, layer: LayerRef, method: str = 'gradcam', top_k: int = 5, min_score: float = 0.0,
                  classes: Optional[Sequence[int]] = None) -> BoxMaps:
    """A CAM per detected box of a GluonCV-style detector (output: ids, scores, boxes).

    Parameters
    ----------
    net : Block
        SSD, YOLOv3, Faster R-CNN, CenterNet or any detector with that output.
    x : NDArray
        N x 3 x H x W, preprocessed for the detector.
    layer : str or Block
        A 4-D layer, e.g. the last stage of the backbone.
    method : str
        One of ``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``, ``layercam`` (a backward sweep per box)
        or ``eigencam`` (no gradient).
    top_k : int
        How many boxes per image, the most confident first.
    min_score : float
        Detections scoring less are not explained (marked invalid).
    classes : sequence of int, optional
        Explain only detections of these class ids (the top ``top_k`` of them).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for detection maps; valid: {', '.join(METHODS)}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    x = as_batch(net, x)
    name = display_name(layer)
    with Explainer(net) as explainer:
        if method == 'eigencam':
            output, activations = explainer.forward(x, [layer])
            ids, scores, boxes, valid = _top_detections(output, top_k, min_score, classes)
            image_maps = cams.EigenCAM()(activations[name], None, None)
            box_maps = _renormalized_in_boxes(image_maps, boxes, valid, x.shape[2:])
            return BoxMaps(ids, scores, boxes, valid, box_maps, image_maps)
        results = explainer.backprop_each(x, [DetectionScore(k, classes) for k in range(top_k)], [layer])
    ids, scores, boxes, valid = _top_detections(results[0].output, top_k, min_score, classes)
    weighting = cams.CAM_METHODS[method]()
    per_box = [weighting(result.activations[name], result.gradients['normal'][name], None) for result in results]
    explained = nd.array(valid, ctx=x.context, dtype=per_box[0].dtype).reshape(valid.shape + (1, 1))
    return BoxMaps(ids, scores, boxes, valid, nd.stack(*per_box, axis=1) * explained)


def _top_detections(output, top_k: int, min_score: float, classes):
    """numpy (ids, scores, boxes, valid) of each image's ``top_k`` detections, as :class:`BoxMaps` holds them."""
    ids, scores, boxes = detections(output)
    if top_k > scores.shape[1]:
        raise ValueError(f"top_k={top_k}: the detector returns {scores.shape[1]} detections per image")
    order = ranked(ids, scores, classes)[:, :top_k].asnumpy().astype(np.int64)
    rows = np.arange(order.shape[0])[:, None]
    top_scores = scores.asnumpy()[rows, order]
    valid = (selected(ids, classes).asnumpy()[rows, order] > 0) & (top_scores >= min_score)
    return ids.asnumpy()[rows, order].astype(np.int64), top_scores, boxes.asnumpy()[rows, order], valid


def _renormalized_in_boxes(image_maps: NDArray, boxes: np.ndarray, valid: np.ndarray, input_size) -> NDArray:
    """Per box: the image's map scaled to [0, 1] over the layer cells whose centres lie in the box, 0 elsewhere."""
    n, h, w = image_maps.shape
    height, width = input_size
    rows = (np.arange(h) + 0.5) * height / h
    cols = (np.arange(w) + 0.5) * width / w
    out = np.zeros((n, boxes.shape[1], h, w), dtype=np.float32)
    values = image_maps.asnumpy()
    for i, k in zip(*np.nonzero(valid)):
        x0, y0, x1, y1 = boxes[i, k]
        inside = ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :]
        if inside.any():
            region = values[i][inside]
            span = region.max() - region.min()
            out[i, k][inside] = (region - region.min()) / span if span > 0 else 0
    return nd.array(out, ctx=image_maps.context)


def upsampled(box_maps: BoxMaps, size) -> List[np.ndarray]:
    """Each image's box maps resized to ``size`` (height, width) and scaled to [0, 1]: K x H x W numpy each."""
    n, k, h, w = box_maps.maps.shape
    resized = maps.normalize(maps.upsample(box_maps.maps.reshape((n * k, h, w)), size))
    return list(resized.reshape((n, k) + tuple(size)).asnumpy())
