"""Reading PyTorch's legacy (pre-1.6, non-zip) checkpoint format with numpy alone, safely.

The file is five pickles in a row (magic number, protocol version, system info, the object whose tensors point
to storages by key, the list of storage keys) followed by each storage's raw bytes. The object pickle is read by
an unpickler that resolves only the few globals a tensor checkpoint needs; any other global (``os.system``,
``builtins.eval``, ...) is refused before anything runs.
"""
import collections
import pickle
import struct
import zipfile
from typing import BinaryIO, Dict

import numpy as np

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint asks for something a tensor checkpoint never needs."""


class _Sealed:
    """The loader's own objects: a file may call them but never set their attributes (pickle's BUILD)."""
    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeCheckpointError("the checkpoint tries to set attributes of the loader's objects (BUILD)")


class _StorageType(_Sealed):
    __slots__ = ('dtype',)

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage(_Sealed):
    __slots__ = ('dtype', 'size', 'data')

    def __init__(self, dtype: np.dtype, size: int):
        self.dtype, self.size, self.data = dtype, size, None


class _Tensor(_Sealed):
    __slots__ = ('storage', 'offset', 'shape', 'stride')

    def __init__(self, storage: _Storage, offset: int, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def numpy(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise pickle.UnpicklingError("a tensor's storage is missing from the checkpoint")
        if 0 in self.shape:
            return np.empty(self.shape, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if last >= flat.size:
            raise pickle.UnpicklingError("a tensor reaches past the end of its storage")
        strides = [s * flat.dtype.itemsize for s in self.stride]
        return np.array(np.lib.stride_tricks.as_strided(flat[self.offset:], self.shape, strides))


class _TensorRebuilder(_Sealed):
    __slots__ = ()

    def __call__(self, storage, offset, shape, stride, *unused):
        if not isinstance(storage, _Storage):
            raise UnsafeCheckpointError("a tensor refers to something that is not a storage")
        if not (_is_index(offset) and isinstance(shape, tuple) and isinstance(stride, tuple)
                and len(shape) == len(stride) and all(map(_is_index, shape + stride))):
            raise UnsafeCheckpointError(f"a tensor has an invalid layout: offset {offset!r}, shape {shape!r}, "
                                        f"stride {stride!r:.80}")
        return _Tensor(storage, offset, shape, stride)


def _is_index(value) -> bool:
    return type(value) is int and value >= 0


class _StateDict(collections.OrderedDict):
    """torch's state dicts carry ``_metadata`` (set by BUILD): ignored, and nothing else is set either."""

    def __setstate__(self, state):
        pass


_ALLOWED = {('collections', 'OrderedDict'): _StateDict,
            ('torch._utils', '_rebuild_tensor_v2'): _TensorRebuilder(),
            ('torch._utils', '_rebuild_tensor'): _TensorRebuilder()}
_ALLOWED.update({('torch', name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: Dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[module, name]
        except KeyError:
            allowed = ', '.join(f'{m}.{n}' for m, n in _ALLOWED)
            raise UnsafeCheckpointError(f"refusing to load global {module}.{name}: a tensor checkpoint needs only "
                                        f"{allowed}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and _is_index(pid[4])):
            raise UnsafeCheckpointError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, size = pid[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, size)
        return self.storages[key]


def load_legacy_checkpoint(path: str) -> 'collections.OrderedDict[str, np.ndarray]':
    """The tensors of a legacy-format PyTorch state dict as numpy arrays, by name.

    Raises
    ------
    UnsafeCheckpointError
        The file refers to a global other than the few a tensor checkpoint needs, or tampers with the loader.
    pickle.UnpicklingError
        The file is not a legacy-format checkpoint, is truncated or is inconsistent.
    """
    if zipfile.is_zipfile(path):
        raise pickle.UnpicklingError(f"{path!r} is not a legacy-format PyTorch checkpoint but a zip-format one "
                                     f"(torch >= 1.6); re-save it with torch.save(..., "
                                     f"_use_new_zipfile_serialization=False)")
    try:
        with open(path, 'rb') as file:
            return _load(file, path)
    except pickle.UnpicklingError:
        raise
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, struct.error) as error:
        raise pickle.UnpicklingError(f"{path!r} is not a readable legacy-format PyTorch checkpoint: "
                                     f"{type(error).__name__}: {error}") from error


def _load(file: BinaryIO, path: str) -> 'collections.OrderedDict[str, np.ndarray]':
    if _plain_load(file) != MAGIC_NUMBER or _plain_load(file) != PROTOCOL_VERSION:
        raise pickle.UnpicklingError(f"{path!r} is not a legacy-format PyTorch checkpoint")
    _plain_load(file)  # system info
    unpickler = _RestrictedUnpickler(file)
    state = unpickler.load()
    keys = _plain_load(file)
    if not isinstance(keys, list):
        raise pickle.UnpicklingError("the storage key list is missing")
    for key in keys:
        storage = unpickler.storages.get(key)
        if storage is None:
            raise pickle.UnpicklingError(f"storage {key!r} is listed but never used")
        count = struct.unpack('<q', _read(file, 8))[0]
        if count != storage.size:
            raise pickle.UnpicklingError(f"storage {key!r} holds {count} elements, its tensors expect {storage.size}")
        storage.data = np.frombuffer(_read(file, count * storage.dtype.itemsize), dtype=storage.dtype)
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"{path!r} holds a {type(state).__name__}, not a state dict")
    return collections.OrderedDict((name, tensor.numpy()) for name, tensor in state.items()
                                   if isinstance(tensor, _Tensor))


def _plain_load(file: BinaryIO):
    """The header and key pickles hold only ints, strings, dicts and lists: no global at all is allowed."""
    return _NoGlobals(file).load()


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise UnsafeCheckpointError(f"refusing to load global {module}.{name} in a checkpoint header")


def _read(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise pickle.UnpicklingError("the checkpoint is truncated")
    return data
