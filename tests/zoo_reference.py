"""The zoo test bed's shared definitions (building a model, its target, its forward decisions) and its reference.

Imported by ``test_zoo.py``. Run as a script it is the reference: plain MXNet autograd with MKLDNN off, in a
process that never imports gluoncam. It reads job names from stdin, one a line; each job is a folder under
``sys.argv[1]`` holding ``job.json`` (model, input size, settings, layer, target kind), ``net.params``, ``x.npy``
and ``pins.npy`` (the target's decisions, taken in the test process). It writes ``ref.npz`` (the compared outputs,
the layer's activation and gradient, the input gradient), ``decisions.npz`` (its forward pass's ReLU and max-pool
decisions) and then ``done.json`` (timings, or the error).
"""
import json
import os
import sys
import time
import traceback
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, nd

SEED = 11
TOP_DETECTIONS = 5  # a detector's target: the sum of its best detections' scores


def build(name, size, kwargs, settings=None, differentiable_boxes=False):
    """GluonCV's ``name`` with random weights (Xavier, fixed seed), materialised at ``size`` x ``size``.

    ``settings`` maps dotted attribute paths to values set after construction (options the zoo's constructors
    fix). ``differentiable_boxes`` (the reference's setting) switches the box decoder on the way to the detections
    (SSD's, R-CNN's) to GluonCV's minimal-opset form, the same boxes from elementwise ops: MXNet 1.9.1 segfaults
    (MKLDNN on or off) in a backward pass in which a Convolution or FullyConnected output reaches the head through
    another op and then an op without gradient, as it does through ``contrib.box_decode`` there (minimal case:
    ``BlockGrad(FullyConnected(x, w).reshape(...)).sum()``).
    """
    from gluoncv import model_zoo
    mx.random.seed(SEED)
    net = model_zoo.get_model(name, pretrained=False, **kwargs)
    for path, value in (settings or {}).items():
        owner, _, attribute = path.rpartition('.')
        setattr(block_at(net, owner) if owner else net, attribute, value)
    decoder = getattr(net, 'box_decoder', None) or getattr(net, 'bbox_decoder', None)
    if differentiable_boxes and hasattr(decoder, '_minimal_opset'):
        decoder._minimal_opset = True
    with warnings.catch_warnings():  # some (CenterNet, FCN) initialise parts of themselves when constructed
        warnings.filterwarnings('ignore', message='.*is already initialized')
        net.initialize(mx.init.Xavier())
    net(nd.zeros((1, 3, size, size)))
    return net


def block_at(net, path):
    """The child of ``net`` at a dotted ``print(net)`` path (``'features.7'``)."""
    block = net
    for key in path.split('.'):
        block = block._children[key]
    return block


def target_score(kind, pins):
    """The target as a function of the network output: one score per sample (shape (N,)).

    ``pins`` holds the target's decisions, taken once from the inference output in the test process (so that the
    two processes score the same thing): the classes (``'class'``), how many top detections to sum
    (``'detection'``), per-pixel weights selecting a class over its predicted mask (``'segmentation'``), or the
    keypoint (``'pose'``).
    """
    if kind == 'class':
        return lambda out: nd.pick(out, nd.array(pins, ctx=out.context), axis=1)
    if kind == 'detection':
        top = int(pins)
        return lambda out: best_detections(out, top).sum(axis=1)
    if kind == 'segmentation':
        return lambda out: (out[0] * nd.array(pins, ctx=out[0].context)).sum(axis=(1, 2, 3))
    if kind == 'pose':
        keypoint = int(pins)
        return lambda out: out[:, keypoint].reshape((0, -1)).max(axis=1)
    raise ValueError(f"unknown target kind {kind!r}")


def best_detections(out, top=TOP_DETECTIONS):
    """A detector's ``top`` best scores, N x top, best first (GluonCV's detectors return ids, scores, boxes; the
    scores are sorted per class, not across classes in R-CNN)."""
    return out[1].reshape((0, -1)).topk(k=top, ret_typ='value')


def compared_outputs(kind, out):
    """What of the network output the two processes compare, as numpy arrays by name: the logits, heatmaps or
    segmentation scores; for a detector the scores and boxes of the detections the target sums (the ranking of
    lower ones may differ on near-ties)."""
    if kind != 'detection':
        return {'output': (out[0] if isinstance(out, (list, tuple)) else out).asnumpy()}
    scores = out[1].reshape((0, -1)).asnumpy()
    boxes = out[2].reshape((0, -1, 4)).asnumpy()
    best = np.argsort(-scores, axis=1, kind='stable')[:, :TOP_DETECTIONS]
    return {'scores': np.take_along_axis(scores, best, axis=1),
            'boxes': np.take_along_axis(boxes, best[:, :, None], axis=1)}


class Decisions:
    """The discrete decisions of one predict-mode forward pass, in the order the network makes them: for every
    ReLU, clip and LeakyReLU, which inputs lie above each threshold (0, and a clip's upper bound); for every max
    pooling, which inputs its backward pass routes gradient to. ``distances`` holds, per decision array, how far
    each input is from its threshold (for pooling: from 0) relative to the largest input magnitude.

    The distances (memory: one float per decision) are kept only with ``distances=True``.
    """

    THRESHOLDED = ('Activation', 'relu', 'clip', 'LeakyReLU')

    def __init__(self, distances=True):
        self.kinds, self.above, self.distances = [], [], []
        self._keep_distances = distances

    def record(self, net, x):
        originals = {name: getattr(nd, name) for name in self.THRESHOLDED + ('Pooling',)}

        def thresholded(name):
            def op(*args, **kwargs):
                data = args[0] if args else kwargs['data']
                for threshold in self._thresholds(name, args, kwargs):
                    self._add(f'{name}>{threshold:g}', data.asnumpy(), threshold)
                return originals[name](*args, **kwargs)
            return op

        def pooling(*args, **kwargs):
            out = originals['Pooling'](*args, **kwargs)
            if kwargs.get('pool_type') == 'max':
                self._add_routing(originals['Pooling'], args, kwargs)
            return out

        try:
            for name in self.THRESHOLDED:
                setattr(nd, name, thresholded(name))
            nd.Pooling = pooling
            with autograd.predict_mode():
                net(x)
        finally:
            for name, op in originals.items():
                setattr(nd, name, op)
        return self

    @staticmethod
    def _thresholds(name, args, kwargs):
        if name == 'relu':
            return [0.]
        if name == 'clip':
            low = kwargs.get('a_min', args[1] if len(args) > 1 else None)
            high = kwargs.get('a_max', args[2] if len(args) > 2 else None)
            return [bound for bound in (low, high) if bound is not None]
        act = kwargs.get('act_type', args[1] if len(args) > 1 else 'leaky' if name == 'LeakyReLU' else None)
        return [0.] if act in ('relu', 'leaky', 'prelu') else []

    def _add(self, kind, values, threshold):
        self.kinds.append(kind)
        self.above.append(values > threshold)
        self.distances.append(self._distance(values - threshold, values))

    def _distance(self, offsets, values):
        if not self._keep_distances:
            return None
        return np.abs(offsets) / max(float(np.abs(values).max()), 1e-30)

    def _add_routing(self, pool, args, kwargs):
        data = (args[0] if args else kwargs['data']).detach()
        data.attach_grad()
        with autograd.record(train_mode=True):  # MKLDNN's max pooling routes correctly in train mode
            out = pool(data, *args[1:], **{k: v for k, v in kwargs.items() if k != 'data'})
        out.backward(nd.ones_like(out))
        values = data.asnumpy()
        self.kinds.append('max pooling')
        self.above.append(data.grad.asnumpy() > 0)
        self.distances.append(self._distance(values, values))

    def save(self, path):
        layout = json.dumps({'kinds': self.kinds, 'shapes': [a.shape for a in self.above]})
        np.savez(path, layout=np.array(layout), **{f'd{i}': np.packbits(a) for i, a in enumerate(self.above)})

    @classmethod
    def load(cls, path):
        saved = np.load(path)
        layout = json.loads(str(saved['layout']))
        found = cls(distances=False)
        found.kinds = layout['kinds']
        found.above = [np.unpackbits(saved[f'd{i}'], count=int(np.prod(shape))).astype(bool).reshape(shape)
                       for i, shape in enumerate(layout['shapes'])]
        return found


def reference(net, x, layer, kind, score):
    """Plain autograd, predict mode: the gradient of ``score(net(x))`` at the input and at ``layer``'s output.

    The layer's output is replaced downstream by a fresh leaf; the backward pass from the score reaches the leaf
    (and the input where paths bypass the layer), then the layer's own graph is back-propagated from the leaf's
    gradient, adding to the input's.
    """
    block = block_at(net, layer)
    cut = {}
    original = block.forward

    def forward(*args):
        out = original(*args)
        leaf = out.detach()
        leaf.attach_grad()
        cut['out'], cut['leaf'] = out, leaf
        return leaf

    block.forward = forward
    x = x.copy()
    x.attach_grad(grad_req='add')
    x.grad[:] = 0
    try:
        with autograd.record(train_mode=False):
            out = net(x)
            head = score(out)
    finally:
        del block.forward
    head.backward(train_mode=False, retain_graph=True)
    cut['out'].backward(cut['leaf'].grad, train_mode=False)
    return {**compared_outputs(kind, out), 'activation': cut['leaf'].asnumpy(),
            'layer_grad': cut['leaf'].grad.asnumpy(), 'input_grad': x.grad.asnumpy()}


def run_job(folder):
    start = time.time()
    with open(os.path.join(folder, 'job.json')) as f:
        job = json.load(f)
    net = build(job['name'], job['size'], job['kwargs'], job['settings'], differentiable_boxes=True)
    net.load_parameters(os.path.join(folder, 'net.params'), ctx=mx.cpu())
    x = nd.array(np.load(os.path.join(folder, 'x.npy')))
    built = time.time()
    score = target_score(job['target'], np.load(os.path.join(folder, 'pins.npy')))
    result = reference(net, x, job['layer'], job['target'], score)
    np.savez(os.path.join(folder, 'ref.npz'), **result)
    computed = time.time()
    Decisions(distances=False).record(net, x).save(os.path.join(folder, 'decisions.npz'))
    return {'build_s': built - start, 'reference_s': computed - built, 'decisions_s': time.time() - computed}


def main(work):
    assert os.environ.get('MXNET_MKLDNN_ENABLED') == '0', 'the reference runs with MKLDNN off'
    assert 'gluoncam' not in sys.modules
    for line in sys.stdin:
        folder = os.path.join(work, line.strip())
        try:
            info = run_job(folder)
        except Exception:  # reported to the test for this model; the next models still run
            info = {'error': traceback.format_exc()}
        assert 'gluoncam' not in sys.modules
        with open(os.path.join(folder, 'done.tmp'), 'w') as f:
            json.dump(info, f)
        os.replace(os.path.join(folder, 'done.tmp'), os.path.join(folder, 'done.json'))


if __name__ == '__main__':
    main(sys.argv[1])
