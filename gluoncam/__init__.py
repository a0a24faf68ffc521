"""gluoncam: see why an MXNet Gluon CNN decided what it decided."""
from . import (cams, detection, dff, gradients, layer_attribution, maps, methods, models, modifiers, perturbation,
               propagation, targets, threads, visualize, zoo)
from .explainer import Backprop, Explainer
from .layers import named_blocks
from .maps import grad_cam, guided_grad_cam, saliency
from .nn import Activation, Conv2D, Dense, ReLU6, convert

__version__ = '0.1.0'

__all__ = ['Activation', 'Backprop', 'Conv2D', 'Dense', 'Explainer', 'convert', 'grad_cam', 'guided_grad_cam',
           'cams', 'detection', 'dff', 'gradients', 'layer_attribution', 'maps', 'methods', 'models', 'modifiers',
           'named_blocks', 'perturbation', 'propagation', 'ReLU6', 'saliency', 'targets', 'threads', 'visualize',
           'zoo']
