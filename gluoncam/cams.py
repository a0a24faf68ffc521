"""The CAM family: ``L = relu(sum_c W_c * A_c)`` over a layer's activations A (N x C x h x w).

The methods differ only in the weights W (per channel, or per element); each class gives its formula. The
gradient G is that of the target score S at the layer's output. Formulas follow pytorch-grad-cam (SS-CAM and IS-CAM
torch-cam). FullGrad is the exception: it uses no layer but every convolution's and BatchNorm's bias.
"""
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import nn
from mxnet.ndarray import NDArray

from . import compiled, maps
from .explainer import Explainer, _scored
from .inputs import Target, as_batch, classes_for, score_head
from .layers import LayerRef, display_name, resolve
from .nn import walk
from .session import Session
from .threads import serialized

EPSILON = 1e-7


class CAMMethod:
    """Base: ``relu(sum_c weights(A, G) * A)``; subclasses define ``weights`` (or ``weighted``, the N x C x h x w
    weighted activations).

    ``relu=False`` keeps the signed sum, negative where the layer speaks against the target (captum's
    ``LayerGradCam`` with ``relu_attributions=False``, its default). ``eigen_smooth=True`` (pytorch-grad-cam's
    option) replaces the channel sum by the projection of the weighted activations on their first principal
    component (see :func:`principal_component`), signed to agree with the channel sum.
    """
    needs_gradient = True
    needs_scores = False  # forward passes scoring the target on modified inputs or layers
    own_passes = False  # passes of its own beyond the shared forward and backward (scoring, finite differences)

    def __init__(self, relu: bool = True):
        self.relu = relu

    def __call__(self, activation: NDArray, gradient: NDArray, scorer: 'Scorer',
                 eigen_smooth: bool = False) -> NDArray:
        maps._check_4d(activation)
        weighted = self.weighted(activation, gradient, scorer)
        return self._rectified(principal_component(weighted) if eigen_smooth else weighted.sum(axis=1))

    def weighted(self, activation: NDArray, gradient: NDArray, scorer: 'Scorer') -> NDArray:
        """The weighted activations ``W * A``, N x C x h x w, whose channel sum is the map."""
        return self.weights(activation, gradient, scorer) * activation

    def weights(self, activation: NDArray, gradient: NDArray, scorer: 'Scorer') -> NDArray:
        raise NotImplementedError

    def _rectified(self, total: NDArray) -> NDArray:
        return nd.relu(total) if self.relu else total


@serialized
def principal_component(values: NDArray) -> NDArray:
    """N x C x h x w -> N x h x w: per sample, the positions' C-vectors, centred over positions, projected on
    their first principal component (pytorch-grad-cam's ``get_2d_projection``, by an eigendecomposition of the
    C x C covariance in float64 instead of an SVD). An SVD's sign is arbitrary: the sign is chosen so that the
    projection correlates positively with the channel mean (+1 when they are uncorrelated)."""
    maps._check_4d(values)
    n, c, h, w = values.shape
    positions = values.reshape((n, c, h * w)).transpose((0, 2, 1))  # N x hw x C
    centred = positions - positions.mean(axis=1, keepdims=True)
    covariance = nd.linalg.gemm2(centred, centred, transpose_a=True)  # N x C x C
    vectors, _ = nd.linalg.syevd(covariance.astype('float64'))  # rows, eigenvalues ascending
    top = vectors[:, -1, :].astype(values.dtype).expand_dims(2)  # N x C x 1
    projection = nd.linalg.gemm2(centred, top)[:, :, 0]  # N x hw
    return (projection * _orientation(projection, positions.mean(axis=2))).reshape((n, h, w))


def _orientation(projection: NDArray, mean: NDArray) -> NDArray:
    """+1 or -1 per sample (N x 1): the sign under which ``projection`` (N x hw) correlates positively with
    ``mean`` (N x hw); +1 for no correlation."""
    sign = nd.sign(((projection - projection.mean(axis=1, keepdims=True)) * mean).sum(axis=1, keepdims=True))
    return nd.where(sign == 0, nd.ones_like(sign), sign)


class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al. 2017): ``W_c = mean_ij G_cij``."""

    def weights(self, activation, gradient, scorer):
        return gradient.mean(axis=(2, 3), keepdims=True)


class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19, with exp(S)'s derivatives written as powers of G):
    ``alpha_cij = G^2 / (2 G^2 + sum_ab A_cab * G^3)`` (0 where G = 0), ``W_c = sum_ij alpha_cij * relu(G_cij)``.

    Computed as ``alpha = 1 / (2 + sum_ab A_cab * G_cij)``, the same where G != 0, so that no epsilon added to a
    denominator of order G^2 distorts small gradients (0 where that denominator vanishes). ``epsilon`` computes
    ``G^2 / (2 G^2 + sum_ab A_cab * G^3 + epsilon)`` instead, as pytorch-grad-cam does with ``epsilon=1e-6``."""

    def __init__(self, epsilon: Optional[float] = None, relu: bool = True):
        super().__init__(relu)
        self.epsilon = epsilon

    def weights(self, activation, gradient, scorer):
        if self.epsilon is not None:
            squared = gradient ** 2
            alpha = squared / (2 * squared + activation.sum(axis=(2, 3), keepdims=True) * gradient ** 3 + self.epsilon)
            return (nd.where(gradient != 0, alpha, nd.zeros_like(alpha)) * nd.relu(gradient)).sum(axis=(2, 3),
                                                                                                   keepdims=True)
        denominator = 2 + activation.sum(axis=(2, 3), keepdims=True) * gradient
        defined = (gradient != 0) * (nd.abs(denominator) > EPSILON)
        alpha = nd.where(defined, 1 / nd.where(defined, denominator, nd.ones_like(denominator)),
                         nd.zeros_like(gradient))
        return (alpha * nd.relu(gradient)).sum(axis=(2, 3), keepdims=True)


class XGradCAM(CAMMethod):
    """XGrad-CAM (Fu et al. 2020): ``W_c = sum_ij A_cij G_cij / sum_ij A_cij``."""

    def weights(self, activation, gradient, scorer):
        total = activation.sum(axis=(2, 3), keepdims=True)
        return (activation * gradient).sum(axis=(2, 3), keepdims=True) / (total + EPSILON)


class HiResCAM(CAMMethod):
    """HiResCAM (Draelos & Carin 2020): elementwise ``W = G``, so ``L = relu(sum_c G_c * A_c)``."""

    def weights(self, activation, gradient, scorer):
        return gradient


class LayerCAM(CAMMethod):
    """Layer-CAM (Jiang et al. 2021): elementwise ``W = relu(G)``."""

    def weights(self, activation, gradient, scorer):
        return nd.relu(gradient)


class EigenCAM(CAMMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020): the projection of A (centred over positions) on its first principal
    component; no gradient. The component's sign is chosen so that the map correlates positively with the mean
    activation (an SVD's sign is arbitrary). Already a principal component: ``eigen_smooth`` changes nothing."""
    needs_gradient = False

    def __call__(self, activation, gradient, scorer, eigen_smooth=False):
        return self._rectified(principal_component(self.weighted(activation, gradient, scorer)))

    def weighted(self, activation, gradient, scorer):
        return activation


class EigenGradCAM(EigenCAM):
    """Eigen-Grad-CAM (pytorch-grad-cam): Eigen-CAM of ``G * A``, the activations weighted by their gradient, so
    that the principal component depends on the class."""
    needs_gradient = True

    def weighted(self, activation, gradient, scorer):
        return activation * gradient


class GradCAMElementWise(CAMMethod):
    """Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): ``L = relu(sum_c relu(G_c * A_c))``, each
    element's contribution rectified before the sum."""

    def weighted(self, activation, gradient, scorer):
        return nd.relu(gradient * activation)


class RandomCAM(CAMMethod):
    """Random-CAM (pytorch-grad-cam): ``W_c`` uniform in [-1, 1], drawn per sample and channel; no gradient. The
    floor that a method's faithfulness should beat. ``seed`` makes the draw repeatable (None: fresh each call)."""
    needs_gradient = False

    def __init__(self, seed: Optional[int] = 0, relu: bool = True):
        super().__init__(relu)
        self.seed = seed

    def weights(self, activation, gradient, scorer):
        n, c = activation.shape[:2]
        drawn = np.random.default_rng(self.seed).uniform(-1, 1, (n, c))
        return nd.array(drawn, ctx=activation.context, dtype=activation.dtype).reshape((n, c, 1, 1))


class ScoreCAM(CAMMethod):
    """Score-CAM (Wang et al. 2020), as pytorch-grad-cam: each channel, upsampled to the input (bilinear, corners
    aligned, as its ``UpsamplingBilinear2d``) and scaled to [0, 1], masks the input; ``s_c = S(x * mask_c)`` and
    ``W = softmax_c(s)``. No gradient; N x C forward passes, batched."""
    needs_gradient = False
    needs_scores = True
    own_passes = True

    def weights(self, activation, gradient, scorer):
        n, c = activation.shape[:2]
        channels = _channels_as_maps(activation)  # NC x h x w

        def masked_inputs(rows: slice) -> NDArray:  # made per batch: memory bounded by batch_size, not by N x C
            masks = maps.normalize(maps.upsample(channels[rows], scorer.input_size, align_corners=True))
            return scorer.sample_rows(rows, c) * masks.expand_dims(1)

        scores = scorer.input_scores(masked_inputs, n * c, repeats=c).reshape((n, c))
        return nd.softmax(scores, axis=1).reshape((n, c, 1, 1))


class AblationCAM(CAMMethod):
    """Ablation-CAM (Desai & Ramaswamy 2020): ``W_c = (S - S_c) / S`` with ``S_c`` the score when channel c of
    the layer's output is zeroed. No gradient; N x C passes of the network downstream of the layer, batched."""
    needs_gradient = False
    needs_scores = True
    own_passes = True

    def weights(self, activation, gradient, scorer):
        n, c = activation.shape[:2]

        def ablated(rows: slice) -> NDArray:  # row r: sample r // c with channel r % c zeroed
            channel = nd.arange(rows.start, rows.stop, ctx=activation.context) % c
            keep = 1 - nd.one_hot(channel, c, dtype=activation.dtype).reshape((-1, c, 1, 1))
            return scorer.sample_rows(rows, c, activation) * keep

        scores = scorer.layer_scores(activation, ablated, n * c, repeats=c)
        original = scorer.original.reshape((n, 1))
        safe = nd.where(nd.abs(original) < EPSILON, EPSILON * nd.ones_like(original), original)
        return ((original - scores.reshape((n, c))) / safe).reshape((n, c, 1, 1))


class KPCACAM(CAMMethod):
    """KPCA-CAM (Karmani et al. 2024, pytorch-grad-cam's KPCA_CAM): Eigen-CAM with kernel PCA: per sample, the
    positions' C-vectors of A, centred over positions, mapped to their first kernel principal component by
    scikit-learn's ``KernelPCA(n_components=1, kernel=kernel, gamma=gamma, **options)``. No gradient.

    pytorch-grad-cam's defaults: ``kernel='sigmoid'`` (``tanh(gamma <a, b> + coef0)``, coef0 1) and ``gamma=None``
    (1 / C). The activations go to numpy for scikit-learn and the map comes back on their context. ``orient``
    signs the component as :func:`principal_component` does (positive correlation with the mean activation);
    ``orient=False`` keeps scikit-learn's sign, as pytorch-grad-cam. Already a principal component:
    ``eigen_smooth`` changes nothing (as in pytorch-grad-cam).
    """
    needs_gradient = False
    KERNELS = ('linear', 'poly', 'rbf', 'sigmoid', 'cosine')

    def __init__(self, kernel: Union[str, Callable] = 'sigmoid', gamma: Optional[float] = None, orient: bool = True,
                 relu: bool = True, **options):
        super().__init__(relu)
        if not callable(kernel) and kernel not in self.KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; valid: {', '.join(self.KERNELS)}, or a function of two "
                             f"vectors")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"gamma must be positive (or None for 1 / channels), got {gamma!r}")
        self.kernel, self.gamma, self.orient, self.options = kernel, gamma, orient, options

    def __call__(self, activation, gradient, scorer, eigen_smooth=False):
        from sklearn.decomposition import KernelPCA
        maps._check_4d(activation)
        n, c, h, w = activation.shape
        positions = np.nan_to_num(activation.asnumpy().reshape(n, c, h * w).transpose(0, 2, 1))  # N x hw x C
        projections = []
        for values in positions:
            kpca = KernelPCA(n_components=1, kernel=self.kernel, gamma=self.gamma, **self.options)
            projections.append(kpca.fit_transform(values - values.mean(axis=0))[:, 0])
        projection = nd.array(np.nan_to_num(np.stack(projections)), ctx=activation.context, dtype=activation.dtype)
        if self.orient:
            mean = nd.array(positions.mean(axis=2), ctx=activation.context, dtype=activation.dtype)
            projection = projection * _orientation(projection, mean)
        return self._rectified(projection.reshape((n, h, w)))


class FEM(CAMMethod):
    """FEM, the Feature Explanation Method (Fuad et al. 2020), as pytorch-grad-cam's FEM: no gradient; with
    ``mu_c`` and ``sigma_c`` the mean and (population) standard deviation of channel c over positions,
    ``W_c = mean_ij [A_cij > mu_c + k sigma_c]``, the fraction of the channel's positions more than k standard
    deviations above its mean.

    ``binary=True`` gives the paper's binary weights instead: with ``m_c = mean_ij A_cij`` the channels' mean
    activations, ``W_c = [m_c > mean_c(m) + k std_c(m)]``, 1 for the channels whose mean stands k standard
    deviations above the others'.
    """
    needs_gradient = False

    def __init__(self, k: float = 2.0, binary: bool = False, relu: bool = True):
        super().__init__(relu)
        if not k >= 0:
            raise ValueError(f"k (standard deviations above the mean) must be non-negative, got {k!r}")
        self.k, self.binary = k, binary

    def weights(self, activation, gradient, scorer):
        if self.binary:
            means = activation.mean(axis=(2, 3), keepdims=True)  # N x C x 1 x 1
            return means > self._threshold(means, axis=1)
        return (activation > self._threshold(activation, axis=(2, 3))).mean(axis=(2, 3), keepdims=True)

    def _threshold(self, values: NDArray, axis) -> NDArray:
        mean = values.mean(axis=axis, keepdims=True)
        deviation = nd.sqrt(nd.square(values - mean).mean(axis=axis, keepdims=True))
        return mean + self.k * deviation


class ShapleyCAM(CAMMethod):
    """Shapley-CAM (Cai 2024, pytorch-grad-cam's ShapleyCAM): ``W_c = mean_ij (G - H A / 2)_cij``, with ``H A``
    the Hessian of the target score S with respect to the layer's output A, times A.

    MXNet has no second derivatives of convolutions, so ``H A`` is a central finite difference of the layer's
    gradient along A: ``(G((1 + h) A) - G((1 - h) A)) / (2 h)``, each gradient from a recording where the layer's
    output is scaled by ``1 +- h`` (``step``), 2 forward and backward passes more than Grad-CAM. Exact to O(h^2)
    where the score is smooth in A (a softmax or quadratic head); where the scaling crosses a ReLU's kink
    downstream, the difference sees the change of slope that autograd's exact (zero) second derivative ignores.
    pytorch-grad-cam's paper pairs it with the ReST target ``y_k + log softmax_k(y)`` (pass it as a function).
    """
    own_passes = True

    def __init__(self, step: float = 1e-3, relu: bool = True):
        super().__init__(relu)
        if not 0 < step < 1:
            raise ValueError(f"step must be in (0, 1) (a relative change of the layer's output), got {step!r}")
        self.step = step

    def weights(self, activation, gradient, scorer):
        return (gradient - 0.5 * self.hessian_product(scorer)).mean(axis=(2, 3), keepdims=True)

    def hessian_product(self, scorer: 'Scorer') -> NDArray:
        """``H A`` by central differences of the layer gradient (N x C x h x w)."""
        ahead, behind = scorer.layer_gradient(1 + self.step), scorer.layer_gradient(1 - self.step)
        return (ahead - behind) / (2 * self.step)


class SSCAM(CAMMethod):
    """SS-CAM (Wang et al. 2020, "Smoothed Score-CAM"), as torch-cam's SSCAM: Score-CAM averaged over noisy masks.
    With ``M_c = up(minmax(A_c))`` (each channel scaled to [0, 1] at the layer's resolution, then upsampled
    bilinearly to the input, pixel centres aligned, as torch-cam), ``W = softmax_c(mean_i S(x * (M_c + d_ci)))``
    with ``d_ci ~ N(0, std^2)``, one H x W draw per sample, channel and draw i (shared by the input channels).
    torch-cam also subtracts ``S(x)``, which the softmax ignores.

    N x C x ``samples`` forward passes, ``batch_size`` rows at a time. The noise of channel c and draw i is
    ``std * numpy.random.default_rng([seed, c, i]).standard_normal((H, W))``, the same for every image, so that an
    image's map depends neither on ``batch_size`` nor on the other images of the batch (torch-cam draws it afresh
    for each). ``seed=None`` draws a fresh base seed per call. Defaults are torch-cam's (``samples=35,
    std=2.0``), except the fixed seed that makes maps repeatable.
    """
    needs_gradient = False
    needs_scores = True
    own_passes = True

    def __init__(self, samples: int = 35, std: float = 2.0, seed: Optional[int] = 0, relu: bool = True):
        super().__init__(relu)
        if samples < 1 or not std >= 0:
            raise ValueError(f"samples must be at least 1 and std non-negative, got samples={samples!r}, "
                             f"std={std!r}")
        self.samples, self.std, self.seed = samples, std, seed

    def weights(self, activation, gradient, scorer):
        n, c = activation.shape[:2]
        seed = np.random.SeedSequence().entropy if self.seed is None else self.seed
        channels = _channels_as_maps(activation)
        repeats = c * self.samples

        def noisy_inputs(rows: slice) -> NDArray:
            masks = _layer_scaled_masks(channels, rows, self.samples, scorer.input_size)
            noise = np.stack([np.random.default_rng([seed, row // self.samples % c, row % self.samples])
                              .standard_normal(scorer.input_size) for row in range(rows.start, rows.stop)])
            masks = masks + self.std * nd.array(noise, ctx=masks.context, dtype=masks.dtype)
            return scorer.sample_rows(rows, repeats) * masks.expand_dims(1)

        scores = scorer.input_scores(noisy_inputs, n * repeats, repeats=repeats)
        return nd.softmax(scores.reshape((n, c, self.samples)).mean(axis=2), axis=1).reshape((n, c, 1, 1))


class ISCAM(CAMMethod):
    """IS-CAM (Naidu et al. 2020, "Integrated Score-CAM"), as torch-cam's ISCAM: Score-CAM with the masked input
    scaled along a path. With ``M_c`` as in :class:`SSCAM` and ``a_i = sum_{p=1..i} p / samples`` (torch-cam's
    cumulative coefficients, up to ``(samples + 1) / 2``), ``W = softmax_c(mean_i S(a_i x * M_c))``, i = 1..samples.
    torch-cam also subtracts ``S(x)``, which the softmax ignores.

    N x C x ``samples`` forward passes, ``batch_size`` rows at a time. Default ``samples=10``, torch-cam's.
    """
    needs_gradient = False
    needs_scores = True
    own_passes = True

    def __init__(self, samples: int = 10, relu: bool = True):
        super().__init__(relu)
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples!r}")
        self.samples = samples

    def coefficients(self) -> np.ndarray:
        return np.cumsum(np.arange(1, self.samples + 1) / self.samples)

    def weights(self, activation, gradient, scorer):
        n, c = activation.shape[:2]
        channels = _channels_as_maps(activation)
        repeats = c * self.samples
        coefficients = nd.array(self.coefficients(), ctx=activation.context, dtype=activation.dtype)

        def scaled_inputs(rows: slice) -> NDArray:
            masks = _layer_scaled_masks(channels, rows, self.samples, scorer.input_size)
            step = nd.arange(rows.start, rows.stop, ctx=activation.context) % self.samples
            masks = masks * nd.take(coefficients, step).reshape((-1, 1, 1))
            return scorer.sample_rows(rows, repeats) * masks.expand_dims(1)

        scores = scorer.input_scores(scaled_inputs, n * repeats, repeats=repeats)
        return nd.softmax(scores.reshape((n, c, self.samples)).mean(axis=2), axis=1).reshape((n, c, 1, 1))


def _layer_scaled_masks(channels: NDArray, rows: slice, repeats: int, size) -> NDArray:
    """torch-cam's Score-CAM masks for rows ``rows``, row r showing channel map ``r // repeats`` of ``channels``
    (NC x h x w): scaled to [0, 1] at the layer's resolution, then upsampled (pixel centres aligned)."""
    which = nd.floor(nd.arange(rows.start, rows.stop, ctx=channels.context) / repeats)
    return maps.upsample(maps.normalize(nd.take(channels, which)), size)


class FinerCAM(CAMMethod):
    """Finer-CAM (Zhang et al. 2025, pytorch-grad-cam's FinerCAM): a base method's map for a score that compares
    the target class t with the classes whose scores are closest to its own.

    With y the (scored) output, the classes ranked by ``|y_j - y_t|`` (t itself first) and J the classes at ranks
    ``comparison`` (default 1, 2, 3, the three most similar, ranks beyond the classes dropped), the score is
    ``S = sum_{j in J} p_j (y_t - alpha y_j) / (sum_{j in J} p_j + 1e-9)`` with ``p = softmax(y)`` (the weights
    ``p_j`` are differentiated too, as pytorch-grad-cam's ``FinerWeightedTarget``). ``alpha=0`` gives the base
    method's map of y_t weighted by nothing else. The base is any layer method (name or instance); one forward
    pass more than the base method, to rank the classes. Needs class targets (None: the predicted class).
    """
    own_passes = True

    def __init__(self, base: Union[str, CAMMethod] = 'gradcam', alpha: float = 1.0,
                 comparison: Sequence[int] = (1, 2, 3)):
        super().__init__()
        base = _method(base)
        if isinstance(base, (FinerCAM, FullGrad)):
            raise ValueError(f"Finer-CAM's base must be a one-layer CAM method, got {type(base).__name__}")
        comparison = [int(rank) for rank in comparison]
        if not comparison or min(comparison) < 1:
            raise ValueError(f"comparison must be ranks of similar classes, at least 1 (rank 0 is the target "
                             f"itself), got {comparison!r}")
        self.base, self.alpha, self.comparison = base, float(alpha), comparison
        self.needs_gradient, self.needs_scores = base.needs_gradient, base.needs_scores

    def __call__(self, activation, gradient, scorer, eigen_smooth=False):
        return self.base(activation, gradient, scorer, eigen_smooth=eigen_smooth)

    def target_for(self, output: NDArray, target: Target) -> 'FinerTarget':
        """The comparing score for a scored output (N x classes) and the caller's class target."""
        if callable(target):
            raise ValueError("Finer-CAM compares class scores: give class targets (None, an int or one per sample), "
                             "not a function")
        if not isinstance(output, NDArray) or output.ndim != 2:
            raise ValueError(f"Finer-CAM needs an output of shape (N, classes), got {getattr(output, 'shape', output)}")
        classes = classes_for(output, target)
        ranks = [rank for rank in self.comparison if rank < output.shape[1]]
        if not ranks:
            raise ValueError(f"Finer-CAM needs a class at one of the ranks {self.comparison}; the network has "
                             f"{output.shape[1]} classes")
        values = output.asnumpy().astype(np.float64)
        main = classes.asnumpy()
        distance = np.abs(values - values[np.arange(len(main)), main][:, None])
        distance[np.arange(len(main)), main] = -1  # the target ranks first, even if another class ties with it
        order = np.argsort(distance, axis=1, kind='stable')
        return FinerTarget(main, order[:, ranks], self.alpha)


class FinerTarget:
    """Finer-CAM's score of each sample (see :class:`FinerCAM`); called on the output of a batch of samples, or,
    with ``samples``, on rows that belong to the given samples (Score-CAM's and Ablation-CAM's batched passes)."""

    def __init__(self, main: np.ndarray, comparisons: np.ndarray, alpha: float):
        self.main, self.comparisons, self.alpha = np.asarray(main), np.asarray(comparisons), alpha

    def __call__(self, output: NDArray, samples: Optional[NDArray] = None) -> NDArray:
        if samples is None:
            samples = nd.arange(output.shape[0], ctx=output.context)

        def column(classes: np.ndarray) -> NDArray:
            index = nd.take(nd.array(classes, ctx=output.context), samples)
            return nd.pick(output, index, axis=1)

        probabilities = nd.softmax(output, axis=1)
        main = column(self.main)
        numerator, denominator = 0, 0
        for k in range(self.comparisons.shape[1]):
            weight = nd.pick(probabilities, nd.take(nd.array(self.comparisons[:, k], ctx=output.context), samples),
                             axis=1)
            numerator = numerator + weight * (main - self.alpha * column(self.comparisons[:, k]))
            denominator = denominator + weight
        return numerator / (denominator + 1e-9)


class FullGrad(CAMMethod):
    """FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam's FullGrad: the input-gradient term plus one
    bias-gradient term per convolution and BatchNorm, each post-processed and upsampled to the input; it uses no
    layer (``cam`` ignores ``layers`` for it) and returns N x H x W in [0, 1].

    With ``psi(M) = (M - min M) / (1e-7 + max(M - min M))`` per channel map (pytorch-grad-cam's scaling) and U the
    bilinear upsampling to the input (pixel centres aligned, as its ``cv2.resize``)::

        L = psi( sum_c psi(|x * dS/dx|_c) + sum_l U(sum_c psi(|b_l * dS/dz_l|_c)) )

    over every ``Conv2D`` with a bias and every ``BatchNorm`` whose output is 4-D, ``z_l`` the layer's output
    before its fused activation, ``b_l`` its bias (a BatchNorm's ``beta - gamma * mean / sqrt(var + eps)``). One
    forward and one backward pass, capturing every such layer. ``eigen_smooth`` replaces the outer sum by the first
    principal component of the stacked terms (each input channel and each layer one term), at the input's
    resolution (pytorch-grad-cam downsizes the stack by 8 first). Signed terms before this post-processing:
    :func:`full_grad_parts`.
    """
    own_passes = True

    def __call__(self, activation, gradient, scorer, eigen_smooth=False):
        raise TypeError("FullGrad is not computed from one layer's activations: use cams.full_grad or cams.cam")

    def map(self, explainer: Explainer, x: NDArray, target: Target, score: str,
            eigen_smooth: bool = False) -> NDArray:
        input_term, terms = _full_grad_parts(explainer, x, target, score)
        height, width = x.shape[2:]
        summands = [_psi(nd.abs(input_term))]  # N x C x H x W
        for term in terms.values():
            if term.ndim == 4:
                summands.append(maps.upsample(_psi(nd.abs(term)).sum(axis=1), (height, width)).expand_dims(1))
        stacked = nd.concat(*summands, dim=1)
        total = principal_component(stacked) if eigen_smooth else stacked.sum(axis=1)
        return _psi(total.expand_dims(1))[:, 0]


def _psi(values: NDArray) -> NDArray:
    """pytorch-grad-cam's ``scale_cam_image`` of each channel map of N x C x h x w: ``(v - min) / (1e-7 + max)``."""
    n, c = values.shape[:2]
    flat = values.reshape((n, c, -1))
    shifted = flat - flat.min(axis=2, keepdims=True)
    return (shifted / (1e-7 + shifted.max(axis=2, keepdims=True))).reshape(values.shape)


@serialized
def full_grad(net, x, target: Target = None, score: str = 'logits', eigen_smooth: bool = False) -> NDArray:
    """FullGrad (Srinivas & Fleuret 2019; pytorch-grad-cam's FullGrad), N x H x W in [0, 1]: see
    :class:`FullGrad`. One forward and one backward pass."""
    x = as_batch(net, x)
    with Explainer(net) as explainer:
        return FullGrad().map(explainer, x, target, score, eigen_smooth)


@serialized
def full_grad_parts(net, x, target: Target = None, score: str = 'logits') -> Tuple[NDArray, Dict[str, NDArray]]:
    """FullGrad's signed terms before post-processing: ``x * dS/dx`` (N x C x H x W) and, by layer name, every
    Conv2D's and BatchNorm's ``b * dS/dz`` (N x C_l x ...; z the layer's output before its fused activation).

    Completeness (Srinivas & Fleuret 2019): for a network piecewise linear in its input and biases (ReLU, max
    pooling, BatchNorm in inference) whose every bias belongs to these layers (a Dense head without bias), the
    terms' sums add up to the score S(x).
    """
    x = as_batch(net, x)
    with Explainer(net) as explainer:
        return _full_grad_parts(explainer, x, target, score)


def _full_grad_parts(explainer: Explainer, x: NDArray, target: Target, score: str):
    blocks = [block for block in walk(explainer.net) if _has_bias(block)]
    result = explainer.backprop(x, target, blocks, ('normal',), score=score)
    terms = {}
    for block in blocks:
        output, gradient = result.activations[block.name], result.gradients['normal'][block.name]
        gradient = gradient * _activation_slope(block, output)
        bias = _bias(block, x.context)
        terms[block.name] = gradient * bias.reshape((1, -1) + (1,) * (gradient.ndim - 2))
    return x * result.input_gradients['normal'], terms


def _has_bias(block) -> bool:
    """Whether FullGrad uses the block: a Conv2D (NCHW) with a bias, or a BatchNorm over axis 1."""
    if isinstance(block, nn.Conv2D):
        return block.bias is not None and block._kwargs.get('layout') == 'NCHW'
    return isinstance(block, nn.BatchNorm) and block._kwargs.get('axis') == 1


def _bias(block, ctx) -> NDArray:
    """The bias a Conv2D or BatchNorm adds to its output (read after a forward pass: parameters may be deferred)."""
    if isinstance(block, nn.Conv2D):
        return block.bias.data(ctx)
    kwargs = block._kwargs  # BatchNorm in inference: gamma (x - mean) / sqrt(var + eps) + beta
    gamma = nd.ones_like(block.gamma.data(ctx)) if kwargs.get('fix_gamma') else block.gamma.data(ctx)
    scale = gamma / nd.sqrt(block.running_var.data(ctx) + kwargs['eps'])
    return block.beta.data(ctx) - block.running_mean.data(ctx) * scale


# The derivative of a fused activation, from its output
SLOPES = {'relu': lambda y: y > 0, 'sigmoid': lambda y: y * (1 - y), 'tanh': lambda y: 1 - y * y,
          'softrelu': lambda y: 1 - nd.exp(-y), 'softsign': lambda y: nd.square(1 - nd.abs(y))}


def _activation_slope(block, output: NDArray):
    """The derivative of a Conv2D's fused activation at its output (1 without one): the gradient before it."""
    act = getattr(block, 'act', None)
    if act is None:
        return 1
    kind = getattr(act, '_act_type', None)
    if kind not in SLOPES:
        raise ValueError(f"FullGrad cannot undo the fused activation {kind!r} of {block.name!r}; valid: "
                         f"{', '.join(SLOPES)}")
    return SLOPES[kind](output)


def _channels_as_maps(activation: NDArray) -> NDArray:
    n, c, h, w = activation.shape
    return activation.reshape((n * c, h, w))


CAM_METHODS: Dict[str, Callable[[], CAMMethod]] = {
    'gradcam': GradCAM, 'gradcam++': GradCAMPlusPlus, 'xgradcam': XGradCAM, 'hirescam': HiResCAM,
    'layercam': LayerCAM, 'eigencam': EigenCAM, 'scorecam': ScoreCAM, 'ablationcam': AblationCAM,
    'eigengradcam': EigenGradCAM, 'gradcamelementwise': GradCAMElementWise, 'randomcam': RandomCAM,
    'fullgrad': FullGrad, 'kpcacam': KPCACAM, 'shapleycam': ShapleyCAM, 'finercam': FinerCAM, 'fem': FEM,
    'sscam': SSCAM, 'iscam': ISCAM,
}


def _method(method: Union[str, CAMMethod]) -> CAMMethod:
    """A method by name (with its defaults) or as given."""
    if isinstance(method, CAMMethod):
        return method
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; valid: {', '.join(CAM_METHODS)}, "
                         f"or a CAMMethod such as cams.GradCAMPlusPlus(epsilon=1e-6)")
    return CAM_METHODS[method]()


class Scorer:
    """Forward-only target scores for the batched passes of Score-CAM, SS-CAM, IS-CAM and Ablation-CAM, and the
    layer gradients of Shapley-CAM's finite differences (:meth:`layer_gradient`).

    The passes run compiled (:mod:`gluoncam.compiled`): the whole network for modified inputs, the part after the
    layer for modified layer outputs. A network that cannot be compiled, or whose compiled score for the first
    unmodified sample differs from ``original``, runs imperatively as in :meth:`Explainer.forward`.
    """

    def __init__(self, explainer: Explainer, x: NDArray, classes, target: Target, layer: LayerRef, score: str,
                 batch_size: int, original: NDArray):
        self.explainer, self.x, self.classes, self.target = explainer, x, classes, target
        self.layer, self.score, self.batch_size, self.original = layer, score, batch_size, original
        self.input_size = x.shape[2:]

    def sample_rows(self, rows: slice, repeats: int, samples: NDArray = None) -> NDArray:
        """Rows ``rows`` of ``samples`` (by default the input batch) with each sample repeated ``repeats`` times:
        row r is sample r // repeats."""
        samples = self.x if samples is None else samples
        return nd.take(samples, _sample_of(rows, repeats, samples.context))

    def input_scores(self, make_inputs: Callable[[slice], NDArray], total: int, repeats: int) -> NDArray:
        """The target score of each of ``total`` input rows, made ``batch_size`` at a time by ``make_inputs``
        (row r belongs to sample r // repeats)."""
        with self.explainer:
            network = compiled.whole(self.explainer.net, self.score)
        if network is not None and not self._agrees(network(self.x[:1])):
            network = None

        def output(rows: slice) -> NDArray:
            inputs = make_inputs(rows)
            return network(inputs) if network is not None else \
                self.explainer.forward(inputs, score=self.score)[0]
        return self._scores(output, total, repeats)

    def layer_scores(self, activation: NDArray, make_values: Callable[[slice], NDArray], total: int,
                     repeats: int) -> NDArray:
        """The target score of each of ``total`` rows, where row r is sample r // repeats with the layer's output
        (``activation`` for the batch) replaced by row r of ``make_values(rows)``. Only what depends on the layer
        is run again."""
        with self.explainer:
            part = compiled.downstream(self.explainer.net, resolve(self.explainer.net, self.layer), self.score)
        context = part.context(self.x) if part is not None else []
        if part is not None and not self._agrees(part(activation[:1], *[value[:1] for value in context])):
            part = None

        def output(rows: slice) -> NDArray:
            values = make_values(rows)
            if part is not None:
                return part(values, *[self.sample_rows(rows, repeats, value) for value in context])
            return self.explainer.forward(self.sample_rows(rows, repeats), replace={self.layer: lambda _: values},
                                          score=self.score)[0]
        return self._scores(output, total, repeats)

    def layer_gradient(self, factor: float) -> NDArray:
        """The gradient of the target score at the layer's output when that output is multiplied by ``factor``
        (one recorded forward and one backward pass; Shapley-CAM's finite differences)."""
        explainer, block = self.explainer, resolve(self.explainer.net, self.layer)
        target = self.target if callable(self.target) else self.classes
        with explainer, Session([block], {id(block): lambda out: out * factor}, relu_cuts=None) as session:
            with autograd.record(train_mode=False):
                output = explainer.net(session.make_input(self.x))
                head, head_grad, _ = score_head(_scored(session, output, self.score), target)
            session.backward(head, head_grad, 'normal')
            return session.gradient(session.captures[id(block)].leaf)

    def _scores(self, output: Callable[[slice], NDArray], total: int, repeats: int) -> NDArray:
        out = []
        for start in range(0, total, self.batch_size):
            rows = slice(start, min(start + self.batch_size, total))
            out.append(target_scores(output(rows), self.target, self.classes, rows, repeats))
        return nd.concat(*out, dim=0)

    def _agrees(self, output: NDArray) -> bool:
        """Whether a compiled pass's output for the first sample scores as the imperative pass did."""
        return compiled.agrees(target_scores(output, self.target, self.classes, slice(0, 1)), self.original[:1])


def _sample_of(rows: slice, repeats: int, ctx) -> NDArray:
    return nd.floor(nd.arange(rows.start, rows.stop, ctx=ctx) / repeats)


def target_scores(output: NDArray, target: Target, classes, rows: slice, repeats: int = 1) -> NDArray:
    """The target score of each output row; row r belongs to sample ``(rows.start + r) // repeats``."""
    if isinstance(target, FinerTarget):
        return target(output, _sample_of(rows, repeats, output.context))
    if callable(target):
        return target(output)
    return nd.pick(output, nd.take(classes.astype('float32'), _sample_of(rows, repeats, output.context)), axis=1)


AUGMENTATION_FACTORS = (0.9, 1.0, 1.1)  # pytorch-grad-cam's test-time intensity factors, each with and without a flip


@serialized
def cam(net, x, layers: Union[None, LayerRef, Sequence[LayerRef]],
        method: Union[str, CAMMethod, Sequence[Union[str, CAMMethod]]] = 'gradcam',
        target: Target = None, score: str = 'logits', batch_size: int = 32, aug_smooth: bool = False,
        eigen_smooth: bool = False) -> Union[NDArray, Dict[str, NDArray]]:
    """A CAM-family map: one forward and one backward pass, or (Eigen-, Score-, Ablation-CAM) forward passes only.

    Parameters
    ----------
    layers : str, Block, or a sequence of them
        One layer: its raw map, N x h x w. Several: each layer's map upsampled to the input, then scaled to
        [0, 1], then averaged into one N x H x W map. FullGrad ignores them (it uses every convolution and
        BatchNorm, and returns N x H x W in [0, 1]); for FullGrad alone ``layers`` may be None.
    method : str, CAMMethod, or a sequence of them
        One of ``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``, ``layercam``, ``eigencam``,
        ``scorecam``, ``ablationcam``, ``eigengradcam``, ``gradcamelementwise``, ``randomcam``, ``fullgrad``,
        ``kpcacam``, ``shapleycam``, ``finercam``, ``fem``, ``sscam``, ``iscam``, or a method with options
        (``GradCAM(relu=False)``, ``GradCAMPlusPlus(epsilon=1e-6)``, ``FinerCAM('layercam', alpha=0.5)``); or
        several, which share one forward pass and one backward sweep (Finer-CAM and FullGrad run their own) and
        come back as ``{method: map}``.
    target, score :
        As in :meth:`Explainer.backprop`.
    batch_size : int
        Rows per forward pass for Score-CAM, SS-CAM, IS-CAM and Ablation-CAM.
    aug_smooth : bool
        pytorch-grad-cam's test-time augmentation: the maps of the six inputs ``f * x`` and ``f * flip(x)``
        (horizontal flip, f in 0.9, 1, 1.1), each upsampled to the input and scaled to [0, 1], flipped back and
        averaged: N x H x W in [0, 1] whatever the layers, six times the cost. The class explained is fixed by
        the unaugmented input (pytorch-grad-cam predicts it again for each augmented one).
    eigen_smooth : bool
        pytorch-grad-cam's option: each map is the first principal component of the weighted activations instead
        of their channel sum (see :class:`CAMMethod`; no change for Eigen-CAM, Eigen-Grad-CAM and KPCA-CAM).
    """
    one = isinstance(method, (str, CAMMethod))
    methods = [method] if one else list(dict.fromkeys(method))
    if not methods:
        raise ValueError(f"no CAM method given; valid: {', '.join(CAM_METHODS)}, or CAMMethod instances")
    weightings = {name: _method(name) for name in methods}
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    single = not isinstance(layers, (list, tuple))
    layer_list = _layer_list(layers, weightings.values())
    x = as_batch(net, x)
    with Explainer(net) as explainer:
        passes = _augmented if aug_smooth else _maps
        results = passes(explainer, x, layer_list, single, weightings, target, score, batch_size, eigen_smooth)
    return results[method] if one else results


def _layer_list(layers, weightings) -> List[LayerRef]:
    layer_list = [] if layers is None else list(layers) if isinstance(layers, (list, tuple)) else [layers]
    one_layer_methods = [weighting for weighting in weightings if not isinstance(weighting, FullGrad)]
    if one_layer_methods and not layer_list:
        raise ValueError(f"{type(one_layer_methods[0]).__name__} needs at least one layer; got {layers!r}")
    if layer_list and not one_layer_methods:
        warnings.warn("FullGrad uses every convolution and BatchNorm of the network: the layers given are ignored",
                      stacklevel=4)
    return layer_list


def _maps(explainer: Explainer, x: NDArray, layers: List[LayerRef], single: bool, weightings: Dict,
          target: Target, score: str, batch_size: int, eigen_smooth: bool) -> Dict:
    """Each method's map (see :func:`cam`)."""
    by_layer = {}
    shared = {name: weighting for name, weighting in weightings.items()
              if not isinstance(weighting, (FinerCAM, FullGrad))}
    if shared:
        by_layer.update(_layer_maps(explainer, x, layers, shared, target, score, batch_size, eigen_smooth))
    finer = {name: weighting for name, weighting in weightings.items() if isinstance(weighting, FinerCAM)}
    if finer:
        output, _ = explainer.forward(x, score=score)
        for name, weighting in finer.items():
            comparing = weighting.target_for(output, target)
            by_layer[name] = _layer_maps(explainer, x, layers, {name: weighting.base}, comparing, score, batch_size,
                                         eigen_smooth)[name]
    results = {}
    for name, weighting in weightings.items():
        if isinstance(weighting, FullGrad):
            results[name] = weighting.map(explainer, x, target, score, eigen_smooth)
        else:
            results[name] = by_layer[name][0] if single else _fused(by_layer[name], x.shape[2:])
    return results


def _fused(layer_maps: List[NDArray], size) -> NDArray:
    return nd.add_n(*[maps.normalize(maps.upsample(one, size)) for one in layer_maps]) / len(layer_maps)


def _layer_maps(explainer: Explainer, x: NDArray, layers: List[LayerRef], weightings: Dict, target: Target,
                score: str, batch_size: int, eigen_smooth: bool) -> Dict[object, List[NDArray]]:
    """Each method's map of each layer, from the passes they share."""
    activations, gradients, scorers = _passes(explainer, x, layers, weightings.values(), target, score, batch_size)
    options = {'eigen_smooth': True} if eigen_smooth else {}  # methods written before the option need not take it
    return {name: [weighting(activations[display_name(layer)], gradients.get(display_name(layer)),
                             scorers[display_name(layer)], **options) for layer in layers]
            for name, weighting in weightings.items()}


def _augmented(explainer: Explainer, x: NDArray, layers: List[LayerRef], single: bool, weightings: Dict,
               target: Target, score: str, batch_size: int, eigen_smooth: bool) -> Dict:
    """pytorch-grad-cam's ``aug_smooth``: see :func:`cam`."""
    if not callable(target):
        output, _ = explainer.forward(x, score=score)
        if isinstance(output, NDArray) and output.ndim == 2:
            target = classes_for(output, target)
    size = x.shape[2:]
    totals = {}
    for flipped in (False, True):
        for factor in AUGMENTATION_FACTORS:
            augmented = (nd.flip(x, axis=3) if flipped else x) * factor
            results = _maps(explainer, augmented, layers, single, weightings, target, score, batch_size, eigen_smooth)
            for name, value in results.items():
                value = maps.normalize(maps.upsample(value, size))
                value = nd.flip(value, axis=2) if flipped else value
                totals[name] = value if name not in totals else totals[name] + value
    return {name: total / (2 * len(AUGMENTATION_FACTORS)) for name, total in totals.items()}


def _passes(explainer: Explainer, x: NDArray, layers: List[LayerRef], weightings, target: Target, score: str,
            batch_size: int):
    """The passes the methods share: (activations, gradients, scorers), each by layer name; a backward sweep
    only if a method needs gradients, a forward pass if none does or if one scores modified inputs. The scorers
    also give Shapley-CAM the context of its extra passes."""
    activations, gradients, classes, original = {}, {}, None, None
    needs_scores = any(weighting.needs_scores for weighting in weightings)
    if any(weighting.needs_gradient for weighting in weightings):
        result = explainer.backprop(x, target, layers, ('normal',), score=score)
        activations, gradients, classes = result.activations, result.gradients['normal'], result.classes
    if needs_scores or not activations:
        output, forward_activations = explainer.forward(x, layers, score=score)
        activations = activations or forward_activations
        if needs_scores:
            classes = None if callable(target) else classes_for(output, target)
            original = target_scores(output, target, classes, slice(0, x.shape[0]))
    scorers = {display_name(layer): Scorer(explainer, x, classes, target, layer, score, batch_size, original)
               for layer in layers}
    return activations, gradients, scorers
