"""``gluoncam``: the command line. ``gluoncam explain IMAGE...`` prints predictions and writes explanations."""
import argparse
import difflib
import os
import sys
from typing import Dict, List, Optional

import mxnet as mx
import numpy as np
from mxnet import nd

from . import cams, gradients, maps, models
from .explainer import Explainer
from .images import find_images, preprocess, read_rgb
from .layers import named_blocks
from .visualize import RENDERING, render

CLASSIC = ('gradcam', 'guided-gradcam', 'saliency')  # one forward pass serves all three
METHODS = tuple(RENDERING)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return explain(args)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"gluoncam: error: {error}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog='gluoncam', description=__doc__.split('\n')[0])
    commands = root.add_subparsers(dest='command', required=True)
    explain = commands.add_parser('explain', help='explain ImageNet predictions of images')
    explain.add_argument('images', nargs='+', help='image files, folders or glob patterns')
    explain.add_argument('--model', default='efficientnet_lite0', choices=sorted(models.MODELS))
    explain.add_argument('--params', help='weights file to load instead of the pretrained weights')
    explain.add_argument('--random-weights', action='store_true',
                         help='use random weights where no weights are available (the maps then mean nothing)')
    explain.add_argument('--root', default=os.path.join(mx.base.data_dir(), 'models'),
                         help='folder of pretrained weight files (default: %(default)s)')
    explain.add_argument('--layer', help="layer for Grad-CAM (default: the model's cam_layer); 'list' lists them")
    explain.add_argument('--method', default='all', type=method_list,
                         help=f"comma-separated maps to make, from: {', '.join(METHODS)}; 'all' (default) is "
                              f"{', '.join(CLASSIC)} (one forward pass)")
    explain.add_argument('--class', dest='class_id', help='class id or ImageNet class name (default: predicted)')
    explain.add_argument('--top-k', type=int, default=5, help='predictions to print per image')
    explain.add_argument('--ctx', default='cpu', help="'cpu' or 'gpu:N'")
    explain.add_argument('--batch-size', type=int, default=8, help='images per forward pass')
    explain.add_argument('--out', default='gluoncam-out', help='folder for panels and maps (default: %(default)s)')
    return root


def explain(args) -> int:
    if args.batch_size < 1 or args.top_k < 1:
        raise ValueError("--batch-size and --top-k must be at least 1")
    paths = find_images(args.images)
    ctx = parse_context(args.ctx)
    names = class_names()
    target = None if args.class_id is None else class_index(args.class_id, names)
    net = load_model(args, ctx)
    if args.layer == 'list':
        print('\n'.join(named_blocks(net)))
        return 0
    layer = args.layer or getattr(net, 'cam_layer', None)
    if layer is None:
        raise ValueError("this model names no Grad-CAM layer: pass --layer (see --layer list)")
    methods = args.method
    os.makedirs(args.out, exist_ok=True)
    failures = 0
    progress = _progress_bar(len(paths))
    with Explainer(net) as explainer:
        for batch in _batches(paths, args.batch_size):
            images = {}
            for path in batch:
                try:
                    images[path] = read_rgb(path)
                except ValueError as error:
                    print(f"skipped: {error}", file=sys.stderr)
                    failures += 1
            if images:
                explain_batch(explainer, net, images, target, layer, methods, names, args)
            if progress is not None:
                progress.update(len(batch))
    if progress is not None:
        progress.close()
    print(f"wrote panels and maps of {len(paths) - failures} image(s) to {os.path.abspath(args.out)}")
    if failures:
        print(f"{failures} file(s) could not be read", file=sys.stderr)
    return 1 if failures else 0


def explain_batch(explainer: Explainer, net, images: Dict[str, np.ndarray], target, layer: str, methods, names,
                  args) -> None:
    x = nd.concat(*[preprocess(image, net) for image in images.values()], dim=0).as_in_context(parse_context(args.ctx))
    modes = ('normal', 'guided') if 'guided-gradcam' in methods else ('normal',)
    result = explainer.backprop(x, target, [layer], modes)
    probabilities = nd.softmax(result.output).asnumpy()
    raw = method_maps(result, layer, [m for m in methods if m in CLASSIC])
    target = result.classes if target is None else target
    raw.update({method: other_map(net, x, target, layer, method, args.batch_size).asnumpy()
                for method in methods if method not in CLASSIC})
    for i, (path, image) in enumerate(images.items()):
        top = np.argsort(-probabilities[i])[:args.top_k]
        print(f"{path}: " + ', '.join(f"{names[k]} ({k}) {probabilities[i, k]:.3f}" for k in top))
        cls = int(result.classes[i].asscalar())
        stem = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0])
        for method, values in raw.items():
            np.save(f"{stem}_{method.replace('-', '_')}.npy", values[i])
        title = f"{names[cls]} ({cls}), p = {probabilities[i, cls]:.3f} ({args.model})"
        save_panel(stem + '.png', image, {method: values[i] for method, values in raw.items()}, layer, title)


def method_maps(result, layer: str, methods) -> Dict[str, np.ndarray]:
    """Raw float maps per method, numpy: Grad-CAM N x h x w, guided Grad-CAM N x C x H x W, saliency N x H x W."""
    out = {}
    cam = None
    if 'gradcam' in methods or 'guided-gradcam' in methods:
        activation = result.activations[layer]
        if activation.ndim != 4:
            raise ValueError(f"layer {layer!r} gives output of shape {activation.shape}; Grad-CAM needs a 4-D layer "
                             f"(see --layer list)")
        cam = maps.grad_cam(activation, result.gradients['normal'][layer])  # = cams.GradCAM, without a 2nd pass
    if 'gradcam' in methods:
        out['gradcam'] = cam.asnumpy()
    if 'guided-gradcam' in methods:
        out['guided-gradcam'] = maps.guided_grad_cam(result.input_gradients['guided'], cam).asnumpy()
    if 'saliency' in methods:
        out['saliency'] = maps.saliency(result.input_gradients['normal']).asnumpy()
    return out


def other_map(net, x, target, layer: str, method: str, batch_size: int) -> nd.NDArray:
    """The maps beyond the classic three, each from its own passes."""
    if method in cams.CAM_METHODS:
        return cams.cam(net, x, layer, method, target, batch_size=batch_size)
    if method in ('guided-backprop', 'deconv'):
        return gradients.gradient(net, x, target, 'guided' if method == 'guided-backprop' else 'deconv')
    if method == 'input-x-gradient':
        return gradients.input_x_gradient(net, x, target)
    if method == 'smoothgrad':
        return gradients.smoothgrad(net, x, target, batch_size=batch_size, seed=0)
    return gradients.integrated_gradients(net, x, target, batch_size=batch_size)[0]


def method_list(text: str):
    names = CLASSIC if text == 'all' else tuple(dict.fromkeys(text.split(',')))
    unknown = [name for name in names if name not in RENDERING]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}, all")
    return names


def save_panel(path: str, image: np.ndarray, raw: Dict[str, np.ndarray], layer: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pictures = [('original', image)]
    for method, values in raw.items():
        name = f'{method} ({layer})' if RENDERING[method] == 'heatmap' else method
        pictures.append((name, render(image, values, method)))
    figure, axes = plt.subplots(1, len(pictures), figsize=(4 * len(pictures), 4.4), squeeze=False)
    for axis, (name, picture) in zip(axes[0], pictures):
        axis.imshow(picture, cmap='gray' if picture.ndim == 2 else None)
        axis.set_title(name)
        axis.axis('off')
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def parse_context(text: str) -> mx.Context:
    kind, _, index = text.partition(':')
    if kind == 'cpu' and not index:
        return mx.cpu()
    if kind == 'gpu' and index.isdigit():
        available = mx.context.num_gpus()
        if int(index) >= available:
            raise RuntimeError(f"--ctx {text}: MXNet sees {available} GPU(s) (a CPU-only build of mxnet, or no "
                               f"CUDA device); install a CUDA build (e.g. mxnet-cu112) or use --ctx cpu")
        return mx.gpu(int(index))
    raise ValueError(f"--ctx {text!r}: expected 'cpu' or 'gpu:N'")


def load_model(args, ctx: mx.Context):
    if args.params:
        net = models.get_model(args.model)
        net.load_parameters(args.params, ctx=ctx)
        return net
    try:
        return models.get_model(args.model, pretrained=True, ctx=ctx, root=args.root)
    except RuntimeError as error:
        if not args.random_weights:
            raise RuntimeError(f"{error} (or pass --random-weights to try the pipeline without them)") from None
    print(f"NOTE: no {args.model} weights: using RANDOM weights; the maps show the pipeline, not ImageNet.")
    net = models.get_model(args.model)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    return net


def class_names() -> List[str]:
    from gluoncv.data import ImageNet1kAttr
    return list(ImageNet1kAttr().classes)


def class_index(text: str, names: List[str]) -> int:
    if text.isdigit():
        if int(text) >= len(names):
            raise ValueError(f"--class {text}: ImageNet class ids are 0..{len(names) - 1}")
        return int(text)
    lowered = [name.lower() for name in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=3)
    hint = f"; did you mean {', '.join(repr(names[lowered.index(c)]) for c in close)}?" if close else ''
    raise ValueError(f"--class {text!r} is neither a class id nor an ImageNet class name{hint}")


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress_bar(total: int):
    """A progress bar on stderr for more than three images."""
    if total <= 3:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc='explaining', unit='image', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
