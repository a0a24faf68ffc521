"""Every metric by its command-line name, each scoring one method's maps of a batch: what ``gluoncam evaluate``
and :func:`gluoncam.evaluation.evaluate` run.

A metric gives one or more values per image, each with the direction that is better. The values of a random map
(``random`` in :mod:`gluoncam.methods`) are the floor a method has to beat.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
from mxnet.ndarray import NDArray

from . import confidence, faithfulness, localization, randomization, robustness


@dataclass
class Case:
    """One method's maps of one batch, and what the metrics need besides: ``classes`` the class explained per
    image, ``explain(net, rows, target)`` the method itself (for metrics that explain perturbed inputs or
    randomized networks), ``boxes`` / ``masks`` the objects of the pointing games (input pixels), ``steps`` the
    points of the deletion and insertion curves."""
    net: object
    x: NDArray
    maps: NDArray
    classes: NDArray
    explain: Callable[..., NDArray]
    batch_size: int = 32
    seed: int = 0
    steps: int = 50
    boxes: Optional[list] = None
    masks: Optional[NDArray] = None


@dataclass
class Scored:
    """What a metric found for a batch: ``values`` (name -> N values), and for the figures ``curves`` (name ->
    N x points, over ``fractions``) and ``randomized`` (the randomization test's result, maps kept)."""
    values: Dict[str, np.ndarray]
    curves: Dict[str, np.ndarray] = field(default_factory=dict)
    fractions: Optional[np.ndarray] = None
    randomized: Optional[randomization.ModelRandomization] = None


@dataclass(frozen=True)
class Metric:
    """A metric: ``better`` maps each value it gives to 'higher' or 'lower'; ``compute(case)`` scores a batch."""
    name: str
    better: Dict[str, str]
    compute: Callable[[Case], Scored]
    reference: str
    needs_objects: bool = False


def _numpy(values: NDArray) -> np.ndarray:
    return values.asnumpy().astype(np.float64)


def _step(case: Case) -> int:
    return max(1, int(np.ceil(case.x.shape[2] * case.x.shape[3] / case.steps)))


def _curve(kind: str) -> Callable[[Case], Scored]:
    function = faithfulness.deletion if kind == 'deletion' else faithfulness.insertion

    def compute(case: Case) -> Scored:
        result = function(case.net, case.x, case.maps, case.classes, batch_size=case.batch_size, step=_step(case),
                          progress=False)
        return Scored({f'{kind}_auc': _numpy(result.auc)}, {kind: _numpy(result.curve)}, _numpy(result.fractions))
    return compute


def _road(case: Case) -> Scored:
    result = faithfulness.road(case.net, case.x, case.maps, case.classes, batch_size=case.batch_size, seed=case.seed,
                              progress=False)
    return Scored({'road_combined': _numpy(result.combined), 'road_morf': _numpy(result.morf_average),
                   'road_lerf': _numpy(result.lerf_average)})


def _confidence(case: Case) -> Scored:
    found = confidence.confidence_metrics(case.net, case.x, case.maps, case.classes, batch_size=case.batch_size,
                                          progress=False)
    return Scored({'average_drop': _numpy(found['drop']), 'increase_in_confidence': _numpy(found['increase']),
                   'confidence_change': _numpy(found['change'])})


def _infidelity(case: Case) -> Scored:
    return Scored({'infidelity': _numpy(robustness.infidelity(case.net, case.x, case.maps, case.classes,
                                                              batch_size=case.batch_size, seed=case.seed,
                                                              progress=False))})


def _sensitivity(case: Case) -> Scored:
    return Scored({'max_sensitivity': _numpy(robustness.max_sensitivity(
        case.net, case.x, case.maps, case.classes, explain=case.explain, batch_size=case.batch_size,
        seed=case.seed))})


def _pointing(case: Case) -> Scored:
    objects = {'boxes': case.boxes} if case.boxes is not None else {'masks': case.masks}
    hits = localization.pointing_game(case.net, case.x, case.maps, **objects).hits
    energy = localization.energy_pointing_game(case.net, case.x, case.maps, **objects)
    return Scored({'pointing_game': _numpy(hits), 'energy_pointing_game': _numpy(energy)})


def _randomization(case: Case) -> Scored:
    """The cascading model-parameter randomization test; per image, the similarities averaged over its steps."""
    result = randomization.model_randomization(case.net, case.x, case.explain, case.classes, seed=case.seed,
                                               keep_maps=True)
    return Scored({'randomization_spearman_abs': _numpy(result.spearman_abs).mean(axis=0),
                   'randomization_ssim': _numpy(result.ssim).mean(axis=0)}, randomized=result)


METRICS: Dict[str, Metric] = {metric.name: metric for metric in [
    Metric('deletion', {'deletion_auc': 'lower'}, _curve('deletion'), 'Petsiuk et al. 2018 (RISE)'),
    Metric('insertion', {'insertion_auc': 'higher'}, _curve('insertion'), 'Petsiuk et al. 2018 (RISE)'),
    Metric('road', {'road_combined': 'higher', 'road_morf': 'lower', 'road_lerf': 'higher'}, _road,
           'Rong et al. 2022'),
    Metric('confidence', {'average_drop': 'lower', 'increase_in_confidence': 'higher', 'confidence_change': 'higher'},
           _confidence, 'Chattopadhyay et al. 2018 (Grad-CAM++)'),
    Metric('infidelity', {'infidelity': 'lower'}, _infidelity, 'Yeh et al. 2019'),
    Metric('sensitivity', {'max_sensitivity': 'lower'}, _sensitivity, 'Yeh et al. 2019'),
    Metric('pointing', {'pointing_game': 'higher', 'energy_pointing_game': 'higher'}, _pointing,
           'Zhang et al. 2016; Wang et al. 2020', needs_objects=True),
    Metric('randomization', {'randomization_spearman_abs': 'lower', 'randomization_ssim': 'lower'},
           _randomization, 'Adebayo et al. 2018'),
]}


def metric_names(text: str) -> List[str]:
    """Comma-separated metric names ('all': every metric but the pointing games, which need objects), checked."""
    names = [name for name in METRICS if not METRICS[name].needs_objects] if text == 'all' else \
        list(dict.fromkeys(name for name in text.split(',') if name))
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric {unknown[0] if unknown else text!r}; valid: {', '.join(METRICS)}, all")
    return names


def better(value: str) -> str:
    """'higher' or 'lower': which way value ``value`` (a column of a metric) is better."""
    for metric in METRICS.values():
        if value in metric.better:
            return metric.better[value]
    raise ValueError(f"no metric gives {value!r}")
