"""Finding a network's layers by the names people see: ``print(net)`` paths and ``collect_params`` prefixes."""
from collections import OrderedDict
from typing import List, Union

from mxnet.gluon import Block

from .nn import walk

LayerRef = Union[str, Block]


def named_blocks(net: Block) -> 'OrderedDict[str, Block]':
    """Every block of ``net`` under its dotted ``print(net)`` path (``'features.28'``) and its name
    (``'vgg0_conv12'``, the prefix of its parameters)."""
    names: 'OrderedDict[str, Block]' = OrderedDict()

    def visit(block: Block, path: str) -> None:
        if path:
            names[path] = block
        names.setdefault(block.name, block)
        for key, child in block._children.items():
            visit(child, f'{path}.{key}' if path else key)

    visit(net, '')
    return names


def resolve(net: Block, layer: LayerRef) -> Block:
    """The block that ``layer`` (a name, a path or a block of ``net``) denotes; a clear error otherwise."""
    names = named_blocks(net)
    if isinstance(layer, Block):
        if any(block is layer for block in names.values()):
            return layer
        raise ValueError(f"block {layer.name!r} is not part of the network {net.name!r}")
    if isinstance(layer, str) and layer in names:
        return names[layer]
    raise ValueError(f"no layer named {layer!r} in {net.name!r}; valid names: {', '.join(names)}")


def display_name(layer: LayerRef) -> str:
    return layer if isinstance(layer, str) else layer.name


def conv_like(net: Block) -> List[str]:
    """Names of the layers whose outputs are usually 4-D: convolutions, pooling and batch norms."""
    kinds = ('Conv', 'Pool', 'BatchNorm')
    return [block.name for block in walk(net) if any(kind in type(block).__name__ for kind in kinds)]
