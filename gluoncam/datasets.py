"""MNIST and Fashion-MNIST from a data root you choose, offline-friendly.

The data root is ``$GLUONCAM_DATA`` when set, else MXNet's (``$MXNET_HOME/datasets``); each dataset lives in its
own folder under it (``mnist/``, ``fashion-mnist/``), as MXNet lays them out. Files already there are used when
their sha1 is one of the published ones; missing files are downloaded as MXNet does.

Stock ``mxnet.gluon.data.vision.FashionMNIST`` pins the sha1s of the August 2017 files that Zalando replaced
a few days later (duplicates removed), so it rejects the files everyone distributes today. :class:`FashionMNIST`
accepts both.
"""
import os
from typing import Dict, Optional, Tuple

import numpy as np
from mxnet import base
from mxnet.gluon.data import vision
from mxnet.gluon.utils import check_sha1

__all__ = ['MNIST', 'FashionMNIST', 'FASHION_MNIST_CLASSES', 'as_arrays', 'data_root']

FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                         'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')

_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
          't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')

# Zalando's files since 2017-08-31 (upstream commit 658ec8c), as published in its README and mirrors.
_FASHION_MNIST_CURRENT = dict(zip(_FILES, (
    '95978b76b6897f6ca69a25145d01716efb615989', '09814cfef5a041118ceace42f8dae995319d331a',
    '5edda96c6d8c36ff915115a0e8136d370a021576', '9caad14e1aff9adac77d3744963212d36af15bee')))


def data_root() -> str:
    """The folder that holds one subfolder per dataset: ``$GLUONCAM_DATA``, else MXNet's datasets folder."""
    return os.path.expanduser(os.environ.get('GLUONCAM_DATA') or os.path.join(base.data_dir(), 'datasets'))


class _AcceptingMixin:
    """Use a local file whose sha1 is accepted; fall back to MXNet's download for the rest."""

    _extra_sha1s: Dict[str, str] = {}

    def _get_data(self):
        for attr in ('_train_data', '_train_label', '_test_data', '_test_label'):
            name, sha1 = getattr(self, attr)
            setattr(self, attr, (name, self._local_sha1(name, sha1)))
        try:
            super()._get_data()
        except Exception as err:  # MXNet's download raises several types; all mean "not here and not fetched"
            raise RuntimeError(
                f'{type(self).__name__}: the files {", ".join(_FILES)} are not all in {self._root} with a known '
                f'sha1, and downloading them failed ({type(err).__name__}: {err}). Put the gzip IDX files there, '
                f'or set GLUONCAM_DATA to a folder that holds {self._namespace}/.') from err

    def _local_sha1(self, name: str, stock_sha1: str) -> str:
        """The sha1 MXNet's download checks ``name`` against: an extra accepted one when the local file has it,
        else the stock one (MXNet then uses a matching local file, or downloads)."""
        path = os.path.join(self._root, name)
        extra = self._extra_sha1s.get(name)
        if extra and os.path.isfile(path) and check_sha1(path, extra):
            return extra
        return stock_sha1


class MNIST(_AcceptingMixin, vision.MNIST):
    """MNIST digits (28 x 28 x 1 uint8 samples) from ``root``, default ``data_root()/mnist``.

    Parameters
    ----------
    root : str, optional
        Folder with the four gzip IDX files.
    train : bool
        The 60,000 training images, or the 10,000 test images.
    transform : callable, optional
        ``transform(data, label)``, as in ``mxnet.gluon.data.vision.MNIST``.
    """

    def __init__(self, root: Optional[str] = None, train: bool = True, transform=None):
        super().__init__(root or os.path.join(data_root(), 'mnist'), train, transform)


class FashionMNIST(_AcceptingMixin, vision.FashionMNIST):
    """Fashion-MNIST (28 x 28 x 1 uint8 samples) from ``root``, default ``data_root()/fashion-mnist``.

    Accepts the current published files as well as the 2017-08-26 ones MXNet pins; see the module docstring.
    Class names are in :data:`FASHION_MNIST_CLASSES`.
    """

    _extra_sha1s = _FASHION_MNIST_CURRENT

    def __init__(self, root: Optional[str] = None, train: bool = True, transform=None):
        super().__init__(root or os.path.join(data_root(), 'fashion-mnist'), train, transform)


def as_arrays(dataset) -> Tuple[np.ndarray, np.ndarray]:
    """``(images N x 1 x 28 x 28 float32 in [0, 1], labels N int32)`` of a whole MNIST-style dataset, as numpy."""
    images = dataset._data.asnumpy().transpose(0, 3, 1, 2).astype('float32') / 255
    return images, dataset._label.astype('int32')

