"""How far an explanation can be trusted under small changes of the input: infidelity and max-sensitivity (Yeh et
al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019), as ``captum.metrics`` defines them.

Perturbed copies of the images are made and scored (or explained) ``batch_size`` rows at a time across the images
of the batch, image-major (the copies of image 0 first); random draws come from ``numpy.random.default_rng(seed)``
in that order, so the results do not depend on ``batch_size``. Target scores are read in float64 numpy (those of
:class:`gluoncam.perturbation._Scorer`); results are NDArrays on the input's context.
"""
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from ..explainer import Explainer
from ..gradients import _row_targets
from ..inputs import Target, as_batch
from ..perturbation import _baseline, _check_score, _Scorer
from ..threads import serialized
from .maps import check_batch, pixel_maps

__all__ = ['infidelity', 'max_sensitivity']

Perturbation = Union[str, Callable[[NDArray, np.random.Generator], Tuple[NDArray, NDArray]]]
PERTURBATIONS = ('gaussian', 'square')
PAPER_SQUARE_SIDES = 10  # the paper's square removal: sides 1..10 on 28 x 28 MNIST


# ----- infidelity

@serialized
def infidelity(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
               perturbation: Perturbation = 'gaussian', n_perturb_samples: int = 10, stdev: float = 0.003,
               square_sizes: Optional[Sequence[int]] = None, baseline=0.0, normalize: bool = False,
               seed: Optional[int] = None, progress: Optional[bool] = None) -> NDArray:
    """Explanation infidelity (Yeh et al. 2019; ``captum.metrics.infidelity``): how badly the attributions
    predict the change of the target score ``f`` when the input is perturbed by ``I``,

    ``INFD(phi, f, x) = E_I[(I . phi - (f(x) - f(x - I)))^2]``,

    estimated per image from ``n_perturb_samples`` draws of ``I``. Lower is better; 0 means the attributions
    predict every perturbation's effect exactly (the gradient of a linear model under any perturbation).

    Parameters
    ----------
    net : Block
        The network.
    x : NDArray or numpy array
        N x C x H x W batch (any N x ... batch for networks that do not start with a convolution).
    maps : NDArray or numpy array
        The attributions ``phi``: N x C x H x W (gradient, propagation and perturbation methods) used elementwise
        with ``I`` as they are; N x 1 x H x W or N x h x w (CAMs, any h x w) upsampled bilinearly to H x W (as
        :func:`gluoncam.metrics.maps.pixel_maps`) and repeated on every channel, so ``I . phi`` sums
        ``I`` over the channels under each map value. A map over non-image inputs has the input's shape.
    target : None, int, sequence of int, or callable
        The class scored: the predicted class of each clean image (None), fixed for every perturbed copy; or a
        function mapping the output to one score per sample.
    score : str
        ``'logits'`` (the softmax's input where the network ends in one) or ``'output'``.
    batch_size : int
        Perturbed rows per forward pass.
    perturbation : str or callable
        ``'gaussian'`` (default): ``I ~ N(0, stdev^2)`` elementwise, ``x - I`` scored, as captum's examples
        (``stdev=0.003``; the paper uses ``0.2`` on [0, 1] pixels). Fits "local" attributions (gradients,
        saliency, Guided Backprop, CAMs).
        ``'square'``: the paper's square removal: ``I`` the 0/1 indicator of a square (all channels) drawn
        uniformly among every square of the sides ``square_sizes`` that fits in the image (the paper enumerates
        them all: a side ``s`` has ``(H - s + 1)(W - s + 1)`` of them); the copy ``x - I (x - baseline)`` has the
        square replaced by the baseline. Fits "global" attributions, which already factor in ``x - baseline``
        (input x gradient, Integrated Gradients, DeepLIFT, occlusion, KernelSHAP), as captum's
        ``infidelity_perturb_func_decorator(multiply_by_inputs=True)``. Drawn as ``rng.integers(count)`` over
        the squares listed by side, then top row, then left column.
        A callable ``perturbation(rows, rng) -> (I, perturbed_rows)`` receives the B x C x H x W images of a
        batch of rows and the generator, as captum's ``perturb_func`` returning (perturbations, perturbed
        inputs).
    n_perturb_samples : int
        Perturbations per image (captum's default 10).
    stdev : float
        Standard deviation of the Gaussian perturbation.
    square_sizes : sequence of int, optional
        Sides of the squares removed; default ``1 .. min(10, H, W)`` (the paper's 1..10 where the image allows).
    baseline : float or array
        What a removed square becomes: a scalar, one image C x H x W, or one per image.
    normalize : bool
        Scale the attributions first by captum's optimal ``beta = E[(I . phi)(f(x) - f(x - I))] / E[(I . phi)^2]``
        per image (0 where ``I . phi`` is always 0), as the paper's own code does: the value then does not
        depend on the attributions' scale.
    seed : int, optional
        Seed of the generator of the perturbations.
    progress : None or bool
        A tqdm bar on stderr: None shows one for long runs.

    Returns
    -------
    NDArray
        Shape (N,), float32, non-negative. Constant maps are valid (an all-zero map scores
        ``E[(f(x) - f(x - I))^2]``). Cost: one forward pass of the clean batch and N x n_perturb_samples perturbed
        rows in forward passes; no gradient.
    """
    _check_score(score)
    _check_count('n_perturb_samples', n_perturb_samples)
    _check_count('batch_size', batch_size)
    x = as_batch(net, x)
    phi = attributions_at_input(maps, x)
    perturb = _perturbation(perturbation, x, stdev, square_sizes, baseline)
    n = x.shape[0]
    owners = np.repeat(np.arange(n), n_perturb_samples)
    rng = np.random.default_rng(seed)
    draw = perturb(rng, len(owners))
    predicted = []
    with Explainer(net) as explainer:
        scorer = _Scorer(explainer, x, target, score, batch_size, progress, 'infidelity')

        def make_inputs(rows: np.ndarray) -> NDArray:
            index = nd.array(owners[rows], ctx=x.context)
            change, perturbed = draw(rows, nd.take(x, index), index)
            predicted.append(_row_sums(change * nd.take(phi, index)))
            return perturbed

        perturbed_scores = scorer(owners, make_inputs)
    explained = np.concatenate(predicted).reshape((n, n_perturb_samples))
    drops = (scorer.original[owners] - perturbed_scores).reshape((n, n_perturb_samples))
    if normalize:
        explained = explained * _optimal_scale(explained, drops)[:, None]
    return nd.array(np.square(explained - drops).mean(axis=1), ctx=x.context, dtype='float32')


def attributions_at_input(maps, x: NDArray) -> NDArray:
    """``maps`` as attributions of the shape of ``x``: the same shape as they are; for images, N x 1 x H x W and
    N x h x w maps (upsampled to H x W) repeated on every channel."""
    if not isinstance(maps, NDArray):
        maps = nd.array(np.asarray(maps, dtype=np.float32), ctx=x.context)
    maps = maps.as_in_context(x.context).astype(x.dtype)
    if maps.ndim < 2:
        raise ValueError(f"maps must hold one map per image, N x ...; got shape {maps.shape}")
    check_batch(maps, x.shape[0])
    if not bool(nd.contrib.isfinite(maps).min().asscalar()):
        raise ValueError("the maps contain NaN or infinite values")
    if maps.shape == x.shape:
        return maps
    if x.ndim == 4:
        if maps.ndim == 4 and maps.shape[1] == 1 and maps.shape[2:] == x.shape[2:]:
            return maps.broadcast_to(x.shape)
        if maps.ndim == 3:
            return pixel_maps(maps, x.shape[2:], x.context).expand_dims(1).broadcast_to(x.shape)
        raise ValueError(f"maps must be N x C x H x W {x.shape} (the input's shape), N x 1 x H x W or N x h x w "
                         f"(a CAM, any h x w); got shape {maps.shape}")
    raise ValueError(f"maps must have the input's shape {x.shape}; got shape {maps.shape}")


def _row_sums(values: NDArray) -> np.ndarray:
    return values.reshape((values.shape[0], -1)).sum(axis=1).asnumpy().astype(np.float64)


def _optimal_scale(explained: np.ndarray, drops: np.ndarray) -> np.ndarray:
    """Per image, the beta minimising ``mean((beta a - b)^2)``; 0 where every ``a`` is 0."""
    numerator = (explained * drops).sum(axis=1)
    denominator = np.square(explained).sum(axis=1)
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def _perturbation(perturbation: Perturbation, x: NDArray, stdev: float, square_sizes, baseline):
    """``perturb(rng, total rows)`` -> ``draw(rows, images, index) -> (I, perturbed images)`` for batches of rows
    in order."""
    if callable(perturbation):
        return lambda rng, total: _called(perturbation, rng)
    if perturbation == 'gaussian':
        if not np.isfinite(stdev) or stdev < 0:
            raise ValueError(f"stdev must be a non-negative number, got {stdev!r}")
        return lambda rng, total: _gaussian(rng, stdev)
    if perturbation == 'square':
        squares = _squares(x.shape, square_sizes)
        base = _baseline(baseline, x)
        return lambda rng, total: _square_removal(squares[rng.integers(len(squares), size=total)], base)
    raise ValueError(f"unknown perturbation {perturbation!r}; valid: {', '.join(PERTURBATIONS)} or a function "
                     f"(rows, rng) -> (perturbations, perturbed rows)")


def _gaussian(rng: np.random.Generator, stdev: float):
    def draw(rows, images: NDArray, index: NDArray):
        noise = rng.standard_normal(images.shape) * stdev  # float64 draws: the same values whatever the batches
        change = nd.array(noise, ctx=images.context, dtype=images.dtype)
        return change, images - change
    return draw


def _squares(shape: Tuple[int, ...], square_sizes) -> np.ndarray:
    """Every square (side, top, left) of the given sides inside an H x W image, by side, top row, left column."""
    if len(shape) != 4:
        raise ValueError(f"square removal needs an image batch N x C x H x W, got shape {shape}")
    height, width = shape[2:]
    sides = range(1, min(PAPER_SQUARE_SIDES, height, width) + 1) if square_sizes is None else square_sizes
    sides = np.asarray(list(sides))
    if sides.size == 0 or sides.dtype.kind not in 'iu' or (sides < 1).any() or (sides > min(height, width)).any():
        raise ValueError(f"square_sizes must be integer sides 1..{min(height, width)} (the image is "
                         f"{height} x {width}); got {list(sides)}")
    return np.array([(side, top, left) for side in sides for top in range(height - side + 1)
                     for left in range(width - side + 1)], dtype=np.int64)


def _square_removal(drawn: np.ndarray, base: NDArray):
    def draw(rows, images: NDArray, index: NDArray):
        masks = np.zeros((len(rows), 1) + images.shape[2:], dtype=np.float32)
        for mask, (side, top, left) in zip(masks, drawn[rows]):
            mask[0, top:top + side, left:left + side] = 1
        change = nd.array(masks, ctx=images.context, dtype=images.dtype).broadcast_to(images.shape)
        return change, images - change * (images - nd.take(base, index))
    return draw


def _called(perturbation: Callable, rng: np.random.Generator):
    def draw(rows, images: NDArray, index: NDArray):
        result = perturbation(images, rng)
        if not isinstance(result, tuple) or len(result) != 2:
            raise ValueError("a perturbation function must return a pair (perturbations, perturbed rows)")
        change, perturbed = (value if isinstance(value, NDArray) else
                             nd.array(np.asarray(value), ctx=images.context) for value in result)
        if change.shape != images.shape or perturbed.shape != images.shape:
            raise ValueError(f"a perturbation function must return perturbations and perturbed rows of the rows' "
                             f"shape {images.shape}; got {change.shape} and {perturbed.shape}")
        return change.astype(images.dtype), perturbed.astype(images.dtype)
    return draw


# ----- max-sensitivity

NORMS = "'fro' or a number p >= 1 (np.inf for the largest absolute value)"


@serialized
def max_sensitivity(net, x, maps=None, target: Target = None, *, explain: Callable, score: str = 'logits',
                    batch_size: int = 32, radius: float = 0.02, n_perturb_samples: int = 10,
                    norm: Union[str, float] = 'fro', seed: Optional[int] = None) -> NDArray:
    """Max-sensitivity (Yeh et al. 2019; ``captum.metrics.sensitivity_max``): the largest relative change of the
    explanation ``phi`` under perturbations ``d`` of the input within an L-infinity ball of radius ``r``,

    ``SENS_MAX(phi, x) = max_{||d||_inf <= r} ||phi(x + d) - phi(x)|| / ||phi(x)||``,

    estimated per image from ``n_perturb_samples`` draws ``d ~ U[-r, r]`` elementwise (captum's default
    perturbation). Lower is better; 0 means the explanation did not move (the gradient of a linear model).

    Parameters
    ----------
    net : Block
        The network.
    x : NDArray or numpy array
        N x C x H x W batch (any N x ... batch for networks that do not start with a convolution).
    maps : NDArray or numpy array, optional
        ``phi(x)``, the explanation of the clean images by ``explain``; None computes it (one call). Any shape
        ``explain`` returns (N x h x w CAMs, N x C x H x W attributions, ...), compared as they are.
    target : None, int, sequence of int, or callable
        The class explained: the predicted class of each clean image (None), fixed for every perturbed copy
        and passed to ``explain`` per row; a target function is passed as it is.
    explain : callable
        ``explain(net, rows, target=...)`` returning maps for the rows (or a pair whose first item they are),
        e.g. ``lambda net, rows, target: gradients.saliency(net, rows, target)``; ``score`` is not passed to it
        (bind it in the function).
    score : str
        How the predicted class is found for ``target=None`` (``'logits'`` or ``'output'``; same argmax).
    batch_size : int
        Perturbed rows per call of ``explain``.
    radius : float
        ``r``, in the input's units (captum's default 0.02).
    n_perturb_samples : int
        Perturbations per image (captum's default 10).
    norm : str or float
        ``'fro'`` (captum's default: the Euclidean norm of the flattened difference) or ``p >= 1`` (the
        flattened p-norm; ``np.inf`` the largest absolute value), as captum's ``norm_ord``.
    seed : int, optional
        Seed of the generator of the perturbations.

    Returns
    -------
    NDArray
        Shape (N,), float32, non-negative. Where ``phi(x)`` is all zeros the change is not divided (captum's
        rule), so a constant zero explanation scores 0 and one that appears under perturbation scores its norm.
        Cost: ``explain`` on N x n_perturb_samples perturbed rows, plus on the N clean images when ``maps`` is
        None, plus one forward pass for the classes when ``target`` is not a function.
    """
    _check_score(score)
    _check_count('n_perturb_samples', n_perturb_samples)
    _check_count('batch_size', batch_size)
    if not callable(explain):
        raise ValueError(f"explain must be a function explain(net, rows, target=...) such as "
                         f"lambda net, rows, target: gradients.saliency(net, rows, target); got {explain!r}")
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a non-negative number, got {radius!r}")
    _check_norm(norm)
    x = as_batch(net, x)
    n = x.shape[0]
    targets = _row_targets(net, x, target, 1)
    owners = np.repeat(np.arange(n), n_perturb_samples)
    rng = np.random.default_rng(seed)
    changes = []
    with Explainer(net):
        clean = _explained(explain, net, x, targets, n) if maps is None else _given(maps, x)
        for start in range(0, len(owners), batch_size):
            rows = owners[start:start + batch_size]
            noise = rng.uniform(-radius, radius, size=(len(rows),) + x.shape[1:])  # float64: batch-size invariant
            index = nd.array(rows, ctx=x.context)
            perturbed = nd.take(x, index) + nd.array(noise, ctx=x.context, dtype=x.dtype)
            explained = _explained(explain, net, perturbed, targets if callable(targets) else targets[rows],
                                   len(rows))
            if explained.shape[1:] != clean.shape[1:]:
                raise ValueError(f"explain returned maps of shape {explained.shape[1:]} per row; the clean maps "
                                 f"have shape {clean.shape[1:]}: pass maps made by the same explain function")
            changes.append(_norms(explained.astype('float64') - nd.take(clean, index).astype('float64'), norm))
    reference = _norms(clean.astype('float64'), norm)
    ratios = np.concatenate(changes) / np.where(reference > 0, reference, 1)[owners]
    return nd.array(ratios.reshape((n, n_perturb_samples)).max(axis=1), ctx=x.context, dtype='float32')


def _explained(explain: Callable, net, rows: NDArray, targets, count: int) -> NDArray:
    result = explain(net, rows, target=targets)
    maps = result[0] if isinstance(result, tuple) else result
    if not isinstance(maps, NDArray):
        maps = nd.array(np.asarray(maps, dtype=np.float32), ctx=rows.context)
    if maps.ndim < 1 or maps.shape[0] != count:
        raise ValueError(f"explain must return one map per row ({count} rows), got shape {maps.shape}")
    return maps.as_in_context(rows.context)


def _given(maps, x: NDArray) -> NDArray:
    if not isinstance(maps, NDArray):
        maps = nd.array(np.asarray(maps, dtype=np.float32), ctx=x.context)
    if maps.ndim < 1:
        raise ValueError(f"maps must hold one map per image, N x ...; got shape {maps.shape}")
    check_batch(maps, x.shape[0])
    return maps.as_in_context(x.context)


def _norms(values: NDArray, norm: Union[str, float]) -> np.ndarray:
    flat = nd.abs(values.reshape((values.shape[0], -1)))
    if norm == 'fro' or norm == 2:
        result = nd.sqrt(nd.square(flat).sum(axis=1))
    elif norm == np.inf:
        result = flat.max(axis=1)
    else:
        result = nd.power(nd.power(flat, float(norm)).sum(axis=1), 1 / float(norm))
    return result.asnumpy().astype(np.float64)


def _check_norm(norm) -> None:
    if isinstance(norm, str):
        if norm != 'fro':
            raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
        return
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or np.isnan(norm) or norm < 1:
        raise ValueError(f"norm must be {NORMS}; got {norm!r}")


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
