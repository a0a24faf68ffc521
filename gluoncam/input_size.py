"""Inputs too small for a network: MXNet's convolution or pooling error ("kernel size exceed input") said in the
user's terms, the input's size and the smallest the network takes."""
import contextlib
import io
from typing import Optional, Sequence

import mxnet as mx
from mxnet.base import MXNetError
from mxnet.gluon import Block, HybridBlock

LARGEST = 4096  # the search for the smallest input stops here


def is_too_small(error: BaseException) -> bool:
    """Whether ``error`` is MXNet refusing a kernel larger than its (padded) input."""
    text = str(error)
    return 'kernel size' in text and 'exceed' in text


def too_small(net: Block, shape: Sequence[int], error: BaseException) -> Optional[ValueError]:
    """A ValueError saying that an input of ``shape`` (N x C x H x W) is smaller than ``net`` takes, and the
    smallest square input it takes, if ``error`` is MXNet's kernel-size check; None for any other error."""
    if not is_too_small(error) or len(shape) != 4:
        return None
    height, width = shape[2:]
    smallest = minimum_size(net, shape[1])
    minimum = f"; it takes {smallest} x {smallest} pixels or more (resize the image, or choose a larger --size)" \
        if smallest else '; resize the image to the size the network was trained on'
    layer = _failing_operator(str(error))
    where = f" (at {layer})" if layer else ''
    return ValueError(f"the input is {height} x {width} pixels, smaller than {type(net).__name__} can take: a "
                      f"kernel is larger than its feature map{where}{minimum}")


def minimum_size(net: Block, channels: int = 3) -> Optional[int]:
    """The smallest side of a square input ``net`` takes, by MXNet's shape inference on its traced graph (no pass
    runs, no parameter is touched); None if the network cannot be traced or takes none up to ``LARGEST``."""
    if not isinstance(net, HybridBlock):
        return None
    try:
        data = mx.sym.var('data')
        output = net(data)
        if isinstance(output, (list, tuple)):
            output = mx.sym.Group(list(output))
    except Exception:  # noqa: B902 (a network whose code needs NDArrays: no minimum to tell)
        return None

    def fits(side: int) -> bool:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # MXNet prints the arguments of a failed inference
                output.infer_shape(data=(1, channels, side, side))
            return True
        except MXNetError:
            return False

    high = 1
    while not fits(high):
        if high >= LARGEST:
            return None
        high *= 2
    low = high // 2  # fits(low) is False (or low is 0)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def _failing_operator(text: str) -> str:
    marker = 'Error in operator '
    if marker not in text:
        return ''
    return text.split(marker, 1)[1].split(':', 1)[0].strip()
