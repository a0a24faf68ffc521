"""The gradient family: maps from the gradient of the target score S at the input x (N x C x H x W).

Every function returns NDArrays on the input's context and computes no parameter gradient. Noisy and path
methods run their samples in batches of ``batch_size`` rows.
"""
from typing import Callable, Optional, Tuple

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from . import modifiers
from .explainer import Explainer
from .inputs import Target, as_batch, classes_for
from .threads import serialized


@serialized
def gradient(net, x, target: Target = None, mode: str = 'normal', score: str = 'logits') -> NDArray:
    """``dS/dx`` under a backward mode: ``'normal'`` (vanilla), ``'guided'`` (guided backpropagation,
    Springenberg et al.) or ``'deconv'`` (deconvnet, Zeiler & Fergus). Signed, N x C x H x W."""
    return Explainer(net).backprop(x, target, modes=(mode,), score=score).input_gradients[mode]


@serialized
def saliency(net, x, target: Target = None, mode: str = 'normal', modifier: modifiers.Modifier = 'absolute',
             score: str = 'logits', per_channel: bool = False) -> NDArray:
    """Saliency (Simonyan et al.; keras-vis): ``max_c modifier(dS/dx_c)``, N x H x W. The default modifier
    ``'absolute'`` gives the classic map; ``'negate'`` shows what speaks against the target; None keeps signs.
    ``per_channel`` keeps every channel, N x C x H x W (captum's ``Saliency``: ``|dS/dx|``)."""
    modifiers.check(modifier)
    modified = modifiers.apply(modifier, gradient(net, x, target, mode, score))
    return modified if per_channel else modified.max(axis=1)


@serialized
def input_x_gradient(net, x, target: Target = None, score: str = 'logits') -> NDArray:
    """Input x gradient (Shrikumar et al.): ``x * dS/dx``, N x C x H x W, signed."""
    x = as_batch(net, x)
    return x * gradient(net, x, target, 'normal', score)


@serialized
def smoothgrad(net, x, target: Target = None, noise_level: float = 0.15, samples: int = 25, mode: str = 'normal',
               batch_size: int = 32, score: str = 'logits', seed: Optional[int] = None, stdev: Optional[float] = None,
               average: str = 'gradient', noise=None) -> NDArray:
    """SmoothGrad (Smilkov et al.): ``mean_k dS/dx (x + e_k)``, ``e_k ~ N(0, sigma^2)`` with
    ``sigma = noise_level * (max(x) - min(x))`` per image; N x C x H x W, signed. The target class is fixed
    by the clean image (the predicted one by default); ``seed`` makes the noise repeatable.

    Options that reproduce other libraries: ``stdev`` an absolute sigma (captum's ``stdevs``); ``average``
    what is averaged: ``'gradient'`` (captum's ``smoothgrad``), ``'square'`` its square (``smoothgrad_sq``) or
    ``'absolute'`` its absolute value (the paper's saliency variant); ``noise`` the noise itself, samples x C x H x W
    (the same for every image) or N*samples x C x H x W (image-major), instead of drawn noise.
    """
    if samples < 1 or batch_size < 1 or noise_level < 0 or (stdev is not None and stdev < 0):
        raise ValueError("samples and batch_size must be at least 1, noise_level and stdev non-negative")
    if average not in AVERAGES:
        raise ValueError(f"unknown average {average!r}; valid: {', '.join(AVERAGES)}")
    x = as_batch(net, x)
    n = x.shape[0]
    rows = nd.repeat(x, samples, axis=0)
    noisy = rows + _noise(x, samples, noise_level, seed, stdev, noise)
    grads = _batched_gradients(net, noisy, _row_targets(net, x, target, samples), mode, batch_size, score)
    return AVERAGES[average](grads).reshape((n, samples) + x.shape[1:]).mean(axis=1)


AVERAGES = {'gradient': lambda g: g, 'square': nd.square, 'absolute': nd.abs}


def _noise(x: NDArray, samples: int, noise_level: float, seed: Optional[int], stdev: Optional[float],
           noise) -> NDArray:
    """SmoothGrad's noise for ``repeat(x, samples)``: the caller's, or Gaussian with sigma absolute or relative to
    each image's range."""
    n = x.shape[0]
    shape = (n * samples,) + x.shape[1:]
    if noise is not None:
        noise = noise if isinstance(noise, NDArray) else nd.array(np.asarray(noise), ctx=x.context, dtype=x.dtype)
        if noise.shape == (samples,) + x.shape[1:]:
            noise = nd.tile(noise, (n,) + (1,) * (x.ndim - 1))
        if noise.shape != shape:
            raise ValueError(f"noise must have shape {(samples,) + x.shape[1:]} or {shape}, got {noise.shape}")
        return noise.as_in_context(x.context).astype(x.dtype)
    drawn = nd.array(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32),  # a local generator
                     ctx=x.context, dtype=x.dtype)
    if stdev is not None:
        return drawn * stdev
    flat = x.reshape((n, -1))
    span = (flat.max(axis=1) - flat.min(axis=1)).reshape((n,) + (1,) * (x.ndim - 1))
    return drawn * nd.repeat(span * noise_level, samples, axis=0)


@serialized
def noise_tunnel(method: Callable, net, x, target: Target = None, kind: str = 'smoothgrad', samples: int = 25,
                 stdev: Optional[float] = None, noise_level: float = 0.15, batch_size: int = 32,
                 seed: Optional[int] = None, score: str = 'logits', noise=None, **method_options) -> NDArray:
    """The noise tunnel over any attribution method (captum's ``NoiseTunnel``; Smilkov et al. 2017 for
    SmoothGrad, Adebayo et al. 2018 for VarGrad): ``method`` on ``samples`` noisy copies ``x + e_k`` of each
    image, ``e_k ~ N(0, sigma^2)``, aggregated per image by ``kind``:

    ``'smoothgrad'`` ``mean_k a_k``; ``'smoothgrad_sq'`` ``mean_k a_k^2``; ``'vargrad'`` ``mean_k a_k^2 -
    (mean_k a_k)^2`` (the variance over the samples, as captum).

    Parameters
    ----------
    method : callable
        ``method(net, rows, target=..., score=..., **method_options)`` returning attributions for the rows (or a
        pair (attributions, delta), the delta dropped): ``gradient``, ``saliency``, ``input_x_gradient``,
        ``integrated_gradients``, a layer attribution with its layer given in ``method_options``, or any other.
    target, score :
        As in :meth:`gluoncam.Explainer.backprop`; the classes are fixed by the clean images (the predicted ones
        by default) and passed to ``method`` per noisy row; a target function is passed as it is.
    samples, stdev, noise_level, seed, noise :
        The noise, as in :func:`smoothgrad`: sigma ``stdev`` (absolute, captum's ``stdevs``), else
        ``noise_level * (max(x) - min(x))`` per image; ``seed`` makes it repeatable; ``noise`` gives it.
    batch_size : int
        Noisy rows per call of ``method`` (image-major: the rows of image 0 first).

    Returns
    -------
    NDArray
        N x the method's per-sample shape; signed for ``'smoothgrad'``, non-negative otherwise. Cost: the
        method's cost on N x samples rows, plus one forward pass for the classes.
    """
    if not callable(method):
        raise ValueError(f"method must be a function such as gradients.saliency, got {type(method).__name__}")
    if kind not in TUNNEL_KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(TUNNEL_KINDS)}")
    if samples < 1 or batch_size < 1 or noise_level < 0 or (stdev is not None and stdev < 0):
        raise ValueError("samples and batch_size must be at least 1, noise_level and stdev non-negative")
    x = as_batch(net, x)
    n = x.shape[0]
    drawn = _noise(x, samples, noise_level, seed, stdev, noise)
    targets = _row_targets(net, x, target, samples)
    maps = []
    with Explainer(net):  # the network stays prepared across the method's calls
        for start in range(0, n * samples, batch_size):
            rows = slice(start, min(start + batch_size, n * samples))
            images = nd.floor(nd.arange(rows.start, rows.stop, ctx=x.context) / samples)
            chunk_target = targets if callable(targets) else targets[rows]
            result = method(net, nd.take(x, images) + drawn[rows], target=chunk_target, score=score,
                            **method_options)
            maps.append(result[0] if isinstance(result, tuple) else result)
    maps = nd.concat(*maps, dim=0)
    return TUNNEL_KINDS[kind](maps.reshape((n, samples) + maps.shape[1:]))


def _variance(maps: NDArray) -> NDArray:
    return nd.square(maps - maps.mean(axis=1, keepdims=True)).mean(axis=1)


TUNNEL_KINDS = {'smoothgrad': lambda maps: maps.mean(axis=1),
                'smoothgrad_sq': lambda maps: nd.square(maps).mean(axis=1), 'vargrad': _variance}


@serialized
def integrated_gradients(net, x, target: Target = None, baseline=None, steps: int = 50, batch_size: int = 32,
                         score: str = 'logits', rule: str = 'midpoint') -> Tuple[NDArray, NDArray]:
    """Integrated Gradients (Sundararajan et al.): ``(x - x') * integral_0^1 dS/dx (x' + a (x - x')) da``,
    with ``steps`` points; baseline ``x'`` black (zeros) by default. ``rule``: ``'midpoint'`` (captum's
    ``riemann_middle``) or ``'gausslegendre'`` (Gauss-Legendre nodes and weights, captum's default).

    Returns
    -------
    (attributions, delta) : N x C x H x W, and per sample the completeness error
        ``sum(attributions) - (S(x) - S(x'))``; it shrinks as ``steps`` grows.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be at least 1")
    if rule not in IG_RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(IG_RULES)}")
    x = as_batch(net, x)
    n = x.shape[0]
    baseline = nd.zeros_like(x) if baseline is None else as_batch(net, baseline).broadcast_to(x.shape)
    nodes, weights = IG_RULES[rule](steps)
    alphas = nd.array(nodes, ctx=x.context, dtype=x.dtype)
    weights = nd.array(weights, ctx=x.context, dtype=x.dtype).reshape((1, steps) + (1,) * (x.ndim - 1))
    delta_x = x - baseline
    path = nd.repeat(baseline, steps, axis=0) + nd.repeat(delta_x, steps, axis=0) * \
        alphas.tile(n).reshape((n * steps,) + (1,) * (x.ndim - 1))
    ends, _ = Explainer(net).forward(nd.concat(x, baseline, dim=0), score=score)  # also gives the classes
    if callable(target):
        targets, scores = target, target(ends)
    else:
        classes = classes_for(ends[:n], target)
        targets = nd.repeat(classes, steps, axis=0).asnumpy()
        scores = nd.pick(ends, nd.concat(classes, classes, dim=0).astype('float32'), axis=1)
    grads = _batched_gradients(net, path, targets, 'normal', batch_size, score)
    attributions = delta_x * (grads.reshape((n, steps) + x.shape[1:]) * weights).sum(axis=1)
    delta = attributions.reshape((n, -1)).sum(axis=1) - (scores[:n] - scores[n:])
    return attributions, delta


def _gauss_legendre(steps: int):
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2  # from [-1, 1] to [0, 1]


IG_RULES = {'midpoint': lambda steps: ((np.arange(steps) + 0.5) / steps, np.full(steps, 1 / steps)),
            'gausslegendre': _gauss_legendre}


def _row_targets(net, x: NDArray, target: Target, repeats: int):
    """Per-row targets for ``repeats`` rows per image: the clean images' classes, or the target function."""
    if callable(target):
        return target
    output, _ = Explainer(net).forward(x)
    return nd.repeat(classes_for(output, target), repeats, axis=0).asnumpy()


def _batched_gradients(net, rows: NDArray, targets, mode: str, batch_size: int, score: str) -> NDArray:
    out = []
    with Explainer(net, repeated=rows.shape[0] > batch_size) as explainer:
        for start in range(0, rows.shape[0], batch_size):
            chunk = slice(start, min(start + batch_size, rows.shape[0]))
            chunk_target = targets if callable(targets) else targets[chunk]
            out.append(explainer.backprop(rows[chunk], chunk_target, modes=(mode,), score=score)
                       .input_gradients[mode])
    return nd.concat(*out, dim=0)
