"""Benchmark: every gluoncam explanation method against a plain forward + backward of the same network (CPU).

Run from the repository root:

    python bench/methods.py                                        # VGG-16 and Lite0, batch 1 and 16 (~12 min, 2 cores)
    python bench/methods.py --models efficientnet_lite0 --batch-sizes 1 --repeats 3

For each model and batch size it reports each method's time per image and its ratio to the baseline, one
``with autograd.record(train_mode=False): out = net(x)`` + ``out.backward(one_hot(argmax))`` of the same batch,
timed in the same run (parameter gradients on, ``grad_req='write'``, as a user's own backward would have).
Every timing waits for MXNet's engine (``nd.waitall()``) before the clock stops; the median of ``--repeats`` runs
is reported.

Warm-up (``--warmup shape``, the default): a measurement is first run once, untimed, unless every batch shape it
runs (forward / backward, by row count) has already run in this process; the baseline, warmed up once at each
batch size, warms that batch size's forward and backward. ``--warmup each`` warms every measurement up itself.

Methods with many passes are too slow to run in full at batch 16 within a few minutes on 2 cores, so:

- SmoothGrad / Integrated Gradients run in full when the images x samples (steps) rows fit in ``--max-rows``;
  otherwise they are timed with fewer samples (steps), and the missing rows are added at the measured cost of one
  ``Explainer.backprop`` of ``--inner-batch`` rows (the chunk they run in): "extrapolated from s samples".
- Score-CAM / Ablation-CAM need one forward pass per channel of the layer and image (512 for VGG-16
  ``features.28``, 1280 for Lite0 ``features.17``). Their setup (the recorded forward, the target scores) is timed
  as is; their weights are computed with gluoncam's own ``Scorer`` over the first k channels only (k =
  ``--score-channels`` / batch size, so about ``--score-channels`` forward rows at every batch size) and that time
  is scaled by C / k: "extrapolated from k channels". With k >= C, ``cam()`` itself is timed.
"""
import argparse
import os
import platform
import resource
import statistics
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import nd

from baseline import user_backward  # bench/ is on sys.path when a script here runs

import gluoncam
from gluoncam import cams, gradients, maps
from gluoncam.cams import ScoreCAM, Scorer, target_scores
from gluoncam.inputs import classes_for
from gluoncam.layers import display_name

MODELS = {
    # name: (short label, CAM layer, pretrained weights)
    'vgg16': ('VGG-16', 'features.28', False),
    'efficientnet_lite0': ('Lite0', 'features.17', True),
}
CAM_GRADIENT = ('gradcam', 'gradcam++', 'xgradcam', 'hirescam', 'layercam')
CAM_LABELS = {'gradcam': 'Grad-CAM', 'gradcam++': 'Grad-CAM++', 'xgradcam': 'XGrad-CAM', 'hirescam': 'HiResCAM',
              'layercam': 'Layer-CAM', 'eigencam': 'Eigen-CAM', 'scorecam': 'Score-CAM',
              'ablationcam': 'Ablation-CAM'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default='vgg16,efficientnet_lite0',
                        help=f"comma-separated, of {', '.join(MODELS)} (default: both)")
    parser.add_argument('--batch-sizes', default='1,16', help='comma-separated batch sizes (default: 1,16)')
    parser.add_argument('--repeats', type=int, default=1, help='timed runs per measurement; median (default: 1)')
    parser.add_argument('--smoothgrad-samples', type=int, default=8, help='SmoothGrad samples (default: 8)')
    parser.add_argument('--ig-steps', type=int, default=16, help='Integrated Gradients steps (default: 16)')
    parser.add_argument('--inner-batch', type=int, default=16,
                        help='batch_size (rows per backward) of SmoothGrad and Integrated Gradients (default: 16)')
    parser.add_argument('--max-rows', type=int, default=16,
                        help='SmoothGrad / IG run in full up to this many rows (images x samples), else they are '
                             'extrapolated (default: 16)')
    parser.add_argument('--score-channels', type=int, default=64,
                        help='Score-/Ablation-CAM: about this many forward rows are timed (K / batch size '
                             'channels per image) and scaled to all channels (default: 64)')
    parser.add_argument('--cam-batch', type=int, default=32,
                        help='batch_size (rows per forward) of Score-CAM and Ablation-CAM (default: 32, as cam())')
    parser.add_argument('--warmup', choices=('shape', 'each'), default='shape',
                        help="'shape': warm up a measurement unless its batch shapes already ran (default); "
                             "'each': warm up every measurement")
    parser.add_argument('--methods', default='',
                        help='comma-separated subset of the method keys (default: all); see the log for keys')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(',') if m.strip()]
    for model in args.models:
        if model not in MODELS:
            parser.error(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.models or not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error('need at least one model and positive batch sizes')
    for name in ('repeats', 'smoothgrad_samples', 'ig_steps', 'inner_batch', 'max_rows', 'score_channels',
                 'cam_batch'):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.methods = {m.strip() for m in args.methods.split(',') if m.strip()}
    return args


def chunk_rows(rows, batch):
    """The row counts of the chunks that ``rows`` rows run in, ``batch`` at a time."""
    sizes = {batch} if rows >= batch else set()
    if rows % batch:
        sizes.add(rows % batch)
    return sizes


class Timer:
    """Times callables after the warm-up that ``--warmup`` asks for; remembers the batch shapes that ran."""

    def __init__(self, warmup, repeats):
        self.warmup, self.repeats, self.seen = warmup, repeats, set()

    def __call__(self, fn, shapes, warmup_fn=None):
        """Median wall time of ``fn()`` (and of each part it returns, a dict of seconds); ``shapes`` are the
        batch shapes it runs; ``warmup_fn`` (default ``fn``) runs them once first where needed."""
        shapes = set(shapes)
        if self.warmup == 'each' or not shapes <= self.seen:
            (warmup_fn or fn)()
            nd.waitall()
        self.seen |= shapes
        walls, parts = [], []
        for _ in range(self.repeats):
            nd.waitall()
            start = time.perf_counter()
            part = fn()
            nd.waitall()
            walls.append(time.perf_counter() - start)
            parts.append(part if isinstance(part, dict) else {})
        medians = {key: statistics.median(p[key] for p in parts) for key in parts[0]}
        return statistics.median(walls), medians


def run_model(args, model, timer, log):
    label, layer, pretrained = MODELS[model]
    ctx = mx.cpu()
    net = gluoncam.models.get_model(model, pretrained=pretrained, ctx=ctx)
    if not pretrained:
        net.initialize(mx.init.Xavier(), ctx=ctx)
    name = display_name(layer)
    probe, acts = gluoncam.Explainer(net).forward(nd.zeros((1, 3, 224, 224), ctx=ctx), [layer])
    channels = acts[name].shape[1]
    log(f"\n== {label} ({model}, {'pretrained' if pretrained else 'random Xavier'} weights), layer {layer!r}: "
        f"{channels} channels of {acts[name].shape[2]}x{acts[name].shape[3]}, {probe.shape[1]} classes")
    chunk_cost = {}  # rows -> seconds of one normal Explainer.backprop of that many rows
    results = {}
    for n in args.batch_sizes:
        rng = np.random.RandomState(args.seed)
        x = nd.array(rng.randn(n, 3, 224, 224).astype('float32'), ctx=ctx)
        res = results[n] = {}

        def want(key):
            return not args.methods or key in args.methods

        def record(key, row, seconds, note=''):
            res[key] = {'row': row, 't': seconds, 'note': note}
            base = res.get('baseline', {}).get('t')
            ratio = f"{seconds / base:7.2f}x baseline" if base else ''
            log(f"  {label:6} b{n:<3} {key:<14} {seconds:9.3f} s  {seconds / n:8.3f} s/image  {ratio}"
                f"{'  [' + note + ']' if note else ''}")

        # --- baseline and forward -------------------------------------------------------------------------
        def baseline():
            user_backward(net, x)

        fwd, bwd = (model, 'fwd', n), (model, 'bwd', n)
        # The baseline's warm-up runs this batch size's forward and backward shapes once.
        t, _ = timer(baseline, {(model, 'base', n)})
        timer.seen |= {fwd, bwd}
        record('baseline', 'baseline: forward + backward (one_hot(argmax))', t)
        t, _ = timer(lambda: net(x), {fwd})
        record('forward', 'plain forward net(x) (for reference)', t)

        # --- CAM family ---------------------------------------------------------------------------------------
        for method in CAM_GRADIENT:
            if want(method):
                t, _ = timer(lambda m=method: cams.cam(net, x, layer, m), {bwd})
                record(method, CAM_LABELS[method], t)
        if want('eigencam'):
            t, _ = timer(lambda: cams.cam(net, x, layer, 'eigencam'), {fwd})
            record('eigencam', CAM_LABELS['eigencam'], t)
        for method in ('scorecam', 'ablationcam'):
            if want(method):
                row = f"{CAM_LABELS[method]} (one forward row per channel and image, batch_size {args.cam_batch})"
                k = min(channels, max(1, args.score_channels // n))
                if k >= channels:
                    t, _ = timer(lambda m=method: cams.cam(net, x, layer, m, batch_size=args.cam_batch),
                                 {fwd} | {(model, 'fwd', r) for r in chunk_rows(n * channels, args.cam_batch)})
                    record(method, row, t)
                    continue
                k_warm = min(k, max(1, args.cam_batch // n))
                _, parts = timer(
                    lambda m=method: score_like(net, x, layer, m, k, args.cam_batch),
                    {fwd} | {(model, 'fwd', r) for r in chunk_rows(n * k, args.cam_batch)},
                    warmup_fn=lambda m=method: score_like(net, x, layer, m, k_warm, args.cam_batch))
                estimate = parts['fixed'] + parts['channels'] * channels / k
                record(method, row, estimate,
                       f"extrapolated from {k} channels: setup {parts['fixed']:.3f} s + "
                       f"{parts['channels']:.3f} s x {channels}/{k}")

        # --- gradient family ----------------------------------------------------------------------------------
        for mode, key in (('normal', 'gradient'), ('guided', 'guided'), ('deconv', 'deconv')):
            if want(key):
                t, _ = timer(lambda m=mode: gradients.gradient(net, x, mode=m), {bwd})
                record(key, {'normal': 'vanilla gradient', 'guided': 'guided backprop',
                             'deconv': 'deconvnet'}[mode], t)
                if mode == 'normal':
                    chunk_cost[n] = t
        if want('input_x_grad'):
            t, _ = timer(lambda: gradients.input_x_gradient(net, x), {bwd})
            record('input_x_grad', 'input x gradient', t)

        def chunk_seconds(rows):
            """One normal-mode Explainer.backprop of ``rows`` rows (measured once per model and row count)."""
            if rows not in chunk_cost:
                xr = nd.array(np.random.RandomState(1).randn(rows, 3, 224, 224).astype('float32'), ctx=ctx)
                chunk_cost[rows], _ = timer(lambda: gluoncam.Explainer(net).backprop(xr),
                                            {(model, 'fwd', rows), (model, 'bwd', rows)})
                log(f"  {label:6} (one backprop of {rows} rows, for extrapolation: {chunk_cost[rows]:.3f} s)")
            return chunk_cost[rows]

        def many_pass(key, row, count, unit, call, extra_fwd):
            """SmoothGrad / IG: in full if it fits in --max-rows, else with fewer samples, extrapolated."""
            full_rows = n * count
            reduced = count if full_rows <= args.max_rows else max(1, min(count, args.max_rows // n))
            shapes = {fwd} | {(model, 'fwd', r) for r in extra_fwd} | \
                {(model, 'bwd', r) for r in chunk_rows(n * reduced, args.inner_batch)}
            t, _ = timer(lambda: call(reduced), shapes)
            if reduced == count:
                record(key, row, t)
                return
            missing = n * (count - reduced)
            estimate = t + missing / args.inner_batch * chunk_seconds(args.inner_batch)
            record(key, row, estimate,
                   f"extrapolated from {reduced} {unit}{'s' if reduced > 1 else ''}: {t:.3f} s + {missing} rows "
                   f"at one {args.inner_batch}-row backprop per {args.inner_batch} rows")

        if want('smoothgrad'):
            s = args.smoothgrad_samples
            many_pass('smoothgrad', f"SmoothGrad ({s} samples, batch_size {args.inner_batch})", s, 'sample',
                      lambda c: gradients.smoothgrad(net, x, samples=c, batch_size=args.inner_batch, seed=0), [])
        if want('integrated'):
            s = args.ig_steps
            many_pass('integrated', f"Integrated Gradients ({s} steps, batch_size {args.inner_batch})", s, 'step',
                      lambda c: gradients.integrated_gradients(net, x, steps=c, batch_size=args.inner_batch),
                      [2 * n])
        if want('guided_gradcam'):
            def guided_gradcam():
                result = gluoncam.Explainer(net).backprop(x, None, [layer], ('normal', 'guided'))
                heat = maps.grad_cam(result.activations[name], result.gradients['normal'][name])
                maps.guided_grad_cam(result.input_gradients['guided'], heat)
            t, _ = timer(guided_gradcam, {bwd})
            record('guided_gradcam', 'guided Grad-CAM (backprop normal+guided, maps)', t)
    return label, channels, results


def score_like(net, x, layer, method, k, cam_batch):
    """Score-/Ablation-CAM as ``cam()`` computes them, but over the first ``k`` channels of the layer.

    Returns the seconds of the setup (the recorded forward and target scores, as in ``cam()``) and of the
    per-channel part (the batched forwards over k channels and the weighted sum), separately.
    """
    name = display_name(layer)
    start = time.perf_counter()
    with gluoncam.Explainer(net) as explainer:
        output, activations = explainer.forward(x, [layer])
        classes = classes_for(output, None)
        original = target_scores(output, None, classes, slice(0, x.shape[0]))
        activation = activations[name]
        nd.waitall()
        middle = time.perf_counter()
        scorer = Scorer(explainer, x, classes, None, layer, 'logits', cam_batch, original)
        # nd.slice_axis, not activation[:, :k]: MXNet 1.9.1's basic slicing of an MKLDNN conv output along the
        # channels (batch > 1) dies with SIGFPE (a divide error in libmxnet), gluoncam or not.
        sub = nd.slice_axis(activation, axis=1, begin=0, end=k)
        if method == 'scorecam':
            weights = ScoreCAM().weights(sub, None, scorer)
        else:  # AblationCAM.weights, ablating channels 0..k-1 of all C
            n, c = activation.shape[:2]
            keep = 1 - nd.one_hot(nd.arange(k, ctx=activation.context).tile(n), c, dtype=activation.dtype)
            ablated = scorer.scores(lambda rows: scorer.sample_rows(rows, k), n * k, repeats=k,
                                    layer_mask=keep.reshape((n * k, c, 1, 1)))
            safe = nd.where(nd.abs(original) < cams.EPSILON, cams.EPSILON * nd.ones_like(original), original)
            weights = ((original.reshape((n, 1)) - ablated.reshape((n, k))) / safe.reshape((n, 1)))
            weights = weights.reshape((n, k, 1, 1))
        nd.relu((weights * sub).sum(axis=1)).wait_to_read()
        nd.waitall()
        end = time.perf_counter()
    after = time.perf_counter()
    return {'fixed': (middle - start) + (after - end), 'channels': end - middle}


ROW_ORDER = ['gradcam', 'gradcam++', 'xgradcam', 'hirescam', 'layercam', 'eigencam', 'scorecam', 'ablationcam',
             'gradient', 'guided', 'deconv', 'input_x_grad', 'smoothgrad', 'integrated', 'guided_gradcam']


def table(args, runs):
    columns = [(label, n, results[n]) for label, _, results in runs for n in args.batch_sizes]
    lines = ['| method | ' + ' | '.join(f"{label} b{n}" for label, n, _ in columns) + ' |',
             '|---|' + '---|' * len(columns)]

    for key in ['baseline', 'forward'] + ROW_ORDER:
        present = [res[key] for _, _, res in columns if key in res]
        if not present:
            continue
        row = present[0]['row']
        cells = []
        for label, n, res in columns:
            if key not in res:
                cells.append('n/a')
                continue
            entry = res[key]
            text = f"{entry['t'] / n:.3f} ({entry['t'] / res['baseline']['t']:.2f}x)"
            note = entry['note'].split(':')[0] if entry['note'] else ''
            cells.append(text + (f" {note}" if note else ''))
        lines.append(f"| {row} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    mx.random.seed(args.seed)
    np.random.seed(args.seed)
    features = mx.runtime.Features()

    def log(text):
        print(f"[{time.perf_counter() - started:7.1f} s] {text}" if text.strip() else text, flush=True)

    print(f"gluoncam {gluoncam.__version__}, mxnet {mx.__version__} (MKLDNN: {features.is_enabled('MKLDNN')}), "
          f"numpy {np.__version__}, python {platform.python_version()}")
    print(f"CPU cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}, "
          f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"models {args.models}, batch sizes {args.batch_sizes}, 224x224 random-normal inputs, median of "
          f"{args.repeats} timed run(s), warm-up '{args.warmup}'; SmoothGrad {args.smoothgrad_samples} samples, IG "
          f"{args.ig_steps} steps (batch_size {args.inner_batch}, in full up to {args.max_rows} rows); "
          f"Score-/Ablation-CAM batch_size {args.cam_batch}, ~{args.score_channels} rows timed")

    timer = Timer(args.warmup, args.repeats)
    runs = [run_model(args, model, timer, log) for model in args.models]
    elapsed = time.perf_counter() - started

    print('\nSeconds per image (ratio to the baseline forward + backward of the same network and batch size, '
          'same run):\n')
    print(table(args, runs))
    print('\nBaselines (forward + backward, parameter gradients on), seconds per batch:')
    for label, channels, results in runs:
        print('  ' + label + ': ' + ', '.join(f"b{n} {results[n]['baseline']['t']:.3f} s"
                                              for n in args.batch_sizes if 'baseline' in results[n]))
    notes = [(label, n, entry['row'], entry['note']) for label, _, results in runs
             for n, res in results.items() for entry in res.values() if entry['note']]
    if notes:
        print('\nExtrapolations:')
        for label, n, row, note in notes:
            print(f"  {label} b{n}, {row.split(' (')[0]}: {note}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = usage.ru_maxrss / (1024 * 1024 if sys.platform == 'darwin' else 1024)
    print(f"\nload average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; peak RSS {peak_mib:.0f} MiB; "
          f"total run time {elapsed:.0f} s ({elapsed / 60:.1f} min)")


if __name__ == '__main__':
    main()
