"""Speed of gluoncam's methods against their floor in plain MXNet: one table per model and batch size.

Run from the repository root (the package installed):

    python bench/speed.py                                   # VGG-16 and EfficientNet-Lite0, batch 1 and 8
    python bench/speed.py --models vgg16 --batch-sizes 1 --repeats 3
    python bench/speed.py --models vgg16 --batch-sizes 8 --only Score-CAM
    python bench/speed.py --memory                          # peak RSS of IG and Score-CAM, each in a subprocess

The floor of a method is the plain MXNet work it cannot avoid, on the same network hybridized, with parameter
gradients off (grad_req 'null'): its forward passes, recorded in predict mode, and one input-only backward pass
per map that needs a gradient, batched as the method batches them. SmoothGrad's floor has one more forward pass of
the batch (the class to explain), Integrated Gradients' one of the batch and its baseline (the class, and the
scores at both ends for the completeness error). Score-CAM's floor is one forward pass of the batch (the layer's
activations) and one per channel and image. Ablation-CAM's is given as the whole-network forward passes it avoids
(its ratio is below 1) and as the time of the imperative full-network passes it used before.

Each measurement runs once untimed (first calls build MKLDNN primitives), then ``--repeats`` times, alternating
with its floor; the minimum is reported, and every timing waits for MXNet's engine. Score-CAM and Ablation-CAM run
over the first channels only (``--score-rows`` rows in all, so the time stays minutes at batch 8); the ratio does
not depend on the count.
"""
import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from unittest import mock

import mxnet as mx
import numpy as np
from mxnet import autograd, nd

import gluoncam
from gluoncam import cams, compiled, gradients
from gluoncam.inputs import classes_for

MODELS = {  # name: (label, CAM layer, pretrained weights)
    'vgg16': ('VGG-16, random Xavier weights', 'features.28', False),
    'efficientnet_lite0': ('EfficientNet-Lite0, its ImageNet weights', 'features.17', True),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default=','.join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument('--batch-sizes', default='1,8', help='comma-separated batch sizes (default 1,8)')
    parser.add_argument('--repeats', type=int, default=2, help='timed runs per measurement; the minimum counts')
    parser.add_argument('--samples', type=int, default=4, help='SmoothGrad samples and IG steps (default 4)')
    parser.add_argument('--inner-batch', type=int, default=16, help='rows per pass of SmoothGrad, IG, Score-CAM')
    parser.add_argument('--score-rows', type=int, default=64, help='rows of Score-/Ablation-CAM timed (default 64)')
    parser.add_argument('--only', default='', help="run only the works whose name contains this text")
    parser.add_argument('--memory', action='store_true', help='measure peak RSS instead (subprocesses)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(',') if m]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or min(args.batch_sizes, default=0) < 1 or args.repeats < 1:
        parser.error(f"models must be among {', '.join(MODELS)}; batch sizes and repeats at least 1")
    return args


def load(model: str):
    _, layer, pretrained = MODELS[model]
    mx.random.seed(0)
    net = gluoncam.models.get_model(model, pretrained=pretrained)
    if not pretrained:
        net.initialize(mx.init.Xavier())
    net(nd.zeros((1, 3, 224, 224)))
    net.collect_params().setattr('grad_req', 'null')  # the floors compute input gradients only; gluoncam always
    net.hybridize(static_alloc=True)                   # the floors run hybridized; gluoncam pauses it per call
    return net, layer


def timed_alternately(works, repeats: int) -> list:
    """The minimum time of each work, run in turn ``repeats`` times (each once untimed first), so that the
    machine's drift between runs weighs on all alike."""
    for fn in works:
        fn()
        nd.waitall()
    best = [float('inf')] * len(works)
    for _ in range(repeats):
        for i, fn in enumerate(works):
            start = time.perf_counter()
            fn()
            nd.waitall()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def timed(fn, repeats: int) -> float:
    return timed_alternately([fn], repeats)[0]


# ----- floors: plain MXNet on the hybridized network
def forward_backwards(net, x, backwards: int, batch: int = None) -> None:
    """Recorded forward passes of x's rows (``batch`` at a time), each with ``backwards`` input-only backwards."""
    for rows in chunks(x, batch):
        rows = rows.copy()
        rows.attach_grad()
        with autograd.record(train_mode=False):
            out = net(rows)
        head = nd.one_hot(out.argmax(axis=1), out.shape[1])
        for _ in range(backwards):
            out.backward(head, retain_graph=True, train_mode=False)
        rows.grad.wait_to_read()


def forwards(net, x, batch: int = None) -> None:
    for rows in chunks(x, batch):
        net(rows).wait_to_read()


def chunks(x, batch):
    batch = batch or x.shape[0]
    return [x[start:start + batch] for start in range(0, x.shape[0], batch)]


# ----- Score-CAM and Ablation-CAM over the first k channels, as cam() computes them
def scorer_for(explainer, x, layer, batch):
    output, activations = explainer.forward(x, [layer])
    classes = classes_for(output, None)
    original = cams.target_scores(output, None, classes, slice(0, x.shape[0]))
    return cams.Scorer(explainer, x, classes, None, layer, 'logits', batch, original), activations[layer]


def score_cam(net, x, layer, k, batch):
    with gluoncam.Explainer(net) as explainer:
        scorer, activation = scorer_for(explainer, x, layer, batch)
        cams.ScoreCAM().weights(activation[:, :k], None, scorer).wait_to_read()


def ablation_cam(net, x, layer, k, batch):
    with gluoncam.Explainer(net) as explainer:
        scorer, activation = scorer_for(explainer, x, layer, batch)
        c = activation.shape[1]

        def ablated(rows):
            channel = nd.arange(rows.start, rows.stop) % k
            return scorer.sample_rows(rows, k, activation) * (1 - nd.one_hot(channel, c).reshape((-1, c, 1, 1)))
        scorer.layer_scores(activation, ablated, x.shape[0] * k, repeats=k).wait_to_read()


def ablation_cam_before(net, x, layer, k, batch):
    """The same rows as before this change: the whole network, imperatively, for each ablated row."""
    with mock.patch.object(compiled, 'downstream', lambda *args: None):
        ablation_cam(net, x, layer, k, batch)


# ----- the table
def measure(model: str, batch: int, args) -> list:
    net, layer = load(model)
    rng = np.random.default_rng(batch)
    x = nd.array(rng.standard_normal((batch, 3, 224, 224), dtype=np.float32))
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(batch)]
    with gluoncam.Explainer(net) as explainer:
        _, activations = explainer.forward(x[:1], [layer])
    channels = activations[layer].shape[1]
    k = max(1, min(channels, args.score_rows // batch))
    s, inner = args.samples, args.inner_batch
    explainer = gluoncam.Explainer(net)
    rows = {s: nd.repeat(x, s, axis=0), k: nd.repeat(x, k, axis=0)}
    work = [
        ('visualize(): Grad-CAM, guided Grad-CAM, saliency', lambda: gluoncam.visualize(net, x, images, layer),
         lambda: forward_backwards(net, x, 2)),
        ('Explainer.backprop, normal + guided', lambda: explainer.backprop(x, None, [layer], ('normal', 'guided')),
         lambda: forward_backwards(net, x, 2)),
        ('vanilla gradient', lambda: gradients.gradient(net, x), lambda: forward_backwards(net, x, 1)),
        ('input x gradient', lambda: gradients.input_x_gradient(net, x), lambda: forward_backwards(net, x, 1)),
        ('Grad-CAM', lambda: cams.cam(net, x, layer, 'gradcam'), lambda: forward_backwards(net, x, 1)),
        ('Grad-CAM + Grad-CAM++ + Layer-CAM, one call', lambda: cams.cam(net, x, layer, ['gradcam', 'gradcam++',
                                                                                      'layercam']),
         lambda: forward_backwards(net, x, 1)),
        (f'SmoothGrad, {s} samples', lambda: gradients.smoothgrad(net, x, samples=s, batch_size=inner),
         lambda: (forwards(net, x), forward_backwards(net, rows[s], 1, inner))),
        (f'Integrated Gradients, {s} steps', lambda: gradients.integrated_gradients(net, x, steps=s, batch_size=inner),
         lambda: (forwards(net, nd.concat(x, x, dim=0)), forward_backwards(net, rows[s], 1, inner))),
        (f'Score-CAM, {k} of {channels} channels', lambda: score_cam(net, x, layer, k, inner),
         lambda: (forwards(net, x), forwards(net, rows[k], inner))),
        (f'Ablation-CAM, {k} of {channels} channels', lambda: ablation_cam(net, x, layer, k, inner),
         lambda: forwards(net, rows[k], inner)),
        ('(Ablation-CAM before: whole network, imperative)', lambda: ablation_cam_before(net, x, layer, k, inner),
         lambda: forwards(net, rows[k], inner)),
    ]
    results = []
    for name, method, floor in work:
        if args.only not in name:
            continue
        floor_time, method_time = timed_alternately([floor, method], args.repeats)
        print(f"  {model} batch {batch}: {name}: {method_time:.3f} s, floor {floor_time:.3f} s", flush=True)
        results.append((name, method_time, floor_time))
    return results


def print_table(model: str, batch: int, results: list) -> None:
    print(f"\n### {MODELS[model][0]}, 224 x 224, batch {batch}\n")
    print("| work | gluoncam (s) | floor (s) | ratio |")
    print("|---|---|---|---|")
    for name, method_time, floor_time in results:
        print(f"| {name} | {method_time:.3f} | {floor_time:.3f} | {method_time / floor_time:.2f} |")


# ----- peak memory, each measurement in a fresh process
MEMORY = {
    'the network loaded, no work (what the rows below add to)': 'idle:0',
    'floor of IG: 50 rows of plain hybridized forward + input-only backward, batch 16': 'floor:16',
    'integrated gradients, 50 steps, batch_size 16': 'ig:16',
    'integrated gradients, 50 steps, batch_size 50': 'ig:50',
    'floor of Score-CAM: 513 rows of plain hybridized forward, batch 16': 'scorefloor:16',
    'Score-CAM, 512 channels, batch_size 16': 'scorecam:16',
    'Score-CAM, 512 channels, batch_size 64': 'scorecam:64',
}


def child(task: str) -> None:
    kind, batch = task.split(':')
    net, layer = load('vgg16')
    x = nd.array(np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32))
    start = time.perf_counter()
    if kind == 'idle':
        pass
    elif kind == 'floor':
        forward_backwards(net, nd.repeat(x, 50, axis=0), 1, int(batch))
    elif kind == 'scorefloor':
        forwards(net, nd.repeat(x, 513, axis=0), int(batch))
    elif kind == 'ig':
        gradients.integrated_gradients(net, x, steps=50, batch_size=int(batch))[0].wait_to_read()
    else:
        cams.cam(net, x, layer, 'scorecam', batch_size=int(batch)).wait_to_read()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.perf_counter() - start:.1f} {peak:.0f}")


def memory() -> None:
    print("VGG-16, 224 x 224, one image; peak RSS of a fresh process (MiB) and its time (s):\n")
    print("| work | seconds | peak RSS (MiB) |")
    print("|---|---|---|")
    for name, task in MEMORY.items():
        out = subprocess.run([sys.executable, __file__, '--child', task], capture_output=True, text=True, check=True)
        seconds, peak = out.stdout.split()[-2:]
        print(f"| {name} | {seconds} | {peak} |", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(args.child)
    features = mx.runtime.Features()
    print(f"gluoncam {gluoncam.__version__}, mxnet {mx.__version__} (MKLDNN {features.is_enabled('MKLDNN')}), "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if args.memory:
        return memory()
    start = time.perf_counter()
    tables = [(model, batch, measure(model, batch, args)) for model in args.models for batch in args.batch_sizes]
    for model, batch, results in tables:
        print_table(model, batch, results)
    print(f"\n(minimum of {args.repeats} runs after a warm-up; {time.perf_counter() - start:.0f} s in all, "
          f"load {os.getloadavg()[0]:.2f} at the end)")


if __name__ == '__main__':
    main()
