"""The perturbation family, as captum defines it: attributions from the target score S of copies of the input with
parts of it replaced by a baseline; forward passes only, no gradient.

Every function returns a signed N x C x H x W NDArray on the input's context (methods over feature groups repeat
a group's value on every pixel and channel of the group, as captum's ``return_input_shape=True``). Perturbed
inputs are made and scored ``batch_size`` rows at a time, across the images of the batch; a tqdm bar on stderr
shows the progress of long runs. Feature groups are integer label maps (N x H x W or H x W), by default SLIC
superpixels (:func:`superpixels`); scikit-image segments them and scikit-learn fits the surrogates of
:func:`kernel_shap` and :func:`lime`, on numpy copies of the labels and scores.
"""
import math
import sys
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from mxnet import nd
from mxnet.base import MXNetError
from mxnet.ndarray import NDArray

from . import compiled
from .explainer import SCORES, Explainer
from .inputs import Target, as_batch, classes_for, describe_output
from .threads import serialized

__all__ = ['superpixels', 'occlusion', 'feature_ablation', 'shapley_value_sampling', 'kernel_shap', 'lime']

Baseline = Union[float, np.ndarray, NDArray]
FeatureMask = Union[None, np.ndarray, NDArray]
ProgressOption = Optional[bool]

PROGRESS_BATCHES = 10  # progress=None shows a bar when a call makes more batches than this
EXACT_SHAPLEY_FEATURES = 16  # n_samples=None scores 2 ** K coalitions per image
KERNEL_SHAP_END_WEIGHT = 1e6  # captum's weight of the empty and full coalitions (its ``inf_weight``)


# ----- superpixels

@serialized
def superpixels(images, n_segments: int = 50, compactness: float = 10.0, sigma: float = 1.0,
                start_label: int = 0, **slic_options) -> np.ndarray:
    """SLIC superpixels (Achanta et al. 2012, scikit-image's ``segmentation.slic``) of each image: the feature
    groups of :func:`feature_ablation`, :func:`shapley_value_sampling`, :func:`kernel_shap` and :func:`lime`.

    Parameters
    ----------
    images : NDArray or numpy array
        Float images channels first, N x C x H x W or one C x H x W (e.g. the network's preprocessed input), each
        scaled to [0, 1] by its own minimum and maximum before segmenting; or uint8 images channels last,
        H x W x C or N x H x W x C (RGB as loaded). Three channels are segmented in CIELAB, as SLIC's default.
    n_segments, compactness, sigma :
        SLIC's approximate number of superpixels, its trade-off of colour against space (higher: squarer
        superpixels) and the width of the Gaussian smoothing before segmenting.
    start_label : int
        The first label: each image's labels are ``start_label .. start_label + K - 1``.
    slic_options :
        Further ``slic`` arguments (``max_num_iter``, ``enforce_connectivity``, ``slic_zero``, ...).

    Returns
    -------
    numpy.ndarray
        N x H x W int64 labels (numpy: the segmentation is scikit-image's).
    """
    from skimage.segmentation import slic
    if n_segments < 2:
        raise ValueError(f"n_segments must be at least 2 (attributions need two features to compare), got "
                         f"{n_segments}")
    labels = []
    for k, image in enumerate(_channels_last(images)):
        segments = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0,
                        channel_axis=-1, **slic_options)
        _, dense = np.unique(segments, return_inverse=True)
        count = int(dense.max()) + 1
        if count < 2:
            raise ValueError(f"SLIC found {count} superpixel in image {k} (shape {image.shape[:2]}); at least 2 "
                             f"are needed: raise n_segments or lower compactness")
        labels.append(dense.reshape(segments.shape).astype(np.int64) + start_label)
    return np.stack(labels)


def _channels_last(images) -> np.ndarray:
    """N x H x W x C float images in [0, 1] for SLIC."""
    array = images.asnumpy() if isinstance(images, NDArray) else np.asarray(images)
    if array.dtype == np.uint8:
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(f"uint8 images must be H x W x C or N x H x W x C, got shape {array.shape}")
        return array.astype(np.float64) / 255
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.dtype.kind not in 'fiu':
        raise ValueError(f"images must be N x C x H x W or C x H x W (float), or H x W x C or N x H x W x C "
                         f"(uint8); got shape {array.shape}, dtype {array.dtype}")
    array = array.astype(np.float64).transpose((0, 2, 3, 1))
    low = array.min(axis=(1, 2, 3), keepdims=True)
    span = array.max(axis=(1, 2, 3), keepdims=True) - low
    return (array - low) / np.where(span > 0, span, 1)


# ----- scoring perturbed inputs

class _Scorer:
    """Target scores of the clean batch and of perturbed copies of its images, ``batch_size`` rows a pass.

    Perturbed rows run through the compiled network (:func:`gluoncam.compiled.whole`), or through
    :meth:`Explainer.forward` when the network cannot be compiled or the compiled score of the first image
    differs from the imperative one (as ``cams.Scorer.input_scores``).
    """

    def __init__(self, explainer: Explainer, x: NDArray, target: Target, score: str, batch_size: int,
                 progress: ProgressOption, name: str):
        self.explainer, self.x, self.target, self.score = explainer, x, target, score
        self.batch_size, self.progress, self.name = batch_size, progress, name
        output, _ = explainer.forward(x, score=score)
        if not callable(target) and not (isinstance(output, NDArray) and output.ndim == 2):
            raise ValueError(f"class targets need an output of shape (N, classes); the network returns "
                             f"{describe_output(output)}: pass a function that maps the output to one score per "
                             f"sample")
        self.classes = None if callable(target) else classes_for(output, target).asnumpy()
        owners = np.arange(x.shape[0])
        self.original_nd = self._scored(output, owners)
        self.original = self.original_nd.asnumpy().astype(np.float64)
        self.network = self._compiled()

    def _compiled(self) -> Optional[compiled.Compiled]:
        try:
            network = compiled.whole(self.explainer.net, self.score)
            if network is not None and \
                    not compiled.agrees(self._scored(network(self.x[:1]), np.zeros(1, int)), self.original_nd[:1]):
                network = None
        except MXNetError:  # a graph MXNet cannot build or run: the imperative pass can
            network = None
        return network

    def _scored(self, output, owners: np.ndarray) -> NDArray:
        if callable(self.target):
            scores = self.target(output)
            if not isinstance(scores, NDArray) or scores.shape != (len(owners),):
                raise ValueError(f"the target function must return one score per sample, shape ({len(owners)},); "
                                 f"it returned {getattr(scores, 'shape', type(scores))}")
            return scores
        picked = nd.array(self.classes[owners], ctx=output.context, dtype='float32')
        return nd.pick(output, picked, axis=1)

    def __call__(self, owners: np.ndarray, make_inputs: Callable[[np.ndarray], NDArray]) -> np.ndarray:
        """The score of each row (float64 numpy); row r belongs to image ``owners[r]`` and is made, with the rest
        of its batch, by ``make_inputs(row indices)``."""
        total = len(owners)
        batches = math.ceil(total / self.batch_size)
        scores = []
        with _progress_bar(self.progress, batches, self.name) as bar:
            for start in range(0, total, self.batch_size):
                rows = np.arange(start, min(start + self.batch_size, total))
                inputs = make_inputs(rows)
                output = self.network(inputs) if self.network is not None else \
                    self.explainer.forward(inputs, score=self.score)[0]
                scores.append(self._scored(output, owners[rows]).asnumpy())
                bar.update(1)
        return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def update(self, _):
        return None


def _progress_bar(progress: ProgressOption, batches: int, name: str):
    shown = batches > PROGRESS_BATCHES if progress is None else bool(progress)
    if not shown:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=batches, desc=name, unit='batch', file=sys.stderr)


def _perturbed(x: NDArray, base: NDArray, owners: np.ndarray, keep: np.ndarray) -> NDArray:
    """Rows of images ``owners``: the image where ``keep`` (B x 1|C x H x W, 1 or 0) holds, the baseline elsewhere."""
    index = nd.array(owners, ctx=x.context)
    kept = nd.array(keep, ctx=x.context, dtype=x.dtype)
    return nd.take(x, index) * kept + nd.take(base, index) * (1 - kept)


# ----- checked arguments

def _setup(net, x, baseline: Baseline, batch_size: int) -> Tuple[NDArray, NDArray]:
    """(x as N x C x H x W, the baseline broadcast to it)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    x = as_batch(net, x)
    if x.ndim != 4:
        raise ValueError(f"perturbation methods need an image batch N x C x H x W, got shape {x.shape}")
    return x, _baseline(baseline, x)


def _baseline(baseline: Baseline, x: NDArray) -> NDArray:
    if not isinstance(baseline, NDArray):
        try:
            array = np.asarray(baseline, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"baseline must be a number or an array, got {baseline!r}") from None
        if array.ndim == 0:
            array = np.full(x.shape, float(array))
        baseline = nd.array(array, ctx=x.context)
    values = baseline.as_in_context(x.context).astype(x.dtype)
    if tuple(values.shape) == tuple(x.shape[1:]):
        values = values.expand_dims(0)
    if tuple(values.shape) == (1,) + tuple(x.shape[1:]):
        values = values.broadcast_to(x.shape)
    if tuple(values.shape) != tuple(x.shape):
        raise ValueError(f"baseline has shape {tuple(baseline.shape)}; valid: a scalar, one image "
                         f"{tuple(x.shape[1:])} (C, H, W) or one per image {tuple(x.shape)} (N, C, H, W)")
    if not bool(nd.contrib.isfinite(values).min().asscalar()):
        raise ValueError("the baseline contains NaN or infinite values")
    return values


def _check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")


def _feature_groups(feature_mask: FeatureMask, x: NDArray) -> Tuple[np.ndarray, List[int]]:
    """(N x H x W labels 0..K_i-1 per image, K_i per image) from the caller's mask, or SLIC superpixels of x."""
    n, _, height, width = x.shape
    if feature_mask is None:
        mask = superpixels(x)
    else:
        mask = feature_mask.asnumpy() if isinstance(feature_mask, NDArray) else np.asarray(feature_mask)
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.shape == (height, width):
            mask = np.broadcast_to(mask, (n, height, width))
        if mask.shape != (n, height, width):
            raise ValueError(f"feature_mask has shape {mask.shape}; valid: {(height, width)} (one for all images) "
                             f"or {(n, height, width)} (one per image), integer labels")
        if mask.dtype.kind not in 'iu' and not (mask.dtype.kind == 'f' and np.all(np.isfinite(mask))
                                                and np.all(mask == np.round(mask))):
            raise ValueError(f"feature_mask must hold integer labels, got dtype {mask.dtype}")
    labels, counts = [], []
    for image_mask in mask:
        _, dense = np.unique(image_mask, return_inverse=True)
        labels.append(dense.reshape(image_mask.shape))
        counts.append(int(dense.max()) + 1)
    return np.stack(labels).astype(np.int64), counts


def _check_samples(n_samples: Optional[int], least: int = 1, none_ok: bool = False) -> None:
    if n_samples is None and none_ok:
        return
    if n_samples is None or int(n_samples) != n_samples or n_samples < least:
        raise ValueError(f"n_samples must be an integer of at least {least}"
                         f"{' (or None)' if none_ok else ''}, got {n_samples!r}")


# ----- scoring coalitions of feature groups

def _coalition_scores(scorer: _Scorer, x: NDArray, base: NDArray, labels: np.ndarray,
                      coalitions: Sequence[np.ndarray]) -> List[np.ndarray]:
    """For each image i, the target score of each row of ``coalitions[i]`` (R_i x K_i, True: the group keeps the
    image's values, False: it takes the baseline's)."""
    owners = np.concatenate([np.full(len(rows), i) for i, rows in enumerate(coalitions)])
    widest = max(rows.shape[1] for rows in coalitions)
    table = np.concatenate([np.pad(rows, ((0, 0), (0, widest - rows.shape[1]))) for rows in coalitions])

    def make_inputs(rows: np.ndarray) -> NDArray:
        keep = table[rows[:, None, None], labels[owners[rows]]]  # B x H x W
        return _perturbed(x, base, owners[rows], keep[:, None])

    scores = scorer(owners, make_inputs)
    ends = np.cumsum([0] + [len(rows) for rows in coalitions])
    return [scores[start:stop] for start, stop in zip(ends[:-1], ends[1:])]


def _unique_rows(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct rows, index of each row among them, how often each occurs): a coalition drawn twice is scored
    once."""
    distinct, inverse, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    return distinct, inverse.reshape(-1), counts


def _painted(values: Sequence[np.ndarray], labels: np.ndarray, x: NDArray) -> NDArray:
    """Each image's per-group values on its pixels, repeated over the channels: N x C x H x W."""
    planes = np.stack([image_values[image_labels] for image_values, image_labels in zip(values, labels)])
    painted = nd.array(planes, ctx=x.context, dtype=x.dtype).expand_dims(1)
    return painted.broadcast_to(x.shape)


# ----- occlusion

@serialized
def occlusion(net, x, target: Target = None, window: Sequence[int] = (8, 8),
              strides: Union[None, int, Sequence[int]] = None, baseline: Baseline = 0.0, batch_size: int = 32,
              score: str = 'logits', progress: ProgressOption = None) -> NDArray:
    """Occlusion (Zeiler & Fergus 2014), as captum's ``Occlusion``: a window slides over the image and, at each
    position p, ``d_p = S(x) - S(x with the window at p replaced by the baseline)``; each element's attribution
    is the mean of ``d_p`` over the windows covering it. N x C x H x W, signed.

    Parameters
    ----------
    target, score :
        As in :meth:`Explainer.backprop` (None: the clean image's predicted class).
    window : (h, w) or (c, h, w)
        The occluded box; (h, w) spans every channel. captum's ``sliding_window_shapes`` is (c, h, w).
    strides : None, int, (sh, sw) or (sc, sh, sw)
        Steps between window positions, at most the window's size where it is smaller than the image (else
        pixels would be left out). None: half the window (at least 1); captum's default is 1, which makes
        ``(H - h + 1) * (W - w + 1)`` passes. Positions start at 0 every stride; where the last one would
        overrun the image, the window is cut at the edge (so every element is covered), as captum does.
    baseline : scalar, C x H x W or N x C x H x W
        What the window shows instead of the image.
    batch_size : int
        Occluded images per forward pass.
    progress : None or bool
        A tqdm bar on stderr: None shows it for more than 10 batches.

    Costs 1 + N * (positions) forward passes, batched.
    """
    _check_score(score)
    x, base = _setup(net, x, baseline, batch_size)
    shape = tuple(x.shape[1:])
    box, steps = _window(window, strides, shape)
    starts = _window_starts(shape, box, steps)
    n, positions = x.shape[0], len(starts)
    with Explainer(net) as explainer:
        scorer = _Scorer(explainer, x, target, score, batch_size, progress, 'occlusion')
        owners = np.repeat(np.arange(n), positions)

        def make_inputs(rows: np.ndarray) -> NDArray:
            keep = np.ones((len(rows),) + shape, dtype=np.float32)
            for k, row in enumerate(rows):
                keep[(k,) + _box_slices(starts[row % positions], box)] = 0
            return _perturbed(x, base, owners[rows], keep)

        drops = scorer.original[:, None] - scorer(owners, make_inputs).reshape((n, positions))
    total, count = np.zeros((n,) + shape), np.zeros(shape)
    for p, start in enumerate(starts):
        where = _box_slices(start, box)
        total[(slice(None),) + where] += drops[:, p, None, None, None]
        count[where] += 1
    return nd.array(total / count, ctx=x.context, dtype=x.dtype)


def _window(window: Sequence[int], strides, shape: Tuple[int, int, int]):
    """(window, strides) as checked (c, h, w) triples."""
    window = tuple(int(v) for v in window)
    if len(window) == 2:
        window = (shape[0],) + window
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"window must be (h, w) or (c, h, w) of positive sizes, got {window}")
    if any(w > s for w, s in zip(window, shape)):
        raise ValueError(f"window {window} is larger than the image {shape} (C, H, W)")
    if strides is None:
        steps = tuple(max(1, w // 2) for w in window)
    else:
        steps = (int(strides),) * 3 if np.isscalar(strides) else tuple(int(v) for v in strides)
        if len(steps) == 2:
            steps = (window[0],) + steps
    if len(steps) != 3 or min(steps) < 1:
        raise ValueError(f"strides must be an int or (sh, sw) or (sc, sh, sw), each at least 1, got {strides}")
    for step, w, size in zip(steps, window, shape):
        if step > w and w < size:
            raise ValueError(f"strides {steps} exceed the window {window} where it is smaller than the image "
                             f"{shape}: elements between windows would never be occluded")
    return window, steps


def _window_starts(shape, box, steps) -> List[Tuple[int, int, int]]:
    axes = [range(0, (math.ceil((size - w) / step) + 1) * step, step) for size, w, step in zip(shape, box, steps)]
    return [(c, i, j) for c in axes[0] for i in axes[1] for j in axes[2]]


def _box_slices(start, box) -> Tuple[slice, slice, slice]:
    return tuple(slice(s, s + w) for s, w in zip(start, box))


# ----- feature ablation

@serialized
def feature_ablation(net, x, target: Target = None, feature_mask: FeatureMask = None, baseline: Baseline = 0.0,
                     batch_size: int = 32, score: str = 'logits', progress: ProgressOption = None) -> NDArray:
    """Feature ablation, as captum's ``FeatureAblation``: each feature group g in turn replaced by the baseline,
    ``a_g = S(x) - S(x with group g replaced)`` on every element of the group. N x C x H x W, signed.

    Parameters
    ----------
    feature_mask : None, H x W or N x H x W integer labels
        The groups, e.g. from :func:`superpixels`; labels need not be consecutive. None: SLIC superpixels of x
        (``superpixels(x)`` with its defaults), since captum's default, every element a group, would cost one
        pass per element. One label per pixel (``np.arange(H * W).reshape(H, W)``) gives captum's default for
        all channels together.
    target, baseline, batch_size, score, progress :
        As in :func:`occlusion`.

    Costs 1 + sum_i K_i forward passes (K_i groups in image i), batched.
    """
    _check_score(score)
    x, base = _setup(net, x, baseline, batch_size)
    labels, counts = _feature_groups(feature_mask, x)
    with Explainer(net) as explainer:
        scorer = _Scorer(explainer, x, target, score, batch_size, progress, 'feature ablation')
        ablations = [~np.eye(k, dtype=bool) for k in counts]
        scores = _coalition_scores(scorer, x, base, labels, ablations)
    return _painted([original - ablated for original, ablated in zip(scorer.original, scores)], labels, x)


# ----- Shapley value sampling

@serialized
def shapley_value_sampling(net, x, target: Target = None, feature_mask: FeatureMask = None,
                           baseline: Baseline = 0.0, n_samples: Optional[int] = 25, seed: Optional[int] = None,
                           batch_size: int = 32, score: str = 'logits', progress: ProgressOption = None) -> NDArray:
    """Shapley value sampling (Castro et al. 2009; Strumbelj & Kononenko 2010), as captum's
    ``ShapleyValueSampling``: for each of ``n_samples`` random orders of the feature groups, the groups are
    switched from the baseline to the image one by one, and each group is credited with the score's change when
    it is switched; the credits are averaged over the orders. On every element of the group; N x C x H x W.

    The estimate of the Shapley value ``phi_g = sum_{T not containing g} |T|! (K - |T| - 1)! / K!
    (v(T + g) - v(T))``, with ``v(T)`` the score of the image whose groups outside T are the baseline's; the
    credits of one order sum to ``S(x) - S(baseline)``.

    Parameters
    ----------
    feature_mask :
        As in :func:`feature_ablation` (None: SLIC superpixels).
    n_samples : int or None
        Orders per image (captum's default 25). None: every order, the exact Shapley values (captum's
        ``ShapleyValues``), computed from the 2^K coalitions by the formula above; at most 16 groups.
    seed : int or None
        Seed of the orders (numpy's ``default_rng``); None: fresh ones each call.
    target, baseline, batch_size, score, progress :
        As in :func:`occlusion`.

    Costs 1 + the distinct coalitions met: at most ``n_samples * (K_i - 1) + 2`` per image (2^K_i with None).
    """
    _check_score(score)
    _check_samples(n_samples, none_ok=True)
    x, base = _setup(net, x, baseline, batch_size)
    labels, counts = _feature_groups(feature_mask, x)
    if n_samples is None and max(counts) > EXACT_SHAPLEY_FEATURES:
        raise ValueError(f"exact Shapley values (n_samples=None) score 2^K coalitions; an image has {max(counts)} "
                         f"groups, at most {EXACT_SHAPLEY_FEATURES} allowed: pass n_samples to sample orders")
    rng = np.random.default_rng(seed)
    plans = [_all_coalitions(k) if n_samples is None else _prefixes(rng, k, n_samples) for k in counts]
    with Explainer(net) as explainer:
        scorer = _Scorer(explainer, x, target, score, batch_size, progress, 'Shapley value sampling')
        scores = _coalition_scores(scorer, x, base, labels, [plan[0] for plan in plans])
    values = [_exact_shapley(rows, v) if n_samples is None else _order_credits(plan, v)
              for plan, rows, v in zip(plans, (plan[0] for plan in plans), scores)]
    return _painted(values, labels, x)


def _prefixes(rng: np.random.Generator, k: int, n_samples: int):
    """(distinct coalitions, index of each order's prefix among them (orders x K+1), the orders)."""
    orders = np.stack([rng.permutation(k) for _ in range(n_samples)])
    prefixes = np.zeros((n_samples, k + 1, k), dtype=bool)
    for step in range(k):
        prefixes[:, step + 1] = prefixes[:, step]
        prefixes[np.arange(n_samples), step + 1, orders[:, step]] = True
    distinct, inverse, _ = _unique_rows(prefixes.reshape((-1, k)))
    return distinct, inverse.reshape((n_samples, k + 1)), orders


def _order_credits(plan, scores: np.ndarray) -> np.ndarray:
    _, prefix_index, orders = plan
    along = scores[prefix_index]  # orders x K+1: the score after each switch
    credits = np.zeros(orders.shape[1])
    np.add.at(credits, orders, np.diff(along, axis=1))
    return credits / len(orders)


def _all_coalitions(k: int):
    return (((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1).astype(bool),)


def _exact_shapley(coalitions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Shapley values from the scores of all 2^K coalitions (row r: bit g of r says whether group g is in)."""
    k = coalitions.shape[1]
    sizes = coalitions.sum(axis=1)
    weights = np.array([math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) if s < k else 0.0
                        for s in sizes])
    values = np.zeros(k)
    for g in range(k):
        without = ~coalitions[:, g]  # T not containing g; T + g is row r + 2^g
        rows = np.nonzero(without)[0]
        values[g] = np.sum(weights[rows] * (scores[rows + 2 ** g] - scores[rows]))
    return values


# ----- KernelSHAP and LIME

@serialized
def kernel_shap(net, x, target: Target = None, feature_mask: FeatureMask = None, n_samples: int = 256,
                baseline: Baseline = 0.0, seed: Optional[int] = None, batch_size: int = 32, score: str = 'logits',
                progress: ProgressOption = None) -> NDArray:
    """KernelSHAP (Lundberg & Lee 2017), as captum's ``KernelShap``: the Shapley values of the feature groups
    as the coefficients of a linear model ``v(z) ~ b + sum_g phi_g z_g`` fitted by weighted least squares
    (scikit-learn's ``LinearRegression``) to the scores of perturbed images, ``z`` a binary coalition (1: the
    group shows the image, 0: the baseline). On every element of the group; N x C x H x W, signed.

    Sampling as captum: the full and the empty coalition (weight 10^6, which pins ``b = v(0)`` and
    ``b + sum phi = v(1)``), then coalitions of size k drawn with probability ``(K-1) / (k (K-k))``, members
    uniform, each of weight 1, which makes the regression's weights Shapley's kernel
    ``(K-1) / (C(K,k) k (K-k))``. When ``n_samples >= 2^K`` every coalition is scored once instead, with the
    kernel as its weight: the exact Shapley values (up to the 10^6 weights' relative error of about 1e-6).

    Parameters
    ----------
    feature_mask :
        As in :func:`feature_ablation` (None: SLIC superpixels).
    n_samples : int
        Coalitions per image, the two fixed ones included; at least 2. captum's default is 25, too few for
        images of 50 superpixels; a coalition drawn twice is scored once and weighted twice.
    seed : int or None
        Seed of the coalitions (numpy's ``default_rng``); None: fresh ones each call.
    target, baseline, batch_size, score, progress :
        As in :func:`occlusion`.

    Costs 1 + the distinct coalitions: at most ``min(n_samples, 2^K_i)`` passes per image.
    """
    from sklearn.linear_model import LinearRegression
    _check_score(score)
    _check_samples(n_samples, least=2)
    x, base = _setup(net, x, baseline, batch_size)
    labels, counts = _feature_groups(feature_mask, x)
    rng = np.random.default_rng(seed)
    plans = [_shapley_kernel_coalitions(k) if n_samples >= 2 ** k else _kernel_shap_draws(rng, k, n_samples)
             for k in counts]
    with Explainer(net) as explainer:
        scorer = _Scorer(explainer, x, target, score, batch_size, progress, 'KernelSHAP')
        scores = _coalition_scores(scorer, x, base, labels, [rows for rows, _ in plans])
    values = [_fitted(LinearRegression(), rows, v, weights) for (rows, weights), v in zip(plans, scores)]
    return _painted(values, labels, x)


def _shapley_kernel_coalitions(k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Every coalition and its Shapley-kernel weight (normalized to sum to the number of coalitions of sizes
    1..K-1); the empty and full ones weigh KERNEL_SHAP_END_WEIGHT."""
    rows = _all_coalitions(k)[0]
    sizes = rows.sum(axis=1)
    inner = (sizes > 0) & (sizes < k)
    weights = np.full(len(rows), KERNEL_SHAP_END_WEIGHT)
    if inner.any():
        kernel = np.array([(k - 1) / (math.comb(k, s) * s * (k - s)) for s in sizes[inner]])
        weights[inner] = kernel * inner.sum() / kernel.sum()
    return rows, weights


def _kernel_shap_draws(rng: np.random.Generator, k: int, n_samples: int) -> Tuple[np.ndarray, np.ndarray]:
    """captum's draws: the full and empty coalitions, then sizes from (K-1)/(k(K-k)) and members uniform;
    duplicates merged, their weights added."""
    sizes = np.arange(1, k)
    probabilities = (k - 1) / (sizes * (k - sizes))
    drawn = rng.choice(sizes, size=n_samples - 2, p=probabilities / probabilities.sum())
    rows = np.zeros((n_samples, k), dtype=bool)
    rows[0] = True
    for r, size in enumerate(drawn, start=2):
        rows[r, rng.choice(k, size=size, replace=False)] = True
    weights = np.ones(n_samples)
    weights[:2] = KERNEL_SHAP_END_WEIGHT
    return _merged(rows, weights)


def _merged(rows: np.ndarray, weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    distinct, inverse, _ = _unique_rows(rows)
    merged = np.zeros(len(distinct))
    np.add.at(merged, inverse, weights)
    return distinct, merged


def _fitted(model, rows: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The coefficients of ``model`` fitted to the scores of the coalitions (scikit-learn, numpy arrays)."""
    model.fit(rows.astype(np.float64), scores, sample_weight=weights)
    return np.asarray(model.coef_, dtype=np.float64).reshape(-1)


SURROGATES = ('lasso', 'ridge', 'linear')
DISTANCES = ('cosine', 'euclidean')


@serialized
def lime(net, x, target: Target = None, feature_mask: FeatureMask = None, n_samples: int = 256,
         kernel_width: float = 1.0, baseline: Baseline = 0.0, seed: Optional[int] = None,
         surrogate='lasso', alpha: Optional[float] = None, distance: str = 'cosine', batch_size: int = 32,
         score: str = 'logits', progress: ProgressOption = None) -> NDArray:
    """LIME (Ribeiro et al. 2016), as captum's ``Lime``: a sparse linear model ``v(z) ~ b + sum_g c_g z_g`` of
    the score of perturbed images, fitted to coalitions z with each group kept with probability 1/2 (1: the group
    shows the image, 0: the baseline), each weighted by its similarity to the image
    ``exp(-d^2 / (2 kernel_width^2))``, d the cosine distance between the flattened image and the perturbed one
    (captum's default kernel). The coefficients ``c_g`` on every element of the group; N x C x H x W, signed.

    When ``n_samples >= 2^K`` every coalition is scored once (each is as likely): the sampled fit's limit.

    Parameters
    ----------
    feature_mask :
        As in :func:`feature_ablation` (None: SLIC superpixels).
    n_samples : int
        Coalitions per image (captum's default 50); a coalition drawn twice is scored once and weighted twice.
    kernel_width : float
        The similarity kernel's width (captum's default 1.0).
    surrogate : 'lasso', 'ridge', 'linear' or a scikit-learn regressor
        The interpretable model, fitted with sample weights and an intercept: ``Lasso(alpha=0.01)`` (captum's
        default), ``Ridge(alpha=1.0)``, ``LinearRegression()``, or any estimator with ``fit(X, y,
        sample_weight)`` and ``coef_`` (cloned, not changed).
    alpha : float or None
        The Lasso or Ridge regularization; None: 0.01 (Lasso) or 1.0 (Ridge).
    distance : 'cosine' or 'euclidean'
        The distance of the kernel (captum's ``get_exp_kernel_similarity_function``).
    seed, target, baseline, batch_size, score, progress :
        As in :func:`kernel_shap`.

    Costs 1 + the distinct coalitions: at most ``min(n_samples, 2^K_i)`` passes per image.
    """
    _check_score(score)
    _check_samples(n_samples)
    if not kernel_width > 0:
        raise ValueError(f"kernel_width must be positive, got {kernel_width}")
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
    model = _surrogate(surrogate, alpha)
    x, base = _setup(net, x, baseline, batch_size)
    labels, counts = _feature_groups(feature_mask, x)
    rng = np.random.default_rng(seed)
    plans = [_merged(_all_coalitions(k)[0], np.ones(2 ** k)) if n_samples >= 2 ** k else
             _merged(rng.random((n_samples, k)) < 0.5, np.ones(n_samples)) for k in counts]
    with Explainer(net) as explainer:
        scorer = _Scorer(explainer, x, target, score, batch_size, progress, 'LIME')
        scores = _coalition_scores(scorer, x, base, labels, [rows for rows, _ in plans])
    from sklearn.base import clone
    values = []
    for i, ((rows, counts_drawn), v) in enumerate(zip(plans, scores)):
        d = _distances(x[i].asnumpy(), base[i].asnumpy(), labels[i], rows, distance)
        values.append(_fitted(clone(model), rows, v, counts_drawn * np.exp(-d ** 2 / (2 * kernel_width ** 2))))
    return _painted(values, labels, x)


def _surrogate(surrogate, alpha: Optional[float]):
    from sklearn.linear_model import Lasso, LinearRegression, Ridge
    if not isinstance(surrogate, str):
        if not (hasattr(surrogate, 'fit') and hasattr(surrogate, 'get_params')):
            raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)} or a scikit-learn regressor, got "
                             f"{surrogate!r}")
        return surrogate
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; valid: {', '.join(SURROGATES)} or a scikit-learn "
                         f"regressor")
    if surrogate == 'lasso':
        return Lasso(alpha=0.01 if alpha is None else alpha)
    if surrogate == 'ridge':
        return Ridge(alpha=1.0 if alpha is None else alpha)
    return LinearRegression()


def _distances(image: np.ndarray, base: np.ndarray, labels: np.ndarray, rows: np.ndarray,
               distance: str) -> np.ndarray:
    """The distance between the flattened image and each coalition's perturbed image, from per-group sums
    (a perturbed image is the image on the coalition's groups and the baseline elsewhere)."""
    k = rows.shape[1]
    image, base = image.astype(np.float64), base.astype(np.float64)

    def per_group(values: np.ndarray) -> np.ndarray:
        return np.bincount(labels.reshape(-1), weights=values.sum(axis=0).reshape(-1), minlength=k)

    kept = rows.astype(np.float64)
    if distance == 'euclidean':
        return np.sqrt(np.maximum((1 - kept) @ per_group((image - base) ** 2), 0))
    image_image, image_base, base_base = per_group(image * image), per_group(image * base), per_group(base * base)
    dot = kept @ image_image + (1 - kept) @ image_base
    norms = np.sqrt(image_image.sum()) * np.sqrt(np.maximum(kept @ image_image + (1 - kept) @ base_base, 0))
    cosine = np.where(norms > 0, dot / np.maximum(norms, 1e-300), 0.0)
    return 1 - cosine
