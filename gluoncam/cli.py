"""``gluoncam``: the command line. ``gluoncam explain IMAGE...`` prints predictions and writes explanations."""
import argparse
import difflib
import os
import re
import sys
import textwrap
import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import nd
from mxnet.gluon import Block

from . import cams, detection, drawing, maps, methods as catalog, models, targets, zoo
from .explainer import Explainer
from .images import find_images, preprocess, read_rgb
from .layers import named_blocks
from .visualize import overlay, render

CLASSIC = ('gradcam', 'guided-gradcam', 'saliency')  # one forward pass serves all three
METHODS = tuple(catalog.METHODS)
OUTPUTS = {'detect': 'detections (class ids, scores, boxes)', 'segment': 'class scores per pixel (N, classes, H, W)',
           'pose': 'keypoint heatmaps (N, keypoints, h, w)'}
TASK_OPTIONS = {'keypoint': ('pose',), 'min_score': ('detect',), 'class_id': ('classify', 'detect', 'segment')}


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == 'evaluate':
            from .evaluate_command import evaluate
            return evaluate(args)
        return explain(args)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"gluoncam: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = ' (the same command resumes the run)' if args.command == 'explain' else ''
        print(f"\ngluoncam: interrupted{resume}", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    from .evaluate_command import add_evaluate
    root = argparse.ArgumentParser(prog='gluoncam', description=__doc__.split('\n')[0])
    commands = root.add_subparsers(dest='command', required=True)
    explain = commands.add_parser('explain', help='explain what a CNN classifies, detects, segments or locates')
    explain.add_argument('images', nargs='+',
                         help='image files, folders (searched with their subfolders) or glob patterns (** for '
                              'any subfolders)')
    add_model_options(explain)
    explain.add_argument('--task', choices=zoo.TASKS, help="what to explain (default: the model's task)")
    explain.add_argument('--method', type=method_list,
                         help=f"comma-separated maps to make. classify: any of {', '.join(METHODS)}, or 'all' "
                              f"(default): {', '.join(CLASSIC)}, from one forward pass. detect: one of "
                              f"{', '.join(detection.METHODS)}. segment, pose: any of {', '.join(cams.CAM_METHODS)}. "
                              f"Default for these three: gradcam")
    explain.add_argument('--class', dest='class_id', metavar='NAME',
                         help='class id or name: the class to explain (classify, segment; default: predicted, '
                              'most frequent) or the boxes to keep (detect)')
    explain.add_argument('--keypoint', metavar='NAME',
                         help=f"pose: keypoint to explain, from: {', '.join(zoo.KEYPOINTS)} (default: nose)")
    explain.add_argument('--top-k', type=int, default=5, help='predictions to print, or boxes to explain, per image')
    explain.add_argument('--min-score', type=float, help='detect: explain no box scoring less (default: 0)')
    explain.add_argument('--out', default='gluoncam-out',
                         help='folder for panels, maps and index.csv, mirroring the input folders '
                              '(default: %(default)s)')
    explain.add_argument('--no-recursive', dest='recursive', action='store_false',
                         help="search folders' own files only, not their subfolders")
    explain.add_argument('--overwrite', action='store_true',
                         help='replace outputs that exist (default: keep them, and resume an interrupted run)')
    explain.add_argument('--labels', metavar='CSV',
                         help='true classes for the index: rows image,label (image: its path relative to the '
                              'inputs\' common root, as given, or its file name; label: class id or name); '
                              'default: class folder names, where they name a class')
    explain.add_argument('--dask', metavar='ADDRESS',
                         help="classify: run on a Dask cluster (the scheduler's address, e.g. tcp://host:8786, or "
                              "'local:N' for N local worker processes); every worker must reach the images and "
                              "--out. Needs pip install 'gluoncam[dask]'")
    add_evaluate(commands)
    return root


def add_model_options(command: argparse.ArgumentParser) -> None:
    """The options that choose the model, its weights, its input and where it runs (explain and evaluate)."""
    command.add_argument('--model', default='efficientnet_lite0',
                         help=f"one of gluoncam's models ({', '.join(models.MODELS)}) or any GluonCV model-zoo "
                              f"name, e.g. resnet50_v1, yolo3_darknet53_voc, fcn_resnet50_voc, "
                              f"simple_pose_resnet18_v1b (default: %(default)s)")
    command.add_argument('--params', help='weights file to load instead of the pretrained weights')
    command.add_argument('--random-weights', action='store_true',
                         help="random weights for GluonCV models; for gluoncam's, where no weights are available "
                              "(the maps then mean nothing)")
    command.add_argument('--root', default=os.path.join(mx.base.data_dir(), 'models'),
                         help='folder of pretrained weight files (default: %(default)s)')
    command.add_argument('--size', type=size_pair, metavar='H,W',
                         help="input height,width the images are resized to (default: the model's, e.g. 224,224)")
    command.add_argument('--layer', help="layer to explain (default: the model's usual one); 'list' lists them")
    command.add_argument('--ctx', default='cpu',
                         help="'cpu', 'cpu:N' or 'gpu:N'; explain (classify) also takes several, comma-separated "
                              "(e.g. gpu:0,gpu:1): a model copy on each, the images shared among them")
    command.add_argument('--batch-size', type=int, default=8, help='images per forward pass')


@dataclass
class Job:
    """What to explain, decided once from the arguments and the model."""
    net: Block
    model: str
    task: str
    layer: str
    size: Tuple[int, int]
    methods: Tuple[str, ...]
    names: List[str]
    target: Optional[int]  # class id (classify, detect, segment) or keypoint id (pose)
    ctx: mx.Context
    args: argparse.Namespace
    stems: Dict[str, str] = field(default_factory=dict)  # image path -> its outputs' path without the ending


def explain(args) -> int:
    """Classification runs as a dataset run (``dataset_run``: index, resume, several contexts, Dask); detection,
    segmentation and pose write their outputs the same way, in the mirrored tree, without the index."""
    from . import dataset_run
    if args.batch_size < 1 or args.top_k < 1:
        raise ValueError("--batch-size and --top-k must be at least 1")
    paths = find_images(args.images, recursive=args.recursive)
    contexts = parse_contexts(args.ctx)
    if args.layer != 'list':
        dataset_run.check_out(args.out)  # before any work
        paths = outside(paths, args.out)
    net = dataset_run.load_net(args, contexts[0])
    if args.layer == 'list':
        print('\n'.join(named_blocks(net)))
        return 0
    first = dataset_run.load_copy(args, contexts[0], net)
    if first.job.task == 'classify':
        return dataset_run.explain_dataset(args, paths, first, contexts)
    if len(contexts) > 1 or args.dask or args.labels:
        raise ValueError(f"several --ctx, --dask and --labels are for --task classify, not {first.job.task}")
    return explain_other_task(first.job, paths)


def outside(paths: List[str], out: str) -> List[str]:
    """``paths`` but the files under ``out`` (the outputs of an earlier run in a folder being explained)."""
    out = os.path.abspath(out) + os.sep
    kept = [path for path in paths if not os.path.abspath(path).startswith(out)]
    if not kept:
        raise FileNotFoundError(f"no image to explain: every one found lies under --out {out.rstrip(os.sep)!r}")
    if len(kept) < len(paths):
        print(f"left out {len(paths) - len(kept)} file(s) under --out {out.rstrip(os.sep)!r}", file=sys.stderr)
    return kept


def explain_other_task(job: Job, paths: List[str]) -> int:
    """Detection, segmentation, pose: each batch explained and written; unreadable files reported."""
    from .dataset_run import common_root, output_stems
    root = common_root(paths)
    relatives = [os.path.relpath(os.path.abspath(path), root) for path in paths]
    endings = ['.png', '_boxes.npz', '_mask.npy'] + [f"_{method.replace('-', '_')}.npy" for method in job.methods]
    job.stems = {path: os.path.join(job.args.out, stem) for path, stem in zip(paths, output_stems(relatives, endings))}
    failures = 0
    progress = _progress_bar(len(paths))
    with explainer_of(job.net) as explainer:
        for batch in _batches(paths, job.args.batch_size):
            images = {}
            for path in batch:
                try:
                    images[path] = read_rgb(path)
                except ValueError as error:
                    say(f"error: {error}", sys.stderr)
                    failures += 1
            if images:
                TASKS[job.task](explainer, job, images)
            advance(progress, len(batch))
    if progress is not None:
        progress.close()
    print(f"wrote panels and maps of {len(paths) - failures} image(s) to {os.path.abspath(job.args.out)}")
    if failures:
        print(f"{failures} file(s) could not be read", file=sys.stderr)
    return 1 if failures else 0


def advance(bar, count: int) -> None:
    """``count`` more done on ``bar`` (None: no bar); the finished bar is drawn once, by its ``close``."""
    if bar is None:
        return
    if bar.n + count >= bar.total:
        bar.n += count  # drawn by close(): an update here would draw the finished bar a first time
    else:
        bar.update(count)


def say(text: str, file=None) -> None:
    """A line printed above an open progress bar, never into it."""
    from tqdm import tqdm
    tqdm.write(text, file=file or sys.stdout)


def plan(args, net: Block, ctx: mx.Context) -> Job:
    """The task, layer, input size, methods and target for ``net``, the arguments checked against them."""
    task = args.task or zoo.task_of(net)
    check_task(task, net, args)
    names = list(zoo.KEYPOINTS) if task == 'pose' else zoo.class_names(net)
    if task == 'pose':
        target = name_index(args.keypoint or 'nose', names, '--keypoint', 'keypoint')
    else:
        target = None if args.class_id is None else name_index(args.class_id, names, '--class', 'class')
    if args.layer is not None:
        check_layer(args.layer, net, args.model)
    return Job(net, args.model, task, args.layer or zoo.default_layer(net), args.size or zoo.input_size(net),
               task_methods(task, args.method), names, target, ctx, args)


def check_layer(layer: str, net: Block, model: str) -> None:
    """A ValueError naming the closest layer names (not all of them) if ``net`` has no layer ``layer``."""
    names = list(named_blocks(net))
    if layer in names:
        return
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(map(repr, close))}" if close else ''
    raise ValueError(f"--layer {layer!r} is not a layer of {model}{hint} (all {len(names)} names: --layer list)")


def settle_shapes(net: Block, size: Tuple[int, int], ctx: mx.Context) -> None:
    """One inference pass of a blank image, which gives deferred parameters their shapes (and random values)."""
    from .input_size import too_small
    shape = (1, 3) + tuple(size)
    try:
        with mx.autograd.predict_mode():
            net(nd.zeros(shape, ctx=ctx))
    except (mx.base.MXNetError, ValueError) as error:
        explained = too_small(net, shape, error)
        if explained is not None:
            raise explained from None
        reason = str(error).strip().splitlines()[-1].replace('MXNetError: ', '')
        raise ValueError(f"the model fails on a blank {size[0]} x {size[1]} input: {reason}") from None


def check_task(task: str, net: Block, args) -> None:
    """A ValueError if ``net`` cannot classify (its own task says so) or an option belongs to another task."""
    own = zoo.task_of(net)
    if task == 'classify' and own != 'classify':
        raise ValueError(f"--task classify needs class scores (N, classes); {args.model} is a {own} model whose "
                         f"output is {OUTPUTS[own]}: use --task {own}")
    for option, tasks in TASK_OPTIONS.items():
        if getattr(args, option) is not None and task not in tasks:
            flag = '--class' if option == 'class_id' else '--' + option.replace('_', '-')
            raise ValueError(f"{flag} is for --task {' or '.join(tasks)}, not {task}")


def task_methods(task: str, methods: Optional[Tuple[str, ...]]) -> Tuple[str, ...]:
    """The maps to make for ``task``: the asked ``methods`` checked, or the task's default."""
    if task == 'classify':
        return methods or CLASSIC
    valid = detection.METHODS if task == 'detect' else tuple(cams.CAM_METHODS)
    methods = methods or ('gradcam',)
    unknown = [method for method in methods if method not in valid]
    if unknown:
        raise ValueError(f"--task {task} makes maps by: {', '.join(valid)}; not {unknown[0]!r}")
    if task == 'detect' and len(methods) > 1:
        raise ValueError(f"--task detect takes one --method (a map per box), got {', '.join(methods)}")
    return methods


def batch_input(job: Job, images: Dict[str, np.ndarray]) -> nd.NDArray:
    return nd.concat(*[preprocess(image, job.net, job.size) for image in images.values()], dim=0) \
        .as_in_context(job.ctx)


def explain_detections(explainer: Explainer, job: Job, images: Dict[str, np.ndarray]) -> None:
    """Detection: the boxes printed and drawn, then each box's map; ``<stem>_boxes.npz`` with the raw maps."""
    x = batch_input(job, images)
    found = box_maps(job, x)
    heat = detection.upsampled(found, job.size)
    colors = drawing.class_colors(job.names)
    for i, (path, image) in enumerate(images.items()):
        keep = np.flatnonzero(found.valid[i])
        ids, scores = found.ids[i, keep], found.scores[i, keep]
        boxes = to_image_pixels(found.boxes[i, keep], job.size, image.shape[:2])
        labels = [f"{_name(job.names, k)} {score:.2f}" for k, score in zip(ids, scores)]
        print_boxes(path, labels, boxes)
        stem = _stem(job, path)
        np.savez(stem + '_boxes.npz', ids=ids, scores=scores, boxes=boxes, maps=found.maps[i].asnumpy()[keep])
        drawn = [drawing.Box(*box, label, tuple(colors[k % len(colors)])) for box, label, k in zip(boxes, labels, ids)]
        drawing.save_panels(stem + '.png', box_panels(image, drawn, heat[i][keep]),
                            f"{job.model}: {job.methods[0]} of each box's score ({job.layer})")


def box_maps(job: Job, x: nd.NDArray) -> detection.BoxMaps:
    """The top-k boxes' maps; with ``--class``, the top-k boxes of that class."""
    classes = None if job.target is None else [job.target]
    return detection.explain_boxes(job.net, x, job.layer, job.methods[0], job.args.top_k, job.args.min_score or 0.0,
                                   classes)


def to_image_pixels(boxes: np.ndarray, size: Tuple[int, int], image_size: Tuple[int, int]) -> np.ndarray:
    """Corners in the network input's pixels (``size``: height, width) mapped onto the original image."""
    scale = np.array([image_size[1] / size[1], image_size[0] / size[0]] * 2, dtype=np.float32)
    return boxes.reshape(-1, 4) * scale


def print_boxes(path: str, labels: List[str], boxes: np.ndarray) -> None:
    say(f"{path}: {len(labels)} box(es)" + (':' if labels else ''))
    for label, box in zip(labels, boxes):
        say(f"  {label} at ({', '.join(f'{v:.0f}' for v in box)})")


def box_panels(image: np.ndarray, boxes: List[drawing.Box], heat: np.ndarray) -> List[drawing.Panel]:
    """The image with every box, then each box's map (``heat``: K x H x W in [0, 1]) with that box."""
    panels = [drawing.Panel(f'{len(boxes)} detection(s)' if boxes else 'no detections', image, boxes)]
    return panels + [drawing.Panel(f'{j + 1}. {box.label}', overlay(image, values),
                                   [dataclasses.replace(box, label='')])
                     for j, (box, values) in enumerate(zip(boxes, heat))]


def explain_segments(explainer: Explainer, job: Job, images: Dict[str, np.ndarray]) -> None:
    """Segmentation: each image's classes by share printed; the predicted mask and the maps of one class drawn."""
    x = batch_input(job, images)
    output, _ = explainer.forward(x)
    check_fits(targets.SegmentationTarget(job.target or 0), output)
    logits = targets.first_array(output)
    names = _names_for(job.names, logits.shape[1])
    predicted = nd.argmax(logits, axis=1).asnumpy().astype(np.min_scalar_type(len(names)))
    for i, (path, image) in enumerate(images.items()):
        shares = np.bincount(predicted[i].ravel(), minlength=len(names)) / predicted[i].size
        category = job.target if job.target is not None else main_class(shares, names)
        print_shares(path, shares, names, category)
        raw = {method: values[0] for method, values in
               cam_maps(job, x[i:i + 1], targets.SegmentationTarget(category)).items()}
        stem = _stem(job, path)
        np.save(stem + '_mask.npy', predicted[i])
        save_maps(stem, raw)
        panels = [drawing.Panel('original', image), mask_panel(image, predicted[i], shares, names)]
        panels += map_panels(image, raw, names[category])
        drawing.save_panels(stem + '.png', panels, f"{job.model}: {names[category]} ({category}), layer {job.layer}")


def main_class(shares: np.ndarray, names: Sequence[str]) -> int:
    """The class covering most pixels, background aside unless it is all there is."""
    foreground = shares.copy()
    foreground[[name.lower() == 'background' for name in names]] = 0
    return int(np.argmax(foreground if foreground.any() else shares))


def print_shares(path: str, shares: np.ndarray, names: Sequence[str], category: int) -> None:
    """The five commonest classes by share of pixels, and the class explained."""
    common = ', '.join(f"{names[k]} {shares[k]:.1%}" for k in np.argsort(-shares)[:5] if shares[k] > 0)
    empty = '' if shares[category] else ': predicted nowhere, so its map is empty'
    say(f"{path}: {common}; explaining {names[category]} ({category}){empty}")


def mask_panel(image: np.ndarray, predicted: np.ndarray, shares: np.ndarray, names: Sequence[str]) -> drawing.Panel:
    """The predicted classes in colour over the image, the commonest ones in the legend."""
    colors = drawing.class_colors(names)
    legend = [(f"{names[k]} {shares[k]:.1%}", tuple(colors[k])) for k in np.argsort(-shares)[:8] if shares[k] > 0]
    return drawing.Panel('predicted classes', drawing.color_mask(predicted, colors, image), legend=legend)


def explain_keypoints(explainer: Explainer, job: Job, images: Dict[str, np.ndarray]) -> None:
    """Pose: the keypoint's heatmap peak printed and marked; the maps of that peak's score."""
    x = batch_input(job, images)
    output, _ = explainer.forward(x)
    target = targets.KeypointTarget(job.target)
    check_fits(target, output)
    heatmaps = targets.first_array(output)[:, job.target].asnumpy()
    keypoint = job.names[job.target]
    batch_maps = cam_maps(job, x, target)  # the same target for every image: one pass for the batch
    for i, (path, image) in enumerate(images.items()):
        peak = heatmap_peak(heatmaps[i], image.shape[:2], keypoint)
        say(f"{path}: {keypoint} peak {heatmaps[i].max():.3g} at ({peak.x:.0f}, {peak.y:.0f})")
        raw = {method: values[i] for method, values in batch_maps.items()}
        stem = _stem(job, path)
        save_maps(stem, raw)
        panels = [drawing.Panel(f'{keypoint} (heatmap peak)', image, points=[peak])]
        panels += [drawing.Panel(panel.title, panel.image, points=[peak]) for panel in map_panels(image, raw, keypoint)]
        drawing.save_panels(stem + '.png', panels, f"{job.model}: {keypoint}, layer {job.layer}")


def heatmap_peak(heatmap: np.ndarray, image_size: Tuple[int, int], label: str) -> drawing.Point:
    """Where ``heatmap`` (h x w, covering the whole image) peaks, in the image's pixels."""
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return drawing.Point((col + 0.5) * image_size[1] / heatmap.shape[1],
                         (row + 0.5) * image_size[0] / heatmap.shape[0], label)


def check_fits(target, output) -> None:
    """The target's ValueError, saying what the output is, if it cannot score ``output``."""
    target(output)


def cam_maps(job: Job, x: nd.NDArray, target) -> Dict[str, np.ndarray]:
    """Each method's raw CAMs of ``target`` (N x h x w), from one shared pass."""
    found = cams.cam(job.net, x, job.layer, list(job.methods), target, batch_size=job.args.batch_size)
    return {method: values.asnumpy() for method, values in found.items()}


def save_maps(stem: str, raw: Dict[str, np.ndarray]) -> None:
    for method, values in raw.items():
        np.save(f"{stem}_{method.replace('-', '_')}.npy", values)


def map_panels(image: np.ndarray, raw: Dict[str, np.ndarray], subject: str) -> List[drawing.Panel]:
    """One panel per method: its map rendered over (or beside) ``image``, titled with ``subject``."""
    return [drawing.Panel(f'{method} ({subject})' if catalog.METHODS[method].uses_layer else method,
                          render(image, values, method)) for method, values in raw.items()]


TASKS = {'detect': explain_detections, 'segment': explain_segments,
         'pose': explain_keypoints}


def modes_for(methods) -> Tuple[str, ...]:
    """The backward modes of the one recorded pass that serves ``methods``."""
    guided = 'guided-gradcam' in methods or 'guided-backprop' in methods
    return ('normal',) + (('guided',) if guided else ()) + (('deconv',) if 'deconv' in methods else ())


def method_maps(result, x: nd.NDArray, layer: str, methods) -> Dict[str, np.ndarray]:
    """The raw float maps, numpy, that the recorded pass ``result`` gives: the CAMs that need no forward pass of
    their own (Grad-CAM and its kin, Eigen-CAM; N x h x w), guided Grad-CAM, guided backpropagation, deconvnet and
    input x gradient (N x C x H x W), saliency (N x H x W)."""
    out = {}
    from_layer = [m for m in methods if m == 'guided-gradcam' or m in cams.CAM_METHODS and from_one_pass(m)]
    if from_layer:
        activation, gradient = result.activations[layer], result.gradients['normal'][layer]
        if activation.ndim != 4:
            raise ValueError(f"layer {layer!r} gives output of shape {activation.shape}; Grad-CAM needs a 4-D "
                             f"layer (see --layer list)")
        cam = maps.grad_cam(activation, gradient) if {'gradcam', 'guided-gradcam'} & set(from_layer) else None
        for method in from_layer:
            if method == 'gradcam':
                out[method] = cam.asnumpy()
            elif method == 'guided-gradcam':
                out[method] = maps.guided_grad_cam(result.input_gradients['guided'], cam).asnumpy()
            else:
                out[method] = cams.CAM_METHODS[method]()(activation, gradient, None).asnumpy()
    for method, mode in (('guided-backprop', 'guided'), ('deconv', 'deconv')):
        if method in methods:
            out[method] = result.input_gradients[mode].asnumpy()
    if 'saliency' in methods:
        out['saliency'] = maps.saliency(result.input_gradients['normal']).asnumpy()
    if 'input-x-gradient' in methods:
        out['input-x-gradient'] = (x * result.input_gradients['normal']).asnumpy()
    return out


def from_one_pass(cam_method: str) -> bool:
    """Whether a CAM is made from the layer's activation and gradient alone (no passes of its own)."""
    return not cams.CAM_METHODS[cam_method].own_passes


def method_list(text: str) -> Tuple[str, ...]:
    names = CLASSIC if text == 'all' else tuple(dict.fromkeys(text.split(',')))
    unknown = [name for name in names if name not in catalog.METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}, all")
    return names


def size_pair(text: str) -> Tuple[int, int]:
    """'H,W' (or one number for a square) as (height, width)."""
    parts = text.split(',')
    values = [int(part) for part in parts if part.strip().isdigit()]
    if len(values) != len(parts) or len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected height,width in pixels (e.g. 224,224), got {text!r}")
    return (values[0], values[-1])


def parse_contexts(text: str) -> List[mx.Context]:
    """Comma-separated contexts ('cpu:0,cpu:1', 'gpu:0,gpu:1'), each once."""
    contexts = [parse_context(part.strip()) for part in text.split(',')]
    if len(set(map(str, contexts))) < len(contexts):
        raise ValueError(f"--ctx {text!r} names a context twice")
    return contexts


def parse_context(text: str) -> mx.Context:
    kind, _, index = text.partition(':')
    if kind == 'cpu' and (not index or index.isdigit()):
        return mx.cpu(int(index or 0))
    if kind == 'gpu' and index.isdigit():
        available = mx.context.num_gpus()
        if int(index) >= available:
            raise RuntimeError(f"--ctx {text}: MXNet sees {available} GPU(s) (a CPU-only build of mxnet, or no "
                               f"CUDA device); install a CUDA build (e.g. mxnet-cu112) or use --ctx cpu")
        return mx.gpu(int(index))
    raise ValueError(f"--ctx {text!r}: expected 'cpu' or 'gpu:N' (or several, comma-separated: gpu:0,gpu:1)")


def load_model(args, ctx: mx.Context) -> Block:
    """gluoncam's model or GluonCV's named ``--model``, with the weights the arguments ask for."""
    name = args.model.lower()
    if name in models.MODELS:
        return load_own_model(name, args, ctx)
    check_model_name(name)
    if args.params:
        return load_params(zoo.get_model(name, pretrained=False, ctx=ctx), args.params, ctx)
    if args.random_weights:
        print(f"NOTE: using RANDOM weights for {name}; the maps show the pipeline, not what a trained model sees.")
        return zoo.get_model(name, pretrained=False, ctx=ctx)
    try:
        return zoo.get_model(name, pretrained=True, ctx=ctx, root=args.root)
    except RuntimeError as error:
        raise RuntimeError(f"{error} (or pass --random-weights to try the pipeline without them)") from None


def load_own_model(name: str, args, ctx: mx.Context) -> Block:
    if args.params:
        return load_params(models.get_model(name), args.params, ctx)
    try:
        return models.get_model(name, pretrained=True, ctx=ctx, root=args.root)
    except RuntimeError as error:
        if not args.random_weights:
            raise RuntimeError(f"{error} (or pass --random-weights to try the pipeline without them)") from None
    print(f"NOTE: no {name} weights: using RANDOM weights; the maps show the pipeline, not ImageNet.")
    net = models.get_model(name)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    return net


def load_params(net: Block, path: str, ctx: mx.Context) -> Block:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--params {path!r}: no such file")
    try:
        net.load_parameters(path, ctx=ctx)
    except (AssertionError, mx.base.MXNetError) as error:
        reason = params_problem(str(error).strip().splitlines()[-1].replace('MXNetError: ', ''))
        raise RuntimeError(f"cannot load --params {path!r} into {type(net).__name__}: {reason}") from None
    return net


def params_problem(reason: str) -> str:
    """MXNet's reason a parameter file does not load, short (it lists every parameter of the file)."""
    missing = re.match(r"Parameter '([^']+)' is missing in file", reason)
    extra = re.match(r"Parameter '([^']+)' loaded from file .* is not present in", reason)
    if missing:
        reason = f"the file has no parameter {missing.group(1)!r}"
    elif extra:
        reason = f"the file holds a parameter {extra.group(1)!r} the model does not have"
    if missing or extra:
        return reason + " (weights of another network or another --model?)"
    return textwrap.shorten(reason, 300, placeholder=' ...')


def check_model_name(name: str) -> None:
    """A ValueError suggesting close names unless ``name`` is gluoncam's or GluonCV's."""
    known = sorted(set(models.MODELS) | set(zoo.names()))
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=4)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ''
    raise ValueError(f"unknown model {name!r}{hint} (gluoncam's: {', '.join(models.MODELS)}; GluonCV's: "
                     f"gluoncv.model_zoo.get_model_list())")


def explainer_of(net: Block) -> Explainer:
    try:
        return Explainer(net)
    except TypeError as error:
        raise ValueError(f"cannot explain {type(net).__name__}: {error}") from None


def name_index(text: str, names: Sequence[str], option: str, kind: str) -> int:
    """The index of ``text``, an id or one of ``names`` (any case); else a ValueError with close names, and all of
    them if there are not too many."""
    if text.isdigit():
        if int(text) >= len(names):
            raise ValueError(f"{option} {text}: {kind} ids are 0..{len(names) - 1}")
        return int(text)
    lowered = [name.lower() for name in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=3)
    hint = f" (did you mean {', '.join(repr(names[lowered.index(c)]) for c in close)}?)" if close else ''
    listing = f"; valid: {', '.join(names)}" if len(names) <= 100 else ''
    raise ValueError(f"{option} {text!r} is neither a {kind} id nor a {kind} name of the model{hint}{listing}")


def _name(names: Sequence[str], k: int) -> str:
    return names[k] if 0 <= k < len(names) else f'class {k}'


def _names_for(names: List[str], count: int) -> List[str]:
    """``names`` if the output has as many classes, else 'class 0', 'class 1', ..."""
    return names if len(names) == count else [f'class {k}' for k in range(count)]


def _stem(job: Job, path: str) -> str:
    """Where ``path``'s outputs go, without their endings; its folder made."""
    stem = job.stems.get(path) or os.path.join(job.args.out, os.path.splitext(os.path.basename(path))[0])
    os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
    return stem


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
