"""MNIST and Fashion-MNIST loaders: the data root, the published Fashion-MNIST files, clear errors offline."""
import hashlib
import os

import numpy as np
import pytest
from mxnet.gluon.data.vision import datasets as mx_datasets
from mxnet.gluon.utils import check_sha1

from gluoncam import datasets
from gluoncam.datasets import FASHION_MNIST_CLASSES, MNIST, FashionMNIST, as_arrays


def _no_download(url, path, sha1_hash=None, **kwargs):
    """MXNet's download without a network: files already there with the expected sha1 are fine."""
    file_name = os.path.join(path, url.split('/')[-1])
    if sha1_hash and os.path.isfile(file_name) and check_sha1(file_name, sha1_hash):
        return file_name
    raise ConnectionError('no network in this test')


@pytest.mark.parametrize('cls, folder, first_labels', [(MNIST, 'mnist', [7, 2, 1, 0, 4]),
                                                      (FashionMNIST, 'fashion-mnist', [9, 2, 1, 1, 6])])
def test_loads_test_set_from_data_root_env(cls, folder, first_labels, data_root, monkeypatch):
    monkeypatch.setenv('GLUONCAM_DATA', data_root)
    monkeypatch.setattr(mx_datasets, 'download', _no_download)  # the local files must be used as they are
    dataset = cls(train=False)
    assert dataset._root == os.path.join(data_root, folder)
    images, labels = as_arrays(dataset)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() == 1
    assert labels.tolist()[:5] == first_labels
    assert np.bincount(labels, minlength=10).min() >= 800


def test_fashion_mnist_training_set_is_balanced(data_root, monkeypatch):
    monkeypatch.setattr(mx_datasets, 'download', _no_download)
    images, labels = as_arrays(FashionMNIST(os.path.join(data_root, 'fashion-mnist'), train=True))
    assert images.shape == (60000, 1, 28, 28)
    assert np.bincount(labels).tolist() == [6000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10


def test_fashion_mnist_accepts_the_current_published_files(data_root, tmp_path, monkeypatch):
    """The shared files are Zalando's current ones (sha1s in their README); stock MXNet pins older ones."""
    source = os.path.join(data_root, 'fashion-mnist')
    for name, sha1 in datasets._FASHION_MNIST_CURRENT.items():
        with open(os.path.join(source, name), 'rb') as f:
            content = f.read()
        if hashlib.sha1(content).hexdigest() != sha1:
            pytest.skip(f'{source} holds other Fashion-MNIST files than the current published ones')
        (tmp_path / name).write_bytes(content)
    monkeypatch.setattr(mx_datasets, 'download', _no_download)
    with pytest.raises(ConnectionError):  # stock MXNet: checksum mismatch, so it tries to download
        mx_datasets.FashionMNIST(str(tmp_path), train=False)
    assert len(FashionMNIST(str(tmp_path), train=False)) == 10000


def test_missing_files_offline_name_the_folder_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr(mx_datasets, 'download', _no_download)
    with pytest.raises(RuntimeError) as error:
        FashionMNIST(str(tmp_path), train=False)
    message = str(error.value)
    assert str(tmp_path) in message and 'GLUONCAM_DATA' in message and 'no network in this test' in message


def test_a_file_with_an_unknown_sha1_is_not_used(data_root, tmp_path, monkeypatch):
    source = os.path.join(data_root, 'mnist')
    for name in datasets._FILES:
        os.symlink(os.path.join(source, name), tmp_path / name)
    os.unlink(tmp_path / 't10k-labels-idx1-ubyte.gz')
    (tmp_path / 't10k-labels-idx1-ubyte.gz').write_bytes(b'not the labels')
    calls = []
    monkeypatch.setattr(mx_datasets, 'download',
                        lambda url, path, sha1_hash, **kw: calls.append(url) or _no_download(url, path, sha1_hash))
    with pytest.raises(RuntimeError, match='known sha1'):
        MNIST(str(tmp_path), train=False)
    assert calls and calls[-1].endswith('t10k-labels-idx1-ubyte.gz')  # MXNet would fetch a good copy


def test_data_root_defaults_to_mxnet_and_follows_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv('GLUONCAM_DATA', raising=False)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'mx'))
    assert datasets.data_root() == os.path.join(str(tmp_path / 'mx'), 'datasets')
    monkeypatch.setenv('GLUONCAM_DATA', str(tmp_path / 'mine'))
    assert datasets.data_root() == str(tmp_path / 'mine')
