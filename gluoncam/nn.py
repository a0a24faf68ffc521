"""Drop-in ``Conv2D``, ``Dense`` and ``Activation``: ``mxnet.gluon.nn``'s blocks that take part in explanations.

Outside an explanation they are exactly the stock blocks (same constructor, same parameter names, hybridizable),
so a network definition loads its model-zoo weights unchanged after swapping the imports. Inside one (see
:class:`gluoncam.Explainer`) their ReLUs follow the call's backward mode and their outputs can be captured.
Stock blocks of any network get the same behaviour for the duration of a call from :func:`intercept`.
"""
from typing import Callable

from mxnet.gluon import HybridBlock, nn

from .session import active_session

__all__ = ['Conv2D', 'Dense', 'Activation', 'ReLU6', 'convert', 'is_explainable']


def _explained_forward(block: HybridBlock, hybrid_forward: Callable, F, x, *args, **params):
    session = active_session()
    if session is None or F is not session.F_kind:  # no explanation or trace in this thread, or not of this kind
        return hybrid_forward(F, x, *args, **params)
    return session.run_block(block, hybrid_forward, x, args, params)


class _Explainable:
    """Put first in the bases: the stock block's ``hybrid_forward`` is what it wraps."""

    def hybrid_forward(self, F, x, *args, **params):
        return _explained_forward(self, super().hybrid_forward, F, x, *args, **params)


class Activation(_Explainable, nn.Activation):
    """``mxnet.gluon.nn.Activation``; a ``'relu'`` follows the backward mode of the explanation."""


class _ClipTo6(HybridBlock):
    def hybrid_forward(self, F, x):
        return F.clip(x, 0, 6)

    def __repr__(self):
        return 'ReLU6()'


class ReLU6(_Explainable, _ClipTo6):
    """``min(max(x, 0), 6)`` (MobileNet, EfficientNet-Lite); its guided and deconv rules mask on ``0 < x < 6``."""


class _FusedActivation(_Explainable):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.act is not None:
            self.act.__class__ = Activation


class Conv2D(_FusedActivation, nn.Conv2D):
    """``mxnet.gluon.nn.Conv2D``; ``activation='relu'`` follows the backward mode of the explanation."""


class Dense(_FusedActivation, nn.Dense):
    """``mxnet.gluon.nn.Dense``; ``activation='relu'`` follows the backward mode of the explanation."""


_DROP_IN = {nn.Conv2D: Conv2D, nn.Dense: Dense, nn.Activation: Activation}


def is_explainable(block) -> bool:
    return isinstance(block, _Explainable)


def convert(net: HybridBlock) -> HybridBlock:
    """Turn every stock ``Conv2D``, ``Dense`` and ``Activation`` of ``net`` into gluoncam's, in place.

    Parameters, names and hybridization stay as they were. Explaining a network does not need this (an
    :class:`~gluoncam.Explainer` handles stock blocks during its calls); it makes the change permanent.
    """
    for block in walk(net):
        drop_in = _DROP_IN.get(type(block))
        if drop_in is not None:
            block.__class__ = drop_in
    return net


def walk(block):
    """The block and all its descendants, parents before children, in definition order; a block that is a child
    of several parents (one ``Activation`` reused in many places, say) once."""
    seen, stack = set(), [block]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(reversed(list(current._children.values())))


def intercept(block: HybridBlock) -> Callable[[], None]:
    """Give a stock HybridBlock gluoncam's behaviour; returns the function that removes it again."""
    original = block.hybrid_forward

    def hybrid_forward(F, x, *args, **params):
        return _explained_forward(block, original, F, x, *args, **params)

    object.__setattr__(block, 'hybrid_forward', hybrid_forward)
    return lambda: object.__delattr__(block, 'hybrid_forward')
