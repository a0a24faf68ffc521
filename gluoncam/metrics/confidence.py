"""Confidence of the network in the image multiplied by its map: average drop, increase in confidence and win
(Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep Convolutional
Networks", WACV 2018; torch-cam's ``ClassificationMetric``), and the confidence change (pytorch-grad-cam's
``CamMultImageConfidenceChange``). One forward pass per image and map, batched.

Each map is brought to the input's size (:func:`gluoncam.metrics.maps.pixel_maps`) and scaled to [0, 1] by its
own minimum and maximum (``scale=True``, as the CAMs of torch-cam and pytorch-grad-cam come), so the masked image
is ``x * M`` with M broadcast over the channels. A constant map scales to all zeros: its masked image is all
zeros, which scores finitely.
"""
from typing import Dict, List, Mapping, Tuple

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from .. import maps as gluoncam_maps
from ..explainer import Explainer
from ..inputs import Target
from ..perturbation import ProgressOption
from ..threads import serialized
from .faithfulness import _ProbabilityScorer, _setup

__all__ = ['confidence_metrics', 'average_drop', 'increase_in_confidence', 'win', 'confidence_change']


@serialized
def confidence_metrics(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
                       probability: bool = True, scale: bool = True,
                       progress: ProgressOption = None) -> Dict[str, NDArray]:
    """Every per-image value of this module from one pass over the masked images.

    With ``Y_i`` the target's probability on image i and ``O_i`` on ``x_i * M_i``:

    - ``'full'``: Y; ``'masked'``: O;
    - ``'change'``: ``O - Y``, pytorch-grad-cam's ``CamMultImageConfidenceChange`` (higher is better);
    - ``'drop'``: ``100 max(0, Y - O) / Y`` (lower is better); its mean over images is the Average Drop %;
    - ``'increase'``: ``100 [O > Y]``, 0 or 100 (higher is better); its mean is the Increase in Confidence %.

    Parameters
    ----------
    x : NDArray or numpy array
        N x C x H x W images, preprocessed as the network expects (the map multiplies this input).
    maps : NDArray or numpy array
        Any method's maps for x: N x h x w (upsampled bilinearly) or N x C x H x W (summed over channels).
    target : None, int, sequence of int, or callable
        None: the clean image's predicted class, kept for the masked image; a function mapping the output to one
        score per sample is used as it is (no softmax).
    score : str
        ``'logits'`` or ``'output'``, as in :meth:`gluoncam.Explainer.backprop`; for a network that ends in its
        own softmax keep ``'logits'`` while ``probability=True``.
    batch_size : int
        Masked images per forward pass.
    probability : bool
        True: the softmax probability of the target (the papers; torch-cam's ``logits_fn=softmax``;
        pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``). False: the raw scored output (pytorch-grad-cam's
        default ``ClassifierOutputTarget``); the drop then needs every Y > 0.
    scale : bool
        Scale each map to [0, 1] first (True), or multiply by the map as given.
    progress : None or bool
        A tqdm bar on stderr; None shows it for more than 10 batches.

    Returns
    -------
    dict of str to NDArray
        Each (N,), float32, on x's context. A probability Y of exactly 0 (a target the network rules out)
        drops by 0. Costs 1 + N forward passes.
    """
    x, full, masked = _confidences(net, x, [maps], target, score, batch_size, probability, scale, progress,
                                   'confidence')
    values = {'full': full, 'masked': masked[0], 'change': masked[0] - full, 'drop': _drop(full, masked[0]),
              'increase': 100.0 * (masked[0] > full)}
    return {name: _as_nd(value, x) for name, value in values.items()}


@serialized
def average_drop(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
                 probability: bool = True, scale: bool = True, progress: ProgressOption = None) -> NDArray:
    """Average Drop % (Chattopadhyay et al., Grad-CAM++, 2018), per image: ``100 max(0, Y - O) / Y`` with Y the
    target's probability on the image and O on the image times its map scaled to [0, 1]. Lower is better; the
    mean over images is the paper's and torch-cam's ``avg_drop`` (times 100; torch-cam divides by
    ``Y + 1e-7``, here by Y, and a Y of 0 drops by 0). (N,); arguments and cost as :func:`confidence_metrics`."""
    x, full, masked = _confidences(net, x, [maps], target, score, batch_size, probability, scale, progress,
                                   'average drop')
    return _as_nd(_drop(full, masked[0]), x)


@serialized
def increase_in_confidence(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
                           probability: bool = True, scale: bool = True,
                           progress: ProgressOption = None) -> NDArray:
    """Increase in Confidence % (Chattopadhyay et al., Grad-CAM++, 2018), per image: ``100 [O > Y]`` (0 or 100),
    O and Y as in :func:`average_drop`. Higher is better; the mean over images is the paper's % and torch-cam's
    ``conf_increase`` (times 100). (N,); arguments and cost as :func:`confidence_metrics`."""
    x, full, masked = _confidences(net, x, [maps], target, score, batch_size, probability, scale, progress,
                                   'increase in confidence')
    return _as_nd(100.0 * (masked[0] > full), x)


@serialized
def confidence_change(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
                      probability: bool = True, scale: bool = True, progress: ProgressOption = None) -> NDArray:
    """pytorch-grad-cam's ``CamMultImageConfidenceChange``, per image: ``S(x * M) - S(x)``, the target's
    probability (or, ``probability=False``, its raw score, pytorch-grad-cam's default target) on the image
    multiplied by its map minus on the image. Higher is better (pytorch-grad-cam's ``DropInConfidence`` is
    ``max(0, -change)``, its ``IncreaseInConfidence`` ``[change > 0]``). (N,); arguments and cost as
    :func:`confidence_metrics`."""
    x, full, masked = _confidences(net, x, [maps], target, score, batch_size, probability, scale, progress,
                                   'confidence change')
    return _as_nd(masked[0] - full, x)


@serialized
def win(net, x, maps: Mapping[str, object], target: Target = None, *, score: str = 'logits',
        batch_size: int = 32, probability: bool = True, scale: bool = True,
        progress: ProgressOption = None) -> Dict[str, NDArray]:
    """Win % (Chattopadhyay et al., Grad-CAM++, 2018, which compares Grad-CAM++ with Grad-CAM): given the maps of
    several methods for the same images, each image is won by the method whose masked image has the lowest drop
    (:func:`average_drop`). Per method, per image: 100 if it wins alone, ``100 / k`` if k methods tie for the
    lowest drop, else 0; the mean over images is the method's Win %, and the methods' Win % add up to 100.
    Higher is better.

    Parameters
    ----------
    maps : mapping of method name to maps
        At least two methods, each's maps as :func:`average_drop` takes them.
    x, target, score, batch_size, probability, scale, progress :
        As in :func:`confidence_metrics`.

    Returns
    -------
    dict of str to NDArray
        Per method, (N,) on x's context. Costs 1 + N * methods forward passes.
    """
    if not isinstance(maps, Mapping) or len(maps) < 2:
        raise ValueError(f"win compares methods: pass a dict of at least two method names to their maps, got "
                         f"{type(maps).__name__}{f' of {len(maps)}' if isinstance(maps, Mapping) else ''}")
    names = list(maps)
    x, full, masked = _confidences(net, x, [maps[name] for name in names], target, score, batch_size,
                                   probability, scale, progress, 'win')
    drops = np.stack([_drop(full, row) for row in masked])  # methods x N
    winners = drops == drops.min(axis=0, keepdims=True)
    shares = 100.0 * winners / winners.sum(axis=0, keepdims=True)
    return {name: _as_nd(share, x) for name, share in zip(names, shares)}


def _confidences(net, x, maps_list: List[object], target: Target, score: str, batch_size: int, probability: bool,
                 scale: bool, progress: ProgressOption, name: str) -> Tuple[NDArray, np.ndarray, np.ndarray]:
    """(x checked, Y (N,), O methods x N) in float64 numpy."""
    checked = [_setup(net, x, maps, score, batch_size) for maps in maps_list]
    x = checked[0][0]
    masks = [gluoncam_maps.normalize(pixels) if scale else pixels for _, pixels in checked]
    stacked = nd.concat(*[mask.expand_dims(1) for mask in masks], dim=0)  # (methods N) x 1 x H x W
    n = x.shape[0]
    owners = np.tile(np.arange(n), len(masks))

    def make_inputs(rows: np.ndarray) -> NDArray:
        index = nd.array(rows, ctx=x.context)
        return nd.take(x, nd.array(owners[rows], ctx=x.context)) * nd.take(stacked, index)

    with Explainer(net) as explainer:
        scorer = _ProbabilityScorer(explainer, x, target, score, batch_size, progress, name, probability)
        masked = scorer(owners, make_inputs).reshape((len(masks), n))
    return x, scorer.original, masked


def _drop(full: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """``100 max(0, Y - O) / Y``; 0 where Y is 0 (then O, a probability, cannot be lower)."""
    if (full < 0).any() or ((full == 0) & (masked < 0)).any():
        worst = int(np.argmin(full))
        raise ValueError(f"the drop divides by the clean image's score, which must be positive; image {worst} "
                         f"scores {full[worst]:.4g}: use probability=True (softmax probabilities) or a target "
                         f"with positive scores")
    drop = np.maximum(0.0, full - masked)
    return 100.0 * np.divide(drop, full, out=np.zeros_like(drop), where=full > 0)


def _as_nd(values: np.ndarray, x: NDArray) -> NDArray:
    return nd.array(np.asarray(values, dtype=np.float64), ctx=x.context, dtype='float32')
