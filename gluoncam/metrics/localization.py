"""Does the map point at the object? The pointing game (Zhang et al., "Top-down Neural Attention by Excitation
Backprop", ECCV 2016) and the energy-based pointing game (Wang et al., "Score-CAM", CVPR Workshops 2020).

Objects are given per image as boxes ``(x1, y1, x2, y2)`` in input pixels or as masks H x W. A pixel (row r,
column c) is inside a box when its centre ``(c + 0.5, r + 0.5)`` is: integer boxes cover columns ``x1 .. x2 - 1``
and rows ``y1 .. y2 - 1`` (numpy's ``[y1:y2, x1:x2]``); several boxes of an image count as their union. Maps of
any method are first brought to the input's size by :func:`gluoncam.metrics.maps.pixel_maps` (CAMs upsampled
bilinearly, N x C x H x W maps summed over channels). No network pass is made: ``net`` only reads ``x``.
"""
from typing import NamedTuple, Sequence, Tuple

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from ..inputs import Target, as_batch
from ..threads import serialized
from .maps import check_batch, pixel_maps

__all__ = ['PointingGame', 'pointing_game', 'energy_pointing_game']

PAPER_TOLERANCE = 15  # pixels, Zhang et al. 2016 (TorchRay's default)


class PointingGame(NamedTuple):
    """What :func:`pointing_game` found: ``hits`` (N,) float32, 1 for a hit and 0 for a miss; ``points`` (N, 2)
    int64, the (x, y) = (column, row) pixel of each map's maximum; ``accuracy`` the share of hits (a float)."""
    hits: NDArray
    points: NDArray
    accuracy: float


@serialized
def pointing_game(net, x, maps, target: Target = None, *, boxes=None, masks=None,
                  tolerance: float = PAPER_TOLERANCE) -> PointingGame:
    """The pointing game (Zhang et al. 2016): a hit when the map's maximum, at the input's size, falls on the
    object or within ``tolerance`` pixels of it. Higher is better.

    A hit is, as TorchRay's ``PointingGame``: some object pixel lies at a Euclidean distance ``< tolerance`` from
    the maximum's pixel (the paper's 15 pixels by default), or, with ``tolerance=0``, the maximum's pixel itself
    is on the object. The accuracy is the share of hits over the images (TorchRay averages per class; group the
    images by class for that).

    Parameters
    ----------
    net : Block
        The network; only used to read ``x``.
    x : NDArray or numpy array
        The N x C x H x W batch the maps explain (its H x W is the size the maps are compared at).
    maps : NDArray or numpy array
        Any method's maps for ``x``: N x h x w (CAMs) or N x C x H x W.
    target :
        Unused (the maps already are for a class); accepted as every metric takes it.
    boxes : sequence, optional
        Per image, one box ``(x1, y1, x2, y2)`` or k x 4 boxes, in input pixels, ``0 <= x1 < x2 <= W`` and
        ``0 <= y1 < y2 <= H``; an N x 4 or N x k x 4 array also does.
    masks : NDArray or numpy array, optional
        N x H x W (or one H x W for every image), non-zero on the object. Give ``boxes`` or ``masks``.
    tolerance : float
        In input pixels; 0 disables it.

    Returns
    -------
    PointingGame
        ``hits``, ``points`` and ``accuracy``. The maximum's position breaks ties by the first pixel in row-major
        order (as numpy's and PyTorch's argmax): a constant map points at the top-left pixel (0, 0), a hit only
        when an object is within the tolerance of that corner.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not np.isfinite(tolerance) \
            or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative number of pixels (0 disables it), got {tolerance!r}")
    x, pixel, objects = _setup(net, x, maps, boxes, masks)
    n, height, width = pixel.shape
    flat = pixel.reshape((n, -1))
    positions = nd.arange(height * width, ctx=x.context).reshape((1, -1))
    is_max = flat == flat.max(axis=1, keepdims=True)
    first = nd.where(is_max, nd.broadcast_like(positions, flat), nd.full(flat.shape, height * width,
                                                                           ctx=x.context)).min(axis=1)
    row, column = nd.floor(first / width), first - nd.floor(first / width) * width
    rows = nd.arange(height, ctx=x.context).reshape((1, -1, 1))
    columns = nd.arange(width, ctx=x.context).reshape((1, 1, -1))
    distances = nd.broadcast_add(nd.square(rows - row.reshape((-1, 1, 1))),
                                 nd.square(columns - column.reshape((-1, 1, 1))))
    accepted = (distances < tolerance ** 2) + (distances == 0) > 0
    hits = (accepted * objects).reshape((n, -1)).max(axis=1)
    points = nd.stack(column, row, axis=1).astype('int64')
    return PointingGame(hits, points, float(hits.mean().asscalar()))


@serialized
def energy_pointing_game(net, x, maps, target: Target = None, *, boxes=None, masks=None) -> NDArray:
    """The energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's energy on the object,

    ``sum_{p in object} relu(L)_p / sum_p relu(L)_p``,

    with ``L`` the map at the input's size, its negative part dropped. Higher is better.

    Parameters
    ----------
    net, x, maps, target, boxes, masks :
        As in :func:`pointing_game`.

    Returns
    -------
    NDArray
        Shape (N,), float32, in [0, 1]. A constant positive map scores the object's share of the image's area;
        a map with no positive value (all zeros) scores the same, as a uniform map would (no NaN).
    """
    x, pixel, objects = _setup(net, x, maps, boxes, masks)
    n = pixel.shape[0]
    energy = nd.relu(pixel).astype('float64').reshape((n, -1))
    inside = objects.astype('float64').reshape((n, -1))
    total = energy.sum(axis=1)
    share = (energy * inside).sum(axis=1) / nd.where(total > 0, total, nd.ones_like(total))
    area = inside.mean(axis=1)
    return nd.where(total > 0, share, area).astype('float32')


def _setup(net, x, maps, boxes, masks) -> Tuple[NDArray, NDArray, NDArray]:
    """(x, the maps N x H x W, the objects N x H x W as 0/1 float32), checked."""
    x = as_batch(net, x)
    if x.ndim != 4:
        raise ValueError(f"localization metrics need an image batch N x C x H x W, got shape {x.shape}")
    n, _, height, width = x.shape
    if not isinstance(maps, NDArray):
        maps = nd.array(np.asarray(maps, dtype=np.float32), ctx=x.context)
    if maps.ndim < 3:
        raise ValueError(f"maps must be N x h x w or N x C x {height} x {width}; got shape {maps.shape}")
    check_batch(maps, n)
    pixel = pixel_maps(maps, (height, width), x.context)
    if not bool(nd.contrib.isfinite(pixel).min().asscalar()):
        raise ValueError("the maps contain NaN or infinite values")
    objects = _objects(boxes, masks, n, height, width)
    return x, pixel, nd.array(objects, ctx=x.context, dtype='float32')


def _objects(boxes, masks, n: int, height: int, width: int) -> np.ndarray:
    if (boxes is None) == (masks is None):
        raise ValueError("give the objects as boxes=[(x1, y1, x2, y2), ...] per image or as masks=N x H x W, "
                         "one of the two")
    objects = _box_masks(boxes, n, height, width) if masks is None else _masks(masks, n, height, width)
    for k, mask in enumerate(objects):
        if not mask.any():
            raise ValueError(f"the object of image {k} covers no pixel; every image needs a non-empty box or mask")
    return objects


def _box_masks(boxes, n: int, height: int, width: int) -> np.ndarray:
    if isinstance(boxes, NDArray):
        boxes = boxes.asnumpy()
    if len(boxes) != n:
        raise ValueError(f"got boxes for {len(boxes)} image(s) and {n} image(s); pass one box or k x 4 boxes "
                         f"per image")
    objects = np.zeros((n, height, width), dtype=bool)
    centres_y, centres_x = np.arange(height) + 0.5, np.arange(width) + 0.5
    for k, image_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in _checked_boxes(image_boxes, k, height, width):
            objects[k] |= np.outer((centres_y >= y1) & (centres_y <= y2), (centres_x >= x1) & (centres_x <= x2))
    return objects


def _checked_boxes(image_boxes, k: int, height: int, width: int) -> Sequence[np.ndarray]:
    if isinstance(image_boxes, NDArray):
        image_boxes = image_boxes.asnumpy()
    try:
        values = np.asarray(image_boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"the boxes of image {k} must be numbers (x1, y1, x2, y2), got {image_boxes!r}") from None
    values = values.reshape((1, 4)) if values.shape == (4,) else values
    if values.ndim != 2 or values.shape[1] != 4 or values.shape[0] == 0:
        raise ValueError(f"the boxes of image {k} must be one (x1, y1, x2, y2) or k x 4 with k >= 1; got shape "
                         f"{values.shape}")
    for x1, y1, x2, y2 in values:
        if not (np.isfinite([x1, y1, x2, y2]).all() and 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) of image {k} is not inside the {height} x "
                             f"{width} input: valid boxes have 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height} "
                             f"(input pixels)")
    return values


def _masks(masks, n: int, height: int, width: int) -> np.ndarray:
    values = masks.asnumpy() if isinstance(masks, NDArray) else np.asarray(masks)
    if values.shape == (height, width):
        values = np.broadcast_to(values, (n, height, width))
    if values.shape != (n, height, width):
        raise ValueError(f"masks has shape {values.shape}; valid: {(n, height, width)} (one per image) or "
                         f"{(height, width)} (one for all), the input's size")
    if values.dtype.kind not in 'biuf' or (values.dtype.kind == 'f' and not np.isfinite(values).all()):
        raise ValueError(f"masks must be boolean or numbers (non-zero on the object), got dtype {values.dtype}")
    return values != 0

