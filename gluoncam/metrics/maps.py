"""What every metric does first: any method's maps brought to one map per image at the input's resolution."""
from typing import Tuple

from mxnet import nd
from mxnet.ndarray import NDArray

from .. import maps as gluoncam_maps
from ..threads import serialized


@serialized
def pixel_maps(maps, size: Tuple[int, int], ctx=None) -> NDArray:
    """N x H x W maps (float32, on ``ctx`` or the maps' context) from a method's maps for N images of ``size``
    (height, width): N x h x w maps (CAMs) upsampled bilinearly (pixel centres aligned); N x C x H x W maps
    (gradient, propagation and perturbation methods) summed over channels, signs kept. A map of another shape
    is a ValueError that says which shapes fit."""
    if not isinstance(maps, NDArray):
        maps = nd.array(maps, ctx=ctx)
    if ctx is not None:
        maps = maps.as_in_context(ctx)
    maps = maps.astype('float32')
    height, width = size
    if maps.ndim == 4 and tuple(maps.shape[2:]) == (height, width):
        return maps.sum(axis=1)
    if maps.ndim == 3:
        return gluoncam_maps.upsample(maps, size)
    raise ValueError(f"maps must be N x h x w (a CAM, any h x w) or N x C x {height} x {width} (the input's size); "
                     f"got shape {maps.shape}")


def check_batch(maps: NDArray, n: int) -> None:
    if maps.shape[0] != n:
        raise ValueError(f"got maps for {maps.shape[0]} image(s) and {n} image(s); pass one map per image")
