"""The sanity checks of Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018): does a map change when
what it claims to explain (the learned weights, the labels the network learned from) is destroyed?

- :func:`model_randomization`: the model-parameter randomization test, cascading or one layer at a time;
- :func:`data_randomization`: the data randomization test, against a network trained on shuffled labels;
- :func:`random_map`: uniform noise, the baseline every metric table must beat;
- :func:`map_similarity`: the four similarities the paper plots (Spearman rank correlation of the maps and of
  their absolute values, SSIM, HOG similarity).

A method passes where the similarities fall as layers are randomized (well below 1); a map that ignores the
network (the input itself, an edge detector) stays at 1. The similarities are computed with scipy and
scikit-image, on numpy copies of the maps; the results are NDArrays on the input's context.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet import nd
from mxnet.gluon import Block
from mxnet.ndarray import NDArray
from scipy.stats import spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from ..explainer import Explainer
from ..inputs import Target, as_batch, classes_for, describe_output, parameters
from ..layers import LayerRef, resolve
from ..nn import walk
from ..threads import serialized
from .maps import check_batch, pixel_maps

__all__ = ['model_randomization', 'data_randomization', 'random_map', 'map_similarity', 'ModelRandomization',
           'DataRandomization', 'SIMILARITIES']

SIMILARITIES = ('spearman', 'spearman_abs', 'ssim', 'hog')
MODES = ('cascading', 'independent')
Explain = Callable[[Block, NDArray, Target], NDArray]
Init = Union[str, mx.init.Initializer]


class ModelRandomization:
    """What :func:`model_randomization` found. Similarities: higher means the map changed less (a method that
    depends on the weights should score well below 1 once layers are random).

    Attributes
    ----------
    layers : list of str
        The randomized layers' names (their parameter prefixes), top layer first: at step k, ``layers[:k + 1]``
        are random (``'cascading'``) or only ``layers[k]`` is (``'independent'``).
    mode : str
        ``'cascading'`` or ``'independent'``.
    classes : NDArray or None
        The class explained in every step (int64, N), fixed by the trained network; None for a target function.
    spearman, spearman_abs, ssim, hog : NDArray
        steps x N float32: each step's map against the trained network's map, per image.
    trained_maps : NDArray or None
        The method's maps for the trained network, as ``explain`` returned them (``keep_maps=True``).
    maps : list of NDArray or None
        The method's maps at each step, as ``explain`` returned them (``keep_maps=True``), for the paper's
        Figure 2.
    """

    def __init__(self, layers: List[str], mode: str, classes: Optional[NDArray], values: Dict[str, NDArray],
                 trained_maps: Optional[NDArray], maps: Optional[List[NDArray]]):
        self.layers, self.mode, self.classes = layers, mode, classes
        self.spearman, self.spearman_abs = values['spearman'], values['spearman_abs']
        self.ssim, self.hog = values['ssim'], values['hog']
        self.trained_maps, self.maps = trained_maps, maps

    def as_dict(self) -> Dict[str, NDArray]:
        """Similarity name -> steps x N array."""
        return {name: getattr(self, name) for name in SIMILARITIES}

    def __repr__(self) -> str:
        means = ', '.join(f"{name}={[round(float(v), 3) for v in getattr(self, name).mean(axis=1).asnumpy()]}"
                          for name in SIMILARITIES)
        return f"ModelRandomization(mode={self.mode!r}, layers={self.layers}, mean per step: {means})"


class DataRandomization:
    """What :func:`data_randomization` found. Similarities: higher means the two networks' maps agree more (a
    method that depends on what the labels taught should score well below 1).

    Attributes
    ----------
    classes, random_classes : NDArray or None
        The class explained for each image on the given network and on the random-label one (int64, N); None
        for a target function.
    spearman, spearman_abs, ssim, hog : NDArray
        N float32, per image.
    maps, random_maps : NDArray or None
        The method's maps on the two networks, as ``explain`` returned them (``keep_maps=True``).
    """

    def __init__(self, classes: Optional[NDArray], random_classes: Optional[NDArray], values: Dict[str, NDArray],
                 maps: Optional[NDArray], random_maps: Optional[NDArray]):
        self.classes, self.random_classes = classes, random_classes
        self.spearman, self.spearman_abs = values['spearman'], values['spearman_abs']
        self.ssim, self.hog = values['ssim'], values['hog']
        self.maps, self.random_maps = maps, random_maps

    def as_dict(self) -> Dict[str, NDArray]:
        """Similarity name -> N array."""
        return {name: getattr(self, name) for name in SIMILARITIES}

    def __repr__(self) -> str:
        means = ', '.join(f"{name}={float(getattr(self, name).mean().asscalar()):.3f}" for name in SIMILARITIES)
        return f"DataRandomization(mean: {means})"


# ----------------------------------------------------------------------------------------------------------
# The model-parameter randomization test


@serialized
def model_randomization(net: Block, x, explain: Explain, target: Target = None, mode: str = 'cascading',
                        layers: Optional[Sequence[LayerRef]] = None, seed: int = 0, init: Init = 'normal',
                        keep_maps: bool = False, hog_options: Optional[dict] = None) -> ModelRandomization:
    """The model-parameter randomization test (Adebayo et al. 2018, section 3.1): the method's map on the
    trained network against its map on the network with layers re-drawn at random.

    Step k randomizes ``layers[k]``, the layers ordered from the output back to the input (the paper's
    "top layer first"): in ``'cascading'`` mode together with every layer above it (the paper's cascading
    randomization, Figures 2 and 4); in ``'independent'`` mode alone, the others trained (the paper's
    independent randomization, Figure 5). The class explained is fixed by the trained network, as in the paper
    (which explains the original class throughout). Each step's map is compared with the trained one per image
    by :func:`map_similarity`. The network is restored bit-identically afterwards (parameters and BatchNorm
    statistics), also when ``explain`` raises.

    Parameters
    ----------
    net : Block
        The trained network (its parameters are changed in place during the call, then restored).
    x : NDArray or numpy array
        N x C x H x W batch, preprocessed as the network expects.
    explain : callable
        ``explain(net, x, target)`` returning the maps for the batch: N x h x w (a CAM) or N x C x H x W, e.g.
        ``lambda net, x, t: gradients.saliency(net, x, t)`` or
        ``lambda net, x, t: methods.make('gradcam', net, x, layer, t)``.
        ``target`` is an int64 NDArray of classes (or the target function passed here).
    target : None, int, sequence of int, or callable
        The class to explain: the trained network's prediction (None), one for all, one per image, or a function
        of the output passed to ``explain`` as it is.
    mode : str
        ``'cascading'`` (default) or ``'independent'``.
    layers : sequence of str or Block, optional
        The layers to randomize, each a block with a ``weight`` (by ``print(net)`` path, block name or block), in
        the order to randomize them. Default: every block with a weight, in reverse definition order (from the
        output back to the input for a sequential network).
    seed : int
        Makes the draws repeatable. Each layer's values come from a generator seeded by (seed, its position
        among the network's weighted blocks), so a layer gets the same values at every step and in both modes.
    init : str or mxnet.init.Initializer
        How a layer's ``weight`` and ``bias`` are re-drawn: ``'normal'`` (default), each parameter from
        ``N(0, s^2)`` with ``s`` the standard deviation of its own trained values (the same distribution family as
        a Gaussian-initialized network; a bias with all values equal becomes zero); or an Initializer, as the
        paper re-runs the network's initializers (e.g. ``mx.init.Xavier()``: weights from it, biases zero); it
        draws from MXNet's global generator, which this call seeds (``mx.random.seed``) per layer.
    keep_maps : bool
        Keep the trained and every step's maps in the result.
    hog_options : dict, optional
        Options of ``skimage.feature.hog`` for the HOG similarity (see :func:`map_similarity`).

    Returns
    -------
    ModelRandomization
        Layer names and steps x N similarities (higher: the map changed less). Cost: 1 + steps calls of
        ``explain`` and one forward pass for the classes.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if not callable(explain):
        raise ValueError(f"explain must be a function explain(net, x, target) returning maps, got "
                         f"{type(explain).__name__}")
    _check_init(init)
    x = as_batch(net, x)
    weighted = _weighted_blocks(net)
    chosen = _chosen_layers(net, layers, weighted)
    with Explainer(net) as explainer:
        classes, explained, _ = _explained_target(explainer, x, target)
        saved = _Snapshot(net, chosen)
        try:
            trained_maps = explain(net, x, explained)
            reference = _pixel_pair(trained_maps, x)
            steps, kept = [], []
            for k, block in enumerate(chosen):
                if mode == 'independent' and k:
                    saved.restore([chosen[k - 1]])
                _randomize(block, _layer_seed(seed, weighted.index(block)), init)
                maps = explain(net, x, explained)
                steps.append(_similarities(reference, _pixel_pair(maps, x), hog_options))
                if keep_maps:
                    kept.append(maps)
        finally:
            saved.restore()
    values = {name: nd.array(np.stack([step[name] for step in steps]), ctx=x.context) for name in SIMILARITIES}
    return ModelRandomization([block.name for block in chosen], mode, classes, values,
                              trained_maps if keep_maps else None, kept if keep_maps else None)


def _check_init(init) -> None:
    if not (isinstance(init, mx.init.Initializer) or (isinstance(init, str) and init == 'normal')):
        raise ValueError(f"init must be 'normal' or an mxnet.init.Initializer (e.g. mx.init.Xavier()), got {init!r}")


def _explained_target(explainer: Explainer, x: NDArray, target: Target):
    """(the classes, what ``explain`` gets, the output): the network's classes for ``target`` (and its output),
    or for a target function (None, the function, None)."""
    if callable(target):
        return None, target, None
    output, _ = explainer.forward(x)
    if not isinstance(output, NDArray) or output.ndim != 2:
        raise ValueError(f"class targets need an output of shape (N, classes); the network returns "
                         f"{describe_output(output)}: pass a function that maps the output to one score per sample")
    classes = classes_for(output, target)
    return classes, classes, output


def _weighted_blocks(net: Block) -> List[Block]:
    """Blocks that own a ``weight``, in definition order."""
    return [block for block in walk(net) if 'weight' in block._reg_params]


def _chosen_layers(net: Block, layers: Optional[Sequence[LayerRef]], weighted: List[Block]) -> List[Block]:
    valid = ', '.join(block.name for block in reversed(weighted)) or 'none'
    if layers is None:
        if not weighted:
            raise ValueError(f"the network {net.name!r} has no layer with a weight to randomize")
        return list(reversed(weighted))
    if isinstance(layers, (str, Block)):
        layers = [layers]
    chosen = []
    for layer in layers:
        try:
            block = resolve(net, layer)
        except ValueError:
            raise ValueError(f"no layer {layer!r} in {net.name!r}; layers with a weight (top first): {valid}") \
                from None
        if not any(block is candidate for candidate in weighted):
            raise ValueError(f"layer {layer!r} has no weight to randomize; layers with a weight (top first): {valid}")
        if any(block is other for other in chosen):
            raise ValueError(f"layer {layer!r} is listed twice")
        chosen.append(block)
    if not chosen:
        raise ValueError(f"no layer to randomize: pass at least one of {valid}, or layers=None for all")
    return chosen


class _Snapshot:
    """Copies of the parameters the test changes (the layers' weights and biases) and of every parameter without
    a gradient (BatchNorm's running statistics), written back bit for bit by :meth:`restore`."""

    def __init__(self, net: Block, blocks: List[Block]):
        changed = {id(param) for block in blocks for param in block._reg_params.values()}
        self.saved = {}
        for param in parameters(net):
            if id(param) in changed or param.grad_req == 'null':
                if param._data is None:
                    raise ValueError(f"parameter {param.name!r} is not initialized; run the network once first")
                self.saved[id(param)] = (param, [array.copy() for array in param.list_data()])

    def restore(self, blocks: Optional[List[Block]] = None) -> None:
        """Write back the parameters of ``blocks`` (all that were saved by default)."""
        wanted = None if blocks is None else {id(param) for block in blocks for param in block._reg_params.values()}
        for key, (param, copies) in self.saved.items():
            if wanted is None or key in wanted:
                for array, copy in zip(param.list_data(), copies):
                    array[:] = copy
        if blocks is None:
            nd.waitall()


def _layer_seed(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _randomize(block: Block, rng: np.random.Generator, init: Init) -> None:
    """Re-draw the block's weight and bias in place (every context's copy gets the same values)."""
    for key in ('weight', 'bias'):
        param = block._reg_params.get(key)
        if param is None:
            continue
        first = param.list_data()[0]
        if isinstance(init, mx.init.Initializer):
            mx.random.seed(int(rng.integers(2 ** 31)))
            drawn = nd.zeros(first.shape, ctx=first.context, dtype=first.dtype)
            init(mx.init.InitDesc(param.name), drawn)
        else:
            spread = float(np.std(first.asnumpy().astype(np.float64)))
            drawn = nd.array(rng.standard_normal(first.shape) * spread, ctx=first.context, dtype=first.dtype)
        for array in param.list_data():
            array[:] = drawn.as_in_context(array.context)


# ----------------------------------------------------------------------------------------------------------
# The data randomization test


@serialized
def data_randomization(net: Block, random_label_net: Block, x, explain: Explain, target: Target = None,
                       keep_maps: bool = False, hog_options: Optional[dict] = None) -> DataRandomization:
    """The data randomization test (Adebayo et al. 2018, section 3.2): the method's maps on ``net`` against
    its maps on ``random_label_net``, the same architecture trained on the same images with the labels shuffled
    (the user trains it). Compared per image by :func:`map_similarity`.

    Parameters
    ----------
    net, random_label_net : Block
        The network trained on the true labels, and its twin trained on permuted labels; neither is changed.
    x : NDArray or numpy array
        N x C x H x W batch, preprocessed as both networks expect.
    explain : callable
        ``explain(net, x, target)`` returning maps for the batch, as in :func:`model_randomization`.
    target : None, int, sequence of int, or callable
        None: each network explains its own prediction (as the paper, where the random-label network's
        prediction is its memorized label); an int or one per image: that class on both; a function of the
        output: passed to ``explain`` as it is.
    keep_maps, hog_options :
        As in :func:`model_randomization`.

    Returns
    -------
    DataRandomization
        N similarities per kind (higher: the maps agree more). Cost: one call of ``explain`` and one forward
        pass per network.
    """
    if not callable(explain):
        raise ValueError(f"explain must be a function explain(net, x, target) returning maps, got "
                         f"{type(explain).__name__}")
    x = as_batch(net, x)
    as_batch(random_label_net, x)  # the same input must fit both
    with Explainer(net) as explainer:
        classes, explained, output = _explained_target(explainer, x, target)
        maps = explain(net, x, explained)
    with Explainer(random_label_net) as explainer:
        random_classes, random_explained, random_output = _explained_target(explainer, x, target)
        random_maps = explain(random_label_net, x, random_explained)
    if output is not None and output.shape != random_output.shape:
        raise ValueError(f"the networks' outputs differ: {output.shape} and {random_output.shape}; the random-label "
                         f"network must have the trained one's architecture")
    values = _similarities(_pixel_pair(maps, x), _pixel_pair(random_maps, x), hog_options)
    values = {name: nd.array(value, ctx=x.context) for name, value in values.items()}
    return DataRandomization(classes, random_classes, values, maps if keep_maps else None,
                             random_maps if keep_maps else None)


# ----------------------------------------------------------------------------------------------------------
# The random baseline


@serialized
def random_map(net: Block, x, target: Target = None, seed: int = 0, score: str = 'logits') -> NDArray:
    """A map of uniform noise in [0, 1), N x H x W, float32 on the input's context: the floor every metric table
    must beat (a method scoring like it explains nothing). Ignores the network, ``target`` and ``score``
    (accepted so that it takes the place of any method); costs no pass through the network. Repeatable with
    ``seed`` (numpy's default_rng)."""
    x = as_batch(net, x)
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    noise = np.random.default_rng(seed).random((n, height, width), dtype=np.float32)
    return nd.array(noise, ctx=x.context, dtype='float32')


# ----------------------------------------------------------------------------------------------------------
# The similarities


@serialized
def map_similarity(first, second, size: Optional[Tuple[int, int]] = None,
                   hog_options: Optional[dict] = None) -> Dict[str, NDArray]:
    """The four similarities of Adebayo et al. (2018, Figure 4) between two maps of each image, per image.

    Both maps are brought to N x H x W (``size``, default the first maps' last two axes) by
    :func:`gluoncam.metrics.maps.pixel_maps`: channels summed, CAMs upsampled. Then, per image:

    - ``'spearman'``: Spearman's rank correlation of the two signed maps over pixels (``scipy.stats.spearmanr``,
      tied values get their average rank);
    - ``'spearman_abs'``: the same on the absolute-value maps, ``|m|`` reduced over channels (or upsampled)
      before comparing: the paper's "rank correlation (absolute value)";
    - ``'ssim'``: structural similarity (``skimage.metrics.structural_similarity``, ``data_range=1``, a uniform
      7 x 7 window, the largest odd one that fits on maps under 7 pixels, 1 x 1 under 3) of the absolute-value
      maps each divided by its maximum (into [0, 1], as the paper's grayscale visualizations);
    - ``'hog'``: Pearson correlation of the HOG descriptors (``skimage.feature.hog``) of the same normalized
      maps. ``hog_options`` go to ``hog``; by default 9 orientations, 8 x 8 pixel cells (fewer pixels on maps
      under 24 pixels, so that three cells fit) and 3 x 3 cell blocks.

    All are in [-1, 1] (SSIM and Spearman of absolute values usually in [0, 1]); 1 for identical maps. A
    correlation with a constant map is undefined: it counts 1 when both are constant (the same ranks, all tied),
    0 when only one is; never NaN. Computed in float64 numpy (scipy and scikit-image need it).

    Returns
    -------
    dict
        ``'spearman'``, ``'spearman_abs'``, ``'ssim'``, ``'hog'`` -> (N,) float32 NDArray, on the first maps'
        context.
    """
    first_nd = first if isinstance(first, NDArray) else nd.array(np.asarray(first))
    if size is None:
        if first_nd.ndim < 3:
            raise ValueError(f"maps must be N x h x w or N x C x H x W, got shape {first_nd.shape}")
        size = tuple(first_nd.shape[-2:])
    ctx = first_nd.context
    values = _similarities(_pair_at(first_nd, size, ctx), _pair_at(second, size, ctx), hog_options)
    return {name: nd.array(value, ctx=ctx) for name, value in values.items()}


def _pixel_pair(maps, x: NDArray) -> Tuple[np.ndarray, np.ndarray]:
    if not isinstance(maps, (NDArray, np.ndarray)):
        raise ValueError(f"explain must return the maps as an NDArray or numpy array (N x h x w or N x C x H x W), "
                         f"got {type(maps).__name__}")
    pair = _pair_at(maps, tuple(x.shape[-2:]), x.context)
    check_batch(pair[0], x.shape[0])
    return pair


def _pair_at(maps, size: Tuple[int, int], ctx) -> Tuple[np.ndarray, np.ndarray]:
    """(signed, absolute-value) N x H x W float64 numpy maps."""
    if not isinstance(maps, NDArray):
        maps = nd.array(np.asarray(maps), ctx=ctx)
    signed = pixel_maps(maps, size, ctx).asnumpy().astype(np.float64)
    absolute = pixel_maps(nd.abs(maps.astype('float32')), size, ctx).asnumpy().astype(np.float64)
    if not (np.isfinite(signed).all() and np.isfinite(absolute).all()):
        raise ValueError("the maps contain NaN or infinite values")
    return signed, absolute


def _similarities(first: Tuple[np.ndarray, np.ndarray], second: Tuple[np.ndarray, np.ndarray],
                  hog_options: Optional[dict]) -> Dict[str, np.ndarray]:
    (signed, absolute), (other_signed, other_absolute) = first, second
    if signed.shape != other_signed.shape:
        raise ValueError(f"the two sets of maps differ: {signed.shape} and {other_signed.shape}; pass maps of the "
                         f"same images")
    values = {name: np.zeros(signed.shape[0], np.float32) for name in SIMILARITIES}
    for i in range(signed.shape[0]):
        values['spearman'][i] = _rank_correlation(signed[i], other_signed[i])
        values['spearman_abs'][i] = _rank_correlation(absolute[i], other_absolute[i])
        image, other = _unit(absolute[i]), _unit(other_absolute[i])
        values['ssim'][i] = _ssim(image, other)
        values['hog'][i] = _pearson(_hog(image, hog_options), _hog(other, hog_options))
    return values


def _constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values.flat[0]))


def _undefined(first: np.ndarray, second: np.ndarray) -> Optional[float]:
    """The value of a correlation with a constant input: 1 if both are constant, 0 if one is; None otherwise."""
    constant = _constant(first), _constant(second)
    return float(all(constant)) if any(constant) else None


def _rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    undefined = _undefined(first, second)
    return undefined if undefined is not None else float(spearmanr(first.ravel(), second.ravel())[0])


def _pearson(first: np.ndarray, second: np.ndarray) -> float:
    undefined = _undefined(first, second)
    return undefined if undefined is not None else float(np.corrcoef(first, second)[0, 1])


def _unit(values: np.ndarray) -> np.ndarray:
    """Non-negative values divided by their maximum: into [0, 1]; an all-zero map stays zero."""
    top = values.max()
    return values / top if top > 0 else values


def _ssim(image: np.ndarray, other: np.ndarray) -> float:
    side = min(7, *image.shape)
    window = side if side % 2 else side - 1
    # a 1 x 1 window has no sample variance: only the luminance term is left, from population statistics
    return float(structural_similarity(image, other, data_range=1, win_size=window,
                                       use_sample_covariance=window > 1))


def _hog(image: np.ndarray, options: Optional[dict]) -> np.ndarray:
    cell = max(1, min(8, image.shape[0] // 3, image.shape[1] // 3))
    settings = {'orientations': 9, 'pixels_per_cell': (cell, cell),
                'cells_per_block': (min(3, image.shape[0] // cell), min(3, image.shape[1] // cell))}
    settings.update(options or {})
    try:
        return hog(image, feature_vector=True, **settings)
    except ValueError as error:
        raise ValueError(f"HOG options {settings} do not fit a {image.shape[0]} x {image.shape[1]} map: {error}") \
            from None
