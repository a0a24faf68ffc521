"""The CAM family: ``L = relu(sum_c W_c * A_c)`` over a layer's activations A (N x C x h x w).

The methods differ only in the weights W (per channel, or per element); each class gives its formula. The
gradient G is that of the target score S at the layer's output. Formulas follow pytorch-grad-cam.
"""
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from . import compiled, maps
from .explainer import Explainer
from .inputs import Target, as_batch, classes_for
from .layers import LayerRef, display_name, resolve

EPSILON = 1e-7


class CAMMethod:
    """Base: ``relu(sum_c weights(A, G) * A)``; subclasses define ``weights``.

    ``relu=False`` keeps the signed sum, negative where the layer speaks against the target (captum's
    ``LayerGradCam`` with ``relu_attributions=False``, its default).
    """
    needs_gradient = True
    needs_scores = False  # forward passes scoring the target on modified inputs or layers

    def __init__(self, relu: bool = True):
        self.relu = relu

    def __call__(self, activation: NDArray, gradient: NDArray, scorer: 'Scorer') -> NDArray:
        maps._check_4d(activation)
        return self._rectified((self.weights(activation, gradient, scorer) * activation).sum(axis=1))

    def weights(self, activation: NDArray, gradient: NDArray, scorer: 'Scorer') -> NDArray:
        raise NotImplementedError

    def _rectified(self, total: NDArray) -> NDArray:
        return nd.relu(total) if self.relu else total


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
    activation (an SVD's sign is arbitrary)."""
    needs_gradient = False

    def __call__(self, activation, gradient, scorer):
        maps._check_4d(activation)
        n, c, h, w = activation.shape
        positions = activation.reshape((n, c, h * w)).transpose((0, 2, 1))  # N x hw x C
        centred = positions - positions.mean(axis=1, keepdims=True)
        covariance = nd.linalg.gemm2(centred, centred, transpose_a=True)  # N x C x C
        vectors, _ = nd.linalg.syevd(covariance.astype('float64'))  # rows, eigenvalues ascending
        top = vectors[:, -1, :].astype(activation.dtype).expand_dims(2)  # N x C x 1
        projection = nd.linalg.gemm2(centred, top)[:, :, 0]  # N x hw
        mean = positions.mean(axis=2)
        sign = nd.sign(((projection - projection.mean(axis=1, keepdims=True)) * mean).sum(axis=1, keepdims=True))
        sign = nd.where(sign == 0, nd.ones_like(sign), sign)
        return self._rectified(projection * sign).reshape((n, h, w))


class EigenGradCAM(EigenCAM):
    """Eigen-Grad-CAM (pytorch-grad-cam): Eigen-CAM of ``G * A``, the activations weighted by their gradient, so
    that the principal component depends on the class."""
    needs_gradient = True

    def __call__(self, activation, gradient, scorer):
        return super().__call__(activation * gradient, None, scorer)


class GradCAMElementWise(CAMMethod):
    """Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): ``L = relu(sum_c relu(G_c * A_c))``, each
    element's contribution rectified before the sum."""

    def __call__(self, activation, gradient, scorer):
        maps._check_4d(activation)
        return self._rectified(nd.relu(gradient * activation).sum(axis=1))


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


def _channels_as_maps(activation: NDArray) -> NDArray:
    n, c, h, w = activation.shape
    return activation.reshape((n * c, h, w))


CAM_METHODS: Dict[str, Callable[[], CAMMethod]] = {
    'gradcam': GradCAM, 'gradcam++': GradCAMPlusPlus, 'xgradcam': XGradCAM, 'hirescam': HiResCAM,
    'layercam': LayerCAM, 'eigencam': EigenCAM, 'scorecam': ScoreCAM, 'ablationcam': AblationCAM,
    'eigengradcam': EigenGradCAM, 'gradcamelementwise': GradCAMElementWise, 'randomcam': RandomCAM,
}


class Scorer:
    """Forward-only target scores for the batched passes of Score-CAM and Ablation-CAM.

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
    if callable(target):
        return target(output)
    return nd.pick(output, nd.take(classes.astype('float32'), _sample_of(rows, repeats, output.context)), axis=1)


def cam(net, x, layers: Union[LayerRef, Sequence[LayerRef]],
        method: Union[str, CAMMethod, Sequence[Union[str, CAMMethod]]] = 'gradcam',
        target: Target = None, score: str = 'logits', batch_size: int = 32) -> Union[NDArray, Dict[str, NDArray]]:
    """A CAM-family map: one forward and one backward pass, or (Eigen-, Score-, Ablation-CAM) forward passes only.

    Parameters
    ----------
    layers : str, Block, or a sequence of them
        One layer: its raw map, N x h x w. Several: each layer's map upsampled to the input, then scaled to
        [0, 1], then averaged into one N x H x W map.
    method : str, CAMMethod, or a sequence of them
        One of ``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``, ``layercam``, ``eigencam``,
        ``scorecam``, ``ablationcam``, ``eigengradcam``, ``gradcamelementwise``, ``randomcam``, or a method
        with options (``GradCAM(relu=False)``, ``GradCAMPlusPlus(epsilon=1e-6)``); or several, which share one
        forward pass and one backward sweep and come back as ``{method: map}``.
    target, score :
        As in :meth:`Explainer.backprop`.
    batch_size : int
        Rows per forward pass for Score-CAM and Ablation-CAM.
    """
    one = isinstance(method, (str, CAMMethod))
    methods = [method] if one else list(dict.fromkeys(method))
    unknown = [name for name in methods if not isinstance(name, CAMMethod) and name not in CAM_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown CAM method {unknown[0] if unknown else method!r}; valid: {', '.join(CAM_METHODS)}, "
                         f"or a CAMMethod such as cams.GradCAMPlusPlus(epsilon=1e-6)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    single = not isinstance(layers, (list, tuple))
    layer_list: List[LayerRef] = [layers] if single else list(layers)
    x = as_batch(net, x)
    weightings = {name: name if isinstance(name, CAMMethod) else CAM_METHODS[name]() for name in methods}
    with Explainer(net) as explainer:
        activations, gradients, scorers = _passes(explainer, x, layer_list, weightings.values(), target, score,
                                                  batch_size)
        results = {}
        for name, weighting in weightings.items():
            cams = [weighting(activations[display_name(layer)], gradients.get(display_name(layer)),
                              scorers.get(display_name(layer))) for layer in layer_list]
            results[name] = cams[0] if single else \
                nd.add_n(*[maps.normalize(maps.upsample(c, x.shape[2:])) for c in cams]) / len(cams)
    return results[method] if one else results


def _passes(explainer: Explainer, x: NDArray, layers: List[LayerRef], weightings, target: Target, score: str,
            batch_size: int):
    """The passes the methods share: (activations, gradients, scorers), each by layer name; a backward sweep
    only if a method needs gradients, scorers only if one scores modified inputs."""
    activations, gradients, scorers = {}, {}, {}
    needs_scores = any(weighting.needs_scores for weighting in weightings)
    if any(weighting.needs_gradient for weighting in weightings):
        result = explainer.backprop(x, target, layers, ('normal',), score=score)
        activations, gradients = result.activations, result.gradients['normal']
    if needs_scores or not activations:
        output, forward_activations = explainer.forward(x, layers, score=score)
        activations = activations or forward_activations
    if needs_scores:
        classes = None if callable(target) else classes_for(output, target)
        original = target_scores(output, target, classes, slice(0, x.shape[0]))
        scorers = {display_name(layer): Scorer(explainer, x, classes, target, layer, score, batch_size, original)
                   for layer in layers}
    return activations, gradients, scorers
