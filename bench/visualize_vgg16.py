"""Benchmark: gluoncam.visualize() and Explainer.backprop() on VGG-16 (random weights, 224 x 224, CPU)
against a plain forward + backward of the same network.

Run from the repository root:

    python bench/visualize_vgg16.py                      # batch sizes 1 and 8, median of 3 repeats
    python bench/visualize_vgg16.py --batch-sizes 1 --repeats 5

Each measurement is warmed up once, then timed ``--repeats`` times; the median is reported. Every timing
waits for MXNet's asynchronous engine (``nd.waitall()``) before the clock stops.
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

LAYER = 'features.28'  # last convolution of VGG-16 (before its ReLU)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-sizes', default='1,8',
                        help='comma-separated batch sizes (default: 1,8)')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed repeats per measurement; the median is reported (default: 3)')
    parser.add_argument('--size', type=int, default=224, help='input height and width (default: 224)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error('--batch-sizes needs at least one positive integer')
    if args.repeats < 1:
        parser.error('--repeats must be at least 1')
    return args


def timed(fn, repeats):
    """Warm up once, then return the median wall time of ``repeats`` calls (each call must wait itself)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv=None):
    args = parse_args(argv)
    mx.random.seed(args.seed)
    np.random.seed(args.seed)
    ctx = mx.cpu()

    net = gluoncam.models.get_model('vgg16')
    net.initialize(mx.init.Xavier(), ctx=ctx)
    params = net.collect_params()

    features = mx.runtime.Features()
    print(f"gluoncam {gluoncam.__version__}, mxnet {mx.__version__} "
          f"(MKLDNN: {features.is_enabled('MKLDNN')}), numpy {np.__version__}, python {platform.python_version()}")
    print(f"CPU cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}, "
          f"MXNET_ENGINE_TYPE={os.environ.get('MXNET_ENGINE_TYPE', '(unset)')}")
    print(f"VGG-16, random weights, {args.size}x{args.size}, layer {LAYER!r}, "
          f"batch sizes {args.batch_sizes}, median of {args.repeats} repeats after 1 warm-up\n")

    rows = []
    for batch in args.batch_sizes:
        x = nd.array(np.random.randn(batch, 3, args.size, args.size).astype('float32'), ctx=ctx)
        origs = [np.random.randint(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(batch)]
        orig = origs[0] if batch == 1 else origs

        def forward():
            out = net(x)
            out.wait_to_read()

        def baseline():
            user_backward(net, x)


        explainer = gluoncam.Explainer(net)

        def backprop_normal():
            explainer.backprop(x, target=None, layers=[LAYER], modes=('normal',))
            nd.waitall()

        def backprop_two():
            explainer.backprop(x, target=None, layers=[LAYER], modes=('normal', 'guided'))
            nd.waitall()

        def visualize():
            heat, guided, sal = gluoncam.visualize(net, x, orig, LAYER)
            if batch == 1:
                assert heat.shape == (args.size, args.size, 3) and sal.shape == (args.size, args.size)
            else:
                assert len(heat) == len(guided) == len(sal) == batch

        row = {'batch': batch}
        for key, fn in [('forward', forward), ('baseline', baseline), ('baseline_noparam', baseline),
                        ('backprop_normal', backprop_normal), ('backprop_two', backprop_two),
                        ('visualize', visualize)]:
            if key == 'baseline_noparam':
                # The baseline with parameter gradients off (grad_req 'null'): only the input gradient, which
                # is all gluoncam computes. Switched outside the timed region (re-enabling reallocates grads).
                params.setattr('grad_req', 'null')
            try:
                row[key], times = timed(fn, args.repeats)
            finally:
                if key == 'baseline_noparam':
                    params.setattr('grad_req', 'write')
            print(f"  batch {batch:>2} {key:<17} median {row[key]:8.3f} s   "
                  f"(runs: {', '.join(f'{t:.3f}' for t in times)})", flush=True)
        rows.append(row)

    print()
    header = (f"{'batch':>5} | {'forward':>8} | {'baseline':>8} | {'base-noP':>8} | {'bp-norm':>8} | "
              f"{'bp-2mode':>8} | {'visual':>8} || {'vis/base':>8} | {'bpN/base':>8} | {'bp2/base':>8} | "
              f"{'base/fwd':>8}")
    print(header)
    print('-' * len(header))
    for r in rows:
        print(f"{r['batch']:>5} | {r['forward']:8.3f} | {r['baseline']:8.3f} | {r['baseline_noparam']:8.3f} | "
              f"{r['backprop_normal']:8.3f} | {r['backprop_two']:8.3f} | {r['visualize']:8.3f} || "
              f"{r['visualize'] / r['baseline']:8.2f} | {r['backprop_normal'] / r['baseline']:8.2f} | "
              f"{r['backprop_two'] / r['baseline']:8.2f} | {r['baseline'] / r['forward']:8.2f}")
    print("(times in seconds, medians; base-noP = baseline with parameter gradients off, grad_req 'null')\n")

    for r in rows:
        b = r['batch']
        print(f"ratio batch={b} visualize/baseline = {r['visualize'] / r['baseline']:.2f}")
        print(f"ratio batch={b} backprop-normal/baseline = {r['backprop_normal'] / r['baseline']:.2f}")
        print(f"ratio batch={b} backprop-two-modes/baseline = {r['backprop_two'] / r['baseline']:.2f}")
        print(f"ratio batch={b} baseline/forward = {r['baseline'] / r['forward']:.2f}")
        print(f"ratio batch={b} visualize/baseline-noparam = {r['visualize'] / r['baseline_noparam']:.2f}")
        print(f"ratio batch={b} backprop-two-modes/baseline-noparam = "
              f"{r['backprop_two'] / r['baseline_noparam']:.2f}")

    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = usage.ru_maxrss / (1024 * 1024 if sys.platform == 'darwin' else 1024)  # bytes on macOS, KiB on Linux
    print(f"\npeak RSS: {peak_mib:.0f} MiB")


if __name__ == '__main__':
    main()
