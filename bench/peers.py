"""Benchmark: the PyTorch peers (captum, pytorch-grad-cam) on VGG-16 (224 x 224, CPU), for comparison with
gluoncam's own bench (``speed.py``).

It never imports mxnet or gluoncam: it runs in its own virtual env, outside the repository, with a CPU torch.
Setup (python 3.11; ``torch==2.13.0`` is the CPU wheel pip finds through its find-links config: an unpinned
``torch`` would pull a multi-GB CUDA build, and so would grad-cam's own requirements, through torchvision):

    python3.11 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install torch==2.13.0
    /work/peers-venv/bin/pip install captum==0.9.0
    /work/peers-venv/bin/pip install --no-deps grad-cam==1.5.7
    /work/peers-venv/bin/pip install ttach==0.0.3 opencv-python-headless==5.0.0.93 scikit-learn==1.9.1 scipy==1.17.1
    /work/peers-venv/bin/pip install pyflakes   # only to lint this file

(captum brings numpy, matplotlib, tqdm and pillow, which grad-cam also needs.) torchvision is left out: no wheel
of it imports beside this torch (0.28.0 fails with "operator torchvision::nms does not exist"), yet
pytorch-grad-cam imports it at module level (``utils/image.py``, ``utils/model_targets.py``, ``sess.py``) for
code this bench never calls; see ``stub_torchvision``.

Run from the repository root:

    /work/peers-venv/bin/python bench/peers.py           # batch 1 and 8, min of 3 (~20-25 min on 2 cores)
    /work/peers-venv/bin/python bench/peers.py --batch-sizes 1 --repeats 1 --ig-steps 4 \
        --short-ig-steps 4 --smoothgrad-samples 2          # smoke test (~2 min)
    /work/peers-venv/bin/python bench/peers.py --batch-sizes 1 --repeats 1 --works scorecam --full-scorecam

Network: VGG-16 in plain torch, torchvision's layout (``features``: 13 conv 3x3 + ReLU, max-pool after each
block; ``classifier``: 25088-4096-4096-1000 with ReLU and Dropout) but without the ``AdaptiveAvgPool2d(7)``, an
identity at 224 x 224 that gluoncam's VGG has not either. Every ReLU is its own, not in-place ``nn.ReLU`` module,
which captum's GuidedBackprop hooks. ``--weights W.npz`` loads 'w0', 'b0', 'w1', 'b1', ... in network order (13
convolutions, O x I x 3 x 3, then 3 dense layers, out x in: the MXNet and torch layouts alike); without it,
torch's default initialisation, seeded. Eval mode; ``torch.set_num_threads(--threads)``.

Every measurement is warmed up once, untimed, then timed ``--repeats`` times (``time.perf_counter``); the
minimum is reported. Inputs are random-normal. The target is the predicted class. pytorch-grad-cam finds it in its
own forward; for captum, which needs it given, the timed call includes a ``no_grad`` forward that predicts it
(the ``forward`` row is that forward alone). pytorch-grad-cam's backward also computes the parameter gradients
(its ``loss.backward()``, parameters left trainable as a user's model has them), as does the ``baseline`` row
(forward + backward of one-hot(argmax)). Works (``--works`` selects some):

- ``forward``, ``baseline``: the references above.
- ``gradcam``: pytorch-grad-cam ``GradCAM`` at the last convolution (``features[28]``, the 13th ``Conv2d``, before
  its ReLU).
- ``visualize``: the maps of one ``gluoncam.visualize`` call, by two peer routes, each pair timed together:
  "GradCAM + GuidedBackprop" (pytorch-grad-cam GradCAM, then captum GuidedBackprop for the class GradCAM found)
  and "GuidedGradCam + Saliency" (captum GuidedGradCam at the last convolution, then captum Saliency).
- ``saliency``, ``guided``, ``ixg``: captum Saliency, GuidedBackprop, InputXGradient.
- ``smoothgrad``: captum NoiseTunnel(Saliency), smoothgrad, ``--smoothgrad-samples`` (8) samples, at most
  ``--inner-batch`` (16) rows per pass (``nt_samples_batch_size = max(1, inner // batch)``).
- ``ig``: captum IntegratedGradients, ``--short-ig-steps`` (16) steps, ``internal_batch_size=--inner-batch`` (16).
- ``ig-rss``: captum IntegratedGradients at batch 1, ``--ig-steps`` (50) steps, ``internal_batch_size=--ig-batch``
  (32), in a fresh child process (this script with a hidden flag): its time, and its peak RSS read as
  ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (KiB on Linux), so the peak is IG's process, not this one. Linux carries
  the parent's peak RSS into a child's ru_maxrss across fork/vfork + exec, so the child runs first, before this
  process builds its network (its peak then is the imports only, below the child's). As a cross-check the child
  also reports its own ``VmHWM`` (``/proc/self/status``, its peak since exec alone), after building the network
  and input (before IG) and at the end.
- ``scorecam``: pytorch-grad-cam's ``ScoreCAM`` (``batch_size=16``) cannot be restricted to the first k channels,
  and in full it needs 512 forward rows per image (minutes per image on 2 cores). So by default this reports the
  plain torch floor instead: one ``no_grad`` forward of 16 rows, per row, and that per-row time x 512 x batch as
  "ScoreCAM floor est." (the masking, upsampling and scoring are left out, so it is a lower bound). With
  ``--full-scorecam`` ``ScoreCAM`` itself is timed, at every batch size asked (best with ``--batch-sizes 1``).

It prints a log line per measurement, then a markdown table (work | batch | seconds (min)), the IG peak RSS line,
and the versions of torch, captum and grad-cam, the thread count and the CPU count.
"""
import argparse
import importlib.machinery
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
import types
import warnings
from importlib import metadata

os.environ.setdefault('TQDM_DISABLE', '1')  # ScoreCAM's progress bar; read when torch imports tqdm
# captum's notices on every call: it sets (then resets) requires_grad on the input, and hooks the ReLUs.
warnings.filterwarnings('ignore', message=r'Input Tensor \d+ did not already require gradients')
warnings.filterwarnings('ignore', message=r'Setting backward hooks on ReLU activations')

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

CFG = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']
SIZE = 224  # input height and width: the classifier takes 512 x 7 x 7
LAST_CONV = 28  # features[28]: the 13th Conv2d
CAM_CHANNELS = 512  # channels of the last convolution
WORKS = ('forward', 'baseline', 'gradcam', 'visualize', 'saliency', 'guided', 'ixg', 'smoothgrad', 'ig',
         'ig-rss', 'scorecam')


def stub_torchvision():
    """Put an empty ``torchvision`` in ``sys.modules`` when none is installed.

    pytorch-grad-cam imports torchvision at module level, for names this bench never calls
    (``transforms.Compose/Normalize/ToTensor`` in ``preprocess_image``, ``transforms.functional.resize`` in SESS,
    ``ops.box_iou`` in the Faster R-CNN target), and no torchvision wheel imports beside the CPU torch here.
    The stub's names raise if ever called, so nothing measured can go through it."""
    if importlib.util.find_spec('torchvision') is not None:
        return

    def unavailable(*_args, **_kwargs):
        raise RuntimeError('torchvision is a stub in bench/peers.py')

    names = {'torchvision': {}, 'torchvision.ops': {'box_iou': unavailable},
             'torchvision.transforms': dict.fromkeys(('Compose', 'Normalize', 'ToTensor'), unavailable),
             'torchvision.transforms.functional': {'resize': unavailable}}
    for name, attrs in names.items():
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(sys.modules[parent], child, module)


stub_torchvision()

from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,  # noqa: E402
                         NoiseTunnel, Saliency)
from pytorch_grad_cam.grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.score_cam import ScoreCAM  # noqa: E402


class VGG16(nn.Module):
    """torchvision's VGG-16 without its average pooling (an identity at 224 x 224); separate ReLU modules."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for v in CFG:
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
                channels = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def load_npz(model, path):
    """Load 'w0', 'b0', 'w1', 'b1', ... in network order (13 convolutions, then 3 dense layers)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with np.load(path) as arrays:
        for i, layer in enumerate(layers):
            for name, param in ((f'w{i}', layer.weight), (f'b{i}', layer.bias)):
                value = torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))
                if value.shape != param.shape:
                    raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
                param.data.copy_(value)


def build_model(args):
    torch.manual_seed(args.seed)
    model = VGG16()
    if args.weights:
        load_npz(model, args.weights)
    return model.eval()


def random_input(batch, seed):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def timed(fn, repeats):
    """One untimed warm-up, then the minimum and all of ``repeats`` timed calls."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


def baseline(model, x):
    """A user's forward + backward of one-hot(argmax): input and parameter gradients."""
    model.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    out.backward(nn.functional.one_hot(out.argmax(1), out.shape[1]).to(out.dtype))


def gradcam(model, x):
    """pytorch-grad-cam GradCAM for the predicted class (found in its own forward); returns (cam, class)."""
    model.zero_grad(set_to_none=True)
    with GradCAM(model=model, target_layers=[model.features[LAST_CONV]]) as cam:
        maps = cam(input_tensor=x, targets=None)
        return maps, cam.outputs.argmax(1)


def gradcam_gbp(model, x):
    _, target = gradcam(model, x)
    return GuidedBackprop(model).attribute(x, target=target)


def ggradcam_sal(model, x):
    target = predict(model, x)
    GuidedGradCam(model, model.features[LAST_CONV]).attribute(x, target=target)
    return Saliency(model).attribute(x, target=target)


def captum_call(method, **kwargs):
    """A timed call: predict the class (no_grad forward), then ``method(model).attribute``."""
    def run(model, x):
        return method(model).attribute(x, target=predict(model, x), **kwargs)
    return run


def smoothgrad(args, batch):
    def run(model, x):
        return NoiseTunnel(Saliency(model)).attribute(
            x, nt_type='smoothgrad', nt_samples=args.smoothgrad_samples,
            nt_samples_batch_size=max(1, args.inner_batch // batch), target=predict(model, x))
    return run


def scorecam_full(model, x):
    with ScoreCAM(model=model, target_layers=[model.features[LAST_CONV]]) as cam:
        cam.batch_size = 16
        return cam(input_tensor=x, targets=None)


def forward_16_rows(model, x16):
    with torch.no_grad():
        model(x16)


def batch_works(args, batch):
    """(label, function(model, x)) for each selected work at this batch size."""
    table = {
        'forward': [('forward (no_grad)', predict)],
        'baseline': [('baseline (fwd+bwd, param grads)', baseline)],
        'gradcam': [('GradCAM (grad-cam)', gradcam)],
        'visualize': [('visualize: GradCAM + GuidedBackprop', gradcam_gbp),
                      ('visualize: GuidedGradCam + Saliency', ggradcam_sal)],
        'saliency': [('Saliency', captum_call(Saliency))],
        'guided': [('GuidedBackprop', captum_call(GuidedBackprop))],
        'ixg': [('InputXGradient', captum_call(InputXGradient))],
        'smoothgrad': [(f'SmoothGrad ({args.smoothgrad_samples} samples)', smoothgrad(args, batch))],
        'ig': [(f'IntegratedGradients ({args.short_ig_steps} steps)',
                captum_call(IntegratedGradients, n_steps=args.short_ig_steps, internal_batch_size=args.inner_batch))],
    }
    if args.full_scorecam:
        table['scorecam'] = [('ScoreCAM (grad-cam, full)', scorecam_full)]
    return [item for work in args.works if work in table for item in table[work]]


def scorecam_floor(args, model, rows):
    """Per-row time of a 16-row no_grad forward; appends it and the ScoreCAM floor estimate per batch size."""
    x16 = random_input(16, args.seed + 1)
    best, times = timed(lambda: forward_16_rows(model, x16), args.repeats)
    per_row = best / 16
    log('forward 16 rows (per row)', 16, per_row, [t / 16 for t in times])
    rows.append(('forward 16 rows, no_grad (per row)', 16, per_row))
    for batch in args.batch_sizes:
        rows.append((f'ScoreCAM floor est. ({CAM_CHANNELS} x batch x per row)', batch,
                     per_row * CAM_CHANNELS * batch))


def log(label, batch, best, times):
    print(f"  batch {batch:>2}  {label:<40} min {best:8.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times)})",
          flush=True)


def run_ig_child(args):
    """Spawn this script as the IG child; return (its result dict, its peak RSS in KiB)."""
    cmd = [sys.executable, os.path.abspath(__file__), '--ig-child', '--threads', str(args.threads),
           '--repeats', str(args.repeats), '--ig-steps', str(args.ig_steps), '--ig-batch', str(args.ig_batch),
           '--seed', str(args.seed)]
    if args.weights:
        cmd += ['--weights', args.weights]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the only child this process waits for
    return json.loads(done.stdout.strip().splitlines()[-1]), peak_kib


def vm_hwm_kib():
    """This process's own peak RSS since exec (Linux ``VmHWM``, KiB), or None where /proc has none."""
    try:
        with open('/proc/self/status') as status:
            return next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))
    except (OSError, StopIteration):
        return None


def ig_child(args):
    """The child: IG at batch 1; prints one JSON line (times, VmHWM before IG and at the end)."""
    model = build_model(args)
    x = random_input(1, args.seed)
    before = vm_hwm_kib()
    ig = captum_call(IntegratedGradients, n_steps=args.ig_steps, internal_batch_size=args.ig_batch)
    best, times = timed(lambda: ig(model, x), args.repeats)
    print(json.dumps({'best': best, 'times': times, 'hwm_before_kib': before, 'hwm_kib': vm_hwm_kib()}))


def versions():
    found = {}
    for dist in ('torch', 'captum', 'grad-cam'):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = '(not installed)'
    return found


def print_report(args, rows, ig_line):
    print('\n| work | batch | seconds (min) |\n| --- | ---: | ---: |')
    for label, batch, seconds in rows:
        print(f'| {label} | {batch} | {seconds:.3f} |')
    if ig_line:
        print(f'\n{ig_line}')
    v = versions()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    print(f"\ntorch {v['torch']}, captum {v['captum']}, grad-cam {v['grad-cam']}, python {platform.python_version()}")
    print(f"threads: {torch.get_num_threads()} (--threads {args.threads}), CPUs: {os.cpu_count()} "
          f"({affinity} usable), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    weights = args.weights or f'torch default init, seed {args.seed}'
    print(f"VGG-16 ({weights}), {SIZE}x{SIZE}, min of {args.repeats} after 1 warm-up; "
          f"self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def mib(kib):
    return '?' if kib is None else f'{kib / 1024:.0f} MiB'


def ig_rss_line(args):
    result, peak_kib = run_ig_child(args)
    log(f'IG child ({args.ig_steps} steps)', 1, result['best'], result['times'])
    return (f"IG peak RSS (child process, batch 1, {args.ig_steps} steps, internal_batch_size {args.ig_batch}): "
            f"{mib(peak_kib)} (child's own VmHWM: {mib(result['hwm_kib'])}, before IG "
            f"{mib(result['hwm_before_kib'])}); time min {result['best']:.3f} s"), result['best']


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.ig_child:
        return ig_child(args)
    print(f"works: {', '.join(args.works)}; batch sizes {args.batch_sizes}; threads {args.threads}", flush=True)
    ig_line = None
    if 'ig-rss' in args.works:  # first: the child's ru_maxrss would carry this process's peak (see docstring)
        ig_line, ig_best = ig_rss_line(args)
    model = build_model(args)
    rows = []
    for batch in args.batch_sizes:
        x = random_input(batch, args.seed)
        for label, fn in batch_works(args, batch):
            best, times = timed(lambda: fn(model, x), args.repeats)
            log(label, batch, best, times)
            rows.append((label, batch, best))
    if 'scorecam' in args.works and not args.full_scorecam:
        scorecam_floor(args, model, rows)
    if ig_line:
        rows.append((f'IntegratedGradients ({args.ig_steps} steps, child)', 1, ig_best))
    print_report(args, rows, ig_line)


def positive_ints(text, flag, parser):
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        parser.error(f'{flag} must be comma-separated integers, got {text!r}')
    if not values or min(values) < 1:
        parser.error(f'{flag} needs at least one positive integer')
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch-sizes', default='1,8', help='comma-separated batch sizes (default: 1,8)')
    p.add_argument('--repeats', type=int, default=3, help='timed calls per measurement; min reported (default: 3)')
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (default: 2)')
    p.add_argument('--weights', help="npz with 'w0', 'b0', ... in network order (default: seeded torch init)")
    p.add_argument('--works', default=','.join(WORKS), help=f"comma-separated, of {', '.join(WORKS)} (default: all)")
    p.add_argument('--smoothgrad-samples', type=int, default=8, help='SmoothGrad samples (default: 8)')
    p.add_argument('--short-ig-steps', type=int, default=16, help="steps of the 'ig' work (default: 16)")
    p.add_argument('--inner-batch', type=int, default=16, help="rows per pass of 'smoothgrad' and 'ig' (default: 16)")
    p.add_argument('--ig-steps', type=int, default=50, help="steps of the 'ig-rss' child (default: 50)")
    p.add_argument('--ig-batch', type=int, default=32, help="internal_batch_size of the 'ig-rss' child (default: 32)")
    p.add_argument('--full-scorecam', action='store_true', help="time pytorch-grad-cam's ScoreCAM itself (slow)")
    p.add_argument('--seed', type=int, default=0, help='seed of the initialisation and inputs (default: 0)')
    p.add_argument('--ig-child', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch_sizes = positive_ints(args.batch_sizes, '--batch-sizes', p)
    args.works = [w.strip() for w in args.works.split(',') if w.strip()]
    unknown = sorted(set(args.works) - set(WORKS))
    if unknown or not args.works:
        p.error(f"--works: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(WORKS)}")
    for flag in ('repeats', 'threads', 'smoothgrad_samples', 'short_ig_steps', 'inner_batch', 'ig_steps', 'ig_batch'):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


if __name__ == '__main__':
    main()
