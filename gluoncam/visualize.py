"""Pictures of explanations: heatmaps blended over images, gradient images, saliency maps (numpy, uint8)."""
import sys
import types
from typing import List, Optional, Tuple

import cv2
import numpy as np

from . import dff, maps
from .explainer import Explainer
from .inputs import Target
from .layers import LayerRef, conv_like
from .methods import METHODS
from .threads import serialized

Image = np.ndarray


@serialized
def visualize(net, preprocessed_img, orig_img, conv_layer_name: LayerRef, class_id: Target = None,
              colormap: int = cv2.COLORMAP_JET, alpha: float = 0.5):
    """Grad-CAM heatmap over the image, guided Grad-CAM and saliency, from one forward pass.

    Parameters
    ----------
    net : Block
        The network.
    preprocessed_img : NDArray or numpy array
        One image C x H x W or a batch N x C x H x W, preprocessed for the network.
    orig_img : numpy array or list of them
        The original image(s), H x W x 3 RGB uint8, any size; the maps are resized to it.
    conv_layer_name : str or Block
        The layer for Grad-CAM (its output must be N x C x h x w).
    class_id : None, int, sequence of int or callable
        Class to explain: the predicted one by default.
    colormap : int
        OpenCV colormap for the heatmap (``cv2.COLORMAP_*``).
    alpha : float
        Weight of the heatmap in the blend.

    Returns
    -------
    tuple of numpy arrays
        (Grad-CAM heatmap blended over the image, H x W x 3 uint8; guided Grad-CAM, H x W x 3 uint8;
        saliency, H x W uint8). For a batch, each is a list with one entry per image.
    """
    result = Explainer(net).backprop(preprocessed_img, class_id, [conv_layer_name], ('normal', 'guided'))
    name = next(iter(result.activations))
    activation = result.activations[name]
    if activation.ndim != 4:
        raise ValueError(f"layer {name!r} gives output of shape {activation.shape}; Grad-CAM needs a 4-D "
                         f"(N, C, H, W) output, e.g. one of: {', '.join(conv_like(net))}")
    cam = maps.grad_cam(activation, result.gradients['normal'][name])
    guided = maps.guided_grad_cam(result.input_gradients['guided'], cam)
    salient = maps.saliency(result.input_gradients['normal'])
    originals = _as_image_list(orig_img, cam.shape[0])
    cams, guideds, salients = (m.asnumpy() for m in (cam, guided, salient))
    out = [(overlay(image, fitted(c, image.shape[:2]), colormap, alpha), gradient_image(fitted(g, image.shape[:2])),
            gray_image(fitted(s, image.shape[:2]))) for image, c, g, s in zip(originals, cams, guideds, salients)]
    if _is_batch(orig_img):
        return tuple(list(column) for column in zip(*out))
    return out[0]


# how each method's raw map is drawn: over the image (CAMs), as a signed gradient image, or in gray
RENDERING = {name: method.rendering for name, method in METHODS.items()}


def render(image: Image, raw: np.ndarray, method: str, colormap: int = cv2.COLORMAP_JET, alpha: float = 0.5) -> Image:
    """Any method's raw map for one image (h x w, H x W, or C x H x W, as the method functions return it) as a
    picture the size of ``image``: CAMs blended over it (a layer attribution, C x h x w, summed over channels
    first), signed gradients as an image, Deep Feature Factorization's K x h x w maps as coloured concepts
    (:func:`gluoncam.dff.show_factorization` names them by class), the rest in gray (``max_c |g|`` for C x H x W
    maps)."""
    if method not in RENDERING:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(RENDERING)}")
    size = image.shape[:2]
    kind = RENDERING[method]
    if kind == 'heatmap':
        return overlay(image, fitted(raw.sum(axis=0) if raw.ndim == 3 else raw, size), colormap, alpha)
    if kind == 'gradient':
        return gradient_image(fitted(raw, size))
    if kind == 'concepts':
        return dff.draw_concepts(_rgb(image), raw, [f'concept {k}' for k in range(raw.shape[0])], 1 - alpha)
    return gray_image(fitted(np.abs(raw).max(axis=0) if raw.ndim == 3 else raw, size))


def normalized(values: np.ndarray) -> np.ndarray:
    """One map scaled to [0, 1] by its min and max (all zeros if constant), in numpy as :func:`maps.normalize`
    computes it in MXNet."""
    values = np.asarray(values, dtype=np.float32)
    low = values.min()
    span = values.max() - low
    return (values - low) * (np.float32(1) / max(span, np.float32(1e-30)) if span > 0 else np.float32(0))


def fitted(raw: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """One raw map (h x w, or C x H x W) resized to ``size`` (bilinear), then scaled to [0, 1]: scaled after the
    resize, as pytorch-grad-cam does, so that a peak narrower than a pixel of the map still reaches 1."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim == 3:
        channels_last = resize(np.transpose(raw, (1, 2, 0)), size).reshape(size + (raw.shape[0],))
        return normalized(np.transpose(channels_last, (2, 0, 1)))
    return normalized(resize(raw, size))


def overlay(image: Image, heatmap: np.ndarray, colormap: int = cv2.COLORMAP_JET, alpha: float = 0.5) -> Image:
    """Blend a [0, 1] heatmap (any size) over an H x W x 3 RGB uint8 image."""
    colored = cv2.applyColorMap(to_uint8(resize(heatmap, image.shape[:2])), colormap)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colored, alpha, _rgb(image), 1 - alpha, 0)


def gradient_image(gradient: np.ndarray, size: Optional[Tuple[int, int]] = None) -> Image:
    """A [0, 1] C x H x W gradient as an H x W x C uint8 image, resized to ``size`` (height, width)."""
    image = to_uint8(np.transpose(gradient, (1, 2, 0)))
    return image if size is None else resize(image, size)


def gray_image(saliency: np.ndarray, size: Optional[Tuple[int, int]] = None) -> Image:
    """A [0, 1] H x W map as a uint8 grayscale image, resized to ``size`` (height, width)."""
    image = to_uint8(saliency)
    return image if size is None else resize(image, size)


def resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize to (height, width); cv2 takes (width, height)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def to_uint8(values: np.ndarray) -> Image:
    return np.uint8(np.clip(np.round(values * 255), 0, 255))


def _rgb(image: Image) -> Image:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"orig_img must be H x W x 3 (RGB) or H x W, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = to_uint8(image / 255.0 if image.max() > 1 else image)
    return image


def _is_batch(orig_img) -> bool:
    return isinstance(orig_img, (list, tuple)) or (isinstance(orig_img, np.ndarray) and orig_img.ndim == 4)


def _as_image_list(orig_img, batch_size: int) -> List[Image]:
    images = [_rgb(image) for image in orig_img] if _is_batch(orig_img) else [_rgb(orig_img)]
    if len(images) != batch_size:
        raise ValueError(f"got {len(images)} original images for a batch of {batch_size}")
    return images


class _FunctionModule(types.ModuleType):
    """``gluoncam.visualize`` is this module (``gluoncam.visualize.render(...)``) and, called, its function
    :func:`visualize` (``gluoncam.visualize(net, ...)``): the package exports both under one name."""

    def __call__(self, *args, **kwargs):
        return visualize(*args, **kwargs)


sys.modules[__name__].__class__ = _FunctionModule
