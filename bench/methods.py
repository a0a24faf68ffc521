"""Seconds per image of every method in gluoncam's catalog, and its ratio to one forward + backward pass.

Run from the repository root (the package installed):

    python bench/methods.py                                          # every method, both models, batch 1 and 16
    python bench/methods.py --models efficientnet_lite0 --batch-sizes 1 --methods gradcam,lrp,deeplift
    python bench/methods.py --skip scorecam,sscam,iscam,occlusion     # leave out the slowest

Each method runs as the command line runs it (``gluoncam.methods.make``, with its default options and
``batch_size`` rows per pass), on random 224 x 224 inputs. The unit is one forward + input-only backward pass of
the same batch through the hybridized network (``bench/speed.py``'s floor): a ratio of 1 is one gradient's cost,
50 is what 50 gradients cost. One untimed run first, then the minimum of ``--repeats`` runs.
"""
import argparse
import os
import platform
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import nd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed  # noqa: E402 (the floors and the models, shared with speed.py)

import gluoncam  # noqa: E402
from gluoncam import methods  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default=','.join(speed.MODELS), help=f"of: {', '.join(speed.MODELS)}")
    parser.add_argument('--batch-sizes', default='1,16', help='comma-separated batch sizes (default 1,16)')
    parser.add_argument('--methods', default='', help='comma-separated method names (default: all)')
    parser.add_argument('--skip', default='', help='comma-separated method names to leave out')
    parser.add_argument('--inner-batch', type=int, default=16, help='rows per pass of many-pass methods')
    parser.add_argument('--repeats', type=int, default=2,
                        help='timed runs per measurement; the minimum counts (2: a compiled call is timed)')
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(',') if m]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b]
    chosen = [m for m in args.methods.split(',') if m] or list(methods.METHODS)
    skipped = {m for m in args.skip.split(',') if m}
    unknown = [m for m in chosen + list(skipped) if m not in methods.METHODS] + \
        [m for m in args.models if m not in speed.MODELS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}; methods: {', '.join(methods.METHODS)}")
    args.methods = [m for m in chosen if m not in skipped]
    return args


def measure(model: str, batch: int, args) -> list:
    net, layer = speed.load(model)
    x = nd.array(np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32))
    unit = speed.timed(lambda: speed.forward_backwards(net, x, 1), args.repeats)
    rows = []
    for name in args.methods:
        seconds = speed.timed(lambda: methods.make(name, net, x, layer, None, args.inner_batch).wait_to_read(),
                              args.repeats)
        rows.append((name, seconds, unit))
        print(f"  {model} batch {batch}: {name} {seconds:.2f} s ({seconds / unit:.1f} passes)", file=sys.stderr,
              flush=True)
    return rows


def print_table(model: str, batch: int, rows: list) -> None:
    print(f"\n### {speed.MODELS[model][0]}, 224 x 224, batch {batch} (one fwd + bwd: {rows[0][2]:.3f} s)\n")
    print("| method | family | seconds per image | ratio to one fwd + bwd |")
    print("|---|---|---|---|")
    for name, seconds, unit in rows:
        print(f"| `{name}` | {methods.METHODS[name].family} | {seconds / batch:.3f} | {seconds / unit:.1f} |")


def main(argv=None) -> None:
    args = parse_args(argv)
    features = mx.runtime.Features()
    print(f"gluoncam {gluoncam.__version__}, mxnet {mx.__version__} (MKLDNN {features.is_enabled('MKLDNN')}), "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    for model in args.models:
        for batch in args.batch_sizes:
            print_table(model, batch, measure(model, batch, args))
    print(f"\n(minimum of {args.repeats} run(s) after a warm-up; {time.perf_counter() - start:.0f} s in all)")


if __name__ == '__main__':
    main()
