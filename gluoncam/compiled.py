"""Forward-only passes as compiled graphs: the network, or the part of it downstream of one layer, traced to a
symbol and run as a hybridized ``SymbolBlock`` that shares the network's parameters.

Score-CAM scores the network on one masked input per channel and Ablation-CAM on one ablated layer output per
channel: hundreds of forward passes, where a compiled graph is faster than the imperative routed one and where
Ablation-CAM needs to run only what depends on the layer. The trace runs in predict mode, so the graph is the
network's inference path. A network may still compute something else as a symbol than as arrays, so a compiled
pass is checked against the imperative one before it is used (``cams.Scorer``, with :func:`agrees`).
"""
import json
import warnings
from typing import List, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import Block, HybridBlock, SymbolBlock
from mxnet.ndarray import NDArray

from .nn import walk
from .session import Tracing

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
    try:
        with Tracing(layer, mx.sym.var(LAYER_INPUT)) as tracing, autograd.predict_mode(), autograd.pause():
            output = net(data)
    except Exception:  # code that runs imperatively only (asnumpy, shapes read in Python): no graph
        return None
    if not isinstance(output, mx.sym.Symbol) or len(output.list_outputs()) != 1 or \
            (layer is not None and tracing.replaced != 1):
        return None
    head = json.loads(output.tojson())
    head_node = head['nodes'][head['heads'][0][0]]
    if score == 'logits' and head_node['op'] in SOFTMAXES:
        output = output.get_children()[0]
    return data, output


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
