"""Passes as compiled graphs: the network, or the part of it downstream of one layer, traced to a symbol and run
as a hybridized ``SymbolBlock``.

Score-CAM scores the network on one masked input per channel and Ablation-CAM on one ablated layer output per
channel: hundreds of forward passes, where a compiled graph is faster than the imperative routed one and where
Ablation-CAM needs to run only what depends on the layer. The trace runs in predict mode, so the graph is the
network's inference path. A network may still compute something else as a symbol than as arrays, so a compiled
pass is checked against the imperative one before it is used (``cams.Scorer``, with :func:`agrees`).

A normal-mode explanation needs no ReLU rule, so its recorded forward pass can be compiled too
(:class:`Recording`), the captured layers' outputs and gradients read from the graph. A guided or deconvnet one is
compiled piece by piece (:class:`Pieces`): one graph from each cut of ``session.Session`` to the next, so that the
session's sweeps apply the rules between them. ``Explainer`` checks either against the imperative recording before
it is used.
"""
import json
import warnings
import weakref
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import Block, HybridBlock, SymbolBlock
from mxnet.ndarray import NDArray

from .nn import walk
from .session import Session, Tracing, as_leaf, rectified_outside

SOFTMAXES = ('softmax', 'log_softmax', 'SoftmaxActivation')
LAYER_INPUT = 'gluoncam_layer'


class Compiled:
    """A compiled forward pass ``block(*inputs)``. For the part downstream of a layer, ``frontier`` computes,
    from the network's input, the values that the part needs from outside it (the inputs of skip connections
    that bypass the layer); they are the same for every ablation of a sample, so they are computed once."""

    def __init__(self, block: SymbolBlock, frontier: Optional[SymbolBlock] = None, needs_data: bool = False):
        self.block, self.frontier, self.needs_data = block, frontier, needs_data

    def context(self, x: NDArray) -> List[NDArray]:
        """What the downstream part needs besides the layer's value, for the samples ``x``: one array each."""
        outside = [] if self.frontier is None else _as_list(self.frontier(x))
        return outside + ([x] if self.needs_data else [])

    def __call__(self, *inputs: NDArray) -> NDArray:
        return self.block(*inputs)


def whole(net: Block, score: str) -> Optional[Compiled]:
    """The network's scored output (its softmax's input for ``score='logits'``) as a compiled graph of its input;
    None if the network cannot be traced to one single-output symbol."""
    traced = _trace(net, score)
    if traced is None:
        return None
    data, output = traced
    return Compiled(_symbol_block(output, [data], net))


def downstream(net: Block, layer: Block, score: str) -> Optional[Compiled]:
    """The network's scored output as a compiled graph of ``layer``'s output (and of what skip connections bring
    from before it); None if the network cannot be traced, or the layer does not run exactly once."""
    traced = _trace(net, score, layer)
    if traced is None:
        return None
    data, output = traced
    graph = json.loads(output.tojson())
    nodes = graph['nodes']
    layer_ids = [i for i, node in enumerate(nodes) if node['op'] == 'null' and node['name'] == LAYER_INPUT]
    if len(layer_ids) != 1:
        return None
    depends = _depends_on(nodes, layer_ids[0])
    frontier = sorted({tuple(entry[:2]) for i, node in enumerate(nodes) if depends[i]
                       for entry in node['inputs'] if not depends[entry[0]] and nodes[entry[0]]['op'] != 'null'})
    names = [f'gluoncam_frontier{k}' for k in range(len(frontier))]
    cut = _replace_entries(graph, dict(zip(frontier, names)), depends)
    inputs = [mx.sym.var(LAYER_INPUT)] + [mx.sym.var(name) for name in names]
    needs_data = data.name in cut.list_arguments()
    if needs_data:
        inputs.append(data)
    frontier_block = None
    if frontier:
        internals = output.get_internals()
        outside = [_entry_symbol(internals, nodes[node_id]['name'], index) for node_id, index in frontier]
        frontier_block = _symbol_block(mx.sym.Group(outside), [data], net)
    return Compiled(_symbol_block(cut, inputs, net), frontier_block, needs_data)


def agrees(compiled_scores: NDArray, scores: NDArray) -> bool:
    """Whether a compiled graph's scores equal the imperative pass's, up to float32 rounding."""
    expected, got = scores.asnumpy().astype(np.float64), compiled_scores.asnumpy().astype(np.float64)
    scale = max(float(np.abs(expected).max()), 1e-12)
    return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale))


def _trace(net: Block, score: str, layer: Optional[Block] = None):
    """(input variable, scored output symbol), with ``layer``'s output replaced by the variable LAYER_INPUT;
    None where the network is not made of HybridBlocks or its output is not one array."""
    if not all(isinstance(block, HybridBlock) for block in walk(net)):
        return None
    data = mx.sym.var('data')
    replace = {} if layer is None else {id(layer): lambda out: mx.sym.var(LAYER_INPUT)}
    output, runs = _traced_output(net, data, Tracing(replace))
    if output is None or (layer is not None and runs.get(id(layer)) != 1):
        return None
    head = json.loads(output.tojson())
    head_node = head['nodes'][head['heads'][0][0]]
    if score == 'logits' and head_node['op'] in SOFTMAXES:
        output = output.get_children()[0]
    return data, output


def _traced_output(net: Block, data: mx.sym.Symbol, tracing: Tracing):
    """(the network's single output symbol, runs of the replaced blocks), or (None, {}) where there is none."""
    try:
        with tracing, autograd.predict_mode(), autograd.pause():
            output = net(data)
    except Exception:  # code that runs imperatively only (asnumpy, shapes read in Python): no graph
        return None, {}
    if not isinstance(output, mx.sym.Symbol) or len(output.list_outputs()) != 1:
        return None, {}
    return output, tracing.runs


def _depends_on(nodes, source: int) -> List[bool]:
    depends = [False] * len(nodes)
    depends[source] = True
    for i, node in enumerate(nodes):  # nodes come in topological order
        depends[i] = depends[i] or any(depends[entry[0]] for entry in node['inputs'])
    return depends


def _replace_entries(graph, names, depends) -> mx.sym.Symbol:
    """The graph with each entry (node, output) in ``names`` read, by the nodes that depend on the layer, from a
    new variable of that name."""
    nodes = [dict(node, inputs=[list(entry) for entry in node['inputs']]) for node in graph['nodes']]
    new_ids = {}
    for entry, name in names.items():
        new_ids[entry] = len(nodes)
        nodes.append({'op': 'null', 'name': name, 'inputs': []})
    for i, node in enumerate(nodes[:len(graph['nodes'])]):
        if depends[i]:
            node['inputs'] = [[new_ids[tuple(e[:2])], 0, 0] if tuple(e[:2]) in new_ids else e for e in node['inputs']]
    order = _topological(nodes, [head[0] for head in graph['heads']])
    position = {old: new for new, old in enumerate(order)}
    kept = [dict(nodes[old], inputs=[[position[e[0]]] + e[1:] for e in nodes[old]['inputs']]) for old in order]
    rebuilt = {'nodes': kept, 'arg_nodes': [i for i, node in enumerate(kept) if node['op'] == 'null'],
               'heads': [[position[head[0]]] + head[1:] for head in graph['heads']], 'attrs': graph.get('attrs', {})}
    return mx.sym.load_json(json.dumps(rebuilt))


def _topological(nodes, heads) -> List[int]:
    """The nodes reachable from ``heads``, each after its inputs."""
    order, visited, stack = [], set(), [(head, False) for head in heads]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        stack.extend((entry[0], False) for entry in reversed(nodes[node]['inputs']) if entry[0] not in visited)
    return order


def _entry_symbol(internals: mx.sym.Symbol, name: str, index: int) -> mx.sym.Symbol:
    outputs = internals.list_outputs()
    single = f'{name}_output'
    return internals[single] if single in outputs else internals[f'{name}_output{index}']


def _graph_block(graph: mx.sym.Symbol, input_names: List[str], static_shape: bool = True) -> SymbolBlock:
    """A compiled graph of the named inputs (parameters among them, passed as arrays)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "Cannot decide type for the following arguments": inputs are float32
        block = SymbolBlock(graph, [mx.sym.var(name) for name in input_names])
    block.hybridize(static_alloc=True, static_shape=static_shape)
    return block


def _symbol_block(output: mx.sym.Symbol, inputs, net: Block) -> SymbolBlock:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "Cannot decide type for the following arguments": inputs are float32
        block = SymbolBlock(output, inputs, params=net.collect_params())
    block.hybridize(static_alloc=True)
    return block


def _as_list(outputs) -> List[NDArray]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


# ----- the recorded pass of a normal-mode explanation
PROBE = 'gluoncam_probe'
BOUND = 'gluoncam_bound'
NEVER_COMPILED = ('Custom', '_contrib_box_decode')  # see session.py's docstring and _RoutedContrib
TRAIN_MODE_OPS = ('Dropout', 'RNN', 'SoftmaxOutput', 'SyncBatchNorm', '_contrib_SyncBatchNorm', 'BatchNorm_v1')


class Recording:
    """The network's forward pass as one compiled graph, for a recorded normal-mode backward pass.

    Each captured layer's output ``A`` is followed by ``A + P`` with ``P`` a zero input of the graph (a probe):
    the gradient at ``P`` is the gradient at ``A``, and ``A`` is an output too. Parameters are inputs, passed
    detached, so no parameter gradient is computed. The graph runs in predict mode, or in train mode where it has
    max pooling (whose MKLDNN backward is wrong after a predict-mode forward pass); the trace makes train mode
    compute the inference function (BatchNorm on its running statistics, Dropout off) and graphs with other ops
    that train mode changes are not compiled.

    Attributes
    ----------
    train_mode : bool
        Whether the graph runs, and is back-propagated, in train mode.
    checked : bool
        Whether its results have been found equal to the imperative recording's (see ``Explainer``).
    """

    def __init__(self, block: SymbolBlock, graph: mx.sym.Symbol, params: list, layers: int, bounds: List[float],
                 has_logits: bool, train_mode: bool):
        self.block, self.graph, self.params, self.layers = block, graph, params, layers
        self.bounds, self.has_logits, self.train_mode = bounds, has_logits, train_mode
        self.checked = False
        # Used by one thread at a time, from forward to the last backward (callers hold gluoncam.threads.lock): a
        # hybridized block builds its cached op on first use, its static memory is shared by the calls, and
        # recording marks the input arrays kept below (in MXNet's autograd), which two recordings must not do.
        self._shapes: Dict[tuple, tuple] = {}
        self._detached = _Detached(params)
        self._bound_arrays: Dict[tuple, List[NDArray]] = {}

    def forward(self, x: NDArray):
        """Run the graph on ``x`` (a leaf), while recording (holding ``gluoncam.threads.lock``): (output, scored output,
        activations, probes)."""
        probe_shapes, bound_shapes = self._input_shapes(x.shape)
        probes = [as_leaf(nd.zeros(shape, ctx=x.context, dtype=x.dtype)) for shape in probe_shapes]
        params = self._detached.on(x.context)
        with _mode(self.train_mode):
            outputs = _as_list(self.block(x, *probes, *self._bounds_for(x, bound_shapes), *params))
        scored = outputs[1] if self.has_logits else outputs[0]
        return outputs[0], scored, outputs[1 + self.has_logits:], probes

    def _input_shapes(self, shape: tuple):
        if shape not in self._shapes:
            arg_shapes, _, _ = self.graph.infer_shape_partial(data=shape)
            shapes = dict(zip(self.graph.list_arguments(), arg_shapes))
            self._shapes = {shape: ([shapes[f'{PROBE}{k}'] for k in range(self.layers)],
                                    [shapes[f'{BOUND}{k}'] for k in range(len(self.bounds))])}
        return self._shapes[shape]

    def _bounds_for(self, x: NDArray, shapes) -> List[NDArray]:
        key = (x.shape, x.context, x.dtype)
        arrays = self._bound_arrays.get(key)
        if arrays is None:  # kept for the latest input shape only
            arrays = [nd.full(shape, upper, ctx=x.context, dtype=x.dtype) for shape, upper in zip(shapes, self.bounds)]
            self._bound_arrays = {key: arrays}
        return arrays


def recording(net: Block, layers: Sequence[Block], score: str) -> Optional[Recording]:
    """The compiled :class:`Recording` of the network with ``layers`` captured, or None where the network cannot
    be traced to one graph that computes what it computes imperatively (each layer run once, one output)."""
    if not all(isinstance(block, HybridBlock) for block in walk(net)):
        return None
    layers = tuple(layers)
    F, activations = _RecordingF(), {}

    def probed(block, k):
        def with_probe(out):
            activations[id(block)] = out
            return out + mx.sym.var(f'{PROBE}{k}')
        return with_probe

    data = mx.sym.var('data')
    output, runs = _traced_output(net, data, Tracing({id(b): probed(b, k) for k, b in enumerate(layers)}, F))
    if output is None or any(runs.get(id(block)) != 1 for block in layers):
        return None
    logits = F.logits_of(output) if score == 'logits' else None
    heads = [output] + ([logits] if logits is not None else [])
    graph = mx.sym.Group(heads + [activations[id(block)] for block in layers])
    train_mode = _train_mode(graph)
    if train_mode is None:
        return None
    named = {param.name: param for param in net.collect_params().values()}
    probes = [f'{PROBE}{k}' for k in range(len(layers))]
    bounds = [f'{BOUND}{k}' for k in range(len(F.bounds))]
    param_names = [name for name in graph.list_inputs() if name not in ['data'] + probes + bounds]
    if any(name not in named for name in param_names):
        return None
    block = _graph_block(graph, ['data'] + probes + bounds + param_names, static_shape=False)
    return Recording(block, graph, [named[name] for name in param_names], len(layers), F.bounds,
                     logits is not None, train_mode)


def _train_mode(*graphs: mx.sym.Symbol) -> Optional[bool]:
    """Whether graphs run in train mode (they have max pooling, whose MKLDNN backward is wrong after a
    predict-mode forward pass); None where they must not be compiled: an op never compiled, or one that train
    mode would change."""
    nodes = [node for graph in graphs for node in json.loads(graph.tojson())['nodes']]
    train_mode = any(node['op'] == 'Pooling' and (node.get('attrs') or {}).get('pool_type') == 'max'
                     for node in nodes)
    if any(node['op'] in NEVER_COMPILED or train_mode and _changes_in_train_mode(node) for node in nodes):
        return None
    return train_mode


_train_modes: 'weakref.WeakKeyDictionary[Block, bool]' = weakref.WeakKeyDictionary()


def runs_in_train_mode(net: Block) -> bool:
    """Whether the network's compiled recordings run in train mode (it has max pooling, see :func:`_train_mode`);
    False where it has none. Its imperative recordings run their ops in the same mode (``session.RoutedF``), so
    that both give the same values. Traced once per network."""
    if net not in _train_modes:
        output = None
        if all(isinstance(block, HybridBlock) for block in walk(net)):
            output, _ = _traced_output(net, mx.sym.var('data'), Tracing({}, _RecordingF()))
        _train_modes[net] = output is not None and bool(_train_mode(output))
    return _train_modes[net]


def _mode(train_mode: bool):
    return autograd.train_mode() if train_mode else autograd.predict_mode()


class _Detached:
    """Parameters' arrays on each context, detached (sharing memory), to pass as inputs of a graph: no parameter
    gradient is computed. Detached again once a parameter's arrays change (``set_data``, loaded weights)."""

    def __init__(self, params: list):
        self.params = params
        self._cached: Dict[mx.Context, tuple] = {}

    def on(self, ctx: mx.Context) -> List[NDArray]:
        sources = [param._data for param in self.params]
        cached = self._cached.get(ctx)
        if cached is None or any(a is not b for a, b in zip(cached[0], sources)):
            cached = self._cached[ctx] = (sources, [param.data(ctx).detach() for param in self.params])
        return cached[1]


def _changes_in_train_mode(node) -> bool:
    attrs = node.get('attrs') or {}
    return node['op'] in TRAIN_MODE_OPS or \
        node['op'] == 'BatchNorm' and attrs.get('use_global_stats') not in ('True', 'true', '1') or \
        node['op'] == 'LeakyReLU' and attrs.get('act_type') == 'rrelu'


class _RecordingF:
    """``mxnet.symbol`` as seen by a block traced for a :class:`Recording`: the inference function in either
    mode, with ReLUs as the imperative recording computes them (``session.RoutedF``)."""

    def __init__(self):
        self.bounds: List[float] = []  # ReLU6 upper bounds, inputs of the graph
        self._softmax_inputs: Dict[int, tuple] = {}

    def __getattr__(self, name):
        return getattr(mx.sym, name)

    def relu(self, data, *args, **kwargs):
        return mx.sym.Activation(data, act_type='relu')

    def clip(self, data, a_min, a_max, *args, **kwargs):
        if a_min == 0 and a_max > 0:
            # as Session._rectify: a bound array first, so the gradient stops at both bounds
            bound = mx.sym.var(f'{BOUND}{len(self.bounds)}')
            self.bounds.append(a_max)
            return mx.sym.minimum(bound, mx.sym.Activation(data, act_type='relu'))
        return mx.sym.clip(data, a_min, a_max, *args, **kwargs)

    def BatchNorm(self, *args, **kwargs):  # noqa: N802 (MXNet's op name)
        kwargs['use_global_stats'] = True
        return mx.sym.BatchNorm(*args, **kwargs)

    def Dropout(self, data, *args, **kwargs):  # noqa: N802
        return data if kwargs.get('mode', 'training') == 'training' else mx.sym.Dropout(data, *args, **kwargs)

    def softmax(self, data, *args, **kwargs):
        return self._remember(mx.sym.softmax(data, *args, **kwargs), data)

    def log_softmax(self, data, *args, **kwargs):
        return self._remember(mx.sym.log_softmax(data, *args, **kwargs), data)

    def SoftmaxActivation(self, data, *args, **kwargs):  # noqa: N802
        return self._remember(mx.sym.SoftmaxActivation(data, *args, **kwargs), data)

    def _remember(self, probabilities, logits):
        self._softmax_inputs[id(probabilities)] = (probabilities, logits)
        return probabilities

    def logits_of(self, output):
        pair = self._softmax_inputs.get(id(output))
        return pair[1] if pair is not None and pair[0] is output else None


# ----- the recorded pass of a guided or deconvnet explanation, piece by piece
CUT = 'gluoncam_cut'


class Pieces:
    """The recorded forward pass of an explanation cut at ReLUs (``relu_cuts`` ``'input'`` or ``'output'``, see
    ``session.py``), as one compiled graph per piece.

    Piece k computes cut k's head from the network's input and earlier cuts' leaves; the last piece computes the
    output (and the logits). :meth:`forward` cuts a ``Session`` where its imperative recording would, so that the
    session's sweeps apply the backward modes' rules between the pieces. Each graph keeps its memory from call to
    call (static shapes), so the values of a call are overwritten by the next. Parameters are inputs, passed
    detached, and the train mode is that of :class:`Recording`.

    Attributes
    ----------
    train_mode : bool
        Whether the pieces run, and are back-propagated, in train mode.
    checked : bool
        Whether its results have been found equal to the imperative recording's (see ``Explainer``).
    """

    def __init__(self, pieces: List['_Piece'], cuts: List[tuple], params: list, train_mode: bool):
        self.pieces, self.cuts, self.train_mode = pieces, cuts, train_mode
        self.checked = False
        # used by one thread at a time, from forward to the last sweep (see Recording)
        self._detached = _Detached(params)
        self._arrays: Dict[tuple, NDArray] = {}  # ReLU6 bounds and the cuts' gradient buffers

    def forward(self, session: Session, x: NDArray):
        """Run the pieces on ``x`` while recording (holding ``gluoncam.threads.lock``), cutting ``session``:
        (output, scored output)."""
        params = self._detached.on(x.context)
        values = {'data': session.make_input(x)}
        session.train_mode = self.train_mode
        with _mode(self.train_mode):
            for k, (piece, (rule, upper, block)) in enumerate(zip(self.pieces, self.cuts)):
                head = piece(values, params)
                leaf = _leaf_of(head, rule, upper)
                values[f'{CUT}{k}'] = session.add_cut(head, leaf, block, rule, upper, self._gradient_buffer(k, leaf))
                if rule == 'relu input' and upper is not None:
                    values[f'{BOUND}{k}'] = self._bound(head, upper)
            outputs = _as_list(self.pieces[-1](values, params))
        return outputs[0], outputs[-1]

    def _bound(self, like: NDArray, upper: float) -> NDArray:
        return self._kept(('bound', upper), like, lambda: nd.full(like.shape, upper, ctx=like.context,
                                                                  dtype=like.dtype))

    def _gradient_buffer(self, k: int, leaf: NDArray) -> NDArray:
        """Cut k's leaf gradient buffer, kept from call to call: a sweep reads it before the next call and
        copies what it returns (see ``Session.backward``)."""
        return self._kept(('gradient', k), leaf, lambda: nd.empty(leaf.shape, ctx=leaf.context, dtype=leaf.dtype))

    def _kept(self, name: tuple, like: NDArray, make: Callable[[], NDArray]) -> NDArray:
        key = name + (like.shape, like.context, like.dtype)
        if key not in self._arrays:
            if len(self._arrays) > 4 * len(self.cuts):  # those of earlier input shapes
                self._arrays.clear()
            self._arrays[key] = make()
        return self._arrays[key]


def _leaf_of(head: NDArray, rule: Optional[str], upper: Optional[float]) -> NDArray:
    """A cut's leaf, as ``Session`` makes it: ``head`` rectified outside the recording for ``'relu output'``."""
    return rectified_outside(head, upper) if rule == 'relu output' else head.detach()


class _Piece:
    """One piece: a compiled graph of the values named ``inputs`` (the input, cut leaves, ReLU6 bounds) and of
    the parameters at indices ``params``; or, where the piece is only a variable (a block returning a cut's leaf
    as it is), that value itself."""

    def __init__(self, symbol: mx.sym.Symbol, param_index: Dict[str, int]):
        names = symbol.list_inputs()
        self.inputs = [name for name in names if name not in param_index]
        params = [name for name in names if name in param_index]
        self.params = [param_index[name] for name in params]
        self.block = None if symbol.get_children() is None else _graph_block(symbol, self.inputs + params)

    def __call__(self, values: Dict[str, NDArray], params: List[NDArray]):
        if self.block is None:
            return values[self.inputs[0]]
        return self.block(*[values[name] for name in self.inputs], *[params[i] for i in self.params])


def pieces(net: Block, layers: Sequence[Block], score: str, relu_cuts: str,
           shared_outputs: FrozenSet[int]) -> Optional[Pieces]:
    """The compiled :class:`Pieces` of the network with ``layers`` captured and cut like a ``Session`` with
    these ``relu_cuts`` and ``shared_outputs``; None where the network cannot be traced to graphs that compute
    what it computes imperatively (each layer run once, one output)."""
    if not all(isinstance(block, HybridBlock) for block in walk(net)):
        return None
    F, captured = _PiecesF(relu_cuts), {id(block) for block in layers}
    replace = {id(block): F.block_cut(block, id(block) in captured) for block in walk(net)
               if id(block) in captured or id(block) in shared_outputs}
    output, runs = _traced_output(net, mx.sym.var('data'), Tracing(replace, F))
    if output is None or any(runs.get(id(block)) != 1 for block in layers):
        return None
    logits = F.logits_of(output) if score == 'logits' else None
    heads = [head for head, _, _, _ in F.cuts] + [output if logits is None else mx.sym.Group([output, logits])]
    train_mode = _train_mode(*heads)
    named = {param.name: param for param in net.collect_params().values()}
    param_names = sorted({name for head in heads for name in head.list_inputs()} - {'data'} -
                         {name for name in F.variables})
    if train_mode is None or any(name not in named for name in param_names):
        return None
    index = {name: i for i, name in enumerate(param_names)}
    return Pieces([_Piece(head, index) for head in heads], [cut[1:] for cut in F.cuts],
                  [named[name] for name in param_names], train_mode)


class _PiecesF(_RecordingF):
    """``mxnet.symbol`` as seen by a block traced for :class:`Pieces`: as for a :class:`Recording`, with ReLUs
    cut as a ``Session`` with these ``relu_cuts`` cuts them; ``cuts`` lists (head, rule, upper, block)."""

    def __init__(self, relu_cuts: str):
        super().__init__()
        self.relu_cuts = relu_cuts
        self.cuts: List[tuple] = []
        self.variables: List[str] = []  # the names of the cuts' leaves and of ReLU6 bounds

    def cut(self, head: mx.sym.Symbol, rule: Optional[str] = None, upper: Optional[float] = None,
            block: Optional[Block] = None) -> mx.sym.Symbol:
        """A variable for the leaf of a cut at ``head``."""
        self.cuts.append((head, rule, upper, block))
        return self._variable(f'{CUT}{len(self.cuts) - 1}')

    def block_cut(self, block: Block, captured: bool) -> Callable:
        """The replacement of ``block``'s output: a cut, as ``Session.run_block`` makes (a capture if
        ``captured``; a shared output unless it is a leaf already)."""
        def cut(out):
            if not isinstance(out, mx.sym.Symbol) or len(out.list_outputs()) != 1:
                raise ValueError(f"{block.name!r} does not return one array")  # no graph (see _traced_output)
            return out if not captured and out.get_children() is None else self.cut(out, block=block)
        return cut

    def relu(self, data, *args, **kwargs):
        return self._cut_relu(data)

    def Activation(self, data, act_type=None, *args, **kwargs):  # noqa: N802 (MXNet's op name)
        if act_type == 'relu':
            return self._cut_relu(data)
        return mx.sym.Activation(data, act_type=act_type, *args, **kwargs)

    def clip(self, data, a_min, a_max, *args, **kwargs):
        if a_min == 0 and a_max > 0:
            return self._cut_relu(data, a_max)
        return mx.sym.clip(data, a_min, a_max, *args, **kwargs)

    def _cut_relu(self, data, upper: Optional[float] = None) -> mx.sym.Symbol:
        if self.relu_cuts == 'output':
            return self.cut(data, 'relu output', upper)
        rectified = mx.sym.Activation(self.cut(data, 'relu input', upper), act_type='relu')
        if upper is None:
            return rectified
        return mx.sym.minimum(self._variable(f'{BOUND}{len(self.cuts) - 1}'), rectified)  # as Session._rectify

    def _variable(self, name: str) -> mx.sym.Symbol:
        self.variables.append(name)
        return mx.sym.var(name)


