"""The propagation family: DeepLIFT, DeepLIFT-SHAP, GradientSHAP and Layer-wise Relevance Propagation (LRP).

Each method is one recorded forward pass and one backward pass in which some layers compute their usual value
but back-propagate their rule's multiplier instead of their gradient. The rules are built from ordinary ops and
``detach()``: ``z * m.detach() + (f(z) - z * m).detach()`` has the value ``f(z)`` and the gradient ``m``, and
``t * c.detach() + (z - t * c).detach()`` has the value ``z`` and the gradient of ``t`` scaled by ``c``. The
recording is a :class:`gluoncam.session.Session` whose routed ``F`` applies the rules, inside an
:class:`~gluoncam.Explainer`'s preparation of the network (stock blocks intercepted, max pooling in the mode
where MKLDNN back-propagates it correctly, BatchNorm on its running statistics). No parameter gradient is
computed and the network is left as it was.

Definitions follow captum (``DeepLift``, ``DeepLiftShap``, ``GradientShap``, ``LRP``); differences are stated
in each docstring. Every function returns NDArrays on the input's context.
"""
from typing import Dict, Optional, Tuple, Union

import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import Block
from mxnet.ndarray import NDArray

from . import compiled
from .explainer import Explainer, SCORES, _check_escapes, _scored
from .gradients import _batched_gradients, _row_targets
from .inputs import Target, as_batch, classes_for, score_head
from .layers import resolve
from .session import RoutedF, Session
from .threads import serialized

__all__ = ['deeplift', 'deeplift_shap', 'gradient_shap', 'lrp', 'Epsilon', 'Gamma', 'ZPlus', 'AlphaBeta',
           'LRP_RULES', 'LAYER_KINDS']

RESCALE_EPSILON = 1e-10  # captum's: below this |x - x0|, a DeepLIFT unit back-propagates its plain gradient


# ----------------------------------------------------------------------------------------------------------
# DeepLIFT


@serialized
def deeplift(net: Block, x, target: Target = None, baseline=None,
             score: str = 'logits') -> Tuple[NDArray, NDArray]:
    """DeepLIFT with the rescale rule (Shrikumar et al., "Learning Important Features Through Propagating
    Activation Differences", ICML 2017), as captum's ``DeepLift`` computes it.

    The input ``x`` and the baseline ``x0`` run as one batch of 2N rows, so each nonlinear unit sees both. A unit
    ``y = f(z)`` back-propagates the multiplier ``(f(z) - f(z0)) / (z - z0)`` instead of ``f'(z)`` (its plain
    gradient where ``|z - z0| < 1e-10``), for ReLU, ReLU6 (``clip(z, 0, u)``), every other ``Activation``
    (sigmoid, tanh, softrelu, softsign) and ``LeakyReLU`` (leaky, ELU, SELU, GELU, PReLU); linear layers
    (convolution, dense, average pooling, BatchNorm in inference) keep their gradient. Max pooling follows
    captum's rule: with ``p = pool(z)``, ``p0 = pool(z0)`` and ``m = max(p, p0)``, the upstream gradient times
    ``m - p0`` is routed to the input's maxima, times ``p - m`` to the baseline's, both are summed and divided
    by ``z - z0``. Attributions are ``(x - x0) * m_x``, ``m_x`` the multiplier
    product at the input, and sum to ``S(x) - S(x0)`` (completeness) for networks made of these layers.
    Nonlinear ops gluoncam does not route (a plain Block calling ``mx.nd.relu``, say) and a final softmax
    scored with ``score='output'`` (captum's softmax rule is not followed) back-propagate their gradient, and
    ``delta`` shows what that costs.

    Parameters
    ----------
    net : Block
    x : NDArray or numpy array
        N x C x H x W batch or one C x H x W image.
    target : None, int, sequence of int, or callable
        The predicted class of each image (None), one class, one per image, or a function of the network's
        output of 2N rows (images, then baselines) returning one score per row, as captum's target repeated.
    baseline : None, float, or array
        ``x0``: black (zeros) by default; a number; one C x H x W image; or one per sample (N x C x H x W).
    score : str
        ``'logits'`` or ``'output'``, as in :meth:`gluoncam.Explainer.backprop`.

    Returns
    -------
    (attributions, delta) : N x C x H x W signed attributions, and per sample
        ``sum(attributions) - (S(x) - S(x0))`` (captum's convergence delta), zero up to float error.

    Cost: one recorded forward pass of 2N rows and one backward pass.
    """
    _check_score(score)
    x = as_batch(net, x)
    baseline = _baseline_batch(x, baseline)
    multipliers, difference = _deeplift_rows(net, x, baseline, target, score)
    attributions = (x - baseline) * multipliers
    return attributions, _sum_per_row(attributions) - difference


@serialized
def deeplift_shap(net: Block, x, target: Target = None, baselines=None, batch_size: int = 32,
                  score: str = 'logits') -> Tuple[NDArray, NDArray]:
    """DeepLIFT-SHAP (Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017):
    :func:`deeplift` against each of B baselines drawn from a distribution, averaged, as captum's
    ``DeepLiftShap``: ``mean_b (x - x_b) * m(x, x_b)``.

    Parameters
    ----------
    baselines : array
        B x C x H x W baselines (B >= 1; captum recommends more than one), or one C x H x W image.
    batch_size : int
        Pairs (image, baseline) per recorded pass; each pass runs twice as many rows.

    Returns
    -------
    (attributions, delta) : N x C x H x W, and N x B: per image and baseline ``sum(attributions of the pair)
        - (S(x) - S(x_b))``; captum returns it flattened image-major, ``delta.reshape(-1)``.

    Cost: N * B pairs, in recorded passes of ``2 * batch_size`` rows, one backward pass each.
    """
    _check_score(score)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    x = as_batch(net, x)
    baselines = _baseline_distribution(x, baselines)
    n, b = x.shape[0], baselines.shape[0]
    rows = nd.repeat(x, b, axis=0)
    references = nd.tile(baselines, (n,) + (1,) * (x.ndim - 1))
    targets = _repeated_targets(target, n, b)
    attributions, deltas = [], []
    for start in range(0, n * b, batch_size):
        chunk = slice(start, min(start + batch_size, n * b))
        chunk_target = targets if targets is None or callable(targets) else targets[chunk]
        multipliers, difference = _deeplift_rows(net, rows[chunk], references[chunk], chunk_target, score)
        attribution = (rows[chunk] - references[chunk]) * multipliers
        attributions.append(attribution)
        deltas.append(_sum_per_row(attribution) - difference)
    attributions = nd.concat(*attributions, dim=0).reshape((n, b) + x.shape[1:]).mean(axis=1)
    return attributions, nd.concat(*deltas, dim=0).reshape((n, b))


class _DeepLiftSession(Session):
    """A recording of 2N rows (N inputs, then their N baselines) whose nonlinear units back-propagate DeepLIFT's
    rescale multipliers."""

    def __init__(self, n: int):
        super().__init__(relu_cuts=None)
        self.n = n
        self.F = _DeepLiftF(self)

    def relu(self, x: NDArray, upper: Optional[float] = None) -> NDArray:
        if not autograd.is_recording():
            return self._rectify(x, upper)
        with autograd.pause():
            if upper is None:
                value, slope = nd.relu(x), x > 0
            else:
                value, slope = nd.clip(x, 0, upper), (x > 0) * (x < upper)
        return self.rescaled(x, value, slope)

    def _halves(self, array: NDArray) -> Tuple[NDArray, NDArray]:
        if array.shape[0] != 2 * self.n:
            raise ValueError(f"DeepLIFT needs the samples along the first axis of every layer's output; a layer's "
                             f"output has shape {array.shape} for a batch of {self.n} inputs and {self.n} baselines")
        return nd.slice_axis(array, 0, 0, self.n), nd.slice_axis(array, 0, self.n, 2 * self.n)

    def rescaled(self, z: NDArray, value: NDArray, slope: NDArray) -> NDArray:
        """The value ``value = f(z)`` (not recorded), back-propagating the rescale multiplier (``slope``, the
        plain ``f'(z)``, where the input barely differs from the baseline's)."""
        with autograd.pause():
            z_x, z_0 = self._halves(z)
            y_x, y_0 = self._halves(value)
            change = z_x - z_0
            small = nd.abs(change) < RESCALE_EPSILON
            ratio = (y_x - y_0) / nd.where(small, nd.ones_like(change), change)
            multiplier = nd.where(nd.concat(small, small, dim=0), slope.astype(z.dtype),
                                  nd.concat(ratio, ratio, dim=0))
        return _with_gradient(z, value, multiplier)

    def rescaled_op(self, op, z: NDArray) -> NDArray:
        """``op(z)`` for an elementwise ``op``, back-propagating the rescale multiplier; ``op``'s own derivative
        (where the input barely differs from the baseline's) from a small recording of its own."""
        point = z.detach()
        point.attach_grad()
        with autograd.record(train_mode=False):
            value = op(point)
        value.backward(train_mode=False)
        return self.rescaled(z, value.detach(), point.grad)

    def rescaled_max_pool(self, z: NDArray, pooled: NDArray, pool) -> NDArray:
        """captum's DeepLIFT rule for max pooling; ``pooled = pool(z)`` (recorded)."""
        n = self.n
        with autograd.pause():
            p_x, p_0 = self._halves(pooled)
            z_x, z_0 = self._halves(z)
            larger = nd.maximum(p_x, p_0)
            routed = nd.concat(larger - p_0, p_x - larger, dim=0)  # what each half's maxima pass on
            change = z_x - z_0
            small = nd.abs(change) < RESCALE_EPSILON
            inverse = nd.where(small, nd.zeros_like(change), 1 / nd.where(small, nd.ones_like(change), change))
            plain = nd.concat(small, small, dim=0).astype(z.dtype)
        # Away from ``small``, both halves' input gradients are (unpool_x(g * routed_x) + unpool_0(g * routed_0))
        # / (z - z0): ``shared`` sums the halves' gradients and scales them, ``through`` gives the pool the values
        # of z (so it routes to z's maxima) and the gradient of ``shared``.
        z_x, z_0 = nd.slice_axis(z, 0, 0, n), nd.slice_axis(z, 0, n, 2 * n)
        summed = (z_x + z_0) * inverse
        shared = nd.concat(summed, summed, dim=0)
        through = shared + (z - shared).detach()
        rescaled_part = pool(through) * routed
        plain_part = pool(z * plain + (z - z * plain).detach())
        both = rescaled_part + plain_part
        return both + (pooled - both).detach()


class _DeepLiftF(RoutedF):
    """The routed F of a DeepLIFT recording: elementwise activations (``Activation``, ``LeakyReLU``, ``sigmoid``,
    ``tanh``; ReLUs through the session) and max pooling back-propagate DeepLIFT's multipliers."""

    def Activation(self, data, act_type=None, *args, **kwargs):  # noqa: N802 (MXNet's op names)
        if act_type == 'relu' or not autograd.is_recording():
            return super().Activation(data, act_type, *args, **kwargs)
        return self._session().rescaled_op(lambda z: nd.Activation(z, *args, act_type=act_type, **kwargs), data)

    def LeakyReLU(self, data, *args, **kwargs):  # noqa: N802
        if not autograd.is_recording():
            return nd.LeakyReLU(data, *args, **kwargs)
        return self._session().rescaled_op(lambda z: nd.LeakyReLU(z, *args, **kwargs), data)

    def sigmoid(self, data, *args, **kwargs):
        return self.Activation(data, 'sigmoid')

    def tanh(self, data, *args, **kwargs):
        return self.Activation(data, 'tanh')

    def Pooling(self, data, *args, **kwargs):  # noqa: N802
        pooled = super().Pooling(data, *args, **kwargs)
        if kwargs.get('pool_type', 'max') != 'max' or not autograd.is_recording():
            return pooled
        return self._session().rescaled_max_pool(data, pooled, lambda z: super(_DeepLiftF, self).Pooling(
            z, *args, **kwargs))


def _with_gradient(z: NDArray, value: NDArray, gradient: NDArray) -> NDArray:
    """``value`` (a constant), back-propagating ``gradient`` (a constant) times the upstream gradient to ``z``."""
    linear = z * gradient
    return linear + (value - linear).detach()


def _deeplift_rows(net: Block, x: NDArray, baseline: NDArray, target: Target,
                   score: str) -> Tuple[NDArray, NDArray]:
    """DeepLIFT's multipliers at the input rows, and ``S(x) - S(x0)`` per row, from one recording of 2N rows."""
    n = x.shape[0]
    with Explainer(net), _DeepLiftSession(n) as session:
        session.ops_in_train_mode = compiled.runs_in_train_mode(net)  # as Explainer's recordings
        with autograd.record(train_mode=False):
            output = net(session.make_input(nd.concat(x, baseline, dim=0)))
            scored = _scored(session, output, score)
            head, head_grad = _head_of_pairs(scored, target, n)
        _check_escapes(net, session, head, ('normal',))
        session.backward(head, head_grad, 'normal')
        multipliers = nd.slice_axis(session.gradient(session.input), 0, 0, n)
    scores = _sum_per_row(head.detach() * head_grad)
    return multipliers, nd.slice_axis(scores, 0, 0, n) - nd.slice_axis(scores, 0, n, 2 * n)


def _head_of_pairs(scored, target: Target, n: int) -> Tuple[NDArray, NDArray]:
    """The head of a recording of inputs and baselines: the target score of every row, the inputs' classes
    (predicted or given) for the baselines too, as captum repeats the target."""
    if callable(target):
        head, head_grad, _ = score_head(scored, target)
        return head, head_grad
    head, _, _ = score_head(scored, 0)  # checks the output's shape
    classes = classes_for(nd.slice_axis(scored.detach(), 0, 0, n), target)
    return head, nd.one_hot(nd.concat(classes, classes, dim=0), scored.shape[1], dtype=scored.dtype)


# ----------------------------------------------------------------------------------------------------------
# GradientSHAP


@serialized
def gradient_shap(net: Block, x, target: Target = None, baselines=None, n_samples: int = 5, stdevs: float = 0.0,
                  seed: Optional[int] = None, batch_size: int = 32,
                  score: str = 'logits') -> Tuple[NDArray, NDArray]:
    """GradientSHAP (Lundberg & Lee, NeurIPS 2017; Erion et al.'s expected gradients), as captum's
    ``GradientShap``: for each image, ``n_samples`` draws of a baseline ``x_b`` (uniformly from ``baselines``),
    a point ``a ~ U[0, 1]`` and, with ``stdevs > 0``, Gaussian noise ``e ~ N(0, stdevs^2)`` added to the image
    (captum's NoiseTunnel); each draw gives ``(x + e - x_b) * dS/dx(x_b + a (x + e - x_b))`` and the
    attributions are their mean. In expectation this is Integrated Gradients averaged over the baselines.

    The draws come from ``numpy.random.default_rng(seed)``, image-major: first the N x n_samples baseline
    indices, then the points, then the noise (N * n_samples x C x H x W, only when ``stdevs > 0``). The class
    explained is fixed by the clean image (the predicted one by default).

    Returns
    -------
    (attributions, delta) : N x C x H x W, and N x n_samples: per draw ``sum(its attribution)
        - (S(x + e) - S(x_b))``; captum returns it flattened, one per draw.

    Cost: N * n_samples gradients in passes of ``batch_size`` rows, forward passes of 2 * N * n_samples rows for
    delta, and one of N rows for the classes.
    """
    _check_score(score)
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be at least 1, got {n_samples} and {batch_size}")
    if not stdevs >= 0:
        raise ValueError(f"stdevs must be a non-negative number, got {stdevs}")
    x = as_batch(net, x)
    baselines = _baseline_distribution(x, baselines)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, baselines.shape[0], size=n * n_samples)
    alphas = rng.uniform(0, 1, size=n * n_samples).astype(np.float32)
    inputs = nd.repeat(x, n_samples, axis=0)
    if stdevs > 0:
        noise = rng.standard_normal(inputs.shape, dtype=np.float32) * np.float32(stdevs)
        inputs = inputs + nd.array(noise, ctx=x.context, dtype=x.dtype)
    references = nd.take(baselines, nd.array(chosen, ctx=x.context), axis=0)
    alphas = nd.array(alphas, ctx=x.context, dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    targets = _row_targets(net, x, target, n_samples)
    grads = _batched_gradients(net, references + alphas * (inputs - references), targets, 'normal', batch_size,
                               score)
    per_draw = (inputs - references) * grads
    difference = _scores(net, inputs, targets, batch_size, score) - _scores(net, references, targets, batch_size,
                                                                              score)
    delta = (_sum_per_row(per_draw) - difference).reshape((n, n_samples))
    return per_draw.reshape((n, n_samples) + x.shape[1:]).mean(axis=1), delta


def _scores(net: Block, rows: NDArray, targets, batch_size: int, score: str) -> NDArray:
    """The target score of each row (targets: one class per row, or a function), by forward passes."""
    out = []
    with Explainer(net) as explainer:
        for start in range(0, rows.shape[0], batch_size):
            chunk = slice(start, min(start + batch_size, rows.shape[0]))
            output, _ = explainer.forward(rows[chunk], score=score)
            if callable(targets):
                out.append(targets(output))
            else:
                classes = nd.array(targets[chunk], ctx=output.context, dtype=output.dtype)
                out.append(nd.pick(output, classes, axis=1))
    return nd.concat(*out, dim=0)


# ----------------------------------------------------------------------------------------------------------
# Baselines and targets


def _baseline_batch(x: NDArray, baseline) -> NDArray:
    """DeepLIFT's baseline for each row of ``x``: zeros, a number, one image, or one per image."""
    if baseline is None:
        return nd.zeros_like(x)
    if np.isscalar(baseline):
        return nd.full(x.shape, float(baseline), ctx=x.context, dtype=x.dtype)
    valid = f"the baseline must be a number or have shape {x.shape[1:]}, {(1,) + x.shape[1:]} or {x.shape}"
    array = _as_array(x, baseline, valid)
    if array.shape == x.shape[1:]:
        array = array.expand_dims(0)
    if array.shape[1:] != x.shape[1:] or array.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"{valid} (the input's); got {array.shape}")
    return array.broadcast_to(x.shape)


def _baseline_distribution(x: NDArray, baselines) -> NDArray:
    """B x C x H x W baselines for SHAP methods (one C x H x W image is a distribution of one)."""
    valid = f"baselines must have shape (B,) + {x.shape[1:]} with B >= 1 (B reference samples, e.g. a few " \
            f"training images), or {x.shape[1:]} (one baseline)"
    if baselines is None:
        raise ValueError(f"baselines are required: {valid}")
    array = _as_array(x, baselines, valid)
    if array.shape == x.shape[1:]:
        array = array.expand_dims(0)
    if array.shape[1:] != x.shape[1:]:
        raise ValueError(f"{valid}; got {array.shape}")
    return array


def _as_array(x: NDArray, value, valid: str) -> NDArray:
    """``value`` as an array on ``x``'s context and type; empty or non-finite values are refused."""
    shape = value.shape if isinstance(value, NDArray) else np.shape(value)
    if 0 in shape:
        raise ValueError(f"{valid}; got an empty array of shape {shape}")
    if not isinstance(value, NDArray):
        value = nd.array(np.asarray(value, dtype=np.float32), ctx=x.context, dtype=x.dtype)
    value = value.as_in_context(x.context).astype(x.dtype)
    if not bool(nd.contrib.isfinite(value).min().asscalar()):
        raise ValueError("the baseline contains NaN or infinite values")
    return value


def _repeated_targets(target: Target, n: int, repeats: int):
    """Class targets for ``repeat(x, repeats)``: None (each row's prediction, the same for all of an image's
    rows), a function, or one class per row."""
    if target is None or callable(target):
        return target
    values = np.asarray(target.asnumpy() if isinstance(target, NDArray) else target)
    if values.ndim == 0:
        return np.full(n * repeats, values)
    if values.shape != (n,):
        raise ValueError(f"got {values.size} class targets for a batch of {n}; pass one int or one per sample")
    return np.repeat(values, repeats)


def _sum_per_row(array: NDArray) -> NDArray:
    return array.reshape((array.shape[0], -1)).sum(axis=1)


def _check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")


# ----------------------------------------------------------------------------------------------------------
# LRP

LAYER_KINDS = ('conv', 'dense', 'pooling', 'batchnorm')  # the ops gluoncam routes: Convolution, FullyConnected,
#                                                            Pooling (max, average, sum), BatchNorm


class Rule:
    """An LRP rule: how a layer ``z = L(a)`` with value ``z`` passes the relevance ``R_out`` at its output on to
    its input: ``R_in = a * J_rule^T (R_out / stab(z_rule))``, ``stab(t) = t + epsilon * sign(t)`` (sign(0) = 1).
    ``kinds``: the layer kinds it applies to."""
    name = ''
    kinds: Tuple[str, ...] = ()

    def __init__(self, epsilon: float = 1e-9):
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be a non-negative number, got {epsilon}")
        self.epsilon = float(epsilon)

    def terms(self, z: NDArray, layer, data: NDArray, weight: NDArray, bias: Optional[NDArray]):
        """(recorded ``t``, constant ``c``) pairs: the layer's value is ``z`` and its gradient ``sum c dt``."""
        raise NotImplementedError

    def _share(self, z: NDArray, t: NDArray) -> NDArray:
        """``z / stab(t)``; 0 where ``stab(t)`` is 0 (epsilon 0 and an output of 0: nothing to pass on)."""
        with autograd.pause():
            stabilized = t + self.epsilon * nd.where(t >= 0, nd.ones_like(t), -nd.ones_like(t))
            vanishing = stabilized == 0
            return nd.where(vanishing, nd.zeros_like(t), z / nd.where(vanishing, nd.ones_like(t), stabilized))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in vars(self).items())})"


class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): ``R_j = a_j sum_k w_jk R_k / stab(z_k)``; captum's ``EpsilonRule``
    (default epsilon 1e-9: LRP-0, which equals input x gradient on bias-free ReLU networks). Any layer kind;
    the bias and a BatchNorm's shift absorb relevance."""
    name = 'epsilon'
    kinds = LAYER_KINDS

    def terms(self, z, layer, data, weight, bias):
        return [(z, self._share(z, z))]


class Gamma(Rule):
    """LRP-gamma (Montavon et al. 2019): the weights ``w + gamma * max(w, 0)``, the bias kept (zero with
    ``zero_bias``), as captum's ``GammaRule`` (default gamma 0.25). Convolution and dense layers."""
    name = 'gamma'
    kinds = ('conv', 'dense')

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-9, zero_bias: bool = False):
        super().__init__(epsilon)
        if not gamma >= 0:
            raise ValueError(f"gamma must be a non-negative number, got {gamma}")
        self.gamma, self.zero_bias = float(gamma), zero_bias

    def terms(self, z, layer, data, weight, bias):
        t = layer(data, weight + self.gamma * nd.relu(weight), None if self.zero_bias else bias)
        return [(t, self._share(z, t))]


class ZPlus(Rule):
    """LRP-z+ (alpha 1, beta 0) as captum's ``Alpha1_Beta0_Rule``: the weights ``max(w, 0)`` applied to the
    layer's input as it is (signed at the network's input), the bias kept (zero with ``zero_bias``). On
    non-negative inputs and without bias it equals :class:`AlphaBeta` (1, 0). Convolution and dense layers."""
    name = 'z+'
    kinds = ('conv', 'dense')

    def __init__(self, epsilon: float = 1e-9, zero_bias: bool = False):
        super().__init__(epsilon)
        self.zero_bias = zero_bias

    def terms(self, z, layer, data, weight, bias):
        t = layer(data, nd.relu(weight), None if self.zero_bias else bias)
        return [(t, self._share(z, t))]


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015): ``R_j = sum_k (alpha (a_j w_jk)+ / z+_k - beta (a_j w_jk)- / z-_k) R_k``
    with ``z+-_k`` the sums of the positive and negative contributions (a positive bias counted in ``z+``, a
    negative one in ``z-``), ``alpha - beta = 1``. Not in captum (zennit's ``AlphaBeta`` splits the same way).
    Default alpha 2, beta 1. Convolution and dense layers."""
    name = 'alpha_beta'
    kinds = ('conv', 'dense')

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-9):
        super().__init__(epsilon)
        if not (beta >= 0 and abs(alpha - beta - 1) < 1e-6):
            raise ValueError(f"alpha-beta needs beta >= 0 and alpha - beta = 1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def terms(self, z, layer, data, weight, bias):
        with autograd.pause():
            positive_mask, negative_mask = data > 0, data < 0
        positive, negative = data * positive_mask, data * negative_mask
        w_plus, w_minus = nd.relu(weight), weight - nd.relu(weight)
        b_plus = None if bias is None else nd.relu(bias)
        b_minus = None if bias is None else bias - nd.relu(bias)
        z_plus = layer(positive, w_plus, b_plus) + layer(negative, w_minus, None)
        z_minus = layer(positive, w_minus, b_minus) + layer(negative, w_plus, None)
        return [(z_plus, self.alpha * self._nonzero_share(z, z_plus)),
                (z_minus, -self.beta * self._nonzero_share(z, z_minus))]

    def _nonzero_share(self, z, t):
        with autograd.pause():
            return nd.where(t == 0, nd.zeros_like(t), self._share(z, t))  # no contribution of that sign


LRP_RULES = {rule.name: rule for rule in (Epsilon, Gamma, ZPlus, AlphaBeta)}

RuleSpec = Union[str, Rule]


@serialized
def lrp(net: Block, x, target: Target = None, rules: Optional[Dict[object, RuleSpec]] = None,
        score: str = 'logits') -> NDArray:
    """Layer-wise Relevance Propagation (Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier
    Decisions by Layer-Wise Relevance Propagation", PLoS ONE 2015; Montavon et al., "Layer-Wise Relevance
    Propagation: An Overview", 2019), as captum's ``LRP``.

    The relevance of the target score ``R = S(x)`` is passed down layer by layer with each layer's rule
    (:class:`Epsilon`, :class:`Gamma`, :class:`ZPlus`, :class:`AlphaBeta`), computed in gradient form:
    a layer keeps its value ``z`` and back-propagates ``J_rule^T (g * z / stab(z_rule))``, so that ``a * g`` is
    the relevance at every layer's input ``a``. ReLUs, Dropout, flattening and additions pass relevance on
    unchanged (captum's rule for its non-linear layers). The relevance at the input is ``x * g``; its sum is
    ``S(x)`` where the rules conserve relevance (bias-free layers, epsilon -> 0), less what biases, BatchNorm
    shifts and epsilon absorb. These are the values captum's ``LRP.attribute`` returns (its propagated relevance
    times the target's output).

    Parameters
    ----------
    rules : dict, optional
        Layer kind (``'conv'``, ``'dense'``, ``'pooling'``, ``'batchnorm'``) or layer (``print(net)`` path, block
        name or block; the rule applies to the layers inside it too, the innermost named one winning) -> rule:
        a :class:`Rule` or its name (``'epsilon'``, ``'gamma'``, ``'z+'``, ``'alpha_beta'``, with their default
        parameters). Unnamed kinds use ``Epsilon()`` (captum's default for every layer). Gamma, z+ and
        alpha-beta apply to convolution and dense layers only.
    score : str
        ``'logits'`` (default). ``'output'`` is refused for a network that ends in a softmax, for which no LRP
        rule is defined (captum refuses softmax layers too).

    Returns
    -------
    N x C x H x W relevance (signed).

    Layers run by ops gluoncam does not route (a plain Block calling ``mx.nd.Convolution``) and deconvolutions
    pass relevance by their plain gradient. Cost: one recorded forward pass (more ops per layer for gamma, z+
    and alpha-beta) and one backward pass.
    """
    _check_score(score)
    x = as_batch(net, x)
    by_kind, by_block = _parse_rules(net, rules)
    with Explainer(net), _LRPSession(by_kind, by_block) as session:
        session.ops_in_train_mode = compiled.runs_in_train_mode(net)  # as Explainer's recordings
        with autograd.record(train_mode=False):
            output = net(session.make_input(x))
            if score == 'output' and session.logits_of(output) is not None:
                raise ValueError("LRP has no rule for the network's final softmax; use score='logits' (the "
                                 "relevance of the softmax's input)")
            head, head_grad, _ = score_head(_scored(session, output, score), target)
        _check_escapes(net, session, head, ('normal',))
        session.backward(head, head_grad, 'normal')
        return x * session.gradient(session.input)


def _parse_rules(net: Block, rules) -> Tuple[Dict[str, Rule], Dict[int, Rule]]:
    by_kind: Dict[str, Rule] = {kind: Epsilon() for kind in LAYER_KINDS}
    by_block: Dict[int, Rule] = {}
    for key, spec in (rules or {}).items():
        rule = _as_rule(spec)
        if isinstance(key, str) and key in LAYER_KINDS:
            if key not in rule.kinds:
                raise ValueError(f"the {rule.name} rule does not apply to {key} layers; rules for {key}: "
                                 f"{', '.join(name for name, r in LRP_RULES.items() if key in r.kinds)}")
            by_kind[key] = rule
        elif isinstance(key, (str, Block)):
            by_block[id(resolve(net, key))] = rule
        else:
            raise ValueError(f"rules keys are layer kinds ({', '.join(LAYER_KINDS)}) or layers (names, paths or "
                             f"blocks); got {key!r}")
    return by_kind, by_block


def _as_rule(spec: RuleSpec) -> Rule:
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str) and spec in LRP_RULES:
        return LRP_RULES[spec]()
    raise ValueError(f"unknown LRP rule {spec!r}; valid: {', '.join(LRP_RULES)}, or an instance of "
                     f"{', '.join(rule.__name__ for rule in LRP_RULES.values())}")


class _LRPSession(Session):
    """A recording whose convolution, dense, pooling and BatchNorm ops back-propagate their LRP rule."""

    def __init__(self, by_kind: Dict[str, Rule], by_block: Dict[int, Rule]):
        super().__init__(relu_cuts=None)
        self.by_kind, self.by_block = by_kind, by_block
        self.F = _LRPF(self)

    def propagate(self, kind: str, z: NDArray, layer, data: NDArray, weight=None, bias=None) -> NDArray:
        """The layer's value ``z``, back-propagating its rule (see :class:`Rule`)."""
        if not autograd.is_recording():
            return z
        rule = self._rule_for(kind)
        terms = rule.terms(z, layer, data, weight, bias)
        linear = sum(t * c for t, c in terms)
        return linear + (z - linear).detach()

    def _rule_for(self, kind: str) -> Rule:
        block = self._current_block()
        for enclosing in reversed(self._block_stack):
            rule = self.by_block.get(id(enclosing))
            if rule is not None:
                if kind not in rule.kinds:
                    raise ValueError(f"the {rule.name} rule does not apply to {kind} layer {block.name!r} (set for "
                                     f"{enclosing.name!r}); rules for {kind} layers: "
                                     f"{', '.join(name for name, r in LRP_RULES.items() if kind in r.kinds)}")
                return rule
        return self.by_kind[kind]


class _LRPF(RoutedF):
    """The routed F of an LRP recording. Each layer op is rerun by its rule as ``layer(data, weight, bias)``,
    with the op's other arguments unchanged."""

    def Convolution(self, data, weight, bias=None, *args, **kwargs):  # noqa: N802 (MXNet's op names)
        return self._weighted('conv', self.routed_op('Convolution'), data, weight, bias, args, kwargs)

    def FullyConnected(self, data, weight, bias=None, *args, **kwargs):  # noqa: N802
        return self._weighted('dense', self.routed_op('FullyConnected'), data, weight, bias, args, kwargs)

    def _weighted(self, kind, op, data, weight, bias, args, kwargs):
        kwargs.pop('no_bias', None)

        def layer(data_, weight_, bias_):
            if bias_ is None:
                return op(data_, weight_, *args, no_bias=True, **kwargs)
            return op(data_, weight_, bias_, *args, no_bias=False, **kwargs)

        z = layer(data, weight, bias)
        return self._session().propagate(kind, z, layer, data, weight, bias)

    def Pooling(self, data, *args, **kwargs):  # noqa: N802
        pool = lambda data_, *_: super(_LRPF, self).Pooling(data_, *args, **kwargs)  # noqa: E731
        return self._session().propagate('pooling', pool(data), pool, data)

    def BatchNorm(self, data, *args, **kwargs):  # noqa: N802
        norm = lambda data_, *_: super(_LRPF, self).BatchNorm(data_, *args, **kwargs)  # noqa: E731
        return self._session().propagate('batchnorm', norm(data), norm, data)
