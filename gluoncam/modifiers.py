"""keras-vis gradient modifiers: applied to a gradient before it is reduced to a map."""
from typing import Callable, Dict, Optional, Union

from mxnet import nd
from mxnet.ndarray import NDArray

EPSILON = 1e-7

MODIFIERS: Dict[str, Callable[[NDArray], NDArray]] = {
    'absolute': nd.abs,                                   # how much, either way
    'relu': nd.relu,                                      # what speaks for the target
    'negate': lambda g: -g,                               # what speaks against it
    'invert': lambda g: 1 / (g + EPSILON),                # large where the gradient is small
    'small_values': lambda g: nd.abs(1 / (g + EPSILON)),  # |invert|: where small changes matter least
}

Modifier = Union[None, str, Callable[[NDArray], NDArray]]


def apply(modifier: Modifier, gradient: NDArray) -> NDArray:
    """``modifier`` (a name above, a function, or None for the signed gradient) applied to ``gradient``."""
    if modifier is None:
        return gradient
    if callable(modifier):
        return modifier(gradient)
    if modifier not in MODIFIERS:
        raise ValueError(f"unknown gradient modifier {modifier!r}; valid: {', '.join(MODIFIERS)}, or None")
    return MODIFIERS[modifier](gradient)


def check(modifier: Optional[Modifier]) -> None:
    if modifier is not None and not callable(modifier) and modifier not in MODIFIERS:
        raise ValueError(f"unknown gradient modifier {modifier!r}; valid: {', '.join(MODIFIERS)}, or None")
