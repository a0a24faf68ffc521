"""Deep Feature Factorization (Collins, Achanta & Susstrunk, ECCV 2018): a layer's activations over a batch
factorized by non-negative matrix factorization into K concepts, each a direction in channel space with a map of
where each image shows it; a classifier applied to the concept vectors names them. Follows pytorch-grad-cam's
``DeepFeatureFactorization`` (scikit-learn's NMF, random initialisation) and ``show_factorization_on_image``.
"""
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import Block, nn
from mxnet.ndarray import NDArray

from .explainer import Explainer
from .inputs import as_batch
from .layers import LayerRef, display_name
from .nn import walk
from .threads import serialized

NEGATIVE = ('raise', 'clip', 'shift')


class Factorization:
    """What :func:`dff` found; arrays on the input's context.

    Attributes
    ----------
    concepts : NDArray
        K x C: concept k's loading on each channel (non-negative, plus ``offset`` with ``negative='shift'``).
    maps : NDArray
        N x K x h x w: how strongly each position of each image shows each concept (non-negative), at the layer's
        resolution. The activations are ``A[n, :, i, j] ~ sum_k maps[n, k, i, j] * (concepts[k] - offset)
        + offset``. pytorch-grad-cam's maps are these resized to the input and scaled to [0, 1] per map
        (``maps.normalize(maps.upsample(...))`` on ``N*K x h x w``).
    outputs : NDArray or None
        K x classes: the classifier applied to the concept vectors (None without a classifier).
    classes, scores : NDArray or None
        K x top_k: each concept's top classes (int64) and their softmax probabilities over ``outputs``.
    error : float
        The NMF reconstruction error ``||X - W H||_F`` of the C x (N h w) matrix X that was factorized (scikit-
        learn's ``reconstruction_err_``); ``relative_error`` is it divided by ``||X||_F``.
    offset : NDArray
        C: what was subtracted from each channel before factorizing (zeros unless ``negative='shift'``).
    """

    def __init__(self, concepts, maps, outputs, classes, scores, error, relative_error, offset):
        self.concepts: NDArray = concepts
        self.maps: NDArray = maps
        self.outputs: Optional[NDArray] = outputs
        self.classes: Optional[NDArray] = classes
        self.scores: Optional[NDArray] = scores
        self.error: float = error
        self.relative_error: float = relative_error
        self.offset: NDArray = offset

    def labels(self, class_names: Optional[Sequence[str]] = None) -> List[str]:
        """One legend text per concept: its top classes (names if given) and probabilities, or ``concept k``."""
        if self.classes is None:
            return [f"concept {k}" for k in range(self.concepts.shape[0])]
        texts = []
        for row, probabilities in zip(self.classes.asnumpy(), self.scores.asnumpy()):
            names = [str(class_names[c]) if class_names is not None else str(c) for c in row]
            texts.append(', '.join(f"{name}: {p:.2f}" for name, p in zip(names, probabilities)))
        return texts


@serialized
def dff(net, x, layer: LayerRef, n_components: int = 5, classifier: Union[None, bool, Block, Callable] = None,
        top_k: int = 2, seed: Optional[int] = 0, negative: str = 'raise', max_iter: int = 200) -> Factorization:
    """Deep Feature Factorization of a layer's activations over the batch (pytorch-grad-cam's
    ``DeepFeatureFactorization``).

    The layer's output A (N x C x h x w, one forward pass) becomes the C x (N h w) matrix X, factorized as
    ``X ~ W H`` with W (C x K) and H (K x N h w) non-negative by scikit-learn's ``NMF`` (``init='random'``,
    ``random_state=seed``, as pytorch-grad-cam with ``seed=0``; computed in numpy on the CPU). The concepts are
    W's columns, the maps H's rows.

    Parameters
    ----------
    layer : str or Block
        A layer with a 4-D, non-negative output: after a ReLU (a fused ``Conv2D(..., activation='relu')``, an
        ``Activation('relu')``, or a pooling after one).
    n_components : int
        K, the number of concepts, 1 .. C.
    classifier : None, False, Block or callable
        Applied to the K x C concept vectors to name them (pytorch-grad-cam's ``computation_on_concepts``). None:
        the network's last layer with weights if it is a Dense layer taking C inputs (a classifier after global
        pooling, as in ResNet), else no classes; False: no classes.
    top_k : int
        Classes kept per concept.
    seed : int or None
        NMF's random initialisation; None draws a fresh one.
    negative : str
        What to do with negative activations, which NMF cannot factorize: ``'raise'`` (default) a ValueError,
        ``'clip'`` set them to zero, ``'shift'`` subtract each channel's minimum first and add it back to the
        concepts (pytorch-grad-cam's behaviour).
    max_iter : int
        NMF's iteration limit (scikit-learn warns if it stops before converging).

    Returns
    -------
    Factorization
        Concepts K x C, maps N x K x h x w (non-negative, at the layer's resolution), the concepts' classes and
        the reconstruction error. Cost: one forward pass and the NMF; :func:`show_factorization` draws it.
    """
    x = as_batch(net, x)
    _check_options(n_components, top_k, negative, max_iter)
    _, captured = Explainer(net).forward(x, [layer])
    activations = captured[display_name(layer)]
    if not isinstance(activations, NDArray) or activations.ndim != 4:
        raise ValueError(f"DFF needs a layer with a 4-D (N, C, h, w) output; {display_name(layer)!r} gives "
                         f"{getattr(activations, 'shape', type(activations).__name__)}")
    n, channels, height, width = activations.shape
    if n_components > channels:
        raise ValueError(f"n_components must be between 1 and the layer's {channels} channels, got {n_components}")
    matrix = activations.transpose((1, 0, 2, 3)).reshape((channels, -1)).asnumpy()
    matrix, offset = _non_negative(matrix, negative, display_name(layer))
    weights, components, error = _nmf(matrix, n_components, seed, max_iter)
    ctx, dtype = x.context, activations.dtype
    concepts = nd.array((weights + offset[:, None]).T, ctx=ctx, dtype=dtype)
    maps = nd.array(components.reshape((n_components, n, height, width)).transpose((1, 0, 2, 3)), ctx=ctx,
                    dtype=dtype)
    outputs, classes, scores = _named(net, classifier, concepts, top_k)
    norm = float(np.linalg.norm(matrix))
    return Factorization(concepts, maps, outputs, classes, scores, error, error / norm if norm > 0 else 0.0,
                         nd.array(offset, ctx=ctx, dtype=dtype))


def _check_options(n_components, top_k: int, negative: str, max_iter: int) -> None:
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be an integer of at least 1, got {n_components!r}")
    if top_k < 1 or max_iter < 1:
        raise ValueError(f"top_k and max_iter must be at least 1, got top_k={top_k}, max_iter={max_iter}")
    if negative not in NEGATIVE:
        raise ValueError(f"unknown negative {negative!r}; valid: {', '.join(NEGATIVE)}")


def _non_negative(matrix: np.ndarray, negative: str, name: str):
    """(matrix made non-negative as asked, per-channel offset subtracted)."""
    offset = np.zeros(matrix.shape[0], matrix.dtype)
    lowest = float(matrix.min())
    if lowest >= 0:
        return matrix, offset
    if negative == 'raise':
        raise ValueError(f"layer {name!r} has negative activations (minimum {lowest:.3g}), which non-negative "
                         f"matrix factorization cannot factorize: choose a layer after a ReLU, or pass "
                         f"negative='clip' (negative values set to 0) or negative='shift' (each channel minus its "
                         f"minimum, as pytorch-grad-cam)")
    if negative == 'clip':
        return np.maximum(matrix, 0), offset
    offset = matrix.min(axis=1)
    return matrix - offset[:, None], offset


def _nmf(matrix: np.ndarray, n_components: int, seed: Optional[int], max_iter: int):
    from sklearn.decomposition import NMF
    model = NMF(n_components=n_components, init='random', random_state=seed, max_iter=max_iter)
    weights = model.fit_transform(matrix)
    return weights, model.components_, float(model.reconstruction_err_)


def default_classifier(net: Block, channels: int) -> Optional[Block]:
    """The network's last layer with weights if it is a Dense layer taking ``channels`` inputs, else None."""
    last = None
    for block in walk(net):
        if 'weight' in block._reg_params:
            last = block
    if isinstance(last, nn.Dense) and last.weight.shape[1] == channels:
        return last
    return None


def _named(net: Block, classifier, concepts: NDArray, top_k: int):
    """(outputs, classes, scores) of the concepts under the classifier; Nones without one."""
    if classifier is None:
        classifier = default_classifier(net, concepts.shape[1])
    if classifier is None or classifier is False:
        return None, None, None
    if not callable(classifier):
        raise ValueError(f"classifier must be None, False, a Block or a function, got {type(classifier).__name__}")
    with autograd.pause(train_mode=False):
        outputs = classifier(concepts)
    if not isinstance(outputs, NDArray) or outputs.ndim != 2 or outputs.shape[0] != concepts.shape[0]:
        raise ValueError(f"the classifier must map the K x C concepts {concepts.shape} to K x classes scores; it "
                         f"returned {getattr(outputs, 'shape', type(outputs).__name__)}")
    probabilities = nd.softmax(outputs, axis=1)
    k = min(top_k, outputs.shape[1])
    classes = nd.topk(probabilities, axis=1, k=k, ret_typ='indices', dtype='int64')
    return outputs, classes, _picked(probabilities, classes)


def _picked(values: NDArray, indices: NDArray) -> NDArray:
    rows = nd.arange(values.shape[0], ctx=values.context).reshape((-1, 1)).broadcast_to(indices.shape)
    return nd.gather_nd(values, nd.stack(rows, indices.astype('float32'), axis=0))


def show_factorization(image, factorization: Factorization, index: int = 0,
                       class_names: Optional[Sequence[str]] = None, image_weight: float = 0.5,
                       legend: bool = True, colors: Optional[np.ndarray] = None) -> np.ndarray:
    """Image ``index`` of the batch with its concepts drawn over it (pytorch-grad-cam's
    ``show_factorization_on_image``): each concept's map is resized to the image (bilinear) and scaled to
    [0, 1]; each pixel takes the colour of its strongest concept times that concept's strength, blended as
    ``image_weight * image + (1 - image_weight) * colours``; a legend (drawn inside the image, lower left) names
    each concept by its top classes (:meth:`Factorization.labels`).

    Parameters
    ----------
    image : numpy array
        H x W x 3 RGB, uint8 or floats in [0, 1].
    colors : array, optional
        K x 3 RGB floats in [0, 1]; by default matplotlib's ``gist_rainbow`` at ``k / K`` (as the reference).

    Returns
    -------
    numpy array
        H x W x 3 uint8.
    """
    n, k = factorization.maps.shape[:2]
    if not -n <= index < n:
        raise ValueError(f"index {index} out of range for a batch of {n}")
    labels = factorization.labels(class_names) if legend else None
    return draw_concepts(image, factorization.maps[index].asnumpy(), labels, image_weight, colors)


def draw_concepts(image, concept_maps: np.ndarray, labels: Optional[Sequence[str]] = None, image_weight: float = 0.5,
                  colors: Optional[np.ndarray] = None) -> np.ndarray:
    """One image's K x h x w concept maps drawn over it as :func:`show_factorization` draws them, with a legend
    of ``labels`` (one per concept) if given; H x W x 3 uint8."""
    picture = _as_float_image(image)
    if not 0 <= image_weight <= 1:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    k = concept_maps.shape[0]
    colors = _concept_colors(k) if colors is None else np.asarray(colors, np.float64)[:, :3]
    if colors.shape != (k, 3):
        raise ValueError(f"colors must be {k} x 3 RGB values, got shape {colors.shape}")
    strengths = _scaled_maps(concept_maps, picture.shape[:2])
    strongest = strengths.argmax(axis=0)
    coloured = colors[strongest] * np.take_along_axis(strengths, strongest[None], axis=0)[0][..., None]
    blended = np.uint8(np.clip(np.round((image_weight * picture + (1 - image_weight) * coloured) * 255), 0, 255))
    return blended if labels is None else _with_legend(blended, list(labels), colors)


def _as_float_image(image) -> np.ndarray:
    picture = np.asarray(image)
    if picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {picture.shape}")
    if picture.dtype == np.uint8:
        return picture.astype(np.float64) / 255
    if picture.min() < 0 or picture.max() > 1:
        raise ValueError("a float image must have values in [0, 1] (or pass uint8)")
    return picture.astype(np.float64)


def _concept_colors(k: int) -> np.ndarray:
    from matplotlib import colormaps
    return colormaps['gist_rainbow'](np.arange(k) / k)[:, :3]


def _scaled_maps(maps: np.ndarray, size) -> np.ndarray:
    """K x h x w -> K x H x W, each resized (bilinear, pixel centres aligned) and scaled to [0, 1]."""
    import cv2
    height, width = size
    out = np.zeros((maps.shape[0], height, width))
    for k, single in enumerate(maps):
        resized = cv2.resize(single.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        span = resized.max() - resized.min()
        out[k] = (resized - resized.min()) / span if span > 0 else 0
    return out


def _with_legend(picture: np.ndarray, labels: List[str], colors: np.ndarray) -> np.ndarray:
    """``picture`` with a legend drawn over its lower left corner, same size (matplotlib, off screen)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    height, width = picture.shape[:2]
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axis = figure.add_axes([0, 0, 1, 1])
    axis.imshow(picture, interpolation='nearest')
    axis.set_axis_off()
    size = max(4.0, min(12.0, height / 30))
    axis.legend(handles=[Patch(facecolor=color, edgecolor='white', label=label) for label, color in
                         zip(labels, colors)], loc='lower left', fontsize=size, framealpha=0.8)
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())[:, :, :3]
    if drawn.shape[:2] != (height, width):
        import cv2
        drawn = cv2.resize(np.ascontiguousarray(drawn), (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(drawn, dtype=np.uint8)
