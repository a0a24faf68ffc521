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


def find_images(patterns: List[str]) -> List[str]:
    """Files named by paths, folders (their images, sorted) and glob patterns; a missing one is an error."""
    found = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found += sorted(os.path.join(pattern, name) for name in os.listdir(pattern)
                            if name.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.exists(pattern):
            found.append(pattern)
        elif glob.has_magic(pattern) and glob.glob(pattern):
            found += sorted(glob.glob(pattern))
        else:
            raise FileNotFoundError(f"no image file, folder or matching pattern: {pattern!r}")
    return found


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
