"""``gluoncam explain`` over a dataset (classification): every image found, its outputs in a tree that mirrors the
inputs', an index of every outcome, resumable, on one or several contexts.

The run, step by step:

- :func:`plan_items` finds each image's output stem (``<rel_dir>/<stem>``, relative to the inputs' common root;
  two inputs of one folder sharing a stem keep their suffixes) and its true label (a class folder or ``--labels``);
- :func:`open_out` checks ``--out`` before any work and decides, from an earlier run's ``index.csv`` and its
  ``.gluoncam-run.json`` (the options that shaped the outputs), which images are already done (resumed) and which
  outputs are someone else's (kept unless ``--overwrite``);
- :func:`run_local` explains the rest: a reader thread decodes batches into a bounded queue, one thread per
  context explains them with that context's copy of the model, and the calling thread appends each image's index
  rows (flushed) once its files are in place, prints its predictions through the progress bar and, at the end,
  rewrites the index in input order (and ``index.parquet`` when pyarrow is installed).

Every file is written under a temporary name and renamed into place, so a killed run leaves no partial file
that looks complete; a rerun skips the images whose index rows say ``ok`` and whose files exist.
"""
import argparse
import csv
import importlib.util
import io
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import nd

from . import cams, cli, drawing, methods as catalog, threads
from .images import preprocess, read_rgb

INDEX = 'index.csv'
PARQUET = 'index.parquet'
RUN_FILE = '.gluoncam-run.json'
PARTIAL = '.partial'
COLUMNS = ('image', 'method', 'status', 'error', 'predicted_class', 'predicted_name', 'probability',
           'explained_class', 'explained_name', 'label', 'label_name', 'layer', 'seconds', 'panel', 'map',
           'context', 'worker')
KEPT_MESSAGE = 'its outputs existed before this run and were kept (pass --overwrite to replace them)'
_PYPLOT = threading.Lock()  # pyplot's figure registry is not thread-safe


@dataclass(frozen=True)
class Item:
    """One input image of the run."""
    number: int  # its position in the run: the index is in this order
    path: str  # as found
    image: str  # relative to the inputs' common root, '/' separators
    stem: str  # its outputs' path relative to OUT without the ending, '/' separators
    label: Optional[int] = None


@dataclass
class Outcome:
    """What explaining one image gave: its index rows, the line printed for it, and whether it failed."""
    item: Item
    rows: List[Dict[str, str]]
    line: str = ''
    failure: str = ''  # the one-line error of a failed explanation (not of an unreadable file)
    unreadable: bool = False


# ----------------------------------------------------------------------------------------------------------- items

def common_root(paths: Sequence[str]) -> str:
    """The deepest folder holding every one of ``paths``."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in paths])


def output_stems(relatives: Sequence[str], endings: Sequence[str]) -> List[str]:
    """Each input's output stem: its relative path without the suffix, or with it (``x.webp``) where two inputs
    of one folder share a stem; ``~2``, ``~3``, ... if some file would still collide (``a_guided.jpg``'s panel
    and ``a.jpg``'s ``guided-gradcam`` map). Output names are compared without case (case-insensitive disks)."""
    def bare(relative: str) -> str:
        return os.path.splitext(relative)[0]

    counts: Dict[str, int] = {}
    for relative in relatives:
        counts[bare(relative).lower()] = counts.get(bare(relative).lower(), 0) + 1
    claimed, stems = set(), []
    for relative in relatives:
        base = bare(relative) if counts[bare(relative).lower()] == 1 else relative
        stem, copy = base, 1
        while any((stem + ending).lower() in claimed for ending in endings):
            copy += 1
            stem = f'{base}~{copy}'
        claimed.update((stem + ending).lower() for ending in endings)
        stems.append(stem)
    return stems


def file_endings(methods: Sequence[str]) -> List[str]:
    """The endings of one image's files: its panel, then each method's map."""
    return ['.png'] + [f"_{method.replace('-', '_')}.npy" for method in methods]


def plan_items(paths: Sequence[str], methods: Sequence[str], names: Sequence[str],
               labels_csv: Optional[str] = None) -> List[Item]:
    """The run's images with their output stems and true labels (``labels_csv`` or class folder names)."""
    root = common_root(paths)
    relatives = [os.path.relpath(os.path.abspath(path), root).replace(os.sep, '/') for path in paths]
    stems = output_stems(relatives, file_endings(methods))
    if labels_csv:
        labels = read_labels(labels_csv, paths, relatives, names)
    else:
        labels = [class_id(os.path.basename(os.path.dirname(os.path.abspath(path))), names) for path in paths]
    return [Item(k, path, relative, stem, label)
            for k, (path, relative, stem, label) in enumerate(zip(paths, relatives, stems, labels))]


def class_id(text: str, names: Sequence[str]) -> Optional[int]:
    """The class ``text`` names (an id, or a name in any case, '_' or '-' for spaces); None if none."""
    text = text.strip()
    if text.isdigit():
        return int(text) if int(text) < len(names) else None
    wanted = _normalized(text)
    return next((k for k, name in enumerate(names) if _normalized(name) == wanted), None)


def _normalized(name: str) -> str:
    return ' '.join(name.lower().replace('_', ' ').replace('-', ' ').split())


def read_labels(path: str, paths: Sequence[str], relatives: Sequence[str], names: Sequence[str]) \
        -> List[Optional[int]]:
    """Each image's class from a CSV of rows ``image,label`` (a header row allowed): the image by its path
    relative to the common root, its path as given, or its file name where that is unique; the label a class id or
    name. Images the file does not name get None."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--labels {path!r}: no such file")
    keys: Dict[str, int] = {}
    for k, (given, relative) in enumerate(zip(paths, relatives)):
        keys[relative] = keys[os.path.abspath(given)] = k
    by_name: Dict[str, List[int]] = {}
    for k, given in enumerate(paths):
        by_name.setdefault(os.path.basename(given), []).append(k)
    labels: List[Optional[int]] = [None] * len(paths)
    with open(path, newline='') as rows:
        for number, row in enumerate(csv.reader(rows), 1):
            if not row or (number == 1 and [cell.strip().lower() for cell in row[:2]] == ['image', 'label']):
                continue
            if len(row) != 2:
                raise ValueError(f"--labels {path!r} line {number}: expected image,label, got {','.join(row)!r}")
            image, label = row[0].strip(), row[1].strip()
            found = class_id(label, names)
            if found is None:
                raise ValueError(f"--labels {path!r} line {number}: {label!r} is neither a class id (0.."
                                 f"{len(names) - 1}) nor a class name of the model")
            matches = [keys[image]] if image in keys else [keys[os.path.abspath(image)]] \
                if os.path.abspath(image) in keys else by_name.get(image, [])
            if len(matches) == 1:
                labels[matches[0]] = found
    return labels


# ------------------------------------------------------------------------------------------------------ the output

def check_out(out: str) -> None:
    """A ValueError, before any work, if ``out`` is a file, lies under a file, or cannot be written to."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder: choose a folder for the panels, maps and index")
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--out {out!r} cannot be made: {existing!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out!r} is not writable (no write permission on {existing!r})")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f'.gluoncam-write-test-{os.getpid()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"--out {out!r} is not writable: {error.strerror or error}") from None


@dataclass
class Resume:
    """What an earlier run in OUT left: the rows of the images done, and the images whose outputs are kept."""
    rows: Dict[int, List[Dict[str, str]]] = field(default_factory=dict)  # item number -> its carried rows
    kept: List[Item] = field(default_factory=list)

    def todo(self, items: Sequence[Item]) -> List[Item]:
        skipped = set(self.rows) | {item.number for item in self.kept}
        return [item for item in items if item.number not in skipped]


def run_options(args: argparse.Namespace, job) -> Dict[str, object]:
    """The options that shape the outputs; a rerun in the same OUT resumes only if they are the same."""
    weights = os.path.abspath(args.params) if args.params else 'random' if args.random_weights else 'pretrained'
    return {'task': job.task, 'model': job.model.lower(), 'weights': weights, 'size': list(job.size),
            'layer': job.layer, 'methods': list(job.methods), 'class': args.class_id}


def open_out(out: str, items: Sequence[Item], options: Dict[str, object], overwrite: bool) -> Resume:
    """Prepare OUT for the run and say what an earlier one left there: with the same options, the images whose
    index rows say ok and whose files exist are done; without an earlier gluoncam run, any image whose outputs
    exist is kept (unless ``overwrite``). An earlier run with other options is an error unless ``overwrite``."""
    run_file, index = os.path.join(out, RUN_FILE), os.path.join(out, INDEX)
    earlier = _read_json(run_file)
    if earlier is not None and earlier != options and not overwrite:
        changed = ', '.join(f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in options.items()
                            if earlier.get(key) != value)
        raise ValueError(f"--out {out!r} holds the results of a run with other options ({changed}): pass "
                         f"--overwrite to replace them, or choose another --out")
    resume, methods = Resume(), list(options['methods'])
    if not overwrite and earlier is not None:
        rows = read_index(index)
        resume.rows = done_rows(rows, items, methods, out)
        kept = {row['image'] for row in rows if row['status'] == 'skipped'}
        resume.kept = [item for item in items if item.image in kept and item.number not in resume.rows
                       and _has_outputs(out, item, methods)]
    elif not overwrite:
        resume.kept = [item for item in items if _has_outputs(out, item, methods)]
    remove_partial_files(out)
    _atomic_write(run_file, lambda file: file.write(json.dumps(options, indent=1).encode()))
    write_index(index, [row for number in sorted(resume.rows) for row in resume.rows[number]])
    return resume


def _has_outputs(out: str, item: Item, methods: Sequence[str]) -> bool:
    return any(os.path.exists(os.path.join(out, item.stem + ending)) for ending in file_endings(methods))


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # unreadable: treated as a run with other options


def read_index(path: str) -> List[Dict[str, str]]:
    """The rows of an index; a last line cut short by a killed run is left out."""
    try:
        with open(path, newline='') as file:
            text = file.read()
    except FileNotFoundError:
        return []
    if not text.endswith('\n'):
        text = text[:text.rfind('\n') + 1]
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != COLUMNS:
        raise ValueError(f"{path!r} is not an index of this gluoncam (its columns differ): pass --overwrite to "
                         f"replace it, or choose another --out")
    return [dict(zip(COLUMNS, row)) for row in reader if len(row) == len(COLUMNS)]


def done_rows(rows: Sequence[Dict[str, str]], items: Sequence[Item], methods: Sequence[str], out: str) \
        -> Dict[int, List[Dict[str, str]]]:
    """The earlier rows of each image done: an ok row for every method, and every file they name in place."""
    by_image: Dict[Tuple[str, str], Dict[str, str]] = {(row['image'], row['method']): row for row in rows}
    done = {}
    for item in items:
        found = [by_image.get((item.image, method)) for method in methods]
        if all(row is not None and row['status'] == 'ok' and _files_exist(out, row) for row in found):
            done[item.number] = found
    return done


def _files_exist(out: str, row: Dict[str, str]) -> bool:
    return all(row[key] and os.path.isfile(os.path.join(out, row[key])) for key in ('panel', 'map'))


def remove_partial_files(out: str) -> None:
    """The temporary files a killed run left (never mistaken for outputs: hidden, ending in '.partial')."""
    for directory, _, names in os.walk(out):
        for name in names:
            if name.startswith('.') and name.endswith(PARTIAL):
                os.remove(os.path.join(directory, name))


def _atomic_write(path: str, write: Callable[[io.BufferedWriter], object]) -> None:
    """``write`` into a temporary file next to ``path``, then rename it to ``path`` (readers never see half)."""
    folder, name = os.path.split(path)
    os.makedirs(folder or '.', exist_ok=True)
    temporary = os.path.join(folder, f'.{name}.{os.getpid()}-{threading.get_ident()}{PARTIAL}')
    try:
        with open(temporary, 'wb') as file:
            write(file)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _csv_text(rows: Iterable[Dict[str, str]], header: bool = False) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    if header:
        writer.writerow(COLUMNS)
    writer.writerows([row.get(column, '') for column in COLUMNS] for row in rows)
    return text.getvalue()


def write_index(path: str, rows: Sequence[Dict[str, str]]) -> None:
    """The whole index, replaced at once."""
    _atomic_write(path, lambda file: file.write(_csv_text(rows, header=True).encode()))


class IndexAppender:
    """Appends one image's rows at a time to the index, each flushed to disk before the next image."""

    def __init__(self, path: str):
        self.path = path
        self.file = open(path, 'a', newline='')

    def append(self, rows: Sequence[Dict[str, str]]) -> None:
        self.file.write(_csv_text(rows))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def write_parquet(out: str) -> Optional[str]:
    """``index.parquet`` beside ``index.csv`` (typed columns) when pyarrow is installed; its path, else None."""
    if importlib.util.find_spec('pyarrow') is None:  # pandas writes Parquet through pyarrow
        return None
    import pandas as pd
    table = pd.read_csv(os.path.join(out, INDEX), dtype=str, keep_default_na=False)
    for column in ('predicted_class', 'explained_class', 'label'):
        table[column] = pd.to_numeric(table[column].replace('', None)).astype('Int64')
    for column in ('probability', 'seconds'):
        table[column] = pd.to_numeric(table[column].replace('', None)).astype('float64')
    path = os.path.join(out, PARQUET)
    _atomic_write(path, lambda file: table.to_parquet(file, index=False))
    return path


# ------------------------------------------------------------------------------------------ explaining one batch

@dataclass
class Model:
    """One copy of the model on one context, with the run's plan for it."""
    job: 'cli.Job'
    context: str  # as the index names it, e.g. 'cpu(0)'


def load_net(args: argparse.Namespace, ctx: mx.Context):
    """The model on ``ctx``; random weights are seeded, so that every copy (every context, every Dask worker,
    every rerun) has the same ones."""
    if args.random_weights and not args.params:
        mx.random.seed(0)
    return cli.load_model(args, ctx)


def load_copy(args: argparse.Namespace, ctx: mx.Context, net=None) -> Model:
    """The model on ``ctx`` (``net`` if given), planned for the run."""
    net = net if net is not None else load_net(args, ctx)
    job = cli.plan(args, net, ctx)
    if args.random_weights and not args.params:
        cli.settle_shapes(net, job.size, ctx)  # deferred shapes drawn now, under the seed
    return Model(job, str(ctx))


def read_batch(model: Model, items: Sequence[Item]) -> Tuple[List[Tuple[Item, Optional[np.ndarray], str]],
                                                              Optional[nd.NDArray]]:
    """The batch decoded: (item, image or None, read error) each, and the readable ones preprocessed (on CPU)."""
    read = []
    for item in items:
        try:
            read.append((item, read_rgb(item.path), ''))
        except ValueError as error:
            read.append((item, None, str(error)))
    images = [image for _, image, _ in read if image is not None]
    if not images:
        return read, None
    with threads.lock:
        return read, nd.concat(*[preprocess(image, model.job.net, model.job.size) for image in images], dim=0)


def explain_batch(model: Model, out: str, read: Sequence[Tuple[Item, Optional[np.ndarray], str]],
                  x: Optional[nd.NDArray], worker: str = '') -> List[Outcome]:
    """Explain one decoded batch and write each image's panel and maps: its outcomes, in the batch's order. A
    batch that fails is explained image by image, so that one bad image fails alone."""
    outcomes = {item.number: Outcome(item, error_rows(item, model, error, worker), unreadable=True)
                for item, image, error in read if image is None}
    readable = [(item, image) for item, image, _ in read if image is not None]
    if readable:
        try:
            outcomes.update(_explained(model, out, readable, x, worker))
        except Exception:  # noqa: B902 (any failure is isolated, then reported per image)
            for k, (item, image) in enumerate(readable):
                try:
                    with threads.lock:
                        row = x[k:k + 1]
                    outcomes.update(_explained(model, out, [(item, image)], row, worker))
                except Exception as error:  # noqa: B902
                    message = one_line(error)
                    outcomes[item.number] = Outcome(item, error_rows(item, model, message, worker), failure=message)
    return [outcomes[item.number] for item, _, _ in read]


def _explained(model: Model, out: str, readable: Sequence[Tuple[Item, np.ndarray]], x: nd.NDArray,
               worker: str) -> Dict[int, Outcome]:
    job = model.job
    started = time.perf_counter()
    with threads.lock, cli.explainer_of(job.net) as explainer:  # see threads: one thread runs MXNet at a time
        probabilities, predicted, explained, raw = classify(explainer, job, x.as_in_context(job.ctx))
    shared = (time.perf_counter() - started) / len(readable)
    names = cli._names_for(job.names, probabilities.shape[1])
    outcomes = {}
    for i, (item, image) in enumerate(readable):
        started = time.perf_counter()
        own = {method: values[i] for method, values in raw.items()}
        top = np.argsort(-probabilities[i])[:job.args.top_k]
        line = f"{item.path}: " + ', '.join(f"{names[k]} ({k}) {probabilities[i, k]:.3f}" for k in top)
        cls = int(explained[i])
        title = f"{names[cls]} ({cls}), p = {probabilities[i, cls]:.3f} ({job.model})"
        paths = write_outputs(out, item.stem, image, own, title, job.layer)
        seconds = shared + time.perf_counter() - started
        rows = ok_rows(item, model, probabilities[i], int(predicted[i]), cls, names, paths, seconds, worker)
        outcomes[item.number] = Outcome(item, rows, line)
    return outcomes


def classify(explainer, job, x: nd.NDArray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
    """The batch's class probabilities (N x classes), the predicted class of each image (the top score, taken
    before the softmax rounds near ties together), the class explained, and each method's raw maps (numpy,
    N x ...): one recorded pass serves the methods that need no passes of their own."""
    methods, layer, batch_size = job.methods, job.layer, job.args.batch_size
    result = explainer.backprop(x, job.target, [layer], cli.modes_for(methods))
    probabilities = nd.softmax(result.output).asnumpy()
    raw = cli.method_maps(result, x, layer, methods)
    target = result.classes if job.target is None else job.target
    scored = [m for m in methods if m in cams.CAM_METHODS and m not in raw and catalog.METHODS[m].uses_layer]
    if scored:  # CAMs with passes of their own (Score-CAM, Ablation-CAM, Shapley-CAM, ...): one shared call
        raw.update({method: values.asnumpy() for method, values in
                    cams.cam(job.net, x, layer, scored, target, batch_size=batch_size).items()})
    raw.update({method: catalog.make(method, job.net, x, layer, target, batch_size).asnumpy()
                for method in methods if method not in raw})
    predicted = nd.argmax(result.output, axis=1).asnumpy().astype(int)
    return probabilities, predicted, result.classes.asnumpy().astype(int), {method: raw[method] for method in methods}


def write_outputs(out: str, stem: str, image: np.ndarray, raw: Dict[str, np.ndarray], title: str,
                  layer: str) -> Dict[str, str]:
    """The maps, then the panel, each written whole under a temporary name and renamed: the paths relative to
    OUT, by method and 'panel'."""
    paths = {}
    for method, values in raw.items():
        paths[method] = f"{stem}_{method.replace('-', '_')}.npy"
        _atomic_write(os.path.join(out, paths[method]), lambda file, values=values: np.save(file, values))
    panels = [drawing.Panel('original', image)] + cli.map_panels(image, raw, layer)
    picture = io.BytesIO()
    with _PYPLOT:
        drawing.save_panels(picture, panels, title, columns=len(panels))
    paths['panel'] = stem + '.png'
    _atomic_write(os.path.join(out, paths['panel']), lambda file: file.write(picture.getvalue()))
    return paths


def ok_rows(item: Item, model: Model, probabilities: np.ndarray, predicted: int, explained: int,
            names: Sequence[str], paths: Dict[str, str], seconds: float, worker: str) -> List[Dict[str, str]]:
    common = {'image': item.image, 'status': 'ok', 'error': '', 'predicted_class': str(predicted),
              'predicted_name': names[predicted], 'probability': f'{probabilities[predicted]:.6f}',
              'explained_class': str(explained), 'explained_name': names[explained], 'seconds': f'{seconds:.3f}',
              'panel': paths['panel'], 'context': model.context, 'worker': worker, **_label_cells(item, names)}
    return [dict(common, method=method, map=paths[method], layer=_layer_of(method, model.job.layer))
            for method in model.job.methods]


def error_rows(item: Item, model: Model, message: str, worker: str, status: str = 'error',
               panel: str = '', maps: Optional[Dict[str, str]] = None) -> List[Dict[str, str]]:
    names = model.job.names
    return [{'image': item.image, 'method': method, 'status': status, 'error': message, 'panel': panel,
             'map': (maps or {}).get(method, ''), 'layer': _layer_of(method, model.job.layer),
             'context': model.context, 'worker': worker, **_label_cells(item, names)}
            for method in model.job.methods]


def kept_rows(item: Item, model: Model, out: str) -> List[Dict[str, str]]:
    """The rows of an image whose outputs existed and were kept: status 'skipped', the files that exist named."""
    endings = dict(zip(['panel'] + list(model.job.methods), file_endings(model.job.methods)))
    present = {key: item.stem + ending for key, ending in endings.items()
               if os.path.isfile(os.path.join(out, item.stem + ending))}
    return error_rows(item, model, KEPT_MESSAGE, '', 'skipped', present.pop('panel', ''), present)


def _label_cells(item: Item, names: Sequence[str]) -> Dict[str, str]:
    if item.label is None:
        return {'label': '', 'label_name': ''}
    return {'label': str(item.label), 'label_name': names[item.label] if item.label < len(names) else ''}


def _layer_of(method: str, layer: str) -> str:
    return layer if catalog.METHODS[method].uses_layer else ''


def one_line(error: BaseException) -> str:
    """An exception as one line: the last line of MXNet's multi-line errors (the check that failed), the first of
    any other; named by its type unless it is a ValueError or RuntimeError (gluoncam's own messages)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if isinstance(error, mx.base.MXNetError):
        return 'MXNetError: ' + lines[-1].replace('MXNetError: ', '')
    return lines[0] if type(error) in (ValueError, RuntimeError) else f"{type(error).__name__}: {lines[0]}"


# ------------------------------------------------------------------------------------------------ the local run

def batches(items: Sequence[Item], size: int) -> Iterator[List[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def run_local(models: Sequence[Model], out: str, todo: Sequence[Item], batch_size: int,
              consume: Callable[[List[Outcome]], None]) -> None:
    """Explain ``todo`` on every model copy, one thread each, fed through a bounded queue of decoded batches by a
    reader thread; ``consume`` (this thread) gets each batch's outcomes as they come. An exception of ``consume``
    stops the run: the threads finish their batch and end."""
    work: 'queue.Queue' = queue.Queue(maxsize=2 * len(models))
    results: 'queue.Queue' = queue.Queue()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                work.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for batch in batches(todo, batch_size):
                if not put(read_batch(models[0], batch)):
                    return
        except BaseException as error:  # noqa: B902 (handed to the main thread)
            results.put(error)
        finally:
            for _ in models:
                put(None)

    def explainer(model: Model) -> None:
        try:
            with cli.explainer_of(model.job.net):  # the network stays prepared across batches
                while not stop.is_set():
                    try:
                        batch = work.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if batch is None:
                        break
                    results.put(explain_batch(model, out, *batch))
        except BaseException as error:  # noqa: B902
            results.put(error)
        finally:
            results.put(None)

    workers = [threading.Thread(target=reader, daemon=True, name='gluoncam-reader')]
    workers += [threading.Thread(target=explainer, args=(model,), daemon=True, name=f'gluoncam-{model.context}')
                for model in models]
    for thread in workers:
        thread.start()
    running = len(models)
    try:
        while running:
            result = results.get()
            if result is None:
                running -= 1
            elif isinstance(result, BaseException):
                raise result
            else:
                consume(result)
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=600)


# ------------------------------------------------------------------------------------------------------ the run

@dataclass
class Tally:
    """What the run did, for the summary line and the exit status."""
    explained: int = 0
    errors: int = 0
    resumed: int = 0
    kept: int = 0
    started: float = field(default_factory=time.perf_counter)


class Recorder:
    """Consumes outcomes on the calling thread: index rows appended (after the files are in place), predictions
    printed through the progress bar, the tally kept. A failed explanation before any success (a problem of the
    options, not of one image: a layer Grad-CAM cannot use, say) stops the run with that error."""

    def __init__(self, out: str, total: int, tally: Tally):
        self.index = IndexAppender(os.path.join(out, INDEX))
        self.rows: Dict[int, List[Dict[str, str]]] = {}
        self.tally = tally
        self.bar = progress_bar(total)

    def __call__(self, outcomes: Sequence[Outcome]) -> None:
        """One batch's outcomes."""
        succeeded = self.tally.explained + sum(not (o.failure or o.unreadable) for o in outcomes)
        failed = next((outcome.failure for outcome in outcomes if outcome.failure), '')
        if failed and not succeeded:
            raise ValueError(failed)
        for outcome in outcomes:
            self.record(outcome)

    def record(self, outcome: Outcome) -> None:
        self.index.append(outcome.rows)
        self.rows[outcome.item.number] = outcome.rows
        if outcome.unreadable or outcome.failure:
            self.tally.errors += 1
            self.say(f"error: {outcome.rows[0]['error']}" if outcome.unreadable else
                     f"{outcome.item.path}: error: {outcome.failure}", sys.stderr)
        else:
            self.tally.explained += 1
            self.say(outcome.line)
        cli.advance(self.bar, 1)

    def say(self, line: str, file=None) -> None:
        """A line printed above the progress bar (never into it)."""
        file = file or sys.stdout
        if self.bar is None:
            print(line, file=file)
        else:
            self.bar.write(line, file=file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.index.close()


def progress_bar(total: int):
    """A progress bar on stderr for more than three images."""
    if total <= 3:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc='explaining', unit='image', file=sys.stderr)


def explain_dataset(args: argparse.Namespace, paths: Sequence[str], first: Model,
                    contexts: Sequence[mx.Context]) -> int:
    """``gluoncam explain`` of a classifier over ``paths`` (``first``: the model on the first context), ``--out``
    checked already: see the module's docstring."""
    items = plan_items(paths, first.job.methods, first.job.names, args.labels)
    note_labels(items, args.labels)
    resume = open_out(args.out, items, run_options(args, first.job), args.overwrite)
    tally = Tally(resumed=len(resume.rows), kept=len(resume.kept))
    todo = resume.todo(items)
    recorder = Recorder(args.out, len(todo), tally)
    try:
        for item in resume.kept:
            recorder.rows[item.number] = kept_rows(item, first, args.out)
            recorder.index.append(recorder.rows[item.number])
        if todo and args.dask:
            from .dask_run import run_on_dask
            run_on_dask(args, args.dask, todo, recorder)
        elif todo:
            needed = -(-len(todo) // args.batch_size)  # no more copies than batches
            models = [first] + [load_copy(args, ctx) for ctx in contexts[1:needed]]
            run_local(models, args.out, todo, args.batch_size, recorder)
    finally:
        recorder.close()
    rows = {**resume.rows, **recorder.rows}
    write_index(os.path.join(args.out, INDEX), [row for number in sorted(rows) for row in rows[number]])
    parquet = write_parquet(args.out)
    remove_partial_files(args.out)  # any a lost Dask worker left
    from .report import write_report
    write_report(args.out)
    summarize(args, tally, contexts, parquet)
    return 1 if tally.errors else 0


def note_labels(items: Sequence[Item], labels_csv: Optional[str]) -> None:
    labelled = sum(item.label is not None for item in items)
    if labelled:
        source = f'--labels {labels_csv}' if labels_csv else 'class folder names'
        print(f"labels: {labelled} of {len(items)} image(s), from {source}")


def summarize(args: argparse.Namespace, tally: Tally, contexts: Sequence[mx.Context], parquet: Optional[str]) -> None:
    seconds = max(time.perf_counter() - tally.started, 1e-6)
    where = f"Dask cluster {args.dask}" if args.dask else ', '.join(map(str, contexts))
    out = os.path.abspath(args.out)
    print(f"wrote panels and maps of {tally.explained} image(s) to {out} in {seconds:.1f} s "
          f"({tally.explained / seconds:.2f} images/s on {where}); index: {INDEX}"
          + (f", {PARQUET}" if parquet else '') + "; report: index.html")
    notes = [f"{tally.resumed} done before (resumed)" if tally.resumed else '',
             f"{tally.kept} skipped: their outputs existed and were kept (--overwrite replaces them)"
             if tally.kept else '',
             f"{tally.errors} failed (see the index's error column)" if tally.errors else '']
    if any(notes):
        print('; '.join(note for note in notes if note), file=sys.stderr if tally.errors else sys.stdout)
