"""Pretrained weights: MXNet's model store (a verified file under ``root``, or a download into it)."""
from mxnet.gluon import Block
from mxnet.gluon.model_zoo import model_store


def load_pretrained(net: Block, name: str, ctx, root: str) -> None:
    """Load the model-zoo weights ``name`` into ``net``; a clear error says what to do when they are missing."""
    try:
        path = model_store.get_model_file(name, root=root)
    except Exception as error:  # no network, or a corrupt file: say what would work
        file_name = f"{name}-{model_store.short_hash(name)}.params"
        raise RuntimeError(
            f"the pretrained weights {file_name!r} are not in {root!r} and could not be downloaded ({error}). "
            f"Copy that file from a machine with internet access (it is what "
            f"mxnet.gluon.model_zoo.vision.get_model({name!r}, pretrained=True) downloads) into {root!r}, "
            f"or load your own with net.load_parameters(path).") from error
    net.load_parameters(path, ctx=ctx)
