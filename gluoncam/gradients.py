"""The gradient family: maps from the gradient of the target score S at the input x (N x C x H x W).

Every function returns NDArrays on the input's context and computes no parameter gradient. Noisy and path
methods run their samples in batches of ``batch_size`` rows.
"""
from typing import Optional, Tuple

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from . import modifiers
from .explainer import Explainer
from .inputs import Target, as_batch, classes_for


def gradient(net, x, target: Target = None, mode: str = 'normal', score: str = 'logits') -> NDArray:
    """``dS/dx`` under a backward mode: ``'normal'`` (vanilla), ``'guided'`` (guided backpropagation,
    Springenberg et al.) or ``'deconv'`` (deconvnet, Zeiler & Fergus). Signed, N x C x H x W."""
    return Explainer(net).backprop(x, target, modes=(mode,), score=score).input_gradients[mode]


def saliency(net, x, target: Target = None, mode: str = 'normal', modifier: modifiers.Modifier = 'absolute',
             score: str = 'logits') -> NDArray:
    """Saliency (Simonyan et al.; keras-vis): ``max_c modifier(dS/dx_c)``, N x H x W. The default modifier
    ``'absolute'`` gives the classic map; ``'negate'`` shows what speaks against the target; None keeps signs."""
    modifiers.check(modifier)
    return modifiers.apply(modifier, gradient(net, x, target, mode, score)).max(axis=1)


def input_x_gradient(net, x, target: Target = None, score: str = 'logits') -> NDArray:
    """Input x gradient (Shrikumar et al.): ``x * dS/dx``, N x C x H x W, signed."""
    x = as_batch(net, x)
    return x * gradient(net, x, target, 'normal', score)


def smoothgrad(net, x, target: Target = None, noise_level: float = 0.15, samples: int = 25, mode: str = 'normal',
               batch_size: int = 32, score: str = 'logits', seed: Optional[int] = None) -> NDArray:
    """SmoothGrad (Smilkov et al.): ``mean_k dS/dx (x + e_k)``, ``e_k ~ N(0, sigma^2)`` with
    ``sigma = noise_level * (max(x) - min(x))`` per image; N x C x H x W, signed. The target class is fixed
    by the clean image (the predicted one by default); ``seed`` makes the noise repeatable."""
    if samples < 1 or batch_size < 1 or noise_level < 0:
        raise ValueError("samples and batch_size must be at least 1 and noise_level non-negative")
    x = as_batch(net, x)
    n = x.shape[0]
    span = (x.reshape((n, -1)).max(axis=1) - x.reshape((n, -1)).min(axis=1)).reshape((n,) + (1,) * (x.ndim - 1))
    rows = nd.repeat(x, samples, axis=0)
    noise = np.random.default_rng(seed).standard_normal(rows.shape, dtype=np.float32)  # a local generator
    noisy = rows + nd.array(noise, ctx=x.context, dtype=x.dtype) * nd.repeat(span * noise_level, samples, axis=0)
    grads = _batched_gradients(net, noisy, _row_targets(net, x, target, samples), mode, batch_size, score)
    return grads.reshape((n, samples) + x.shape[1:]).mean(axis=1)


def integrated_gradients(net, x, target: Target = None, baseline=None, steps: int = 50, batch_size: int = 32,
                         score: str = 'logits') -> Tuple[NDArray, NDArray]:
    """Integrated Gradients (Sundararajan et al.): ``(x - x') * integral_0^1 dS/dx (x' + a (x - x')) da``,
    by the midpoint rule with ``steps`` points; baseline ``x'`` black (zeros) by default.

    Returns
    -------
    (attributions, delta) : N x C x H x W, and per sample the completeness error
        ``sum(attributions) - (S(x) - S(x'))``; it shrinks as ``steps`` grows.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be at least 1")
    x = as_batch(net, x)
    n = x.shape[0]
    baseline = nd.zeros_like(x) if baseline is None else as_batch(net, baseline).broadcast_to(x.shape)
    alphas = (nd.arange(steps, ctx=x.context, dtype=x.dtype) + 0.5) / steps
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
    attributions = delta_x * grads.reshape((n, steps) + x.shape[1:]).mean(axis=1)
    delta = attributions.reshape((n, -1)).sum(axis=1) - (scores[:n] - scores[n:])
    return attributions, delta


def _row_targets(net, x: NDArray, target: Target, repeats: int):
    """Per-row targets for ``repeats`` rows per image: the clean images' classes, or the target function."""
    if callable(target):
        return target
    output, _ = Explainer(net).forward(x)
    return nd.repeat(classes_for(output, target), repeats, axis=0).asnumpy()


def _batched_gradients(net, rows: NDArray, targets, mode: str, batch_size: int, score: str) -> NDArray:
    out = []
    with Explainer(net) as explainer:
        for start in range(0, rows.shape[0], batch_size):
            chunk = slice(start, min(start + batch_size, rows.shape[0]))
            chunk_target = targets if callable(targets) else targets[chunk]
            out.append(explainer.backprop(rows[chunk], chunk_target, modes=(mode,), score=score)
                       .input_gradients[mode])
    return nd.concat(*out, dim=0)
