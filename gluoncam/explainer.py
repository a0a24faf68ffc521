"""The explainer: one recorded forward pass of a network, and the backward sweeps every map is made from."""
import threading
import warnings
import weakref
from collections import OrderedDict
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np
from mxnet import autograd
from mxnet.base import MXNetError
from mxnet.gluon import Block, HybridBlock, SymbolBlock
from mxnet.ndarray import NDArray

from . import compiled
from .input_size import too_small
from .inputs import Target, as_batch, score_head
from .layers import LayerRef, display_name, resolve
from .nn import intercept, is_explainable, walk
from .session import MODES, Session, as_leaf, recorded_graph, relu_cuts_for
from .threads import serialized

__all__ = ['Explainer', 'Backprop']


class Backprop:
    """What one explanation call computed; all arrays stay on the input's context.

    Attributes
    ----------
    output : NDArray
        The network's output for the batch, as in inference (``net(x)`` outside ``autograd.record``).
    classes : NDArray or None
        The class explained for each sample (None when the target was a function).
    activations : dict
        Layer name -> the layer's output (N x ...).
    gradients : dict
        Backward mode -> {layer name -> gradient of the target score at the layer's output}.
    input_gradients : dict
        Backward mode -> gradient of the target score at the input (N x C x H x W).
    """

    def __init__(self, output, classes, activations, gradients, input_gradients):
        self.output: NDArray = output
        self.classes: Optional[NDArray] = classes
        self.activations: Dict[str, NDArray] = activations
        self.gradients: Dict[str, Dict[str, NDArray]] = gradients
        self.input_gradients: Dict[str, NDArray] = input_gradients


class Explainer:
    """Explains a Gluon network's decisions; any network, its blocks stock or gluoncam's.

    Each call records one forward pass, cut at every requested layer and, for guided and deconv modes, at every
    ReLU, then runs one backward sweep per requested mode (``'normal'``, ``'guided'``, ``'deconv'``). Parameter
    gradients are never computed and ``grad_req`` is left alone. The network runs exactly as in inference: its own
    code sees ``autograd.is_training()`` False, BatchNorm uses its running statistics (left unchanged) and Dropout
    is off. A hybridized network runs imperatively during the call.

    Calls with the same layers, score and kind of cuts run compiled graphs of the network instead (traced from
    its HybridBlocks): one graph for normal-mode calls (:func:`gluoncam.compiled.recording`), one per piece
    between cuts for guided and deconv ones (:func:`gluoncam.compiled.pieces`). They are built at the second
    such call (the first with ``repeated``), which also runs imperatively on its first image and keeps them only if
    both give the same output, activations and gradients there (on the whole batch where the target is a function).
    The imperative recording runs the network's ops in the mode of its graphs (train mode where it has max pooling,
    Dropout excepted), so that both compute the same values.

    Used as a context manager, the network stays prepared (stock blocks intercepted, hybridization paused)
    across calls and is restored on exit; otherwise each call prepares and restores it. Calls from several
    threads, on one network or several, do not disturb each other.

    Parameters
    ----------
    net : Block
        The network; its output is N x classes, or anything a target function can score.
    repeated : bool
        The caller will make several calls of the same kind (the batches of a method's samples): the compiled
        graphs are built at the first call, which a one-off call would not repay.
    """

    def __init__(self, net: Block, repeated: bool = False):
        if not isinstance(net, Block):
            raise TypeError(f"expected a Gluon Block, got {type(net).__name__}")
        for block in walk(net):
            if isinstance(block, SymbolBlock):
                raise TypeError(f"{block.name!r} is a SymbolBlock (a graph imported from a symbol file), which "
                                f"always runs as one compiled graph, so gluoncam cannot reach its ReLUs, BatchNorm "
                                f"and Dropout; build the network from its Python definition and load the "
                                f"parameters into it")
        self.net = net
        self.repeated = repeated

    def __enter__(self) -> 'Explainer':
        _Preparation.acquire(self.net)
        return self

    def __exit__(self, *exc) -> None:
        _Preparation.release(self.net)

    @serialized
    def backprop(self, x, target: Target = None, layers: Sequence[LayerRef] = (),
                 modes: Sequence[str] = ('normal',), score: str = 'logits', replace=None) -> Backprop:
        """Record one forward pass of ``x`` and back-propagate the target score once per mode.

        Parameters
        ----------
        x : NDArray or numpy array
            N x C x H x W batch (or one C x H x W image), preprocessed as the network expects.
        target : None, int, sequence of int, or callable
            The predicted class of each sample (None), one class for all, one class per sample, or a
            function mapping the network output to one score per sample.
        layers : sequence of str or Block
            Layers whose outputs and gradients to capture, by ``print(net)`` path, block name or block.
        modes : sequence of str
            Backward modes to sweep, any of ``'normal'``, ``'guided'``, ``'deconv'``.
        score : str
            What the target scores where the network ends in a softmax: ``'logits'`` (default) its input, as
            keras-vis's linear swap does (a saturated softmax has vanishing gradients), or ``'output'`` the
            probabilities themselves. Networks without a final softmax are scored on their output either way.
        replace : dict, optional
            Maps a layer to a function applied to its output before the rest of the network sees it, as in
            :meth:`forward`; a captured layer's activation and gradient are those of the replaced output (layer
            Integrated Gradients). Such calls always run imperatively.
        """
        return self.backprop_each(x, [target], layers, modes, score, replace)[0]

    @serialized
    def backprop_each(self, x, targets: Sequence[Target], layers: Sequence[LayerRef] = (),
                      modes: Sequence[str] = ('normal',), score: str = 'logits', replace=None) -> List[Backprop]:
        """:meth:`backprop` for several targets from one recorded forward pass: one :class:`Backprop` per target,
        each with its own sweeps (the output and activations are shared). Several classes, or every detected box
        of a detector (:class:`gluoncam.targets.DetectionScore`), cost one forward pass."""
        modes = tuple(dict.fromkeys(modes))
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")
        for mode in modes:
            if mode not in MODES:
                raise ValueError(f"unknown backward mode {mode!r}; valid modes: {', '.join(MODES)}")
        x = as_batch(self.net, x)
        blocks = {display_name(layer): resolve(self.net, layer) for layer in layers}
        replacements = {id(resolve(self.net, layer)): fn for layer, fn in (replace or {}).items()}
        try:
            return self._backprop_each(x, targets, blocks, modes, score, replacements)
        except (MXNetError, ValueError) as error:
            _raise_if_too_small(self.net, x, error)
            raise

    def _backprop_each(self, x: NDArray, targets: Sequence[Target], blocks: Dict[str, Block], modes: Tuple[str, ...],
                       score: str, replacements: Dict[int, Callable]) -> List[Backprop]:
        with self:
            key = (tuple(blocks.values()), score, relu_cuts_for(modes))
            recording = None if replacements else _Recordings.get(self.net, key, self.repeated)
            if recording is None:
                return self._recorded(x, targets, blocks, modes, score, replacements)
            # the imperative check first: its recording is freed before the graph allocates its memory
            checked_x, checked_targets = _checked_rows(x, targets)
            whole = checked_x is x
            expected = None if recording.checked else \
                self._recorded(checked_x, checked_targets, blocks, modes, score)
            try:
                if isinstance(recording, compiled.Pieces):
                    results = self._pieces_backprop(recording, x, targets, blocks, modes)
                else:
                    results = _compiled_backprop(recording, x, targets, list(blocks))
            except MXNetError:  # a graph MXNet cannot run for this input: the imperative recording can
                results = None
            if results is None or expected is not None and \
                    not all(_same(got, want, modes, whole) for got, want in zip(results, expected)):
                _Recordings.reject(self.net, key)
                return expected if expected is not None and whole else \
                    self._recorded(x, targets, blocks, modes, score)
            recording.checked = True
        return results

    def _recorded(self, x: NDArray, targets: Sequence[Target], blocks: Dict[str, Block], modes: Tuple[str, ...],
                  score: str, replacements: Optional[Dict[int, Callable]] = None) -> List[Backprop]:
        """:meth:`backprop_each` by an imperative recording, cut for the modes' rules (see ``session.py``)."""
        relu_cuts = relu_cuts_for(modes)
        shared = _shared_outputs.setdefault(self.net, {}).get(relu_cuts) if relu_cuts else frozenset()
        session, output, heads = self._record(x, targets, blocks, score, replacements, relu_cuts, shared)
        if shared is None:  # the network's first recording cut this way: find where else to cut
            shared = _shared_outputs[self.net][relu_cuts] = session.shared_blocks(heads[0][0])
            if shared:  # and record again, cut there as every later call is, so that all sum in the same order
                del session, output, heads
                session, output, heads = self._record(x, targets, blocks, score, replacements, relu_cuts, shared)
        self._check_ran(session, blocks)
        _check_escapes(self.net, session, heads[0][0], modes)
        activations = {name: session.captures[id(block)].leaf.detach() for name, block in blocks.items()}
        return self._swept(session, _detached(output), activations, heads, blocks, modes)

    def _pieces_backprop(self, pieces: compiled.Pieces, x: NDArray, targets: Sequence[Target],
                         blocks: Dict[str, Block], modes: Tuple[str, ...]) -> List[Backprop]:
        """:meth:`backprop_each` by compiled pieces (the same cuts and sweeps as :meth:`_recorded`)."""
        session = Session(blocks.values(), relu_cuts=relu_cuts_for(modes), shared_outputs=frozenset())
        with autograd.record(train_mode=False):
            output, scored = pieces.forward(session, x)
            heads = [score_head(scored, target) for target in targets]
        # copies: the pieces' memory holds the next call's values
        activations = {name: session.captures[id(block)].leaf.copy() for name, block in blocks.items()}
        return self._swept(session, output.copy(), activations, heads, blocks, modes)

    def _swept(self, session: Session, output, activations: Dict[str, NDArray], heads: list,
               blocks: Dict[str, Block], modes: Tuple[str, ...]) -> List[Backprop]:
        """One :class:`Backprop` per (head, head gradient, classes), with a sweep of ``session`` per mode."""
        results = []
        for head, head_grad, classes in heads:
            gradients, input_gradients = {}, {}
            for mode in modes:
                session.backward(head, head_grad, mode)
                self._check_reached(session, blocks)
                gradients[mode] = {name: session.gradient(session.captures[id(block)].leaf)
                                   for name, block in blocks.items()}
                input_gradients[mode] = session.gradient(session.input)
            results.append(Backprop(output, classes, activations, gradients, input_gradients))
        return results

    def _record(self, x: NDArray, targets: Sequence[Target], blocks: Dict[str, Block], score: str,
                replacements: Optional[Dict[int, Callable]], relu_cuts: Optional[str],
                shared: Optional[FrozenSet[int]]) -> tuple:
        """The recorded forward pass: (session, output, one (head, head gradient, classes) per target)."""
        with self, Session(blocks.values(), replacements, relu_cuts, shared) as session:
            session.ops_in_train_mode = compiled.runs_in_train_mode(self.net)
            with autograd.record(train_mode=False):
                output = self.net(session.make_input(x))
                scored = _scored(session, output, score)
                heads = [score_head(scored, target) for target in targets]
        return session, output, heads

    @serialized
    def forward(self, x, layers: Sequence[LayerRef] = (), replace=None, score: str = 'logits'):
        """The inference output (scored as in :meth:`backprop`) and the layers' outputs, without recording.

        ``replace`` maps a layer to a function applied to its output before the rest of the network sees it
        (Ablation-CAM's passes on networks that cannot be compiled).
        """
        x = as_batch(self.net, x)
        blocks = {display_name(layer): resolve(self.net, layer) for layer in layers}
        replacements = {id(resolve(self.net, layer)): fn for layer, fn in (replace or {}).items()}
        try:
            with self, Session(blocks.values(), replacements) as session, autograd.predict_mode():
                output = _scored(session, self.net(x), score)
        except (MXNetError, ValueError) as error:
            _raise_if_too_small(self.net, x, error)
            raise
        self._check_ran(session, blocks)
        return output, {name: session.captures[id(block)].leaf for name, block in blocks.items()}

    @staticmethod
    def _check_ran(session: Session, blocks: Dict[str, Block]) -> None:
        for name, block in blocks.items():
            if id(block) not in session.ran:
                hint = ' (a plain Block: only HybridBlocks can be captured)' \
                    if not isinstance(block, HybridBlock) else ''
                raise ValueError(f"layer {name!r} did not run in the forward pass{hint}")

    @staticmethod
    def _check_reached(session: Session, blocks: Dict[str, Block]) -> None:
        for name, block in blocks.items():
            if not session.reached(block):
                raise ValueError(f"the network's output does not depend on layer {name!r}: "
                                 "choose a layer on the path from the input to the output")


SCORES = ('logits', 'output')


class _Recordings:
    """Compiled recordings per network and (layers, score, relu_cuts): a :class:`compiled.Recording` for
    normal-mode calls, :class:`compiled.Pieces` for calls cut at ReLUs (guided, deconv).

    A one-off call is faster imperatively (tracing and planning a graph cost about one pass), so a recording is
    built at the second call with the same key (the first of a ``repeated`` explainer); that call also records its
    first image imperatively, and the recording is used from then on if both agreed. Pieces are cut where the
    network's first recording cut that way found shared outputs.
    The latest few recordings of a network are kept (each holds the memory of its graphs). Used only by
    :meth:`Explainer.backprop_each`, under ``gluoncam.threads.lock``.
    """
    KEPT = 4
    _by_net: 'weakref.WeakKeyDictionary[Block, OrderedDict]' = weakref.WeakKeyDictionary()
    SEEN, NEVER = 'seen once', 'not compiled'

    @classmethod
    def get(cls, net: Block, key: tuple, at_once: bool = False):
        """The checked or unchecked compiled recording for ``key`` (layers, score, relu_cuts), or None; built at
        the first call with ``key`` where ``at_once``, else at the second."""
        entries = cls._by_net.setdefault(net, OrderedDict())
        entry = entries.get(cls._ids(key))
        if entry is None and not at_once:
            entries[cls._ids(key)] = cls.SEEN
        elif entry is None or entry is cls.SEEN:
            entry = _built(net, *key)
            entries[cls._ids(key)] = cls.SEEN if entry is cls.SEEN else entry or cls.NEVER
        entries.move_to_end(cls._ids(key))
        built = [k for k, e in entries.items() if isinstance(e, _COMPILED)]
        for old in built[:-cls.KEPT]:
            entries[old] = cls.SEEN
        while len(entries) > 64:
            entries.popitem(last=False)
        return entry if isinstance(entry, _COMPILED) else None

    @classmethod
    def reject(cls, net: Block, key: tuple) -> None:
        cls._by_net.setdefault(net, OrderedDict())[cls._ids(key)] = cls.NEVER

    @staticmethod
    def _ids(key: tuple) -> tuple:
        layers, score, relu_cuts = key  # ids: a net's blocks live as long as it, and must not keep it alive
        return tuple(map(id, layers)), score, relu_cuts


_COMPILED = (compiled.Recording, compiled.Pieces)


def _built(net: Block, layers: tuple, score: str, relu_cuts: Optional[str]):
    """A compiled recording, None where there is none, or ``_Recordings.SEEN`` where it cannot be built yet (no
    recording cut this way has found the shared outputs)."""
    try:
        if relu_cuts is None:
            return compiled.recording(net, layers, score)
        shared = _shared_outputs.get(net, {}).get(relu_cuts)
        return _Recordings.SEEN if shared is None else compiled.pieces(net, layers, score, relu_cuts, shared)
    except MXNetError:  # a traced graph MXNet refuses to build: the network runs imperatively
        return None


def _compiled_backprop(recording: compiled.Recording, x: NDArray, targets: Sequence[Target],
                       names: List[str]) -> List[Backprop]:
    """:meth:`Explainer.backprop_each` in normal mode, by a compiled recording."""
    x = as_leaf(x.detach())
    with autograd.record(train_mode=False):
        output, scored, activations, probes = recording.forward(x)
        heads = [score_head(scored, target) for target in targets]
    activations = {name: activation.detach() for name, activation in zip(names, activations)}
    results, inference_output = [], output.detach()
    for k, (head, head_grad, classes) in enumerate(heads):
        last = k == len(heads) - 1
        autograd.backward([head], [head_grad], retain_graph=not last, train_mode=recording.train_mode)
        kept = (lambda grad: grad) if last else (lambda grad: grad.copy())  # the next backward writes there
        gradients = {'normal': {name: kept(probe.grad) for name, probe in zip(names, probes)}}
        results.append(Backprop(inference_output, classes, activations, gradients, {'normal': kept(x.grad)}))
    return results


def _raise_if_too_small(net: Block, x: NDArray, error: Exception) -> None:
    """A ValueError in the user's terms if ``error`` is MXNet finding ``x`` smaller than a kernel of ``net``."""
    explained = too_small(net, x.shape, error)
    if explained is not None:
        raise explained from None


def _checked_rows(x: NDArray, targets: Sequence[Target]) -> Tuple[NDArray, Sequence[Target]]:
    """The batch's first image and its targets, on which a compiled recording is checked (samples do not interact
    in an explanation); the whole batch where a target is a function or does not give one class per image."""
    n = x.shape[0]
    if n == 1:
        return x, targets
    firsts = []
    for target in targets:
        if callable(target):
            return x, targets
        values = None if target is None else target.asnumpy() if isinstance(target, NDArray) else np.asarray(target)
        if values is not None and values.ndim and values.shape != (n,):
            return x, targets
        firsts.append(target if values is None or not values.ndim else values[:1])
    return x[:1], firsts


def _same(got: Backprop, expected: Backprop, modes: Tuple[str, ...], whole: bool) -> bool:
    """Whether ``got`` agrees with ``expected``, computed for the whole batch or for its first image."""
    pairs = [(got.output, expected.output)] + [(got.activations[name], value)
                                               for name, value in expected.activations.items()]
    for mode in modes:
        pairs.append((got.input_gradients[mode], expected.input_gradients[mode]))
        pairs += [(got.gradients[mode][name], value) for name, value in expected.gradients[mode].items()]
    return all(compiled.agrees(a if whole else a[:1], b) for a, b in pairs)


def _scored(session: Session, output, score: str):
    logits = session.logits_of(output) if score == 'logits' else None
    return output if logits is None else logits


def _detached(output):
    if isinstance(output, (list, tuple)):
        return type(output)(_detached(o) for o in output)
    return output.detach() if isinstance(output, NDArray) else output


# What the first explanations of each network found out of reach, by what was checked ('max pooling', or
# 'ReLU' too, which needs a recording with its ReLUs cut). Inspecting a recording is done once per network and
# kind: MXNet's Symbol.tojson leaks about 2 KB a call.
_escapes_found: 'weakref.WeakKeyDictionary[Block, Dict[str, list]]' = weakref.WeakKeyDictionary()
# per network and way of cutting ReLUs, the blocks whose outputs a recording also cuts (see session.py)
_shared_outputs: 'weakref.WeakKeyDictionary[Block, Dict[str, FrozenSet[int]]]' = weakref.WeakKeyDictionary()


def _check_escapes(net: Block, session: Session, head: NDArray, modes: Tuple[str, ...]) -> None:
    """ReLU and max-pooling ops outside gluoncam's reach (e.g. ``mx.nd.relu`` called by a plain Block) would make
    maps wrong: max pooling raises (its gradient would be wrong on MKLDNN), ReLUs warn when a guided or deconv
    map is asked for. Other ops out of reach run as in inference, since the forward pass is recorded in predict
    mode."""
    checked = 'ReLU' if session.relu_cuts is not None else 'max pooling'
    found = _escapes_found.setdefault(net, {})
    if checked not in found:
        found[checked] = _find_escapes(session, head)
    for kind, where in found[checked]:
        if kind == 'max pooling':
            raise RuntimeError(f"a max pooling op runs {where} outside gluoncam's reach (called directly, not "
                               f"through F in a HybridBlock), so MKLDNN would back-propagate wrong values through "
                               f"it; make it a HybridBlock that calls F.Pooling (or use nn.MaxPool2D)")
        if kind == 'ReLU' and set(modes) - {'normal'}:
            warnings.warn(f"a ReLU {where} is outside gluoncam's reach (called directly, not through F in a "
                          f"HybridBlock); guided and deconv gradients treat it as a normal ReLU", stacklevel=3)


def _find_escapes(session: Session, head: NDArray) -> list:
    found = []
    for block, piece_head in session.recorded_pieces() + [(None, head)]:
        if not isinstance(piece_head, NDArray) or session.is_leaf(piece_head):
            continue
        graph = recorded_graph(piece_head)
        if graph is None:
            continue
        nodes = graph['nodes']
        where = f"before the output of {block.name!r}" if block is not None else "before the output"
        kinds = [_escape_kind(node, nodes) for node in nodes]
        found += [(kind, where) for kind in kinds if kind and (kind != 'ReLU' or session.relu_cuts is not None)]
    return found


def _escape_kind(node, nodes) -> Optional[str]:
    op, attrs = node['op'], node.get('attrs') or {}
    is_relu = op == 'Activation' and attrs.get('act_type') == 'relu' or op == 'relu' or \
        op == 'clip' and float(attrs.get('a_min', 'nan')) == 0
    if is_relu:
        # gluoncam's own ReLUs in a recording cut at ReLU inputs rectify a leaf (a variable of the piece's graph)
        data = nodes[node['inputs'][0][0]]
        return None if op == 'Activation' and data['op'] == 'null' else 'ReLU'
    if op == 'Pooling' and attrs.get('pool_type') == 'max' and 'cudnn_off' not in attrs:  # see RoutedF.Pooling
        return 'max pooling'
    return None


class _Preparation:
    """Per network, while any explanation uses it: stock HybridBlocks intercepted and hybridization paused.

    Counted, so that overlapping explanations (threads, nested context managers) share one preparation and the
    last one out restores the network.
    """
    _lock = threading.Lock()
    _active: 'weakref.WeakKeyDictionary[Block, Tuple[int, list]]' = weakref.WeakKeyDictionary()

    @classmethod
    def acquire(cls, net: Block) -> None:
        with cls._lock:
            count, undo = cls._active.get(net, (0, None))
            if count == 0:
                undo = _prepare(net)
            cls._active[net] = (count + 1, undo)

    @classmethod
    def release(cls, net: Block) -> None:
        with cls._lock:
            count, undo = cls._active[net]
            if count == 1:
                del cls._active[net]
                for step in reversed(undo):
                    step()
            else:
                cls._active[net] = (count - 1, undo)


def _prepare(net: Block) -> list:
    undo = []
    for block in walk(net):
        if not isinstance(block, HybridBlock):
            continue
        if block._active:
            block._active = False
            undo.append(lambda b=block: setattr(b, '_active', True))
        if not is_explainable(block):
            undo.append(intercept(block))
    return undo
