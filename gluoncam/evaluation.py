"""Methods scored by metrics over many images: the rows, the summary table and the figures of ``gluoncam evaluate``.

:func:`evaluate` runs every method on each batch (its maps made once) and every metric on each method's maps, and
keeps one row per image, method and value. :func:`summary` turns the rows into a markdown table (mean and a 95 %
bootstrap interval per method and value, the best per value in bold), :func:`save_figures` draws the deletion and
insertion curves, the values and the randomization test.
"""
import csv
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mxnet.ndarray import NDArray

from . import methods as catalog
from .metrics import catalog as metric_catalog
from .metrics.randomization import ModelRandomization
from .threads import serialized

BOOTSTRAP_SAMPLES = 1000


@dataclass
class Row:
    """One value of one metric for one image and method."""
    image: str
    method: str
    value: str
    score: float
    explained_class: int


@dataclass
class Evaluation:
    """What :func:`evaluate` found: the rows, the curves (method -> kind -> list of N x points arrays, over
    ``fractions``) and the randomization test of the first batch (method -> result, maps kept)."""
    rows: List[Row] = field(default_factory=list)
    curves: Dict[str, Dict[str, List[np.ndarray]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    fractions: Dict[str, np.ndarray] = field(default_factory=dict)
    randomized: Dict[str, ModelRandomization] = field(default_factory=dict)
    randomized_images: List[str] = field(default_factory=list)
    seconds: Dict[Tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    images: int = 0

    def timing(self) -> str:
        """A markdown table of the seconds per image each method's maps took ('maps') and each metric took."""
        methods = list(dict.fromkeys(method for method, _ in self.seconds))
        parts = list(dict.fromkeys(part for _, part in self.seconds))
        lines = ['| seconds per image | ' + ' | '.join(parts) + ' |', '|---|' + '---|' * len(parts)]
        for method in methods:
            cells = [f'{self.seconds[method, part] / max(self.images, 1):.3g}' if (method, part) in self.seconds
                     else '-' for part in parts]
            lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
        return '\n'.join(lines)


@serialized
def evaluate(net, batches, method_names: Sequence[str], metric_names: Sequence[str], layer, target=None,
             batch_size: int = 32, seed: int = 0, steps: int = 50, boxes: Optional[Dict[str, list]] = None,
             progress: Optional[Callable[[int], None]] = None) -> Evaluation:
    """Score each method's maps by each metric, batch after batch.

    Parameters
    ----------
    batches : iterable of (names, x)
        Image names and their N x C x H x W batch, preprocessed for ``net``.
    method_names, metric_names :
        Names in :data:`gluoncam.methods.METHODS` and :data:`gluoncam.metrics.METRICS`.
    layer, target, batch_size :
        As for the methods (``target``: None explains each image's predicted class).
    boxes : dict, optional
        Image name -> its objects' boxes (x1, y1, x2, y2 in input pixels), for the pointing games.
    progress : callable, optional
        Called with 1 after each method's metrics on a batch.
    """
    found = Evaluation()
    for names, x in batches:
        classes = _classes(net, x, target)
        found.images += len(names)
        for method in method_names:
            start = time.perf_counter()
            maps = catalog.make(method, net, x, layer, classes, batch_size)
            maps.wait_to_read()
            found.seconds[method, 'maps'] += time.perf_counter() - start
            case = metric_catalog.Case(net, x, maps, classes, _explainer(method, layer, batch_size), batch_size,
                                       seed, steps, _boxes_of(boxes, names, metric_names))
            for metric in metric_names:
                start = time.perf_counter()
                scored = metric_catalog.METRICS[metric].compute(case)
                found.seconds[method, metric] += time.perf_counter() - start
                _score(found, scored, names, method, classes)
                if scored.randomized is not None and method not in found.randomized:  # the first batch's
                    found.randomized[method], found.randomized_images = scored.randomized, list(names)
            if progress is not None:
                progress(1)
    found.rows += win_rows(found.rows)
    return found


def _classes(net, x: NDArray, target) -> NDArray:
    from .explainer import Explainer
    from .inputs import classes_for
    output, _ = Explainer(net).forward(x)
    return classes_for(output, target)


def _explainer(method: str, layer, batch_size: int):
    """The method as the metrics call it: ``explain(net, rows, target)``."""
    return lambda net, rows, target=None: catalog.make(method, net, rows, layer, target, batch_size)


def _boxes_of(boxes, names, metric_names):
    if 'pointing' not in metric_names:
        return None
    missing = [name for name in names if len((boxes or {}).get(name, ())) == 0]
    if missing:
        raise ValueError(f"the pointing games need the objects' boxes of every image; none for {missing[0]!r} "
                         f"(give them with --boxes)")
    return [np.asarray(boxes[name], dtype=np.float64).reshape(-1, 4) for name in names]


def _score(found: Evaluation, scored: metric_catalog.Scored, names, method: str, classes: NDArray) -> None:
    explained = classes.asnumpy().astype(int)
    for value, scores in scored.values.items():
        found.rows += [Row(name, method, value, float(score), int(k)) for name, score, k in
                       zip(names, scores, explained)]
    for kind, curve in scored.curves.items():
        found.curves[method][kind].append(curve)
        found.fractions[kind] = scored.fractions


def win_rows(rows: List[Row]) -> List[Row]:
    """Win % (Chattopadhyay et al. 2018) from the average drops: per image, 100 to the method with the lowest drop,
    split equally between methods that tie; none with fewer than two methods."""
    drops = defaultdict(dict)
    classes = {}
    for row in rows:
        if row.value == 'average_drop':
            drops[row.image][row.method] = row.score
            classes[row.image] = row.explained_class
    won = []
    for image, by_method in drops.items():
        if len(by_method) < 2:
            continue
        lowest = min(by_method.values())
        winners = [method for method, drop in by_method.items() if drop == lowest]
        won += [Row(image, method, 'win', 100.0 / len(winners) if method in winners else 0.0, classes[image])
                for method in by_method]
    return won


BETTER = {'win': 'higher'}


def better(value: str) -> str:
    return BETTER.get(value) or metric_catalog.better(value)


def write_csv(rows: List[Row], path: str) -> None:
    with open(path, 'w', newline='') as out:
        writer = csv.writer(out)
        writer.writerow(['image', 'method', 'metric', 'value', 'explained_class'])
        writer.writerows([row.image, row.method, row.value, f'{row.score:.6g}', row.explained_class] for row in rows)


def statistics(rows: List[Row], seed: int = 0) -> Dict[str, Dict[str, tuple]]:
    """value -> method -> (mean, low, high, images): the mean over images and its 95 % bootstrap interval
    (percentiles of ``BOOTSTRAP_SAMPLES`` resamples of the images)."""
    grouped = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row.value][row.method].append(row.score)
    rng = np.random.default_rng(seed)
    out = {}
    for value, by_method in grouped.items():
        out[value] = {}
        for method, scores in by_method.items():
            scores = np.asarray(scores)
            means = scores[rng.integers(0, len(scores), (BOOTSTRAP_SAMPLES, len(scores)))].mean(axis=1)
            low, high = np.percentile(means, [2.5, 97.5])
            out[value][method] = (float(scores.mean()), float(low), float(high), len(scores))
    return out


def best_methods(stats: Dict[str, Dict[str, tuple]]) -> Dict[str, List[str]]:
    """value -> the methods with the best mean (all of them if they tie)."""
    out = {}
    for value, by_method in stats.items():
        means = {method: numbers[0] for method, numbers in by_method.items()}
        best = max(means.values()) if better(value) == 'higher' else min(means.values())
        out[value] = [method for method, mean in means.items() if mean == best]
    return out


def summary(rows: List[Row], seed: int = 0) -> str:
    """A markdown table: one row per method, one column per value (its better direction in the header), each
    cell the mean and 95 % bootstrap interval; the best per column in bold."""
    stats = statistics(rows, seed)
    best = best_methods(stats)
    values = list(stats)
    method_names = list(dict.fromkeys(row.method for row in rows))
    arrows = {'higher': 'higher is better', 'lower': 'lower is better'}
    lines = ['| method | ' + ' | '.join(f'{value} ({arrows[better(value)]})' for value in values) + ' |',
             '|---|' + '---|' * len(values)]
    for method in method_names:
        cells = []
        for value in values:
            if method not in stats[value]:
                cells.append('-')
                continue
            mean, low, high, _ = stats[value][method]
            cell = f'{mean:.4g} [{low:.4g}, {high:.4g}]'
            cells.append(f'**{cell}**' if method in best[value] else cell)
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    images = len({row.image for row in rows})
    lines.append('')
    lines.append(f'Mean over {images} image(s) [95 % bootstrap interval of the mean]; the best per column in bold.')
    return '\n'.join(lines)


def save_figures(found: Evaluation, out_stem: str, originals: Optional[Dict[str, np.ndarray]] = None) -> List[str]:
    """The figures as PNG files ``<out_stem>_*.png``: the curves, the values, the randomization test (when
    measured); returns their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    paths = []

    def save(figure: Figure, name: str) -> None:
        FigureCanvasAgg(figure)
        path = f'{out_stem}_{name}.png'
        figure.savefig(path, dpi=100, bbox_inches='tight')
        paths.append(path)

    if found.curves:
        save(_curves_figure(Figure, found), 'curves')
    stats = statistics(found.rows)
    if stats:
        save(_values_figure(Figure, stats), 'metrics')
    if found.randomized:
        save(_randomization_figure(Figure, found, originals or {}), 'randomization')
    return paths


def _curves_figure(Figure, found: Evaluation):
    kinds = sorted({kind for by_kind in found.curves.values() for kind in by_kind})
    figure = Figure(figsize=(5 * len(kinds), 4))
    for k, kind in enumerate(kinds):
        axis = figure.add_subplot(1, len(kinds), k + 1)
        for method, by_kind in found.curves.items():
            if kind in by_kind:
                axis.plot(found.fractions[kind], np.concatenate(by_kind[kind]).mean(axis=0), label=method)
        axis.set(title=f'{kind} (mean over images)', xlabel='fraction of pixels', ylabel='target probability')
    handles, labels = axis.get_legend_handles_labels()
    figure.tight_layout()
    # beside the axes, where it hides no curve: up to 15 methods a column
    figure.legend(handles, labels, loc='upper left', bbox_to_anchor=(1.0, 0.95), fontsize=8,
                  ncol=1 + (len(labels) - 1) // 15)
    return figure


def _values_figure(Figure, stats):
    values = list(stats)
    columns = min(3 if len(stats[values[0]]) <= 12 else 2, len(values))  # fewer, wider panels for many bars
    rows = -(-len(values) // columns)
    width = max(5.0, 0.3 * len(stats[values[0]]))
    figure = Figure(figsize=(width * columns, 3.5 * rows))
    best = best_methods(stats)
    for k, value in enumerate(values):
        axis = figure.add_subplot(rows, columns, k + 1)
        methods = list(stats[value])
        means = np.array([stats[value][m][0] for m in methods])
        errors = np.array([[stats[value][m][0] - stats[value][m][1], stats[value][m][2] - stats[value][m][0]]
                           for m in methods]).T
        colors = ['tab:orange' if m in best[value] else 'tab:blue' for m in methods]
        axis.bar(range(len(methods)), means, yerr=errors, color=colors, capsize=3)
        axis.set_xticks(range(len(methods)))
        axis.set_xticklabels(methods, rotation=45, ha='right', fontsize=8)
        axis.set_title(f'{value} ({better(value)} is better)', fontsize=9)
    figure.tight_layout()
    return figure


def _randomization_figure(Figure, found: Evaluation, originals: Dict[str, np.ndarray]):
    """As Adebayo et al.'s Figure 2: per method (rows), the first image's map on the trained network and as layers
    are randomized from the top (columns, up to 6 steps evenly spaced); below, the similarity per step."""
    from .visualize import render
    methods = list(found.randomized)
    first = next(iter(found.randomized.values()))
    steps = np.unique(np.linspace(0, len(first.layers) - 1, min(6, len(first.layers))).astype(int))
    image_name = found.randomized_images[0]
    image = originals.get(image_name)
    figure = Figure(figsize=(2 * (len(steps) + 1), 2 * len(methods) + 3))
    grid = figure.add_gridspec(len(methods) + 1, len(steps) + 1, height_ratios=[1] * len(methods) + [1.5])
    for row, method in enumerate(methods):
        result = found.randomized[method]
        pictures = [result.trained_maps[0]] + [result.maps[step][0] for step in steps]
        titles = ['trained'] + [f'{step + 1} random\n(to {_short(result.layers[step])})' for step in steps]
        for column, (raw, title) in enumerate(zip(pictures, titles)):
            axis = figure.add_subplot(grid[row, column])
            raw = raw.asnumpy() if isinstance(raw, NDArray) else np.asarray(raw)
            background = image if image is not None else np.zeros(raw.shape[-2:] + (3,), np.uint8)
            axis.imshow(render(background, raw, method))
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=7)
            if column == 0:
                axis.set_ylabel(method, fontsize=8)
    axis = figure.add_subplot(grid[len(methods), :])
    for method in methods:
        axis.plot(found.randomized[method].spearman_abs.asnumpy().mean(axis=1), marker='.', label=method)
    axis.set(xlabel='layers randomized, from the top (cascading)', ylabel='Spearman |map| vs trained',
             ylim=(-1.05, 1.05))
    axis.legend(fontsize=8)
    return figure


def _short(layer: str, length: int = 16) -> str:
    """A block name without the network's prefix, at most ``length`` characters."""
    name = layer.split('_', 1)[-1]
    return name if len(name) <= length else '...' + name[-(length - 3):]
