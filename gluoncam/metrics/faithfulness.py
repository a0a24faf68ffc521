"""Faithfulness of a map to the network: how the target's probability moves as the pixels the map ranks first are
deleted or inserted (Petsiuk et al., RISE, BMVC 2018), or removed and imputed from their neighbours (ROAD, Rong et
al., ICML 2022). Forward passes only; perturbed images are made and scored ``batch_size`` rows at a time, across
the images of the batch.

Pixels are ranked by the map brought to the input's size (:func:`gluoncam.metrics.maps.pixel_maps`: CAMs upsampled,
channel maps summed). Ties are broken by a stable order: among pixels of equal value, the one earlier in row-major
order (row by row, left to right) goes first, so a constant map deletes, inserts and removes pixels row by row.
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from ..explainer import Explainer
from ..inputs import Target, as_batch
from ..perturbation import ProgressOption, _baseline, _check_score, _Scorer
from ..threads import serialized
from .maps import check_batch, pixel_maps

__all__ = ['CurveResult', 'ROADResult', 'deletion', 'insertion', 'road', 'noisy_linear_imputation']

Substrate = Union[str, float, np.ndarray, NDArray]
Step = Union[None, int, float]

SUBSTRATES = ('black', 'blur', 'mean')
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # pytorch-grad-cam's ROAD*Average and ROADCombined
# ROAD's neighbourhood: (row offset, column offset, weight); edge neighbours weigh twice the diagonal ones
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
              (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))


class CurveResult(NamedTuple):
    """A deletion or insertion curve: ``curve`` N x (steps + 1), the target's probability (or score) after each
    step; ``auc`` (N,), its area over the fraction of pixels moved; ``fractions`` (steps + 1,), that fraction at
    each point (0 to 1)."""
    curve: NDArray
    auc: NDArray
    fractions: NDArray


class ROADResult(NamedTuple):
    """ROAD at P percentiles: ``morf`` and ``lerf`` N x P, the change of the target's probability (or score)
    ``S(imputed) - S(x)`` with the most (least) relevant pixels removed; ``morf_average`` and ``lerf_average``
    (N,), their means over the percentiles; ``combined`` (N,), ``(lerf_average - morf_average) / 2``;
    ``percentiles`` as used."""
    morf: NDArray
    lerf: NDArray
    morf_average: NDArray
    lerf_average: NDArray
    combined: NDArray
    percentiles: Tuple[float, ...]


class _ProbabilityScorer(_Scorer):
    """:class:`gluoncam.perturbation._Scorer` that scores class targets by their softmax probability
    (``probability=True``) instead of the raw scored output; a target function's score is used as it is."""

    def __init__(self, explainer: Explainer, x: NDArray, target: Target, score: str, batch_size: int,
                 progress: ProgressOption, name: str, probability: bool):
        self.probability = bool(probability)
        super().__init__(explainer, x, target, score, batch_size, progress, name)

    def _scored(self, output, owners: np.ndarray) -> NDArray:
        if self.probability and not callable(self.target):
            output = nd.softmax(output, axis=1)
        return super()._scored(output, owners)


# ----- checked arguments

def _setup(net, x, maps, score: str, batch_size: int) -> Tuple[NDArray, NDArray]:
    """(x as N x C x H x W, its maps as N x H x W float32), checked."""
    _check_score(score)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
    x = as_batch(net, x)
    if x.ndim != 4:
        raise ValueError(f"image metrics need an image batch N x C x H x W, got shape {x.shape}")
    pixels = pixel_maps(maps, tuple(x.shape[2:]), x.context)
    check_batch(pixels, x.shape[0])
    if not bool(nd.contrib.isfinite(pixels).min().asscalar()):
        raise ValueError("the maps contain NaN or infinite values")
    return x, pixels


def _orders(pixels: NDArray, descending: bool) -> np.ndarray:
    """N x (H * W) pixel indices, each image's most relevant first (``descending``) or least relevant first;
    numpy's stable sort keeps equal values in row-major order (MXNet's argsort is not stable)."""
    flat = pixels.asnumpy().reshape((pixels.shape[0], -1)).astype(np.float64)
    return np.argsort(-flat if descending else flat, axis=1, kind='stable')


def _step_size(step: Step, total: int, width: int) -> int:
    """Pixels moved per step: ``step`` pixels (int), a fraction of the image (float in (0, 1]), or one row."""
    if step is None:
        return width
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, float, np.integer, np.floating)):
        raise ValueError(f"step must be a pixel count (int >= 1) or a fraction of the image (float in (0, 1]), "
                         f"got {step!r}")
    if isinstance(step, (int, np.integer)):
        if step < 1:
            raise ValueError(f"step must be at least 1 pixel (or a fraction in (0, 1]), got {step}")
        return min(int(step), total)
    if not 0 < step <= 1:
        raise ValueError(f"a fractional step must be in (0, 1] (a share of the {total} pixels), got {step}")
    return max(1, math.ceil(step * total))


# ----- substrates

def _substrate(substrate: Substrate, x: NDArray, sigma: float, radius: int) -> NDArray:
    """What deleted pixels show, or inserted ones start from: N x C x H x W."""
    if isinstance(substrate, str):
        if substrate == 'black':
            return nd.zeros_like(x)
        if substrate == 'blur':
            return _blurred(x, sigma, radius)
        if substrate == 'mean':
            return x.mean(axis=(2, 3), keepdims=True).broadcast_to(x.shape)
        raise ValueError(f"unknown substrate {substrate!r}; valid: {', '.join(map(repr, SUBSTRATES))}, a number, "
                         f"or an array of one image (C, H, W) or one per image (N, C, H, W)")
    return _baseline(substrate, x)


def _blurred(x: NDArray, sigma: float, radius: int) -> NDArray:
    """Each channel convolved with a normalised Gaussian of ``sigma`` cut at ``radius`` pixels (separable; the
    image's edge pixels repeated beyond it)."""
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"blur sigma must be a positive number of pixels, got {sigma!r}")
    if int(radius) != radius or radius < 0:
        raise ValueError(f"blur radius must be a whole number of pixels >= 0, got {radius!r}")
    radius = int(radius)
    if radius == 0:
        return x.copy()
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    channels, size = x.shape[1], 2 * radius + 1
    padded = nd.pad(x, mode='edge', pad_width=(0, 0, 0, 0, radius, radius, radius, radius))
    down = nd.array(np.tile(taps.reshape(1, 1, size, 1), (channels, 1, 1, 1)), ctx=x.context, dtype=x.dtype)
    across = down.reshape((channels, 1, 1, size))
    blurred = nd.Convolution(padded, weight=down, kernel=(size, 1), num_filter=channels, num_group=channels,
                             no_bias=True)
    return nd.Convolution(blurred, weight=across, kernel=(1, size), num_filter=channels, num_group=channels,
                          no_bias=True)


# ----- deletion and insertion

@serialized
def deletion(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
             step: Step = None, substrate: Substrate = 'black', sigma: float = 5.0, radius: int = 5,
             probability: bool = True, progress: ProgressOption = None) -> CurveResult:
    """Deletion curve and its area (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018): the map's pixels, highest first, are replaced by the substrate ``step`` pixels at a time,
    and the target's probability is read after each step. Lower is better: a faithful map's first pixels carry
    the class, so the probability falls fast.

    With ``o`` the pixel order and ``k_t = min(t * step, H * W)`` pixels moved after step t (t = 0..T,
    ``T = ceil(H * W / step)``): ``curve_t = p(x with pixels o_1..o_{k_t} from the substrate)``,
    ``auc = trapezoid of curve_t over k_t / (H * W)``, from 0 to 1. As RISE's ``CausalMetric('del')``: the
    same curve, points and target (the clean image's top class); RISE's AUC spaces the points evenly, which is
    the same when ``step`` divides H * W.

    Parameters
    ----------
    x : NDArray or numpy array
        N x C x H x W images, preprocessed as the network expects.
    maps : NDArray or numpy array
        Any method's maps for x: N x h x w (upsampled bilinearly) or N x C x H x W (summed over channels).
        Pixels of equal value go in row-major order (a constant map deletes row by row).
    target : None, int, sequence of int, or callable
        None: the clean image's predicted class, kept for every perturbed copy; a function mapping the output to
        one score per sample is used as it is (no softmax).
    score : str
        ``'logits'`` or ``'output'``, as in :meth:`gluoncam.Explainer.backprop`. For a network that ends in its
        own softmax keep ``'logits'`` (``'output'`` with ``probability=True`` would apply the softmax twice).
    batch_size : int
        Perturbed images per forward pass.
    step : None, int or float
        Pixels per step: an int count, a float fraction of the image in (0, 1] (rounded up to whole pixels), or
        None for one image row (RISE's ``step=224`` on 224 x 224 images).
    substrate : 'black', 'blur', 'mean', number or array
        What deleted pixels show: zeros of the preprocessed input (RISE's deletion), the image blurred
        (``sigma``, ``radius``), each channel's mean over the image, a number, or an array of one image
        (C, H, W) or one per image (N, C, H, W).
    sigma, radius : float, int
        The blur's Gaussian width and cut-off in pixels (RISE: an 11 x 11 kernel of sigma 5; its kernel differs
        slightly, being a reflected Gaussian). Edge pixels are repeated past the border.
    probability : bool
        True: the softmax probability of the target class (RISE); False: the raw scored output.
    progress : None or bool
        A tqdm bar on stderr; None shows it for more than 10 batches.

    Returns
    -------
    CurveResult
        ``curve`` N x (T + 1) (point 0 the clean image, point T the substrate), ``auc`` (N,), ``fractions``
        (T + 1,), all NDArrays on x's context.

    Costs 1 + N * (T + 1) forward passes, batched. The ranking sorts a numpy copy of the maps.
    """
    return _causal(net, x, maps, target, score, batch_size, step, substrate, sigma, radius, probability,
                   progress, inserting=False)


@serialized
def insertion(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
              step: Step = None, substrate: Substrate = 'blur', sigma: float = 5.0, radius: int = 5,
              probability: bool = True, progress: ProgressOption = None) -> CurveResult:
    """Insertion curve and its area (Petsiuk et al., RISE, BMVC 2018): starting from the substrate (by default
    the blurred image, as RISE's ``CausalMetric('ins')``), the image's pixels are revealed ``step`` at a time,
    the map's highest first, and the target's probability is read after each step. Higher is better.

    ``curve_t = p(substrate with pixels o_1..o_{k_t} from x)``, ``k_t = min(t * step, H * W)``,
    ``auc = trapezoid of curve_t over k_t / (H * W)``. Parameters, ties and costs as :func:`deletion`; point 0
    is the substrate, point T the clean image.
    """
    return _causal(net, x, maps, target, score, batch_size, step, substrate, sigma, radius, probability,
                   progress, inserting=True)


def _causal(net, x, maps, target: Target, score: str, batch_size: int, step: Step, substrate: Substrate,
            sigma: float, radius: int, probability: bool, progress: ProgressOption, inserting: bool) -> CurveResult:
    x, pixels = _setup(net, x, maps, score, batch_size)
    n, _, height, width = x.shape
    total = height * width
    size = _step_size(step, total, width)
    moved = np.minimum(np.arange(math.ceil(total / size) + 1) * size, total)
    base = _substrate(substrate, x, sigma, radius)
    start, finish = (base, x) if inserting else (x, base)
    ranks = _ranks(_orders(pixels, descending=True), x)
    points = len(moved)
    owners = np.repeat(np.arange(n), points)

    def make_inputs(rows: np.ndarray) -> NDArray:
        index = nd.array(owners[rows], ctx=x.context)
        limits = nd.array(moved[rows % points], ctx=x.context, dtype=x.dtype).reshape((-1, 1, 1, 1))
        switched = nd.broadcast_lesser(nd.take(ranks, index), limits)  # 1 where the pixel is among the first k_t
        return nd.take(start, index) * (1 - switched) + nd.take(finish, index) * switched

    with Explainer(net) as explainer:
        scorer = _ProbabilityScorer(explainer, x, target, score, batch_size, progress,
                                    'insertion' if inserting else 'deletion', probability)
        curve = scorer(owners, make_inputs).reshape((n, points))
    fractions = moved / total
    area = np.trapz(curve, fractions, axis=1)
    as_nd = lambda values: nd.array(values, ctx=x.context, dtype='float32')  # noqa: E731
    return CurveResult(as_nd(curve), as_nd(area), as_nd(fractions))


def _ranks(orders: np.ndarray, x: NDArray) -> NDArray:
    """N x 1 x H x W: each pixel's place in its image's order (0 first)."""
    ranks = np.empty_like(orders)
    np.put_along_axis(ranks, orders, np.arange(orders.shape[1])[None].repeat(len(orders), axis=0), axis=1)
    return nd.array(ranks.reshape((x.shape[0], 1) + tuple(x.shape[2:])), ctx=x.context, dtype='float32')


# ----- ROAD

@serialized
def noisy_linear_imputation(x, keep, noise: float = 0.01, seed: Optional[int] = None) -> NDArray:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022): every removed pixel takes the weighted mean of
    its 8 neighbours (edge neighbours 1/6, diagonal ones 1/12, over those inside the image), removed neighbours
    included, solved for all removed pixels at once as one sparse linear system per image and channel
    (scipy.sparse, on float64 numpy copies), then ``noise * N(0, 1)`` is added to them. Kept pixels are
    returned unchanged. An image with every pixel removed has nothing to impute from: its pixels become 0 (plus
    the noise).

    Parameters
    ----------
    x : NDArray or numpy array
        N x C x H x W (or one C x H x W) images.
    keep : array
        N x H x W (or H x W, for every image) booleans: True where the pixel stays.
    noise : float
        The noise's standard deviation, in the units of x (pytorch-grad-cam and ROAD: 0.01).
    seed : int or None
        The noise's numpy generator.

    Returns
    -------
    NDArray
        x's shape, on x's context (numpy's default for numpy input).
    """
    images = x.asnumpy() if isinstance(x, NDArray) else np.asarray(x)
    single = images.ndim == 3
    images = images[None] if single else images
    if images.ndim != 4:
        raise ValueError(f"x must be N x C x H x W or C x H x W, got shape {images.shape}")
    mask = np.asarray(keep.asnumpy() if isinstance(keep, NDArray) else keep)
    if mask.shape == images.shape[2:]:
        mask = np.broadcast_to(mask, (images.shape[0],) + mask.shape)
    if mask.shape != (images.shape[0],) + images.shape[2:]:
        raise ValueError(f"keep has shape {mask.shape}; valid: {images.shape[2:]} (H, W) or "
                         f"{(images.shape[0],) + images.shape[2:]} (N, H, W) booleans")
    _check_noise(noise)
    rng = np.random.default_rng(seed)
    filled = np.stack([_imputed(image.astype(np.float64), image_mask.astype(bool),
                                noise * rng.standard_normal(image.shape))
                       for image, image_mask in zip(images, mask)])
    filled = filled[0] if single else filled
    ctx = x.context if isinstance(x, NDArray) else None
    return nd.array(filled, ctx=ctx, dtype=images.dtype if images.dtype.kind == 'f' else 'float32')


def _check_noise(noise: float) -> None:
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")


def _imputed(image: np.ndarray, keep: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """One C x H x W image with its pixels outside ``keep`` (H x W) solved for and ``noise`` (C x H x W) added
    there."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu
    channels, height, width = image.shape
    flat = image.reshape((channels, -1))
    missing = np.flatnonzero(~keep.reshape(-1))
    result = flat.copy()
    if missing.size == 0:
        return image.copy()
    if missing.size == height * width:
        result[:] = 0
    else:
        unknown_index = np.full(height * width, -1)
        unknown_index[missing] = np.arange(missing.size)
        matrix, rhs = _imputation_system(flat, missing, unknown_index, height, width)
        system = coo_matrix(matrix, shape=(missing.size, missing.size)).tocsc()
        result[:, missing] = splu(system).solve(rhs).T
    result[:, missing] += noise.reshape((channels, -1))[:, missing]
    return result.reshape(image.shape)


def _imputation_system(flat: np.ndarray, missing: np.ndarray, unknown_index: np.ndarray, height: int,
                       width: int):
    """(A, b) with, for each missing pixel u, ``sum_v w_v v_u - sum_{v missing} w_v v_v = sum_{v kept} w_v x_v``
    over u's neighbours v inside the image: A as (values, (rows, columns)), b missing x channels."""
    rows_of, cols_of = np.divmod(missing, width)
    count = missing.size
    diagonal = np.zeros(count)
    rhs = np.zeros((count, flat.shape[0]))
    entries = [[], [], []]
    for d_row, d_col, weight in NEIGHBOURS:
        row, col = rows_of + d_row, cols_of + d_col
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        equations = np.flatnonzero(inside)
        neighbours = row[inside] * width + col[inside]
        diagonal[equations] += weight
        unknown = unknown_index[neighbours] >= 0
        entries[0].append(np.full(unknown.sum(), -weight))
        entries[1].append(equations[unknown])
        entries[2].append(unknown_index[neighbours[unknown]])
        rhs[equations[~unknown]] += weight * flat[:, neighbours[~unknown]].T  # one neighbour per equation here
    values = np.concatenate(entries[0] + [diagonal])
    rows = np.concatenate(entries[1] + [np.arange(count)])
    columns = np.concatenate(entries[2] + [np.arange(count)])
    return (values, (rows, columns)), rhs


def _check_percentiles(percentiles: Sequence[float]) -> Tuple[float, ...]:
    try:
        values = tuple(float(p) for p in np.atleast_1d(np.asarray(percentiles, dtype=np.float64)))
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be numbers in 0..100, got {percentiles!r}") from None
    if not values or any(not (np.isfinite(p) and 0 <= p <= 100) for p in values):
        raise ValueError(f"percentiles must be a non-empty sequence of numbers in 0..100 (e.g. pytorch-grad-cam's "
                         f"{ROAD_PERCENTILES}), got {percentiles!r}")
    return values


@serialized
def road(net, x, maps, target: Target = None, *, score: str = 'logits', batch_size: int = 32,
         percentiles: Sequence[float] = ROAD_PERCENTILES, noise: float = 0.01, seed: Optional[int] = None,
         probability: bool = True, progress: ProgressOption = None) -> ROADResult:
    """ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML 2022), as pytorch-grad-cam's ``ROADMostRelevantFirstAverage``, ``ROADLeastRelevantFirstAverage``
    and ``ROADCombined``: pixels are removed and filled by :func:`noisy_linear_imputation` (which does not leak
    the removed shape as a constant substrate does), and the change of the target's probability is read.

    pytorch-grad-cam's convention for a percentile p: the pixels at or above the map's p-th percentile are
    removed (MoRF), or at or below the (100 - p)-th (LeRF), so p is the share of pixels *kept*. Here exactly
    ``K = ceil(p (H W - 1) / 100)`` pixels are kept (the count below numpy's interpolated p-th percentile of
    distinct values) and the other ``H W - K``, most relevant first (MoRF) or least relevant first (LeRF), are
    removed, ties in row-major order as in :func:`deletion`::

        morf_p = S(impute(x, remove the H W - K_p highest)) - S(x)     (lower is better)
        lerf_p = S(impute(x, remove the H W - K_p lowest)) - S(x)      (higher, nearer 0, is better)
        combined = mean_p (lerf_p - morf_p) / 2                         (higher is better)

    MoRF and LeRF at one percentile share one noise draw, so a constant map (the same pixels removed either way)
    scores ``combined = 0`` exactly.

    Parameters
    ----------
    percentiles : sequence of numbers in 0..100
        Shares of the pixels kept, in percent; pytorch-grad-cam's default (10, 20, ..., 90).
    noise : float
        The imputation noise's standard deviation (pytorch-grad-cam: 0.01).
    seed : int or None
        The noise's numpy generator (pytorch-grad-cam draws it unseeded).
    probability : bool
        True: the target's softmax probability (pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``); False:
        the raw score (its ``ClassifierOutputTarget``).
    x, maps, target, score, batch_size, progress :
        As in :func:`deletion`.

    Returns
    -------
    ROADResult
        ``morf``, ``lerf`` N x P; ``morf_average``, ``lerf_average``, ``combined`` (N,); NDArrays on x's
        context.

    Costs 1 + 2 N P forward passes, batched, and 2 N P sparse solves of up to H W unknowns (scipy, on numpy
    copies of the images).
    """
    values = _check_percentiles(percentiles)
    _check_noise(noise)
    x, pixels = _setup(net, x, maps, score, batch_size)
    n, _, height, width = x.shape
    total = height * width
    kept = [math.ceil(round(p * (total - 1) / 100, 9)) for p in values]
    orders = (_orders(pixels, descending=True), _orders(pixels, descending=False))
    images = x.asnumpy().astype(np.float64)
    noise_key = int(np.random.default_rng(seed).integers(2 ** 63))
    count = len(values)
    owners = np.repeat(np.arange(n), 2 * count)

    def make_inputs(rows: np.ndarray) -> NDArray:
        made = []
        for row in rows:
            image, rest = divmod(int(row), 2 * count)
            k, least_first = divmod(rest, 2)
            keep = np.ones(total, dtype=bool)
            keep[orders[least_first][image, :total - kept[k]]] = False
            draw = noise * np.random.default_rng((noise_key, image, k)).standard_normal(images.shape[1:])
            made.append(_imputed(images[image], keep.reshape((height, width)), draw))
        return nd.array(np.stack(made), ctx=x.context, dtype=x.dtype)

    with Explainer(net) as explainer:
        scorer = _ProbabilityScorer(explainer, x, target, score, batch_size, progress, 'ROAD', probability)
        changes = scorer(owners, make_inputs).reshape((n, count, 2)) - scorer.original[:, None, None]
    morf, lerf = changes[:, :, 0], changes[:, :, 1]
    as_nd = lambda array: nd.array(array, ctx=x.context, dtype='float32')  # noqa: E731
    return ROADResult(as_nd(morf), as_nd(lerf), as_nd(morf.mean(axis=1)), as_nd(lerf.mean(axis=1)),
                      as_nd((lerf - morf).mean(axis=1) / 2), values)
