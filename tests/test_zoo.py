"""The GluonCV zoo test bed: one model of every family, random weights, explained by gluoncam and checked.

For each model of ``CASES`` (model, input size, captured layer, target kind), with fixed seeds:

1. ``Explainer(net).backprop(x, target, layers=[layer], modes=('normal', 'guided'))`` runs and gives maps of the
   right shapes, and guided differs from normal; the target is a classifier's predicted class, else a function of
   the network output: the sum of a detector's ``TOP_DETECTIONS`` best scores, a segmenter's logits of one class
   summed over the pixels predicted as that class, a pose network's peak of one keypoint heatmap;
2. the normal input gradient and the layer's gradient equal plain MXNet autograd of the same target, signed and
   elementwise, to ``REL`` of the reference's largest magnitude (near-ties aside, see below);
3. every parameter (BatchNorm running statistics included) is bit-identical afterwards and no parameter gradient
   was written, for the plain and for the hybridized network;
4. the hybridized network gives the same maps, stays hybridized, and gives the same output before and after.

The reference
-------------
``zoo_reference.py``, one subprocess for the module with ``MXNET_MKLDNN_ENABLED=0`` (the pip build's MKLDNN max
pooling back-propagates wrong values after a predict-mode recording), never imports gluoncam. It records the
forward pass in predict mode, back-propagates with ``train_mode=False`` (in train mode BatchNorm would use batch
statistics and overwrite its running ones) and gets the layer's gradient by replacing the layer's output with a
fresh leaf. Weights travel through ``save_parameters``, the input and the target's decisions (classes,
segmentation masks) through ``.npy`` files; the reference works on a model while this process explains it.

Near-ties
---------
The reference's native float32 kernels sum in another order than MKLDNN's, so the two forward passes differ by
~1e-6 of the activations' range, and a ReLU input or a max-pool window's top two values that close decide
differently in the two processes. The gradient is piecewise constant in those decisions and jumps there: one
flip deep in the network moves every input-gradient element in its receptive field (measured on FCN: one flipped
ReLU of 4.3 million puts 33 % of the input gradient's elements beyond 1e-4, at most 5.5e-3 of the maximum, cosine
0.999996; on SSD 9 ReLU and 12 max-pool flips of 55 million, 26 %, 3.5e-2, cosine 0.99989). The fraction of
elements beyond tolerance measures nothing, so both processes record every ReLU-like and max-pool decision of
their forward pass (``zoo_reference.Decisions``) and the rule is: elements beyond ``REL`` only where decisions
flipped, each flipped ReLU input within ``NEAR_TIE`` of its threshold (relative to its op's largest input), and
then the map as a whole within cosine ``MIN_COSINE``. The target's own decision (which detections are the best,
where a heatmap peaks) must not be a near-tie (``decision_margin``). ``pytest -s`` prints the counts.

Which models run
----------------
A subset by default (fused and plain ReLUs, bottlenecks, hard swish, separable convolutions, LeakyReLU, max-pool
near-ties, three detectors, a segmenter, the pose network; about a minute on two cores); every model with
``GLUONCAM_ZOO=all`` (about 2.5 minutes); the named ones with ``GLUONCAM_ZOO=name,name``.

Left out: every SSD but the VGG-16 ones (``ssd_300_mobilenet0.25_voc``, ``ssd_512_resnet18_v1_voc``, ...), whose
backbone is a ``SymbolBlock`` built by GluonCV's ``FeatureExpander``, which gluoncam refuses by design (it cannot
reach the ReLUs of a compiled graph); ``ssd_300_vgg16_atrous_voc`` stands for the family.

Model setup
-----------
* Detectors: random weights leave the class logits near 0 (every score 1/21 or 1/4, tied) or huge (CenterNet's
  heatmap sigmoid is exactly 1.0, so every score has a zero gradient, in plain autograd too); the layers giving
  the scores' logits are rescaled (``calibrate``) so that the scores are distinct and differentiable.
* MobileNet v2 and v3: random weights keep every ReLU6 and hard-swish input below 6 (the upper bound never acts)
  and the input gradients near 1e-11; their BatchNorms get a gain (``amplify``).
* Faster R-CNN keeps 16 proposals instead of 300: a 64 x 64 input has 240 anchors, and 300 regions through
  ResNet's stage 4 take 90 s to explain. Its detections are grouped by class, hence ``topk`` in the target.
* The reference switches the SSD and R-CNN box decoders to GluonCV's minimal-opset form (plain autograd
  segfaults through ``contrib.box_decode``; see ``zoo_reference.build``).
* Darknet-53 and YOLOv3-Darknet-53 have only LeakyReLUs, to which gluoncam's guided rule does not apply: their
  guided map equals the normal one, which the bed asserts.

Without MKLDNN (``test_gluoncam_without_mkldnn_matches_plain_autograd``), plain autograd is right, so gluoncam must
equal it in one process: MXNet's native 1 x 1 convolution and clip write their input gradient even under grad_req
'add', which gluoncam's sweeps must not rely on.
"""
import json
import os
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import HybridBlock, nn

import gluoncam
from gluoncam.nn import walk
import zoo_reference

REL = 1e-4
NEAR_TIE = 1e-5
MIN_COSINE = 0.999
TOP_DETECTIONS = zoo_reference.TOP_DETECTIONS
KEYPOINT = 0  # the nose
LOGIT_STD = 2.0
REFERENCE_TIMEOUT_S = 600


class Case(NamedTuple):
    name: str
    size: int
    layer: str
    target: str  # 'class', 'detection', 'segmentation' or 'pose'
    kwargs: dict = {}
    default: bool = False
    batch: int = 2
    calibrate: tuple = ()  # layers giving the detection scores' logits
    relu: bool = True  # False: LeakyReLU only
    settings: dict = {}  # attributes set after construction (zoo_reference.build)
    bn_gain: float = 1.0  # BatchNorm gain (amplify)


NO_BASE = {'pretrained_base': False}
YOLO_LOGITS = ('yolo_outputs.0.prediction', 'yolo_outputs.1.prediction', 'yolo_outputs.2.prediction')


def seg(size):
    return {'pretrained_base': False, 'crop_size': size, 'base_size': size}


CASES = [
    Case('resnet18_v1', 64, 'features.7', 'class', default=True),
    Case('resnet50_v1b', 64, 'layer4', 'class', NO_BASE, default=True),
    Case('resnet18_v2', 64, 'features.8', 'class'),
    Case('resnext50_32x4d', 64, 'features.7', 'class'),
    Case('se_resnext50_32x4d', 64, 'features.7', 'class'),
    Case('resnest14', 64, 'layer4', 'class'),
    Case('mobilenet0.25', 64, 'features.80', 'class'),
    Case('mobilenetv2_0.25', 64, 'features.22', 'class', bn_gain=3),
    Case('mobilenetv3_small', 64, 'features.16', 'class', default=True, bn_gain=3),
    Case('densenet121', 221, 'features.10', 'class'),
    Case('inceptionv3', 299, 'features.17', 'class', default=True),
    Case('squeezenet1.1', 209, 'features.12', 'class'),
    Case('alexnet', 63, 'features.6', 'class'),
    Case('vgg11_bn', 32, 'features.27', 'class'),
    Case('darknet53', 64, 'features.28', 'class', default=True, relu=False),
    Case('xception', 64, 'bn5', 'class', default=True),
    Case('cifar_resnet20_v1', 32, 'features.4', 'class'),
    Case('ssd_300_vgg16_atrous_voc', 260, 'features.stages.4', 'detection', NO_BASE,
         calibrate=tuple(f'class_predictors.{i}.predictor' for i in range(6))),
    Case('yolo3_mobilenet0.25_voc', 64, 'stages.2', 'detection', NO_BASE, default=True, calibrate=YOLO_LOGITS),
    Case('yolo3_darknet53_voc', 64, 'stages.2', 'detection', NO_BASE, relu=False, calibrate=YOLO_LOGITS),
    Case('faster_rcnn_resnet50_v1b_voc', 64, 'features', 'detection', NO_BASE, default=True, batch=1,
         calibrate=('class_predictor',), settings={'_rpn_test_post_nms': 16, 'rpn._test_post_nms': 16}),
    Case('center_net_resnet18_v1b_voc', 64, 'base_network.base_network', 'detection', NO_BASE, default=True,
         calibrate=('heads.0.2',)),
    Case('fcn_resnet50_voc', 64, 'layer4', 'segmentation', seg(64), default=True),
    Case('psp_resnet50_ade', 64, 'layer4', 'segmentation', seg(64)),
    Case('deeplab_resnet50_ade', 64, 'layer4', 'segmentation', seg(64)),
    Case('simple_pose_resnet18_v1b', 64, 'resnet.7', 'pose', NO_BASE, default=True),
]

def selected_cases():
    choice = os.environ.get('GLUONCAM_ZOO', '').strip()
    if choice == 'all':
        return CASES
    if choice:
        names = set(choice.split(','))
        unknown = names - {case.name for case in CASES}
        assert not unknown, f"GLUONCAM_ZOO names unknown models: {sorted(unknown)}"
        return [case for case in CASES if case.name in names]
    return [case for case in CASES if case.default]


# ----- setting a model up

def amplify(net, case):
    """Give every BatchNorm the gain ``case.bn_gain`` (its running variance divided by the gain squared): with
    random weights a ReLU6 or hard-swish network's activations stay below 6, where the upper bound never acts,
    and its gradients vanish."""
    for block in walk(net):
        if isinstance(block, nn.BatchNorm) and case.bn_gain != 1:
            block.running_var.set_data(block.running_var.data() / case.bn_gain ** 2)


def calibrate(net, x, case):
    """Scale the layers giving the detection scores' logits so that their outputs have standard deviation
    LOGIT_STD on this input."""
    layers = [zoo_reference.block_at(net, path) for path in case.calibrate]
    outputs = {}
    hooks = [layer.register_forward_hook(lambda b, args, out: outputs.__setitem__(b.name, out.asnumpy()))
             for layer in layers]
    net(x)
    for hook in hooks:
        hook.detach()
    for block in layers:
        block.weight.set_data(block.weight.data() * (LOGIT_STD / outputs[block.name].std()))


def pins_for(case, output):
    """The target's decisions, from the inference output: what both processes score."""
    if case.target == 'class':
        return output.argmax(axis=1).asnumpy().astype(np.int64)
    if case.target == 'detection':
        return np.array(TOP_DETECTIONS)
    if case.target == 'segmentation':
        logits = output[0].asnumpy()
        predicted = logits.argmax(axis=1)
        weights = np.zeros_like(logits)
        for n, labels in enumerate(predicted):
            common = np.bincount(labels.ravel()).argmax()  # the class predicted on most pixels
            weights[n, common] = labels == common
        return weights
    if case.target == 'pose':
        return np.array(KEYPOINT)
    raise ValueError(case.target)


def decision_margin(case, output):
    """How far the target's own decision (which detections are the best, where a heatmap peaks) is from a tie,
    relative to the best score; inf where the decision is pinned."""
    if case.target == 'detection':
        scores = zoo_reference.best_detections(output, TOP_DETECTIONS + 1).asnumpy()
        return float(((scores[:, -2] - scores[:, -1]) / np.abs(scores[:, 0])).min())
    if case.target == 'pose':
        peaks = np.sort(output[:, KEYPOINT].asnumpy().reshape(case.batch, -1), axis=1)
        return float(((peaks[:, -1] - peaks[:, -2]) / np.abs(peaks[:, -1])).min())
    return float('inf')


def gluoncam_target(case, pins):
    return None if case.target == 'class' else zoo_reference.target_score(case.target, pins)


def random_batch(case):
    shape = (case.batch, 3, case.size, case.size)
    return nd.array(np.random.RandomState(zoo_reference.SEED).randn(*shape).astype(np.float32))


# ----- what an explanation must leave alone

def arm_parameters(net):
    """Snapshot every parameter and set every gradient to 7; returns the function listing what changed since."""
    params = net.collect_params()
    for param in params.values():
        if param.grad_req != 'null':
            param.grad()[:] = 7
    before = {name: (param.data().asnumpy().copy(), param.grad_req) for name, param in params.items()}

    def changed():
        found = []
        for name, param in params.items():
            data, req = before[name]
            if param.grad_req != req:
                found.append(f"{name}: grad_req {req} -> {param.grad_req}")
            elif not np.array_equal(param.data().asnumpy(), data):
                found.append(f"{name}: data changed")
            elif req != 'null' and not (param.grad().asnumpy() == 7).all():
                found.append(f"{name}: gradient written")
        return found
    return changed


def hybrid_states(net):
    return {block.name: block._active for block in walk(net) if isinstance(block, HybridBlock)}


def first_output(out):
    return (out[0] if isinstance(out, (list, tuple)) else out).asnumpy()


# ----- the reference process

class Reference:
    """The reference subprocess: jobs go by name to its stdin, results come back in the job's folder. A process
    that died (MXNet segfaults) fails the model it was on; the next job starts a new one."""

    def __init__(self, work):
        self.work = work
        self.process = self.log = None
        self.starts = 0

    def _start(self):
        if self.log:
            self.log.close()
        self.starts += 1
        self.log = open(os.path.join(self.work, f'reference-{self.starts}.log'), 'wb')  # a pipe could fill
        env = dict(os.environ, MXNET_MKLDNN_ENABLED='0', MXNET_STORAGE_FALLBACK_LOG_VERBOSE='0')
        self.process = subprocess.Popen([sys.executable, zoo_reference.__file__, self.work], env=env,
                                        stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)

    def submit(self, job):
        if self.process is None or self.process.poll() is not None:
            self._start()
        self.process.stdin.write((job + '\n').encode())
        self.process.stdin.flush()

    def result(self, job):
        folder = os.path.join(self.work, job)
        done = os.path.join(folder, 'done.json')
        deadline = time.time() + REFERENCE_TIMEOUT_S
        while not os.path.exists(done):
            if self.process.poll() is not None:
                raise RuntimeError(f"the reference process died on {job}:\n{self.log_tail()}")
            if time.time() > deadline:
                raise TimeoutError(f"no reference for {job} after {REFERENCE_TIMEOUT_S} s")
            time.sleep(0.05)
        os.remove(os.path.join(folder, 'net.params'))  # up to 0.5 GB, read by now
        with open(done) as f:
            info = json.load(f)
        if 'error' in info:
            raise RuntimeError(f"the reference failed for {job}:\n{info['error']}")
        ref = dict(np.load(os.path.join(folder, 'ref.npz')))
        return info, ref, zoo_reference.Decisions.load(os.path.join(folder, 'decisions.npz'))

    def log_tail(self):
        self.log.flush()
        with open(self.log.name, 'rb') as f:
            return f.read()[-3000:].decode(errors='replace')

    def close(self):
        if self.process is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=REFERENCE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()
        for job in os.listdir(self.work):  # weights of the models whose reference no check read
            params = os.path.join(self.work, job, 'net.params')
            if os.path.exists(params):
                os.remove(params)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    ref = Reference(str(tmp_path_factory.mktemp('zoo')))
    yield ref
    ref.close()


# ----- one model's run

class Run:
    """What was measured on one model. An explanation that raised keeps its exception, which the checks needing
    its result re-raise: a crash in gluoncam fails (or xfails) those checks rather than the fixture."""

    def __init__(self, case):
        self.case = case
        self.timings = {}
        self.errors = {}
        self.parameter_changes = {}
        self.plain = self.hybrid = self.reference = self.flips = None

    def result(self, which):
        if which in self.errors:
            raise self.errors[which]
        return getattr(self, which)


def explain_checked(run, which, net, x):
    changed = arm_parameters(net)
    start = time.time()
    try:
        result = gluoncam.Explainer(net).backprop(x, gluoncam_target(run.case, run.pins), layers=[run.case.layer],
                                                  modes=('normal', 'guided'))
        for mode in ('normal', 'guided'):
            result.input_gradients[mode].wait_to_read()
    except Exception as error:  # noqa: BLE001 (kept for the checks: a crash is one of the things reported)
        run.errors[which] = error
        return
    run.timings[which + '_explain_s'] = time.time() - start
    setattr(run, which, result)
    run.parameter_changes[which] = changed()


def write_job(folder, case, net, x, pins):
    os.makedirs(folder)
    net.save_parameters(os.path.join(folder, 'net.params'))
    np.save(os.path.join(folder, 'x.npy'), x.asnumpy())
    np.save(os.path.join(folder, 'pins.npy'), pins)
    with open(os.path.join(folder, 'job.json'), 'w') as f:
        json.dump({'name': case.name, 'size': case.size, 'kwargs': case.kwargs, 'settings': case.settings,
                   'layer': case.layer, 'target': case.target}, f)


def run_model(case, reference):
    """Build, hand the reference its job, explain plain and hybridized (the reference works meanwhile)."""
    run = Run(case)
    start = time.time()
    net = zoo_reference.build(case.name, case.size, case.kwargs, case.settings)
    x = random_batch(case)
    amplify(net, case)
    calibrate(net, x, case)
    inference = net(x)
    run.pins = pins_for(case, inference)
    run.inference = zoo_reference.compared_outputs(case.target, inference)
    run.margin = decision_margin(case, inference)
    run.timings['build_s'] = time.time() - start
    write_job(os.path.join(reference.work, case.name), case, net, x, run.pins)
    reference.submit(case.name)
    start = time.time()
    run.decisions = zoo_reference.Decisions().record(net, x)
    run.timings['decisions_s'] = time.time() - start

    explain_checked(run, 'plain', net, x)
    net.hybridize()
    run.states_before = hybrid_states(net)
    run.hybrid_before = first_output(net(x))
    explain_checked(run, 'hybrid', net, x)
    run.states_after = hybrid_states(net)
    run.hybrid_after = first_output(net(x))
    return run


@pytest.fixture(scope='module', params=selected_cases(), ids=lambda case: case.name)
def run(request, reference):
    return run_model(request.param, reference)


def reference_of(run, reference):
    if run.reference is None:
        start = time.time()
        info, run.reference, decisions = reference.result(run.case.name)
        run.timings.update(info)
        run.timings['waited_for_reference_s'] = time.time() - start
        run.flips = flipped_decisions(run.decisions, decisions)
    return run.reference


# ----- comparisons

def flipped_decisions(mine, reference):
    """The decisions (zoo_reference.Decisions) this process's forward pass took otherwise than the reference's,
    and the largest distance of a flipped ReLU-like input from its threshold (relative to its op's largest input).
    Max-pool routing is compared where the input is not 0: a window of ReLU zeros ties exactly, and whichever
    zero gets the gradient, the ReLU before it stops it."""
    assert mine.kinds == reference.kinds, "the two processes' forward passes ran different ops"
    found = {'decisions': 0, 'relu_flipped': 0, 'pool_flipped': 0, 'farthest': 0.0}
    for kind, above, theirs, distance in zip(mine.kinds, mine.above, reference.above, mine.distances):
        assert above.shape == theirs.shape, (kind, above.shape, theirs.shape)
        flipped = above != theirs
        found['decisions'] += above.size
        if kind == 'max pooling':
            found['pool_flipped'] += int((flipped & (distance > 0)).sum())
        elif flipped.any():
            found['relu_flipped'] += int(flipped.sum())
            found['farthest'] = max(found['farthest'], float(distance[flipped].max()))
    return found


def agreement(actual, expected):
    """A gradient against the reference: worst |difference| / max|reference|, the elements beyond REL of
    max|reference| (count and fraction) and the cosine similarity."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.abs(expected).max()
    assert scale > 0, "the reference gradient is all zeros: the target does not depend on this"
    diff = np.abs(actual - expected)
    beyond = int((diff > REL * scale).sum())
    cosine = float((actual * expected).sum() / np.sqrt((actual ** 2).sum() * (expected ** 2).sum()))
    return {'relative': float(diff.max() / scale), 'beyond': beyond, 'fraction': beyond / diff.size,
            'cosine': cosine, 'scale': float(scale)}


def assert_matches(name, actual, expected, flips):
    """Elementwise within REL of max|reference|; elements beyond only if decisions flipped, each a near-tie, and
    then the map as a whole within MIN_COSINE."""
    found = agreement(actual, expected)
    print(f"  {name}: max|diff|/max|ref| {found['relative']:.2e}, {found['beyond']} elements beyond {REL:g} "
          f"({100 * found['fraction']:.2f} %), cosine {found['cosine']:.7f}")
    if found['beyond']:
        assert flips['relu_flipped'] + flips['pool_flipped'], \
            f"{name}: {found['beyond']} elements beyond tolerance, yet no ReLU or max-pool decision flipped"
        assert flips['farthest'] <= NEAR_TIE, f"{name}: a decision that was no near-tie flipped: {flips}"
        assert found['cosine'] > MIN_COSINE, (name, found)
    return found


def assert_same_forward(name, actual, expected):
    scale = np.abs(expected).max()
    worst = float(np.abs(actual - expected).max() / scale)
    print(f"  {name}: max|diff|/max|ref| {worst:.2e}")
    assert worst <= REL, (name, worst)
    return worst


# ----- the checks

def test_explanation_runs(run):
    result = run.result('plain')
    activation = result.activations[run.case.layer]
    assert activation.ndim == 4, activation.shape
    for mode in ('normal', 'guided'):
        assert result.input_gradients[mode].shape == (run.case.batch, 3, run.case.size, run.case.size)
        assert result.gradients[mode][run.case.layer].shape == activation.shape
        assert np.isfinite(result.input_gradients[mode].asnumpy()).all(), mode
    normal, guided = (result.input_gradients[mode].asnumpy() for mode in ('normal', 'guided'))
    assert np.abs(normal).max() > 0, "the normal input gradient is all zeros"
    if run.case.relu:
        assert np.abs(guided - normal).max() > 1e-3 * np.abs(normal).max(), "guided equals normal"
    else:  # gluoncam's guided rule is a ReLU rule; a LeakyReLU is back-propagated as it is
        np.testing.assert_array_equal(guided, normal)
    for name, output in zoo_reference.compared_outputs(run.case.target, result.output).items():
        expected = run.inference[name]
        np.testing.assert_allclose(output, expected, rtol=0, atol=REL * np.abs(expected).max(), err_msg=name)
    if run.case.target == 'class':
        np.testing.assert_array_equal(result.classes.asnumpy(), run.pins)


def test_gradients_match_plain_autograd(run, reference):
    ref = reference_of(run, reference)
    result = run.result('plain')
    layer = run.case.layer
    print(f"\n{run.case.name}: target margin {run.margin:.1e}; decisions {run.flips}; "
          + ', '.join(f'{key} {value:.2f}' for key, value in run.timings.items()))
    assert run.margin > 1e-4, "the target's decision is a near-tie: no well-defined gradient to compare"
    outputs = zoo_reference.compared_outputs(run.case.target, result.output)
    found = {name: assert_same_forward(name, output, ref[name]) for name, output in outputs.items()}
    found['activation'] = assert_same_forward('activation', result.activations[layer].asnumpy(), ref['activation'])
    found['input'] = assert_matches('input gradient', result.input_gradients['normal'].asnumpy(), ref['input_grad'],
                                    run.flips)
    found['layer'] = assert_matches(f'{layer} gradient', result.gradients['normal'][layer].asnumpy(),
                                    ref['layer_grad'], run.flips)
    report(run, found)


def test_parameters_untouched(run):
    for which in ('plain', 'hybrid'):
        run.result(which)
        assert run.parameter_changes[which] == [], (which, run.parameter_changes[which][:5])


def test_hybridized_net_same_maps_and_stays_hybridized(run):
    plain, hybrid = run.result('plain'), run.result('hybrid')
    layer = run.case.layer
    for mode in ('normal', 'guided'):
        np.testing.assert_array_equal(hybrid.input_gradients[mode].asnumpy(), plain.input_gradients[mode].asnumpy())
        np.testing.assert_array_equal(hybrid.gradients[mode][layer].asnumpy(), plain.gradients[mode][layer].asnumpy())
    assert run.states_before and all(run.states_before.values())
    assert run.states_after == run.states_before
    np.testing.assert_array_equal(run.hybrid_after, run.hybrid_before)


def test_gluoncam_without_mkldnn_matches_plain_autograd():
    """With MKLDNN off, plain autograd is right (max pooling included), so gluoncam must equal it in one process.
    ResNet-50 v1b's bottlenecks read each block's ReLU output with a 1 x 1 convolution and with the residual sum."""
    env = dict(os.environ, MXNET_MKLDNN_ENABLED='0', MXNET_STORAGE_FALLBACK_LOG_VERBOSE='0')
    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_zoo; test_zoo.compare_here()"
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    print(found)
    assert found['input'] <= REL and found['layer'] <= REL, found


def compare_here():
    """gluoncam against plain autograd in this process, on ResNet-50 v1b at 32 x 32: prints their relative
    differences as JSON."""
    case = Case('resnet50_v1b', 32, 'layer4', 'class', NO_BASE)
    net = zoo_reference.build(case.name, case.size, case.kwargs)
    x = random_batch(case)
    classes = pins_for(case, net(x))
    ref = zoo_reference.reference(net, x, case.layer, 'class', zoo_reference.target_score('class', classes))
    result = gluoncam.Explainer(net).backprop(x, classes, layers=[case.layer])
    found = {'input': agreement(result.input_gradients['normal'].asnumpy(), ref['input_grad'])['relative'],
             'layer': agreement(result.gradients['normal'][case.layer].asnumpy(), ref['layer_grad'])['relative']}
    print(json.dumps(found))


def report(run, found):
    """One JSON line per model appended to $GLUONCAM_ZOO_REPORT, when set (to tabulate the bed's results)."""
    path = os.environ.get('GLUONCAM_ZOO_REPORT')
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps({'model': run.case.name, 'size': run.case.size, 'layer': run.case.layer,
                                'target': run.case.target, 'margin': run.margin, 'timings': run.timings,
                                'flips': run.flips, 'found': found}) + '\n')
