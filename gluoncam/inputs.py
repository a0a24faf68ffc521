"""Turning what users pass (images, classes, score functions) into checked arrays, with clear errors."""
from typing import Callable, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet import nd
from mxnet.gluon import Block
from mxnet.ndarray import NDArray

from .nn import walk

Target = Union[None, int, Sequence[int], np.ndarray, NDArray, Callable[[NDArray], NDArray]]


def net_context(net: Block) -> Tuple[mx.Context, np.dtype]:
    """The context and float type of the network's (first initialised) parameters; CPU float32 if none."""
    for param in parameters(net):
        if param._data is not None:
            return param.list_ctx()[0], np.dtype(param.dtype)
    return mx.cpu(), np.dtype('float32')


def parameters(net: Block):
    """The network's parameters, each once (``collect_params`` without its checks, which cost milliseconds per
    call on a large network)."""
    seen = set()
    for block in walk(net):
        for param in block._reg_params.values():
            if id(param) not in seen:
                seen.add(id(param))
                yield param


def as_batch(net: Block, x) -> NDArray:
    """``x`` as a float N x C x H x W NDArray on its own context (numpy goes to the network's context)."""
    ctx, dtype = net_context(net)
    if not isinstance(x, NDArray):
        x = nd.array(np.asarray(x), ctx=ctx, dtype=dtype)
    first = _first_layer(net)
    if isinstance(first, mx.gluon.nn.Conv2D):
        if x.ndim == 3:
            x = x.expand_dims(0)
        if x.ndim != 4:
            raise ValueError(f"expected an image batch of shape (N, C, H, W) or one image (C, H, W), "
                             f"got shape {x.shape}")
        _check_channels(first, x.shape)
    elif x.ndim < 2:
        raise ValueError(f"expected a batch with the samples along the first axis, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("the batch is empty")
    if x.dtype != dtype:
        x = x.astype(dtype)
    _check_context(net, x.context)
    if not bool(nd.all_finite(x).asscalar()):  # one pass, no array of x's size (contrib.isfinite makes four)
        raise ValueError("the input contains NaN or infinite values")
    return x


def _first_layer(net: Block) -> Optional[Block]:
    """The first block with a weight, in definition order: what the input meets first in most networks."""
    return next((block for block in walk(net) if 'weight' in block._reg_params), None)


def _check_channels(conv: Block, shape) -> None:
    expected = conv.weight.shape[1] * conv._kwargs.get('num_group', 1)
    if expected and shape[1] != expected:
        hint = ' (channels last? use x.transpose((0, 3, 1, 2)))' if shape[3] == expected else ''
        raise ValueError(f"the network's first convolution {conv.name!r} takes {expected} input channels, the "
                         f"input has {shape[1]} (shape {shape}, NCHW expected){hint}")


def _check_context(net: Block, ctx: mx.Context) -> None:
    for param in parameters(net):
        if param._data is not None and ctx not in param.list_ctx():
            raise ValueError(f"the input is on {ctx} but parameter {param.name!r} is on {param.list_ctx()}; "
                             f"move one of them (x.as_in_context(ctx) or net.collect_params().reset_ctx(ctx))")


def score_head(output, target: Target) -> Tuple[NDArray, NDArray, Optional[NDArray]]:
    """(head, head gradient, classes) whose backward gives each sample's target score gradient.

    Called while recording. Class targets select one logit per sample; a callable maps the output to one score
    per sample. Samples do not interact in an explanation's forward pass, so the sum of the scores is
    back-propagated once for the whole batch.
    """
    if callable(target):
        score = target(output)
        if not isinstance(score, NDArray) or score.ndim != 1 or score.shape[0] != _batch_size(output):
            raise ValueError(f"the target function must return one score per sample, shape "
                             f"({_batch_size(output)},); it returned {getattr(score, 'shape', type(score))}")
        return score, nd.ones_like(score), None
    if not isinstance(output, NDArray) or output.ndim != 2:
        raise ValueError(f"class targets need an output of shape (N, classes); the network returns "
                         f"{describe_output(output)}: pass a function that maps the output to one score per sample "
                         f"(gluoncam.targets has them for detection, segmentation and pose)")
    classes = classes_for(output, target)
    return output, nd.one_hot(classes, output.shape[1], dtype=output.dtype), classes


def describe_output(output) -> str:
    """What a network returned, for error messages: shapes, nested as the output is."""
    if isinstance(output, (list, tuple)):
        return f"a {type(output).__name__} of {len(output)}: " + ', '.join(describe_output(o) for o in output)
    return f"shape {output.shape}" if isinstance(output, NDArray) else type(output).__name__


def _batch_size(output) -> int:
    first = output[0] if isinstance(output, (list, tuple)) else output
    return first.shape[0]


def classes_for(output: NDArray, target) -> NDArray:
    """One class per sample: the predicted one (None), one for all, or one each; checked against the output."""
    n, num_classes = output.shape
    if target is None:
        return nd.argmax(output.detach(), axis=1).astype('int64')
    values = target.asnumpy() if isinstance(target, NDArray) else np.asarray(target)
    if values.dtype.kind not in 'iu' and not (values.dtype.kind == 'f' and np.all(values == np.round(values))):
        raise ValueError(f"class targets must be integers, got {target!r}")
    values = np.broadcast_to(values.astype(np.int64), (n,)) if values.ndim == 0 else values.astype(np.int64)
    if values.shape != (n,):
        raise ValueError(f"got {values.size} class targets for a batch of {n}; pass one int or one per sample")
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise ValueError(f"class id {int(bad[0])} out of range: the network has {num_classes} classes "
                         f"(valid ids 0..{num_classes - 1})")
    return nd.array(values, ctx=output.context, dtype='int64')
