"""Reading PyTorch's legacy (pre-1.6, non-zip) checkpoint format with numpy alone, safely.

The file is five pickles in a row (magic number, protocol version, system info, the object whose tensors point
to storages by key, the list of storage keys) followed by each storage's raw bytes. The object pickle is read by
an unpickler that resolves only the few globals a tensor checkpoint needs; any other global (``os.system``,
``builtins.eval``, ...) is refused before anything runs.
"""
import collections
import pickle
import struct
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


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage:
    def __init__(self, dtype: np.dtype, size: int):
        self.dtype, self.size, self.data = dtype, size, None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def numpy(self) -> np.ndarray:
        item = self.storage.dtype.itemsize
        flat = self.storage.data
        if flat is None:
            raise pickle.UnpicklingError("a tensor's storage is missing from the checkpoint")
        if self.shape and self.offset + 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) > flat.size:
            raise pickle.UnpicklingError("a tensor reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], self.shape, [s * item for s in self.stride])
        return np.array(view)


def _rebuild_tensor(storage, offset, shape, stride, *unused):
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError("a tensor refers to something that is not a storage")
    return _Tensor(storage, offset, shape, stride)


_ALLOWED = {('collections', 'OrderedDict'): collections.OrderedDict,
            ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
            ('torch._utils', '_rebuild_tensor'): _rebuild_tensor}
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
                and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, size = pid[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, int(size))
        return self.storages[key]


def load_legacy_checkpoint(path: str) -> 'collections.OrderedDict[str, np.ndarray]':
    """The tensors of a legacy-format PyTorch state dict as numpy arrays, by name.

    Raises
    ------
    UnsafeCheckpointError
        The file refers to a global other than the few a tensor checkpoint needs.
    pickle.UnpicklingError
        The file is not a legacy-format checkpoint, or is truncated.
    """
    with open(path, 'rb') as file:
        header = [_plain_load(file) for _ in range(3)]
        if header[0] != MAGIC_NUMBER or header[1] != PROTOCOL_VERSION:
            raise pickle.UnpicklingError(f"{path!r} is not a legacy-format PyTorch checkpoint (newer files are zip "
                                         f"archives; re-save with torch.save(..., _use_new_zipfile_serialization="
                                         f"False))")
        unpickler = _RestrictedUnpickler(file)
        state = unpickler.load()
        keys = _plain_load(file)
        for key in keys:
            storage = unpickler.storages.get(key)
            if storage is None:
                raise pickle.UnpicklingError(f"storage {key!r} is listed but never used")
            count = struct.unpack('<q', _read(file, 8))[0]
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
