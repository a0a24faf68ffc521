"""Passes as compiled graphs: the network, or the part of it downstream of one layer, traced to a symbol and run
as a hybridized ``SymbolBlock``.

Score-CAM scores the network on one masked input per channel and Ablation-CAM on one ablated layer output per
channel: hundreds of forward passes, where a compiled graph is faster than the imperative routed one and where
Ablation-CAM needs to run only what depends on the layer. The trace runs in predict mode, so the graph is the
network's inference path. A network may still compute something else as a symbol than as arrays, so a compiled
pass is checked against the imperative one before it is used (``cams.Scorer``, with :func:`agrees`).

A normal-mode explanation needs no ReLU rule, so its recorded forward pass can be compiled too
(:class:`Recording`), the captured layers' outputs and gradients read from the graph; ``Explainer`` checks it
against the imperative recording before it is used.
"""
import json
import warnings
from typing import Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import Block, HybridBlock, SymbolBlock
from mxnet.ndarray import NDArray

from .nn import walk
from .session import Tracing, as_leaf

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
        self._detached: Dict[mx.Context, tuple] = {}
        self._bound_arrays: Dict[tuple, List[NDArray]] = {}

    def forward(self, x: NDArray):
        """Run the graph on ``x`` (a leaf), while recording (holding ``gluoncam.threads.lock``): (output, scored output,
        activations, probes)."""
        probe_shapes, bound_shapes = self._input_shapes(x.shape)
        probes = [as_leaf(nd.zeros(shape, ctx=x.context, dtype=x.dtype)) for shape in probe_shapes]
        params = self._detached_params(x.context)
        mode = autograd.train_mode() if self.train_mode else autograd.predict_mode()
        with mode:
            outputs = _as_list(self.block(x, *probes, *self._bounds_for(x, bound_shapes), *params))
        scored = outputs[1] if self.has_logits else outputs[0]
        return outputs[0], scored, outputs[1 + self.has_logits:], probes

    def _detached_params(self, ctx) -> List[NDArray]:
        """The parameters' arrays, detached (sharing memory); detached again once a parameter's arrays change."""
        sources = [param._data for param in self.params]
        cached = self._detached.get(ctx)
        if cached is None or any(a is not b for a, b in zip(cached[0], sources)):
            cached = self._detached[ctx] = (sources, [param.data(ctx).detach() for param in self.params])
        return cached[1]

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
    nodes = json.loads(graph.tojson())['nodes']
    train_mode = any(node['op'] == 'Pooling' and (node.get('attrs') or {}).get('pool_type') == 'max'
                     for node in nodes)
    if any(node['op'] in NEVER_COMPILED or train_mode and _changes_in_train_mode(node) for node in nodes):
        return None
    named = {param.name: param for param in net.collect_params().values()}
    probes = [f'{PROBE}{k}' for k in range(len(layers))]
    bounds = [f'{BOUND}{k}' for k in range(len(F.bounds))]
    param_names = [name for name in graph.list_inputs() if name not in ['data'] + probes + bounds]
    if any(name not in named for name in param_names):
        return None
    inputs = [data] + [mx.sym.var(name) for name in probes + bounds + param_names]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "Cannot decide type for the following arguments": inputs are float32
        block = SymbolBlock(graph, inputs)
    block.hybridize(static_alloc=True)
    return Recording(block, graph, [named[name] for name in param_names], len(layers), F.bounds,
                     logits is not None, train_mode)


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
