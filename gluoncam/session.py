"""One explanation's recording: the forward pass cut where a backward rule or a capture needs it, and the sweeps.

Why cuts: the pip build of MXNet gives wrong gradients through a Python ``autograd.Function`` or ``CustomOp``
inside large graphs, so a guided or deconvnet ReLU rule cannot be an op. Instead a ReLU's input or output becomes
a fresh leaf of the recording (a *cut*); a sweep back-propagates the recorded pieces one after another, from the
last cut to the first, and applies the mode's ReLU rule at each cut. One forward pass then serves any number of
sweeps, one per backward mode. How ReLUs are cut depends on the modes (:func:`relu_cuts_for`):

- ``None`` (normal mode only): ReLUs stay in the recording; only captured layers are cut.
- ``'input'`` (normal and guided): the ReLU runs recorded on a leaf made from its input, so a piece's backward
  delivers ``g * [x > 0]`` there (``[0 < x < 6]`` for ReLU6): the normal gradient as it is, the guided one as
  its positive part.
- ``'output'`` (any mode, deconvnet included, which needs the gradient before the ReLU's mask): the ReLU runs
  outside the recording and its output is the leaf; the rule is applied by :func:`relu_backward`.

A sweep back-propagates each piece down to the leaves, so a value that two pieces read (the input of a residual
block, read by the block's body and by its sum) would be back-propagated twice, with everything before it down to
the previous cut. Recordings cut at ReLUs therefore also cut the outputs of such *shared* blocks, found once per
network from the recorded graph (:meth:`Session.shared_blocks`).
"""
import functools
import json
import threading
import weakref
from collections import Counter
from typing import Callable, Dict, FrozenSet, List, Optional

import mxnet as mx
from mxnet import autograd, nd
from mxnet.gluon.nn import HybridLambda
from mxnet.ndarray import NDArray

MODES = ('normal', 'guided', 'deconv')

_local = threading.local()


def relu_cuts_for(modes) -> Optional[str]:
    """How a recording for these backward modes cuts its ReLUs: None, ``'input'`` or ``'output'``."""
    if set(modes) <= {'normal'}:
        return None
    return 'output' if 'deconv' in modes else 'input'


def active_session():
    """The :class:`Session` or :class:`Tracing` active in this thread, or None."""
    return getattr(_local, 'session', None)


class _ThreadActive:
    """Active in the thread that entered it, for the blocks that run there (see ``nn._explained_forward``)."""
    _outer = None

    def __enter__(self):
        self._outer = active_session()
        _local.session = self
        return self

    def __exit__(self, *exc) -> None:
        _local.session = self._outer


class Tracing(_ThreadActive):
    """A symbolic trace of a network, its blocks calling ``F`` (``mxnet.symbol`` or a routed stand-in);
    ``replace`` maps ``id(block)`` to a function applied to that block's output symbol, and ``runs`` counts
    each replaced block's runs."""
    F_kind = mx.sym  # the F of the blocks it handles

    def __init__(self, replace: Dict[int, Callable], F=mx.sym):
        self.replace, self.F, self.runs = replace, F, {}

    def run_block(self, block, hybrid_forward: Callable, x, args, params):
        out = by_name(block, hybrid_forward)(self.F, x, *args, **params)
        if id(block) in self.replace:
            self.runs[id(block)] = self.runs.get(id(block), 0) + 1
            return self.replace[id(block)](out)
        return out


def by_name(block, hybrid_forward: Callable) -> Callable:
    """``hybrid_forward``, callable with a routed F: a HybridLambda made from an op's name looks F up in a dict
    of MXNet's modules."""
    if isinstance(block, HybridLambda) and 'func_dict' in block._func.__code__.co_freevars:
        name = block._func_name
        return lambda F, *inputs: getattr(F, name)(*inputs)
    return hybrid_forward


def rectified_outside(x: NDArray, upper: Optional[float] = None) -> NDArray:
    """``relu(x)`` (clipped at ``upper``) computed outside the recording: the leaf of a cut at a ReLU's output."""
    with autograd.pause():
        return nd.Activation(x, act_type='relu') if upper is None else nd.clip(x, 0, upper)


def relu_backward(mode: str, grad: NDArray, x: NDArray, upper: Optional[float] = None,
                  overwrite: bool = False) -> NDArray:
    """Gradient at the input of ``min(max(x, 0), upper)`` (a ReLU, or ReLU6 with ``upper=6``) from the gradient
    at its output, by backward mode. With ``active = [0 < x < upper]``:

    normal: ``g * active``; guided (Springenberg et al.): ``max(g, 0) * active``;
    deconv (Zeiler & Fergus, "rectified"): ``max(g, 0)``.

    With ``overwrite``, ``max(g, 0)`` is written over ``grad``.
    """
    out = grad if overwrite else None
    if mode == 'deconv':
        return nd.relu(grad, out=out)
    active = (x > 0) if upper is None else (x > 0) * (x < upper)
    if mode == 'normal':
        return grad * active
    if mode == 'guided':
        return nd.relu(grad, out=out) * active
    raise ValueError(f"unknown backward mode {mode!r}; valid modes: {', '.join(MODES)}")


class _Cut:
    """A recorded value ``head`` replaced downstream by the leaf ``leaf``. ``rule``: None (a captured layer's
    output: the gradient passes as it is), ``'relu input'`` (the leaf is ``head`` and feeds a recorded ReLU) or
    ``'relu output'`` (the leaf is ``head`` rectified outside the recording, clipped at ``upper``)."""
    __slots__ = ('head', 'leaf', 'block', 'rule', 'upper')

    def __init__(self, head: NDArray, leaf: NDArray, block, rule: Optional[str] = None,
                 upper: Optional[float] = None):
        self.head, self.leaf, self.block, self.rule, self.upper = head, leaf, block, rule, upper

    def gradient_at_head(self, mode: str, total: NDArray, overwrite: bool = False) -> NDArray:
        """The gradient at ``head`` under ``mode`` from the total gradient at ``leaf``; ``overwrite``: ``total``
        may be overwritten."""
        if self.rule == 'relu output':
            return relu_backward(mode, total, self.head, self.upper, overwrite)
        if self.rule == 'relu input' and mode == 'guided':
            # relu(g * [0 < x < upper]) = relu(g) * [0 < x < upper]
            return nd.Activation(total, act_type='relu', out=total if overwrite else None)
        if self.rule == 'relu input' and mode == 'deconv':
            raise ValueError("a recording cut at ReLU inputs has no deconv gradient; record with relu_cuts 'output'")
        return total


def decode_boxes(data, anchors, std0=1., std1=1., std2=1., std3=1., clip=-1., format='center', **kwargs):
    """``mxnet.ndarray.contrib.box_decode`` from elementary ops: boxes (xmin, ymin, xmax, ymax) from offsets
    (dx, dy, dw, dh) relative to anchors given as corners or as (x, y, width, height) centres."""
    a = nd.split(anchors, axis=-1, num_outputs=4)
    if format == 'corner':
        width, height = a[2] - a[0], a[3] - a[1]
        x, y = a[0] + width / 2, a[1] + height / 2
    else:
        x, y, width, height = a
    d = nd.split(data, axis=-1, num_outputs=4)
    x = nd.broadcast_add(nd.broadcast_mul(d[0] * std0, width), x)
    y = nd.broadcast_add(nd.broadcast_mul(d[1] * std1, height), y)
    dw, dh = d[2] * std2, d[3] * std3
    if clip > 0:
        dw, dh = nd.minimum(dw, clip), nd.minimum(dh, clip)
    half_width = nd.broadcast_mul(nd.exp(dw), width) / 2
    half_height = nd.broadcast_mul(nd.exp(dh), height) / 2
    return nd.concat(x - half_width, y - half_height, x + half_width, y + half_height, dim=-1)


class _RoutedContrib:
    """``mxnet.ndarray.contrib`` as seen by a block during an explanation: ``box_decode`` (the box decoder of
    GluonCV's SSD and Faster R-CNN) is :func:`decode_boxes`. MXNet 1.9.1's op has no gradient (it returns zeros)
    and crashes Faster R-CNN's backward pass; the values are the same (checked in the tests)."""

    def __init__(self):
        # an instance attribute: GluonCV looks for 'box_decode' in F.contrib.__dict__ (else it decodes by itself)
        self.box_decode = decode_boxes

    def __getattr__(self, name):
        return getattr(nd.contrib, name)


def _in_train_mode(op: Callable, *args, **kwargs):
    with autograd.train_mode():
        return op(*args, **kwargs)


class RoutedF:
    """``mxnet.ndarray`` as seen by a block during an explanation.

    The forward pass is recorded in predict mode, so the network's own code sees ``autograd.is_training()`` False
    and runs its inference path. ReLUs (``relu``, ``Activation('relu')``, and ``clip(x, 0, upper)`` such as ReLU6)
    become cuts; BatchNorm normalises with its running statistics (which it leaves untouched); pooling alone runs
    in train mode, the mode in which MKLDNN's max pooling keeps what its backward pass needs. Where the session's
    ``ops_in_train_mode`` says so (the network's compiled graphs run in train mode), every op but Dropout runs in
    train mode too, so that both compute the same values: MKLDNN picks other convolution kernels in train mode,
    whose rounding can flip a ReLU decision and with it the gradient.
    """

    def __init__(self, session: 'Session'):
        # weak: a cycle would keep each call's recording (activations, gradients, graphs) alive until the
        # cyclic garbage collector happens to run
        self._session = weakref.ref(session)

    contrib = _RoutedContrib()

    def __getattr__(self, name):
        return self.routed_op(name)

    def routed_op(self, name: str):
        """``mxnet.ndarray``'s ``name``, run in train mode where the session's ``ops_in_train_mode`` says so."""
        op = getattr(nd, name)
        if name == 'Dropout' or not callable(op) or not self._session().ops_in_train_mode:
            return op
        return functools.partial(_in_train_mode, op)

    def relu(self, data, *args, **kwargs):
        return self._session().relu(data)

    def Activation(self, data, act_type=None, *args, **kwargs):  # noqa: N802 (MXNet's op name)
        if act_type == 'relu':
            return self._session().relu(data)
        return nd.Activation(data, act_type=act_type, *args, **kwargs)

    def softmax(self, data, *args, **kwargs):
        return self._session().remember_logits(nd.softmax(data, *args, **kwargs), data)

    def log_softmax(self, data, *args, **kwargs):
        return self._session().remember_logits(nd.log_softmax(data, *args, **kwargs), data)

    def SoftmaxActivation(self, data, *args, **kwargs):  # noqa: N802
        return self._session().remember_logits(nd.SoftmaxActivation(data, *args, **kwargs), data)

    def clip(self, data, a_min, a_max, *args, **kwargs):
        if a_min == 0 and a_max > 0:
            return self._session().relu(data, upper=a_max)
        return nd.clip(data, a_min, a_max, *args, **kwargs)

    def BatchNorm(self, *args, **kwargs):  # noqa: N802
        kwargs['use_global_stats'] = True
        return self.routed_op('BatchNorm')(*args, **kwargs)

    def Pooling(self, data, *args, **kwargs):  # noqa: N802
        # The pip build's MKLDNN max pooling, run in predict mode, keeps no argmax workspace and back-propagates
        # wrong values; train mode changes nothing else about pooling. cudnn_off, passed at its default, marks
        # the op as routed for the check of ops out of reach (recorded graphs keep an op's attributes only).
        kwargs.setdefault('cudnn_off', False)
        with autograd.train_mode():
            return nd.Pooling(data, *args, **kwargs)


class Session(_ThreadActive):
    """Records one forward pass for explanation; ``backward`` then runs one sweep per backward mode.

    Used as a context manager around the recorded forward pass; it is visible to blocks only in the thread that
    entered it. Outside ``autograd.record`` it runs the same inference function without cuts (forward-only passes,
    and Score-CAM's and Ablation-CAM's where the network cannot be compiled); ``replace`` maps ``id(block)`` to a
    function applied to that block's output. ``relu_cuts`` is None, ``'input'`` or ``'output'`` (see the module's
    docstring and :func:`relu_cuts_for`). ``shared_outputs``: the ids of the blocks whose outputs a recording cut
    at ReLUs also cuts, or None to find them (:meth:`shared_blocks`).
    """
    F_kind = nd

    def __init__(self, captured_blocks=(), replace: Optional[Dict[int, Callable]] = None,
                 relu_cuts: Optional[str] = 'output', shared_outputs: Optional[FrozenSet[int]] = None):
        if relu_cuts not in (None, 'input', 'output'):
            raise ValueError(f"relu_cuts must be None, 'input' or 'output', got {relu_cuts!r}")
        self.relu_cuts = relu_cuts
        self.captured = {id(block): block for block in captured_blocks}
        self.captures: Dict[int, _Cut] = {}
        self.ran = set()
        self.cuts: List[_Cut] = []
        self.input: Optional[NDArray] = None
        self.replace = dict(replace or {})
        self.softmax_inputs: Dict[int, tuple] = {}
        self.F = RoutedF(self)
        self._block_stack: list = []
        self._totals: Dict[int, NDArray] = {}
        self._borrowed: set = set()  # totals that are still their leaf's gradient buffer
        self._owned: set = set()  # totals that only this sweep holds: a sum or a rule may write over them
        self._bounds: Dict[tuple, NDArray] = {}  # ReLU6's upper bound, by context, type and value
        self.shared_outputs = shared_outputs
        self._outputs: list = []  # (block, recorded output) while looking for shared outputs
        self._leaf_ids: set = set()
        self.train_mode = False  # whether the sweeps back-propagate in train mode (see _sweep)
        self.ops_in_train_mode = False  # whether the routed ops run in train mode (see RoutedF)

    # ----- forward: called from blocks while recording
    def make_input(self, x: NDArray) -> NDArray:
        self.input = self._leaf(x.detach())
        return self.input

    def run_block(self, block, hybrid_forward: Callable, x, args, params):
        """Run a block's ``hybrid_forward`` with the routed F and detached parameters; capture its output."""
        params = {name: value.detach() for name, value in params.items()}
        self._block_stack.append(block)
        try:
            out = by_name(block, hybrid_forward)(self.F, x, *args, **params)
        finally:
            self._block_stack.pop()
        self.ran.add(id(block))
        if id(block) in self.replace:
            out = self.replace[id(block)](out)
        if id(block) in self.captured:
            out = self._capture(block, out)
        if self.relu_cuts is not None and autograd.is_recording() and isinstance(out, NDArray) \
                and id(out) not in self._leaf_ids:
            if self.shared_outputs is None:
                self._outputs.append((block, out))
            elif id(block) in self.shared_outputs:
                out = self._cut(_Cut(out, out.detach(), block))
        return out

    def relu(self, x: NDArray, upper: Optional[float] = None) -> NDArray:
        if not autograd.is_recording() or self.relu_cuts is None:
            return self._rectify(x, upper)
        if self.relu_cuts == 'input':
            leaf = self._cut(_Cut(x, x.detach(), self._current_block(), rule='relu input'))
            return self._rectify(leaf, upper)
        return self._cut(_Cut(x, rectified_outside(x, upper), self._current_block(), rule='relu output', upper=upper))

    def _rectify(self, x: NDArray, upper: Optional[float] = None) -> NDArray:
        """``relu(x)``, or ``min(upper, relu(x))``, with the gradient of the normal mode: ``[0 < x < upper]``."""
        # Activation, not relu: MKLDNN runs it in its own memory layout, several times faster on large maps
        rectified = nd.Activation(x, act_type='relu')
        if upper is None:
            return rectified
        # Not clip, whose gradient passes at x == 0 and x == upper (PyTorch's ReLU6 stops it there, as the rule
        # does): the bound comes first since MXNet gives a tie's gradient to the first argument; an array of the
        # same shape, since broadcasting is three times slower; a view of one array per call, filled once.
        key = (x.context, x.dtype, upper)
        bound = self._bounds.get(key)
        if bound is None or bound.size < x.size:
            bound = self._bounds[key] = nd.full((x.size,), upper, ctx=x.context, dtype=x.dtype)
        return nd.minimum(bound[:x.size].reshape(x.shape), rectified)

    def remember_logits(self, probabilities: NDArray, logits: NDArray) -> NDArray:
        self.softmax_inputs[id(probabilities)] = (probabilities, logits)
        return probabilities

    def logits_of(self, output):
        """The input of the softmax that produced ``output``, or None if no softmax did."""
        pair = self.softmax_inputs.get(id(output))
        return pair[1] if pair is not None and pair[0] is output else None

    def add_cut(self, head: NDArray, leaf: NDArray, block=None, rule: Optional[str] = None,
                upper: Optional[float] = None, grad: Optional[NDArray] = None) -> NDArray:
        """Cut a value recorded elsewhere (a compiled piece, see ``compiled.Pieces``) where this recording would
        have: a capture if ``block`` is captured and ``rule`` None. ``grad``: the buffer that the leaf's gradient
        is written to, if not a new one (the sweeps read it only before the next call). Returns the leaf."""
        cut = _Cut(head, leaf, block, rule, upper)
        if rule is None and id(block) in self.captured:
            self.captures[id(block)] = cut
            self.ran.add(id(block))
        self.cuts.append(cut)
        return self._leaf(leaf, grad)

    def _capture(self, block, out):
        if not autograd.is_recording():
            self.captures[id(block)] = _Cut(out, out, block)
            return out
        if not isinstance(out, NDArray):
            raise ValueError(f"layer {block.name!r} returns {type(out).__name__}, not a single array; "
                             "capture a block that returns one array")
        if id(block) in self.captures:
            raise ValueError(f"layer {block.name!r} runs more than once in one forward pass, so its output "
                             "and gradient are ambiguous; capture a block that runs once")
        cut = _Cut(out, out.detach(), block)
        self.captures[id(block)] = cut
        return self._cut(cut)

    def _cut(self, cut: _Cut) -> NDArray:
        """Make ``cut.leaf`` a leaf of the recording, swept after every later cut; return it."""
        self.cuts.append(cut)
        return self._leaf(cut.leaf)

    def _leaf(self, value: NDArray, grad: Optional[NDArray] = None) -> NDArray:
        self._leaf_ids.add(id(value))
        return as_leaf(value, grad)

    def shared_blocks(self, head: NDArray) -> FrozenSet[int]:
        """The ids of the blocks whose outputs to cut so that no two pieces of this recording (made with
        ``shared_outputs`` None, and the piece ending at ``head``) back-propagate the same op: from the last
        output to the first, each that two pieces would still reach."""
        inputs: Dict[str, List[str]] = {}  # the recorded graph: node name -> its inputs' names
        heads = []
        for _, piece_head in self.recorded_pieces() + [(None, head)]:
            heads.append(_add_recorded(piece_head, inputs))
        outputs = [(block, _add_recorded(out, inputs)) for block, out in self._outputs]
        readers = Counter(name for start in heads for name in _reached(start, inputs, []))
        cuts: List[str] = []
        for _, name in reversed(outputs):  # a cut only takes readers away: check those that two pieces read now
            if readers[name] > 1 and name in inputs and name not in cuts and \
                    sum(name in _reached(start, inputs, cuts) for start in heads + cuts) > 1:
                cuts.append(name)
        return frozenset(id(block) for block, name in outputs if name in cuts)

    def _current_block(self):
        return self._block_stack[-1] if self._block_stack else None

    # ----- backward
    def backward(self, head: NDArray, head_grad: NDArray, mode: str) -> None:
        """One sweep: the gradients of ``sum(head * head_grad)`` at the input and the captures' leaves, read with
        :meth:`gradient`.

        A cut's leaf has its full gradient once every later cut has been swept (later cuts hold everything
        computed from it), so the cuts are swept in reverse order of creation.
        """
        self._totals, self._borrowed, self._owned = {}, set(), set()
        kept = {id(self.input)} | {id(cut.leaf) for cut in self.captures.values()}
        self._sweep(head, head_grad, len(self.cuts))
        for made, cut in reversed(list(enumerate(self.cuts))):
            key = id(cut.leaf)
            self._borrowed.discard(key)  # no later piece writes to this leaf again
            total = self._totals.get(key) if key in kept else self._totals.pop(key, None)
            if total is None:
                continue  # nothing downstream used it: its gradient is zero
            grad = cut.gradient_at_head(mode, total, overwrite=key in self._owned and key not in kept)
            if self.is_leaf(cut.head):  # e.g. a captured block returned a leaf (its ReLU's output) as it is
                self._add(cut.head, grad)
            else:
                self._sweep(cut.head, grad, made)
        for key in kept & self._totals.keys():  # the next sweep writes into the leaves' buffers again
            self._totals[key] = self._totals[key].copy()

    def _sweep(self, head: NDArray, head_grad: NDArray, cuts_before: int) -> None:
        """Back-propagate one recorded piece, computed before cut number ``cuts_before`` was made, and add what
        reached each leaf (the input or an earlier cut's) to that leaf's total.

        Leaves take their gradient with grad_req 'write' and the totals are summed here: MXNet's native (non-MKLDNN)
        1 x 1 convolution and clip write their input gradient even where grad_req is 'add'. A leaf's first
        gradient is kept in its buffer, not copied, unless another piece may still write there. A leaf is
        marked fresh by a backward pass that writes it, and unmarked once read.
        """
        for key in self._borrowed:
            self._totals[key] = self._totals[key].copy()
        self._borrowed.clear()
        leaves = [self.input] + [cut.leaf for cut in self.cuts[:cuts_before]]
        # the mode of the recording: predict mode, where a BatchNorm op's backward uses no batch statistics (nor
        # stores them), unless compiled pieces ran in train mode (their BatchNorm uses its running statistics)
        autograd.backward([head], [head_grad], retain_graph=True, train_mode=self.train_mode)
        for leaf in leaves:
            if leaf._fresh_grad:
                leaf._fresh_grad = False
                self._add(leaf, leaf.grad, borrowed=True)

    def _add(self, leaf: NDArray, grad: NDArray, borrowed: bool = False) -> None:
        key = id(leaf)
        total = self._totals.get(key)
        if total is None:
            self._totals[key] = grad
            if borrowed:
                self._borrowed.add(key)
                self._owned.add(key)
        elif key in self._owned:  # a sum made here, or the leaf's buffer (copied before a backward writes it again)
            total += grad
        else:  # another cut's gradient: never written over
            self._totals[key] = total + grad
            self._owned.add(key)

    def gradient(self, leaf: NDArray) -> NDArray:
        """The last sweep's gradient at ``leaf`` (the input or a capture's leaf); zeros where it did not reach."""
        total = self._totals.get(id(leaf))
        return nd.zeros_like(leaf) if total is None else total

    def is_leaf(self, array: NDArray) -> bool:
        return id(array) in self._leaf_ids  # leaves live as long as the session

    def reached(self, block) -> bool:
        """Whether the last sweep reached the captured block's output."""
        return id(self.captures[id(block)].leaf) in self._totals

    def recorded_pieces(self):
        """(block after which the piece ends, head) for every recorded piece, for inspecting escaped ops."""
        return [(cut.block, cut.head) for cut in self.cuts if not self.is_leaf(cut.head)]


def recorded_graph(array: NDArray) -> Optional[dict]:
    """The graph recorded up to ``array``, back to the leaves, as MXNet's JSON; None if none was (a leaf)."""
    try:
        return json.loads(autograd.get_symbol(array).tojson())
    except mx.base.MXNetError:
        return None


def _add_recorded(array: NDArray, inputs: Dict[str, List[str]]) -> Optional[str]:
    """Add the graph recorded up to ``array`` to ``inputs``; the name of ``array``'s node, None if none was."""
    graph = recorded_graph(array)
    if graph is None:
        return None
    names = [node['name'] for node in graph['nodes']]
    for node in graph['nodes']:
        if node['op'] != 'null':
            inputs[node['name']] = [names[entry[0]] for entry in node['inputs']]
    return names[graph['heads'][0][0]]


def _reached(start: Optional[str], inputs: Dict[str, List[str]], cuts: List[str]) -> set:
    """The nodes that back-propagating from ``start`` reaches, stopping at ``cuts``."""
    reached, stack = {start}, [start]
    while stack:
        name = stack.pop()
        if name in cuts and name != start:
            continue
        for source in inputs.get(name, ()):
            if source not in reached:
                reached.add(source)
                stack.append(source)
    return reached


def as_leaf(value: NDArray, grad: Optional[NDArray] = None) -> NDArray:
    """``value`` marked as a leaf of the recording, its gradient written by each backward pass into ``grad`` (by
    default a new array)."""
    if grad is None:  # uninitialised: a backward pass writes it before it is read (attach_grad would zero it)
        grad = nd.empty(value.shape, ctx=value.context, dtype=value.dtype)
    autograd.mark_variables(value, grad, grad_reqs='write')
    return value

