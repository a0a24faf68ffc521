"""Which map can I trust? Faithfulness metrics, robustness, localization and sanity checks for any method's maps.

Each function takes the network, the images and a method's maps (N x h x w or N x C x H x W), runs batched on the
input's context and gives its definition, paper and direction (higher or lower is better) in its docstring.
:mod:`gluoncam.metrics.catalog` names them for ``gluoncam evaluate``.
"""
from .catalog import METRICS, Case, Metric, Scored
from .confidence import average_drop, confidence_change, confidence_metrics, increase_in_confidence, win
from .faithfulness import deletion, insertion, noisy_linear_imputation, road
from .localization import energy_pointing_game, pointing_game
from .maps import pixel_maps
from .randomization import data_randomization, map_similarity, model_randomization, random_map
from .robustness import infidelity, max_sensitivity

__all__ = ['METRICS', 'Case', 'Metric', 'Scored', 'average_drop', 'confidence_change', 'confidence_metrics',
           'data_randomization', 'deletion', 'energy_pointing_game', 'increase_in_confidence', 'infidelity',
           'insertion', 'map_similarity', 'max_sensitivity', 'model_randomization', 'noisy_linear_imputation',
           'pixel_maps', 'pointing_game', 'random_map', 'road', 'win']
