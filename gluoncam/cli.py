"""``gluoncam``: the command line. ``gluoncam explain IMAGE...`` writes one explanation panel per image."""
import argparse
import os
import sys
from typing import List, Optional

import mxnet as mx
import numpy as np

from . import maps, models
from .explainer import Explainer
from .images import find_images, preprocess, read_rgb
from .layers import conv_like, named_blocks
from .visualize import gradient_image, gray_image, overlay


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='gluoncam', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    explain = commands.add_parser('explain', help='explain ImageNet predictions of images')
    explain.add_argument('images', nargs='+', help='image files, folders or glob patterns')
    explain.add_argument('--model', default='vgg16', choices=sorted(models.MODELS))
    explain.add_argument('--params', help='weights file to load instead of the model-zoo weights')
    explain.add_argument('--random-weights', action='store_true',
                         help='use random weights when no weights are available (the maps then mean nothing)')
    explain.add_argument('--root', default=os.path.join(mx.base.data_dir(), 'models'),
                         help='folder of the model-zoo weight files (default: %(default)s)')
    explain.add_argument('--layer', help="layer for Grad-CAM (default: the last convolution); 'list' lists them")
    explain.add_argument('--class', dest='class_id', type=int, help='class to explain (default: the predicted)')
    explain.add_argument('--top-k', type=int, default=3, help='predictions to print per image')
    explain.add_argument('--ctx', default='cpu', help="'cpu' or 'gpu:N'")
    explain.add_argument('--out', default='gluoncam-out', help='folder for the panels (default: %(default)s)')
    args = parser.parse_args(argv)
    try:
        return run_explain(args)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"gluoncam: error: {error}", file=sys.stderr)
        return 2


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
    net = models.get_model(args.model)
    if args.params:
        net.load_parameters(args.params, ctx=ctx)
        return net
    try:
        return models.get_model(args.model, pretrained=True, ctx=ctx, root=args.root)
    except RuntimeError as error:
        if not args.random_weights:
            raise RuntimeError(f"{error} (or pass --random-weights to try the pipeline without them)") from None
    print(f"NOTE: no {args.model} weights: using RANDOM weights; the maps show the pipeline, not ImageNet.")
    net.initialize(mx.init.Xavier(), ctx=ctx)
    return net


def run_explain(args) -> int:
    paths = find_images(args.images)
    ctx = parse_context(args.ctx)
    net = load_model(args, ctx)
    if args.layer == 'list':
        print('\n'.join(named_blocks(net)))
        return 0
    layer = args.layer or [name for name in conv_like(net) if 'conv' in name][-1]
    os.makedirs(args.out, exist_ok=True)
    names = class_names()
    failures = 0
    explainer = Explainer(net)
    for path in paths:
        try:
            original = read_rgb(path)
        except ValueError as error:
            print(f"skipped: {error}", file=sys.stderr)
            failures += 1
            continue
        x = preprocess(original).as_in_context(ctx)
        result = explainer.backprop(x, args.class_id, [layer], ('normal', 'guided'))
        probabilities = mx.nd.softmax(result.output)[0].asnumpy()
        top = np.argsort(-probabilities)[:args.top_k]
        print(f"{path}: " + ', '.join(f"{names[k]} ({k}) {probabilities[k]:.3f}" for k in top))
        cls = int(result.classes.asscalar())
        panel = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + '.png')
        save_panel(panel, original, result, layer, f"{names[cls]} ({cls}) p={probabilities[cls]:.3f}")
    print(f"panels written to {os.path.abspath(args.out)}")
    return 1 if failures else 0


def save_panel(path: str, original: np.ndarray, result, layer: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cam = maps.grad_cam(result.activations[layer], result.gradients['normal'][layer])
    guided = maps.guided_grad_cam(result.input_gradients['guided'], cam)
    salient = maps.saliency(result.input_gradients['normal'])
    size = original.shape[:2]
    pictures = [('original', original),
                (f'Grad-CAM ({layer})', overlay(original, maps.normalize(cam).asnumpy()[0])),
                ('guided Grad-CAM', gradient_image(maps.normalize(guided).asnumpy()[0], size)),
                ('saliency', gray_image(maps.normalize(salient).asnumpy()[0], size))]
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for axis, (name, picture) in zip(axes, pictures):
        axis.imshow(picture, cmap='gray' if picture.ndim == 2 else None)
        axis.set_title(name)
        axis.axis('off')
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def class_names() -> List[str]:
    from gluoncv.data import ImageNet1kAttr
    return list(ImageNet1kAttr().classes)


if __name__ == '__main__':
    sys.exit(main())
