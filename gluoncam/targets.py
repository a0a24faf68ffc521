"""What to explain beyond a class logit: scores of detections, segmented regions and keypoints.

Each target is a callable mapping the network's output (as ``net(x)`` returns it in inference) to one score per
sample, so it can be passed as ``target`` to :meth:`gluoncam.Explainer.backprop`, :func:`gluoncam.cams.cam` and
the gradient methods. They follow pytorch-grad-cam's targets where it has one.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from .inputs import describe_output

__all__ = ['BoxScoreTarget', 'DetectionScore', 'KeypointTarget', 'SegmentationTarget', 'detections', 'box_iou']


def detections(output) -> Tuple[NDArray, NDArray, NDArray]:
    """A GluonCV detector's output as (class ids N x K, scores N x K, boxes N x K x 4, corners in input pixels).

    SSD, YOLOv3 and Faster R-CNN return ids and scores as N x K x 1, CenterNet as N x K; padding rows (no
    detection) have id -1.
    """
    if not isinstance(output, (list, tuple)) or len(output) != 3:
        raise ValueError(f"a detection target needs a detector's output (class ids, scores, boxes); the network "
                         f"returns {describe_output(output)}")
    ids, scores, boxes = output
    if ids.ndim == 3:
        ids, scores = ids[:, :, 0], scores[:, :, 0]
    if ids.ndim != 2 or boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape != ids.shape:
        raise ValueError(f"expected detections as ids N x K (x 1), scores N x K (x 1), boxes N x K x 4; the "
                         f"network returns {describe_output(output)}")
    return ids, scores, boxes


def ranked(ids: NDArray, scores: NDArray, classes: Optional[Sequence[int]] = None) -> NDArray:
    """Indices of each image's detections by decreasing score, padding (id -1) and, given ``classes``, detections
    of other classes last; no gradient."""
    keep = selected(ids, classes)
    return nd.argsort(nd.where(keep, scores.detach(), nd.ones_like(scores) * -np.inf), axis=1, is_ascend=False)


def selected(ids: NDArray, classes: Optional[Sequence[int]] = None) -> NDArray:
    """1 where a detection is real (id >= 0) and, given ``classes``, of one of them; 0 elsewhere; no gradient."""
    ids = ids.detach()
    if classes is None:
        return ids >= 0
    return nd.add_n(*[ids == int(c) for c in classes]) > 0


class DetectionScore:
    """The score of each image's ``k``-th detection by score (0: the most confident), among the detections of
    ``classes`` if given. An image with fewer such detections scores 0 with no gradient: its map is all zero."""

    def __init__(self, k: int = 0, classes: Optional[Sequence[int]] = None):
        if k < 0:
            raise ValueError(f"k must be at least 0, got {k}")
        self.k, self.classes = k, classes

    def __call__(self, output) -> NDArray:
        ids, scores, _ = detections(output)
        if self.k >= scores.shape[1]:
            raise ValueError(f"detection {self.k} (0-based) asked for: the detector returns {scores.shape[1]} "
                             f"detections per image")
        index = ranked(ids, scores, self.classes)[:, self.k]
        picked = nd.pick(scores, index, axis=1)
        return picked * nd.pick(selected(ids, self.classes), index, axis=1)


def box_iou(a: NDArray, b: NDArray) -> NDArray:
    """Intersection over union of corner boxes: a (..., 4) and b (..., 4), broadcast; differentiable."""
    ax0, ay0, ax1, ay1 = nd.split(a, axis=-1, num_outputs=4)
    bx0, by0, bx1, by1 = nd.split(b, axis=-1, num_outputs=4)
    width = nd.relu(nd.broadcast_minimum(ax1, bx1) - nd.broadcast_maximum(ax0, bx0))
    height = nd.relu(nd.broadcast_minimum(ay1, by1) - nd.broadcast_maximum(ay0, by0))
    intersection = width * height
    union = nd.broadcast_add((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0)) - intersection
    return (intersection / nd.maximum(union, 1e-12))[..., 0]


class BoxScoreTarget:
    """pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``: for each reference box, the detection that overlaps it
    most; if its IoU exceeds ``iou_threshold`` and its class is the box's label, ``IoU + score`` is added.

    Parameters
    ----------
    labels : sequence of int
        The class id of each reference box.
    boxes : K x 4 array
        Reference boxes, corners (xmin, ymin, xmax, ymax) in the network input's pixels; the same for every
        image of the batch.
    iou_threshold : float
        The overlap a detection needs to count.

    An image where no reference box is matched is an error that names the labels and the detections found.
    """

    def __init__(self, labels: Sequence[int], boxes, iou_threshold: float = 0.5):
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(self.labels) != len(self.boxes) or not len(self.boxes):
            raise ValueError(f"give one label per reference box: got {len(self.labels)} labels and "
                             f"{len(self.boxes)} boxes")
        if not 0 <= iou_threshold < 1:
            raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
        self.iou_threshold = iou_threshold

    def __call__(self, output) -> NDArray:
        ids, scores, boxes = detections(output)
        reference = nd.array(self.boxes, ctx=boxes.context, dtype=boxes.dtype)
        iou = box_iou(boxes.expand_dims(2), reference.reshape((1, 1, -1, 4)))  # N x K x R
        iou = iou * (ids.detach() >= 0).expand_dims(2)
        best = nd.argmax(iou.detach(), axis=1)  # N x R: the detection overlapping each reference box most
        best_iou = nd.pick(iou, best, axis=1)
        best_score = nd.pick(scores.expand_dims(2).broadcast_like(iou), best, axis=1)
        best_label = nd.pick(ids.detach().expand_dims(2).broadcast_like(iou), best, axis=1)
        labels = nd.array(self.labels, ctx=boxes.context, dtype=boxes.dtype).reshape((1, -1))
        matched = (best_iou.detach() > self.iou_threshold) * nd.broadcast_equal(best_label, labels)
        self._check_matched(matched, ids, scores, boxes)
        return ((best_iou + best_score) * matched).sum(axis=1)

    def _check_matched(self, matched: NDArray, ids, scores, boxes) -> None:
        unmatched = np.flatnonzero(matched.asnumpy().sum(axis=1) == 0)
        if not unmatched.size:
            return
        i = int(unmatched[0])
        ids_i, scores_i, boxes_i = ids[i].asnumpy(), scores[i].asnumpy(), boxes[i].asnumpy()
        order = [k for k in np.argsort(-scores_i) if ids_i[k] >= 0][:5]
        found = '; '.join(f"class {int(ids_i[k])} score {scores_i[k]:.3f} box {_rounded(boxes_i[k])}"
                          for k in order) or 'none'
        wanted = '; '.join(f"class {label} box {_rounded(box)}" for label, box in zip(self.labels, self.boxes))
        raise ValueError(f"no detection of image {i} matches the reference boxes (IoU > {self.iou_threshold} and "
                         f"the same class): wanted {wanted}; found (top {len(order)} by score) {found}")


def _rounded(box) -> list:
    return [round(float(value), 1) for value in box]


class SegmentationTarget:
    """pytorch-grad-cam's ``SemanticSegmentationTarget``: class ``category``'s logits summed over a mask.

    Parameters
    ----------
    category : int
        The class channel of the segmentation output.
    mask : None or array
        H x W (or N x H x W) weights at the output's resolution; None: the pixels predicted as ``category``
        (argmax over classes), fixed from the inference output. An empty mask gives an all-zero map.

    GluonCV's segmentation models return a tuple whose first element is the N x classes x H x W output; that
    element is used.
    """

    def __init__(self, category: int, mask=None):
        self.category = int(category)
        self.mask = None if mask is None else np.asarray(mask, dtype=np.float32)

    def __call__(self, output) -> NDArray:
        logits = _dense_output(output, self.category, 'a segmentation target needs an output', 'class', 'classes')
        scores = logits[:, self.category]
        return (scores * self._mask(logits)).sum(axis=(1, 2))

    def _mask(self, logits: NDArray) -> NDArray:
        if self.mask is None:
            return nd.argmax(logits.detach(), axis=1) == self.category
        mask = nd.array(self.mask, ctx=logits.context, dtype=logits.dtype)
        if mask.shape[-2:] != logits.shape[2:]:
            raise ValueError(f"the mask is {mask.shape[-2:]}, the segmentation output {logits.shape[2:]}")
        return mask.broadcast_to((logits.shape[0],) + logits.shape[2:])


class KeypointTarget:
    """The peak of keypoint ``keypoint``'s heatmap (SimplePose and other heatmap pose networks, output
    N x keypoints x h x w): ``max_ij H_kij``."""

    def __init__(self, keypoint: int):
        self.keypoint = int(keypoint)

    def __call__(self, output) -> NDArray:
        heatmaps = _dense_output(output, self.keypoint, 'a keypoint target needs heatmaps', 'keypoint',
                                 'keypoints')
        return heatmaps[:, self.keypoint].max(axis=(1, 2))


def _dense_output(output, index: int, needs: str, kind: str, kinds: str) -> NDArray:
    """The N x ``kinds`` x H x W array of ``output`` (its first element if a tuple), checked to have channel
    ``index``."""
    dense = first_array(output)
    if not isinstance(dense, NDArray) or dense.ndim != 4:
        raise ValueError(f"{needs} of shape (N, {kinds}, H, W); the network returns {describe_output(output)}")
    if not 0 <= index < dense.shape[1]:
        raise ValueError(f"{kind} {index} out of range: the output has {dense.shape[1]} {kinds} (valid ids "
                         f"0..{dense.shape[1] - 1})")
    return dense


def first_array(output) -> NDArray:
    """The output itself, or its first element if it is a tuple (as GluonCV's segmentation networks return)."""
    return output[0] if isinstance(output, (list, tuple)) else output
