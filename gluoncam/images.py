"""Reading images and preparing them for ImageNet classifiers."""
import glob
import os
from typing import List, Tuple

import cv2
import numpy as np
from mxnet import nd

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def find_images(patterns: List[str], recursive: bool = True) -> List[str]:
    """Files named by paths, folders and glob patterns (``**`` matches subfolders), each once, in the order given
    (a folder's images sorted by path). Folders are searched through their subfolders unless ``recursive`` is
    False; hidden files and folders are left out. A missing path, a pattern matching nothing or a folder holding
    no image is a FileNotFoundError that says so."""
    found: List[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            images = _folder_images(pattern, recursive)
            if not images:
                where = 'in it or its subfolders' if recursive else 'in it (subfolders not searched: --no-recursive)'
                raise FileNotFoundError(f"no image ({', '.join(IMAGE_SUFFIXES)}) {where}: folder {pattern!r}")
            found += images
        elif os.path.exists(pattern):
            found.append(pattern)
        elif glob.has_magic(pattern) and glob.glob(pattern, recursive=True):
            for match in sorted(glob.glob(pattern, recursive=True)):
                found += _folder_images(match, recursive) if os.path.isdir(match) else [match]
        else:
            raise FileNotFoundError(f"no image file, folder or matching pattern: {pattern!r}")
    seen, unique = set(), []
    for path in found:  # the first mention of a file wins
        if os.path.abspath(path) not in seen:
            seen.add(os.path.abspath(path))
            unique.append(path)
    return unique


def _folder_images(folder: str, recursive: bool) -> List[str]:
    """The image files in ``folder`` (and its subfolders), sorted by their path."""
    if not recursive:
        return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                      if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith('.')
                      and os.path.isfile(os.path.join(folder, name)))
    images, visited = [], set()
    for directory, subfolders, names in os.walk(folder, followlinks=True):
        visited.add(os.path.realpath(directory))  # a linked folder is entered once: no endless cycles
        subfolders[:] = [name for name in subfolders if not name.startswith('.')
                         and os.path.realpath(os.path.join(directory, name)) not in visited]
        images += [os.path.join(directory, name) for name in names
                   if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith('.')]
    return sorted(images, key=lambda path: os.path.relpath(path, folder).split(os.sep))


def read_rgb(path: str) -> np.ndarray:
    """An image file as H x W x 3 RGB uint8; ValueError if it cannot be decoded."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {path!r} as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def preprocess(image: np.ndarray, net=None, size: Tuple[int, int] = (224, 224)) -> nd.NDArray:
    """RGB uint8 H x W x 3 -> 1 x 3 x height x width float32, resized whole (no crop, so maps map back onto
    the whole original) and normalised as ``net`` expects (its ``input_mean`` / ``input_std`` on the [0, 1]
    scale; the ImageNet mean and std by default)."""
    mean = getattr(net, 'input_mean', IMAGENET_MEAN)
    std = getattr(net, 'input_std', IMAGENET_STD)
    height, width = size
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    normalized = (resized - np.float32(mean)) / np.float32(std)
    return nd.array(normalized.transpose(2, 0, 1)[None])
