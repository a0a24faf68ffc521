"""Every explanation method by its command-line name: what it computes, how it is drawn, what it costs.

The command line (``gluoncam explain --method NAME``), :func:`gluoncam.visualize.render` and the README's table of
methods read this catalog. Names follow pytorch-grad-cam (CAMs, lowercased) and captum (kebab-case).
"""
from dataclasses import dataclass
from typing import Callable, Dict

import numpy as np
from mxnet import nd
from mxnet.ndarray import NDArray

from . import cams, dff, gradients, layer_attribution, maps, perturbation, propagation
from .explainer import Explainer
from .metrics import randomization
from .threads import serialized

# how a method's raw map is drawn (see visualize.render): over the image (a heatmap of a map or of a layer's
# attributions summed over channels), as a signed gradient image, in gray (max over channels of |map|), or as
# coloured concepts (Deep Feature Factorization's K maps per image)
RENDERINGS = ('heatmap', 'gradient', 'gray', 'concepts')


@dataclass(frozen=True)
class Method:
    """One method: ``make(net, x, layer, target, batch_size)`` gives its raw maps for the batch ``x`` (one per
    image, on the input's context). ``layer`` is None for methods that explain the input without one."""
    name: str
    family: str
    make: Callable[..., NDArray]
    rendering: str
    passes: str
    reference: str
    peer: str
    uses_layer: bool = True


def _cam(name: str) -> Callable[..., NDArray]:
    if name in WITHOUT_LAYER:
        return lambda net, x, layer, target, batch_size: cams.cam(net, x, None, name, target, batch_size=batch_size)
    return lambda net, x, layer, target, batch_size: cams.cam(net, x, layer, name, target, batch_size=batch_size)


def _guided_grad_cam(net, x, layer, target, batch_size) -> NDArray:
    result = Explainer(net).backprop(x, target, [layer], ('normal', 'guided'))
    name = next(iter(result.activations))
    cam = maps.grad_cam(result.activations[name], result.gradients['normal'][name])
    return maps.guided_grad_cam(result.input_gradients['guided'], cam)


def _first(pair):
    return pair[0]


def _baselines(x: NDArray, count: int = 5, seed: int = 0) -> NDArray:
    """The baseline distribution of DeepLIFT-SHAP and GradientSHAP by name: zeros (the preprocessed mean image)
    and ``count - 1`` Gaussian noise images with the batch's standard deviation (seeded)."""
    noise = np.random.default_rng(seed).standard_normal((count - 1,) + x.shape[1:]).astype(np.float32)
    spread = float(nd.sqrt(nd.square(x - x.mean()).mean()).asscalar())
    return nd.concat(nd.zeros((1,) + x.shape[1:], ctx=x.context, dtype=x.dtype),
                     nd.array(noise * spread, ctx=x.context, dtype=x.dtype), dim=0)


def _occlusion(net, x, layer, target, batch_size) -> NDArray:
    """Occlusion by name: a window an eighth of the image's side, half a window's stride (225 positions)."""
    window = tuple(max(1, side // 8) for side in x.shape[2:])
    return perturbation.occlusion(net, x, target, window, tuple(max(1, side // 2) for side in window),
                                  batch_size=batch_size)


def _dff(net, x, layer, target, batch_size) -> NDArray:
    """Deep Feature Factorization by name: up to 5 concepts, channels shifted to non-negative where needed."""
    _, captured = Explainer(net).forward(x, [layer])
    channels = next(iter(captured.values())).shape[1]
    return dff.dff(net, x, layer, min(5, channels), classifier=False, negative='shift').maps


CAM_FACTS = {  # name: (passes, reference, pytorch-grad-cam's class)
    'gradcam': ('1 fwd + 1 bwd', 'Selvaraju et al. 2017', 'GradCAM'),
    'gradcam++': ('1 fwd + 1 bwd', 'Chattopadhyay et al. 2018', 'GradCAMPlusPlus'),
    'xgradcam': ('1 fwd + 1 bwd', 'Fu et al. 2020', 'XGradCAM'),
    'hirescam': ('1 fwd + 1 bwd', 'Draelos & Carin 2020', 'HiResCAM'),
    'layercam': ('1 fwd + 1 bwd', 'Jiang et al. 2021', 'LayerCAM'),
    'eigencam': ('1 fwd', 'Muhammad & Yeasin 2020', 'EigenCAM'),
    'eigengradcam': ('1 fwd + 1 bwd', 'pytorch-grad-cam', 'EigenGradCAM'),
    'gradcamelementwise': ('1 fwd + 1 bwd', 'pytorch-grad-cam', 'GradCAMElementWise'),
    'randomcam': ('1 fwd', 'pytorch-grad-cam (a floor to beat)', 'RandomCAM'),
    'scorecam': ('1 + C fwd (C channels, batched)', 'Wang et al. 2020', 'ScoreCAM'),
    'ablationcam': ('1 fwd + C fwd of the layers after it', 'Desai & Ramaswamy 2020', 'AblationCAM'),
    'fullgrad': ('1 fwd + 1 bwd', 'Srinivas & Fleuret 2019', 'FullGrad'),
    'kpcacam': ('1 fwd (+ a kernel PCA per image)', 'Karmani et al. 2024', 'KPCA_CAM'),
    'shapleycam': ('3 fwd + 3 bwd', 'Cai 2024', 'ShapleyCAM'),
    'finercam': ('2 fwd + 1 bwd', 'Zhang et al. 2025', 'FinerCAM'),
    'fem': ('1 fwd', 'Fuad et al. 2020', 'FEM'),
    'sscam': ('1 + 35 C fwd (batched)', 'Wang et al. 2020 (SS-CAM)', 'torch-cam SSCAM'),
    'iscam': ('1 + 10 C fwd (batched)', 'Naidu et al. 2020', 'torch-cam ISCAM'),
}
WITHOUT_LAYER = ('fullgrad',)  # CAMs that use every convolution and BatchNorm instead of one layer

METHODS: Dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {', '.join(RENDERINGS)}, got {method.rendering!r}")
    METHODS[method.name] = method
    return method


for _name, (_passes, _reference, _peer) in CAM_FACTS.items():
    register(Method(_name, 'CAM', _cam(_name), 'heatmap', _passes, _reference,
                    _peer if _peer.startswith('torch-cam') else f'pytorch-grad-cam {_peer}',
                    uses_layer=_name not in WITHOUT_LAYER))

for _method in [
    Method('guided-gradcam', 'gradient', _guided_grad_cam, 'gradient', '1 fwd + 2 bwd', 'Selvaraju et al. 2017',
           'captum GuidedGradCam'),
    Method('guided-backprop', 'gradient',
           lambda net, x, layer, target, batch_size: gradients.gradient(net, x, target, 'guided'), 'gradient',
           '1 fwd + 1 bwd', 'Springenberg et al. 2015', 'captum GuidedBackprop', uses_layer=False),
    Method('deconv', 'gradient',
           lambda net, x, layer, target, batch_size: gradients.gradient(net, x, target, 'deconv'), 'gradient',
           '1 fwd + 1 bwd', 'Zeiler & Fergus 2014', 'captum Deconvolution', uses_layer=False),
    Method('saliency', 'gradient', lambda net, x, layer, target, batch_size: gradients.saliency(net, x, target),
           'gray', '1 fwd + 1 bwd', 'Simonyan et al. 2014', 'captum Saliency', uses_layer=False),
    Method('input-x-gradient', 'gradient',
           lambda net, x, layer, target, batch_size: gradients.input_x_gradient(net, x, target), 'gray',
           '1 fwd + 1 bwd', 'Shrikumar et al. 2016', 'captum InputXGradient', uses_layer=False),
    Method('smoothgrad', 'gradient',
           lambda net, x, layer, target, batch_size: gradients.smoothgrad(net, x, target, batch_size=batch_size,
                                                                          seed=0),
           'gray', '25 x (fwd + bwd), batched', 'Smilkov et al. 2017', 'captum NoiseTunnel(Saliency)',
           uses_layer=False),
    Method('integrated-gradients', 'gradient',
           lambda net, x, layer, target, batch_size: _first(gradients.integrated_gradients(
               net, x, target, batch_size=batch_size)),
           'gray', '50 x (fwd + bwd), batched', 'Sundararajan et al. 2017', 'captum IntegratedGradients',
           uses_layer=False),
    Method('smoothgrad-sq', 'gradient', lambda net, x, layer, target, batch_size: gradients.noise_tunnel(
        gradients.gradient, net, x, target, 'smoothgrad_sq', batch_size=batch_size, seed=0),
        'gray', '25 x (fwd + bwd), batched', 'Smilkov et al. 2017', "captum NoiseTunnel(nt_type='smoothgrad_sq')",
        uses_layer=False),
    Method('vargrad', 'gradient', lambda net, x, layer, target, batch_size: gradients.noise_tunnel(
        gradients.gradient, net, x, target, 'vargrad', batch_size=batch_size, seed=0),
        'gray', '25 x (fwd + bwd), batched', 'Adebayo et al. 2018', "captum NoiseTunnel(nt_type='vargrad')",
        uses_layer=False),
    Method('layer-gradient-x-activation', 'layer',
           lambda net, x, layer, target, batch_size: layer_attribution.layer_gradient_x_activation(
               net, x, layer, target),
           'heatmap', '1 fwd + 1 bwd', 'Shrikumar et al. 2016', 'captum LayerGradientXActivation'),
    Method('layer-integrated-gradients', 'layer',
           lambda net, x, layer, target, batch_size: _first(layer_attribution.layer_integrated_gradients(
               net, x, layer, target, batch_size=batch_size)),
           'heatmap', '1 fwd + 50 x (fwd + bwd), batched', 'Sundararajan et al. 2017',
           'captum LayerIntegratedGradients'),
    Method('layer-conductance', 'layer',
           lambda net, x, layer, target, batch_size: _first(layer_attribution.layer_conductance(
               net, x, layer, target, batch_size=batch_size)),
           'heatmap', '1 fwd + 51 x (fwd + bwd), batched', 'Dhamdhere et al. 2018', 'captum LayerConductance'),
    Method('dff', 'concepts', _dff, 'concepts', '1 fwd (+ an NMF of the batch)', 'Collins et al. 2018',
           'pytorch-grad-cam DeepFeatureFactorization'),
    Method('random', 'baseline', lambda net, x, layer, target, batch_size: randomization.random_map(net, x, seed=0),
           'heatmap', 'none', 'uniform noise: a floor to beat', '-', uses_layer=False),
    Method('deeplift', 'propagation',
           lambda net, x, layer, target, batch_size: _first(propagation.deeplift(net, x, target)),
           'gray', '1 fwd + 1 bwd (of 2N rows)', 'Shrikumar et al. 2017', 'captum DeepLift', uses_layer=False),
    Method('deeplift-shap', 'propagation',
           lambda net, x, layer, target, batch_size: _first(propagation.deeplift_shap(
               net, x, target, _baselines(x), batch_size=batch_size)),
           'gray', '5 x (fwd + bwd) of 2N rows, batched', 'Lundberg & Lee 2017', 'captum DeepLiftShap',
           uses_layer=False),
    Method('gradient-shap', 'propagation',
           lambda net, x, layer, target, batch_size: _first(propagation.gradient_shap(
               net, x, target, _baselines(x), seed=0, batch_size=batch_size)),
           'gray', '5 x (fwd + bwd) + 10 fwd, batched', 'Lundberg & Lee 2017', 'captum GradientShap',
           uses_layer=False),
    Method('lrp', 'propagation', lambda net, x, layer, target, batch_size: propagation.lrp(net, x, target), 'gray',
           '1 fwd + 1 bwd', 'Bach et al. 2015', 'captum LRP', uses_layer=False),
    Method('occlusion', 'perturbation', _occlusion, 'heatmap', '1 + 225 fwd, batched', 'Zeiler & Fergus 2014',
           'captum Occlusion', uses_layer=False),
    Method('feature-ablation', 'perturbation',
           lambda net, x, layer, target, batch_size: perturbation.feature_ablation(net, x, target,
                                                                                   batch_size=batch_size),
           'heatmap', '1 + K fwd (K superpixels, SLIC)', 'captum', 'captum FeatureAblation', uses_layer=False),
    Method('shapley-value-sampling', 'perturbation',
           lambda net, x, layer, target, batch_size: perturbation.shapley_value_sampling(
               net, x, target, seed=0, batch_size=batch_size),
           'heatmap', 'up to 2 + 25 (K - 1) fwd, batched', 'Castro et al. 2009', 'captum ShapleyValueSampling',
           uses_layer=False),
    Method('kernel-shap', 'perturbation',
           lambda net, x, layer, target, batch_size: perturbation.kernel_shap(net, x, target, seed=0,
                                                                              batch_size=batch_size),
           'heatmap', 'up to 256 fwd, batched', 'Lundberg & Lee 2017', 'captum KernelShap', uses_layer=False),
    Method('lime', 'perturbation',
           lambda net, x, layer, target, batch_size: perturbation.lime(net, x, target, seed=0,
                                                                       batch_size=batch_size),
           'heatmap', 'up to 256 fwd, batched', 'Ribeiro et al. 2016', 'captum Lime', uses_layer=False),
]:
    register(_method)


def table() -> str:
    """The README's table of methods, in markdown."""
    rows = ['| method | family | passes per batch | reference | peer |', '|---|---|---|---|---|']
    rows += [f'| `{m.name}` | {m.family} | {m.passes} | {m.reference} | {m.peer} |' for m in METHODS.values()]
    return '\n'.join(rows)


def unknown_method_error(name: str) -> ValueError:
    return ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")


@serialized
def make(name: str, net, x, layer, target=None, batch_size: int = 32) -> NDArray:
    """Method ``name``'s raw maps for the batch ``x``."""
    if name not in METHODS:
        raise unknown_method_error(name)
    return METHODS[name].make(net, x, layer, target, batch_size)

