"""Layer attributions as captum defines them: how much each unit of a layer's output contributes to the target
score S, on any layer gluoncam can capture. Each returns an array with the layer's output shape (N x C x h x w
for a convolution), signed, on the input's context; no parameter gradient is computed.
"""
from typing import Callable, Tuple

import numpy as np
from mxnet import autograd, nd
from mxnet.ndarray import NDArray

from .explainer import Explainer
from .gradients import IG_RULES
from .inputs import Target, as_batch, classes_for
from .layers import LayerRef, display_name
from .session import as_leaf
from .threads import serialized


@serialized
def layer_gradient_x_activation(net, x, layer: LayerRef, target: Target = None, score: str = 'logits') -> NDArray:
    """Layer gradient x activation (captum's ``LayerGradientXActivation``): ``A * dS/dA`` at the layer's output A.

    One forward and one backward pass. Returns an array shaped like the layer's output, signed; summed over a
    layer all of whose units feed the output linearly (a last Dense layer's input, say) it gives the score minus
    the bias.
    """
    result = Explainer(net).backprop(x, target, [layer], score=score)
    name = display_name(layer)
    return result.activations[name] * result.gradients['normal'][name]


@serialized
def layer_integrated_gradients(net, x, layer: LayerRef, target: Target = None, baseline=None, steps: int = 50,
                               batch_size: int = 32, score: str = 'logits',
                               rule: str = 'midpoint') -> Tuple[NDArray, NDArray]:
    """Layer Integrated Gradients (captum's ``LayerIntegratedGradients``; Sundararajan et al. 2017, applied to a
    layer): Integrated Gradients in the layer's output space,

    ``(A - A') * integral_0^1 dS/dA (A' + a (A - A')) da``,

    with ``A`` and ``A'`` the layer's outputs for x and for the baseline x' (black, zeros, by default). At each
    of the ``steps`` points the network runs on x with the layer's output replaced by the interpolated one (as
    captum's forward hook does: anything that bypasses the layer, such as a skip connection over it, sees x), and
    the gradient is taken at the layer.

    Parameters
    ----------
    layer : str or Block
        The layer, by ``print(net)`` path, block name or block; its output must be one array.
    target, score :
        As in :meth:`gluoncam.Explainer.backprop`; the classes are those of the clean images (predicted by
        default).
    baseline : array, optional
        x', one C x H x W image or one per sample.
    steps, batch_size, rule :
        Points on the path, rows per backward pass, and the quadrature: ``'midpoint'`` (captum's
        ``riemann_middle``) or ``'gausslegendre'`` (captum's default method).

    Returns
    -------
    (attributions, delta) : the layer's output shape (signed), and per sample the completeness error
        ``sum(attributions) - (S(x) - S(x'))``; it shrinks as ``steps`` grows when everything reaches the output
        through the layer. Cost: one forward pass of 2N rows and N x steps forward and backward rows.
    """
    _check_path_arguments(steps, batch_size, rule, IG_RULES)
    x, baseline = _with_baseline(net, x, baseline)
    n, name = x.shape[0], display_name(layer)
    with Explainer(net) as explainer:
        activations, targets, gap = _clean_passes(explainer, x, baseline, layer, target, score)
        start, change = activations[n:], activations[:n] - activations[n:]
        nodes, weights = IG_RULES[rule](steps)
        alphas = nd.array(nodes, ctx=x.context, dtype=x.dtype)
        grads = []
        for rows in _chunks(n * steps, batch_size):
            images, alpha = _path_rows(rows, steps, alphas, change.ndim)
            values = nd.take(start, images) + nd.take(change, images) * alpha
            grads.append(explainer.backprop(nd.take(x, images), _rows_of(targets, rows, steps), [layer], score=score,
                                            replace={layer: _substitute(values)}).gradients['normal'][name])
    weights = nd.array(weights, ctx=x.context, dtype=x.dtype).reshape((1, steps) + (1,) * (change.ndim - 1))
    attributions = change * (nd.concat(*grads, dim=0).reshape((n, steps) + change.shape[1:]) * weights).sum(axis=1)
    return attributions, _delta(attributions, gap)


@serialized
def layer_conductance(net, x, layer: LayerRef, target: Target = None, baseline=None, steps: int = 50,
                      batch_size: int = 32, score: str = 'logits', rule: str = 'trapezoid') -> Tuple[NDArray, NDArray]:
    """Layer conductance (captum's ``LayerConductance``; Dhamdhere et al. 2018, "How important is a neuron?"):
    the inputs run along the straight path ``x_k = x' + a_k (x - x')`` and each unit of the layer collects

    ``sum_k dS/dA (x_k) * (A(x_{k+1}) - A(x_k))``,  k = 0 .. steps - 1,

    the gradient at the layer times the change of the layer's output between consecutive points (``steps + 1``
    points, as captum). ``rule``: ``'trapezoid'`` (default) points ``0, 1/steps, ..., 1`` (captum's
    ``riemann_trapezoid``), so the changes add up to ``A(x) - A(x')`` exactly; ``'gausslegendre'`` the
    Gauss-Legendre nodes of ``steps + 1`` points (captum's default, which reproduces its numbers; the path then
    misses its ends).

    Returns
    -------
    (attributions, delta) : the layer's output shape (signed), and per sample ``sum(attributions) -
        (S(x) - S(x'))``, small for the default rule when everything reaches the output through the layer.
        Cost: one forward pass of 2N rows and N x (steps + 1) forward and backward rows.
    """
    _check_path_arguments(steps, batch_size, rule, CONDUCTANCE_RULES)
    x, baseline = _with_baseline(net, x, baseline)
    n, name, points = x.shape[0], display_name(layer), steps + 1
    alphas = nd.array(CONDUCTANCE_RULES[rule](points), ctx=x.context, dtype=x.dtype)
    with Explainer(net, repeated=n * points > batch_size) as explainer:
        _, targets, gap = _clean_passes(explainer, x, baseline, layer, target, score)
        values, grads = [], []
        for rows in _chunks(n * points, batch_size):
            images, alpha = _path_rows(rows, points, alphas, x.ndim)
            start = nd.take(baseline, images)
            result = explainer.backprop(start + (nd.take(x, images) - start) * alpha, _rows_of(targets, rows, points),
                                        [layer], score=score)
            values.append(result.activations[name])
            grads.append(result.gradients['normal'][name])
    shape = (n, points) + values[0].shape[1:]
    values, grads = nd.concat(*values, dim=0).reshape(shape), nd.concat(*grads, dim=0).reshape(shape)
    attributions = (grads[:, :-1] * (values[:, 1:] - values[:, :-1])).sum(axis=1)
    return attributions, _delta(attributions, gap)


def _gauss_legendre_nodes(points: int) -> np.ndarray:
    return (np.polynomial.legendre.leggauss(points)[0] + 1) / 2


CONDUCTANCE_RULES = {'trapezoid': lambda points: np.linspace(0, 1, points), 'gausslegendre': _gauss_legendre_nodes}


def _check_path_arguments(steps: int, batch_size: int, rule: str, rules: dict) -> None:
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got steps={steps}, batch_size={batch_size}")
    if rule not in rules:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(rules)}")


def _with_baseline(net, x, baseline) -> Tuple[NDArray, NDArray]:
    x = as_batch(net, x)
    if baseline is None:
        return x, nd.zeros_like(x)
    baseline = as_batch(net, baseline)
    if baseline.shape[1:] != x.shape[1:] or baseline.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"the baseline must have shape {x.shape[1:]} or {x.shape}, got {baseline.shape}")
    return x, baseline.broadcast_to(x.shape)


def _clean_passes(explainer: Explainer, x: NDArray, baseline: NDArray, layer: LayerRef, target: Target, score: str):
    """One forward pass of x and the baseline: (the layer's outputs, 2N rows; per-row targets for the path rows,
    or the target function; ``S(x) - S(x')`` per sample)."""
    n = x.shape[0]
    output, captured = explainer.forward(nd.concat(x, baseline, dim=0), [layer], score=score)
    activations = captured[display_name(layer)]
    if not isinstance(activations, NDArray):
        raise ValueError(f"layer {display_name(layer)!r} returns {type(activations).__name__}, not a single array; "
                         f"choose a block that returns one array")
    if callable(target):
        scores = target(output)
        return activations, target, scores[:n] - scores[n:]
    classes = classes_for(output[:n], target)
    scores = nd.pick(output, nd.concat(classes, classes, dim=0).astype('float32'), axis=1)
    return activations, classes.asnumpy(), scores[:n] - scores[n:]


def _chunks(total: int, batch_size: int):
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def _path_rows(rows: slice, points: int, alphas: NDArray, ndim: int) -> Tuple[NDArray, NDArray]:
    """For path rows ``rows`` (image-major: row r is image r // points at point r % points): the image of each
    row, and its alpha shaped to broadcast over an array of ``ndim`` dimensions."""
    index = nd.arange(rows.start, rows.stop, ctx=alphas.context)
    images = nd.floor(index / points)
    alpha = nd.take(alphas, index - images * points)
    return images, alpha.reshape((-1,) + (1,) * (ndim - 1))


def _rows_of(targets, rows: slice, points: int):
    """The target of each path row: the target function, or the class of the row's image."""
    if callable(targets):
        return targets
    return targets[np.arange(rows.start, rows.stop) // points]


def _substitute(values: NDArray) -> Callable[[NDArray], NDArray]:
    """A replacement of the layer's output by ``values``. While recording, the replacement is a fresh leaf: a
    value computed outside the recording has no place in the graph that the session's sweep back-propagates
    through (and nothing below the layer needs a gradient)."""
    def replace(out: NDArray) -> NDArray:
        if out.shape != values.shape:
            raise ValueError(f"the layer's output has shape {out.shape}, the replacement {values.shape}")
        return as_leaf(values.copy()) if autograd.is_recording() else values
    return replace


def _delta(attributions: NDArray, gap: NDArray) -> NDArray:
    return attributions.reshape((attributions.shape[0], -1)).sum(axis=1) - gap
