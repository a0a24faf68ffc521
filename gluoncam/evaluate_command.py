"""``gluoncam evaluate IMAGE...``: methods scored by metrics on the images; a CSV of every value, a markdown summary
and figures."""
import csv
import math
import os
import sys
from typing import Dict, List, Tuple

import numpy as np
from mxnet import nd

from . import evaluation, methods as catalog, zoo
from .cli import _batches, add_model_options, load_model, name_index, parse_context
from .images import find_images, preprocess, read_rgb
from .layers import named_blocks
from .metrics import catalog as metric_catalog

DEFAULT_METHODS = 'gradcam,gradcam++,saliency,random'
DEFAULT_METRICS = 'deletion,insertion,confidence'


def add_evaluate(commands) -> None:
    command = commands.add_parser('evaluate', help='score explanation methods by faithfulness metrics and sanity '
                                                   'checks, on the same model and images as explain')
    command.add_argument('images', nargs='+', help='image files, folders or glob patterns')
    add_model_options(command)
    command.add_argument('--methods', default=DEFAULT_METHODS,
                         help=f"comma-separated methods (default: %(default)s); any of {', '.join(catalog.METHODS)}")
    command.add_argument('--metrics', default=DEFAULT_METRICS,
                         help=f"comma-separated metrics (default: %(default)s), or 'all' (every one but pointing); "
                              f"any of {', '.join(metric_catalog.METRICS)}")
    command.add_argument('--class', dest='class_id', metavar='NAME',
                         help='class id or name to explain in every image (default: each one\'s predicted class)')
    command.add_argument('--boxes', metavar='CSV',
                         help='objects for the pointing games: rows image,x1,y1,x2,y2 in the original image\'s '
                              'pixels (image: its path or file name; several rows per image allowed)')
    command.add_argument('--steps', type=int, default=50, help='points of the deletion and insertion curves')
    command.add_argument('--seed', type=int, default=0, help='seed of every random draw (default: 0)')
    command.add_argument('--out', default='gluoncam-eval',
                         help='folder for results.csv, summary.md and the figures (default: %(default)s)')


def evaluate(args) -> int:
    if args.batch_size < 1 or args.steps < 1:
        raise ValueError("--batch-size and --steps must be at least 1")
    method_names = _method_names(args.methods)
    metric_names = metric_catalog.metric_names(args.metrics)
    paths = find_images(args.images)
    net = load_model(args, parse_context(args.ctx))
    if args.layer == 'list':
        print('\n'.join(named_blocks(net)))
        return 0
    if zoo.task_of(net) != 'classify':
        raise ValueError(f"evaluate scores class explanations; {args.model} is a {zoo.task_of(net)} model")
    layer, size = args.layer or zoo.default_layer(net), args.size or zoo.input_size(net)
    names = zoo.class_names(net)
    target = None if args.class_id is None else name_index(args.class_id, names, '--class', 'class')
    boxes_read = _read_boxes(args.boxes) if args.boxes else None
    if 'pointing' in metric_names and boxes_read is None:
        raise ValueError("the pointing metric needs the objects' boxes: pass --boxes CSV")
    os.makedirs(args.out, exist_ok=True)
    originals, boxes, failures = {}, {}, []
    bar = _progress_bar(math.ceil(len(paths) / args.batch_size) * len(method_names))

    def batches():
        for batch in _batches(paths, args.batch_size):
            images = {}
            for path in batch:
                try:
                    images[path] = read_rgb(path)
                except ValueError as error:
                    bar.write(f"skipped: {error}", file=sys.stderr)
                    failures.append(path)
            if not images:
                bar.update(len(method_names))
                continue
            originals.update(images)
            if boxes_read is not None:
                boxes.update({path: _scaled(_boxes_for(boxes_read, path), image.shape[:2], size)
                              for path, image in images.items()})
            x = nd.concat(*[preprocess(image, net, size) for image in images.values()], dim=0)
            yield list(images), x.as_in_context(parse_context(args.ctx))

    found = evaluation.evaluate(net, batches(), method_names, metric_names, layer, target, args.batch_size,
                                args.seed, args.steps, boxes, progress=bar.update)
    bar.close()
    if not found.rows:
        raise ValueError("no image could be read, so nothing was scored")
    _write_outputs(found, args.out, originals, args.seed)
    if failures:
        print(f"{len(failures)} file(s) could not be read", file=sys.stderr)
    return 1 if failures else 0


def _method_names(text: str) -> List[str]:
    names = list(dict.fromkeys(name for name in text.split(',') if name))
    unknown = [name for name in names if name not in catalog.METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method {unknown[0] if unknown else text!r}; valid: {', '.join(catalog.METHODS)}")
    return names


def _write_outputs(found: evaluation.Evaluation, out: str, originals: Dict[str, np.ndarray], seed: int) -> None:
    evaluation.write_csv(found.rows, os.path.join(out, 'results.csv'))
    table = evaluation.summary(found.rows, seed)
    with open(os.path.join(out, 'summary.md'), 'w') as summary:
        summary.write(table + '\n\n' + found.timing() + '\n')
    figures = evaluation.save_figures(found, os.path.join(out, 'figure'), originals)
    print(table + '\n\n' + found.timing())
    print(f"\nwrote results.csv, summary.md and {len(figures)} figure(s) to {os.path.abspath(out)}")


def _read_boxes(path: str) -> Dict[str, List[Tuple[float, ...]]]:
    """image -> boxes from a CSV of rows image,x1,y1,x2,y2 (a header row is allowed)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--boxes {path!r}: no such file")
    boxes: Dict[str, List[Tuple[float, ...]]] = {}
    with open(path, newline='') as rows:
        for number, row in enumerate(csv.reader(rows), 1):
            if not row or (number == 1 and row[0].strip().lower() == 'image'):
                continue
            try:
                box = tuple(float(value) for value in row[1:5])
            except ValueError:
                box = ()
            if len(row) != 5 or len(box) != 4:
                raise ValueError(f"--boxes {path!r} line {number}: expected image,x1,y1,x2,y2, got {','.join(row)!r}")
            boxes.setdefault(row[0].strip(), []).append(box)
    return boxes


def _boxes_for(boxes: Dict[str, list], path: str) -> list:
    found = boxes.get(path) or boxes.get(os.path.basename(path))
    if not found:
        raise ValueError(f"--boxes has no box for {path!r} (rows are matched by path or by file name)")
    return found


def _scaled(boxes: list, image_size: Tuple[int, int], size: Tuple[int, int]) -> np.ndarray:
    """Boxes in the original image's pixels mapped onto the network input's."""
    scale = np.array([size[1] / image_size[1], size[0] / image_size[0]] * 2)
    return np.asarray(boxes, dtype=np.float64) * scale


def _progress_bar(total: int):
    from tqdm import tqdm
    return tqdm(total=total, desc='evaluating', unit='method x batch', file=sys.stderr)
