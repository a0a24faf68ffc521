"""gluoncam on a full-size VGG-16 (random weights, 224 x 224, batch 2, one class per sample), elementwise against
an independent reference: the stock model-zoo ``vgg16`` differentiated by plain MXNet autograd in a subprocess
with MKLDNN disabled (``MXNET_MKLDNN_ENABLED=0``), where max pooling and ``autograd.Function`` back-propagate
correctly.

Why the reference is evaluated at gluoncam's forward point
----------------------------------------------------------
gluoncam runs in this process through MKLDNN; the reference's native float32 kernels sum in another order, so
the two forward passes differ by a few 1e-6 of the activations' range. A ReLU input that close to zero, or a
max-pool window whose two largest values are that close, then decides differently in the two processes, and
the gradient (piecewise constant in those decisions) jumps there. With VGG-16 at 224 x 224 a handful of such
decisions flip in most draws (measured: 6 ReLU signs and 2 pool windows of ~30 million decisions), which moves
the normal input gradient by ~5 % of its maximum and single entries of the ``features.28`` gradient by ~35 %.

So the reference computes every map twice:

* *free*: at its own native forward pass, by plain autograd (normal) and by an ``autograd.Function`` ReLU
  (normal again, which must equal plain autograd: this validates the Function mechanism under MKLDNN-off);
* *pinned*: the same ``autograd.Function`` graph, but each ReLU outputs ``relu`` of gluoncam's captured
  pre-activation (and its backward masks with it), so every ReLU and max-pool decision is gluoncam's; the
  backward pass itself (convolution, pooling, dense, ReLU rules) is entirely the reference's.

The pinned maps must match gluoncam elementwise (normal, guided, deconv and the ``features.28`` gradient); the
free ones check gluoncam's forward pass (output and activations) and, when no decision flipped, the normal maps
too. The pinned forward point is gluoncam's own, so it is checked against the free reference forward first.
"""
import json
import os
import subprocess
import sys
import textwrap
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

import gluoncam
from gluoncam import explainer as explainer_module

TARGETS = [3, 5]
LAYER = 'features.28'
MODES = ('normal', 'guided', 'deconv')
# The blocks whose outputs feed VGG-16's 15 ReLUs, in order: 13 convolutions (their outputs are the ReLU inputs)
# and the two 4096-wide Dense layers with fused ReLU (their outputs are the ReLU outputs, whose sign pattern is the
# ReLU's mask).
RELU_FEEDERS = [f'features.{i}' for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33)]

REFERENCE = textwrap.dedent(r'''
    """Reference maps for VGG-16 by plain MXNet autograd, MKLDNN off; no gluoncam."""
    import json
    import os
    import sys
    import time

    assert os.environ.get('MXNET_MKLDNN_ENABLED') == '0'
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, nd
    from mxnet.gluon import nn
    from mxnet.gluon.model_zoo import vision

    work = sys.argv[1]
    start = time.time()
    x = nd.array(np.load(os.path.join(work, 'x.npy')))
    targets = np.load(os.path.join(work, 'targets.npy'))
    head_grad = nd.one_hot(nd.array(targets), 1000)
    pinned = dict(np.load(os.path.join(work, 'pinned.npz')))
    net = vision.vgg16()
    net.load_parameters(os.path.join(work, 'vgg16.params'), ctx=mx.cpu())
    for param in net.collect_params().values():
        # grad_req 'null' would trigger MXNet's corrupt-gradient bug for a Function inside a large graph
        assert param.grad_req == 'write', param.name
    CUT = 29  # features[:29] ends with features.28, the captured convolution
    results, info = {}, {}

    # (a) normal, plain autograd in predict mode; the gradient at features.28's output by running the
    # network in two recorded pieces and chaining them.
    xin = x.copy()
    xin.attach_grad()
    with autograd.record(train_mode=False):
        a = net.features[:CUT](xin)
    a_leaf = a.detach()
    a_leaf.attach_grad()
    with autograd.record(train_mode=False):
        out = net.output(net.features[CUT:](a_leaf))
    out.backward(head_grad)
    a.backward(a_leaf.grad)
    results['output'] = out.asnumpy()
    results['free_plain_normal'] = xin.grad.asnumpy()
    results['free_plain_normal_layer'] = a_leaf.grad.asnumpy()
    results['free_activation'] = a.asnumpy()
    info['plain_s'] = time.time() - start


    class RuleReLU(autograd.Function):
        """ReLU whose backward is the mode's rule; with ``pin``, its forward value and mask are relu(pin), pin > 0
        (pin: the pre-activation, or the post-ReLU value, whose sign pattern is the same)."""

        def __init__(self, mode, pin=None, keep_grad=False):
            super().__init__()
            self.mode, self.pin, self.keep_grad, self.grad_in = mode, pin, keep_grad, None

        def forward(self, x):
            value = x if self.pin is None else self.pin
            self.save_for_backward(value)
            return nd.relu(value)

        def backward(self, dy):
            value, = self.saved_tensors
            if self.mode == 'normal':
                dx = dy * (value > 0)
            elif self.mode == 'guided':
                dx = nd.relu(dy) * (value > 0)
            elif self.mode == 'deconv':
                dx = nd.relu(dy)
            else:
                raise ValueError(self.mode)
            if self.keep_grad:
                self.grad_in = dx.copy()
            return dx


    def windows(a):  # 2 x 2, stride 2 max-pool windows as the last axis
        n, c, h, w = a.shape
        return a.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


    def rule_pass(mode, pin):
        """One forward + backward pass of the stock layers with the ReLUs replaced by RuleReLU."""
        flips = {'relu': 0, 'pool': 0}
        xin = x.copy()
        xin.attach_grad()
        kept = None
        with autograd.record(train_mode=False):
            h = xin
            for i, layer in enumerate(net.features):
                if isinstance(layer, nn.Activation):
                    assert layer._act_type == 'relu' and isinstance(net.features[i - 1], nn.Conv2D)
                    name = f'features.{i - 1}'
                    if not pin:
                        flips['relu'] += int(((h > 0).asnumpy() != (pinned[name] > 0)).sum())
                    relu = RuleReLU(mode, nd.array(pinned[name]) if pin else None, keep_grad=(name == 'features.28'))
                    kept = relu if relu.keep_grad else kept
                    h = relu(h)
                elif isinstance(layer, nn.Dense):
                    assert layer.act is not None and layer.act._act_type == 'relu'
                    h = nd.FullyConnected(h, layer.weight.data(), layer.bias.data(), num_hidden=layer._units,
                                          flatten=True)
                    name = f'features.{i}'
                    if not pin:
                        flips['relu'] += int(((h > 0).asnumpy() != (pinned[name] > 0)).sum())
                    h = RuleReLU(mode, nd.array(pinned[name]) if pin else None)(h)
                elif isinstance(layer, nn.Dropout):
                    continue  # identity in predict mode
                else:
                    if isinstance(layer, nn.MaxPool2D) and not pin:
                        own = windows(h.asnumpy())
                        theirs = windows(np.maximum(pinned[f'features.{i - 2}'], 0))
                        decisive = (own.max(-1) > 0) | (theirs.max(-1) > 0)
                        flips['pool'] += int(((own.argmax(-1) != theirs.argmax(-1)) & decisive).sum())
                    h = layer(h)
            out = net.output(h)
        out.backward(head_grad)
        return out.asnumpy(), xin.grad.asnumpy(), kept.grad_in.asnumpy(), flips


    # (b) the rule passes: free normal (validates RuleReLU against plain autograd, and counts the decisions that
    # differ between this forward pass and gluoncam's), then pinned normal, guided and deconv.
    t = time.time()
    _, results['free_rule_normal'], results['free_rule_normal_layer'], info['flips'] = rule_pass('normal', False)
    info['free_rule_s'] = time.time() - t
    for mode in ('normal', 'guided', 'deconv'):
        t = time.time()
        results['pinned_output_' + mode], results[mode], results[mode + '_layer'], _ = rule_pass(mode, True)
        info[mode + '_s'] = time.time() - t
    for name, value in results.items():
        np.save(os.path.join(work, name + '.npy'), value)
    info['total_s'] = time.time() - start
    with open(os.path.join(work, 'info.json'), 'w') as f:
        json.dump(info, f)
''')


def vgg16_and_batch():
    mx.random.seed(7)
    net = gluoncam.models.get_model('vgg16')
    net.initialize(mx.init.Xavier())
    x = nd.array(np.random.RandomState(7).randn(2, 3, 224, 224).astype(np.float32))
    net(x)  # materialise the deferred parameter shapes
    return net, x


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """gluoncam's maps (three calls) and the reference's, computed once for the module."""
    work = tmp_path_factory.mktemp('vgg16_reference')
    timings = {}
    start = time.time()
    net, x = vgg16_and_batch()
    explainer = gluoncam.Explainer(net)

    # Call 1: every ReLU feeder captured, to pin the reference to this forward pass.
    t = time.time()
    pinning = explainer.backprop(x, target=TARGETS, layers=RELU_FEEDERS, modes=MODES)
    timings['gluoncam_pinning_call_s'] = time.time() - t
    net.save_parameters(str(work / 'vgg16.params'))
    np.save(work / 'x.npy', x.asnumpy())
    np.save(work / 'targets.npy', np.array(TARGETS))
    np.savez(work / 'pinned.npz', **{name: pinning.activations[name].asnumpy() for name in RELU_FEEDERS})
    (work / 'reference.py').write_text(REFERENCE)

    env = dict(os.environ, MXNET_MKLDNN_ENABLED='0', MXNET_STORAGE_FALLBACK_LOG_VERBOSE='0')
    t = time.time()
    log = open(work / 'reference.log', 'wb')  # a file, not a pipe: a full pipe would stall the subprocess
    reference = subprocess.Popen([sys.executable, str(work / 'reference.py'), str(work)], env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        # Calls 2 and 3, while the reference runs: the plain configuration, twice. Call 3 runs compiled pieces,
        # checked against the imperative recording (see Explainer).
        calls = [explainer.backprop(x, target=TARGETS, layers=[LAYER], modes=MODES) for _ in range(2)]
        for call in calls:
            for mode in MODES:
                call.input_gradients[mode].wait_to_read()
        timings['gluoncam_two_calls_s'] = time.time() - t
        # Normal mode only, three times: the third call runs the compiled recording
        normal = [explainer.backprop(x, target=TARGETS, layers=[LAYER]) for _ in range(3)]
        entries = explainer_module._Recordings._by_net[net].values()
        compiled_used = [type(entry).__name__ for entry in entries if getattr(entry, 'checked', False)]
        reference.wait(timeout=600)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
        log.close()
        for name in ('vgg16.params', 'pinned.npz'):  # 0.55 GB and 0.1 GB, needed only by the subprocess
            (work / name).unlink()
    assert reference.returncode == 0, (work / 'reference.log').read_text(errors='replace')[-5000:]
    timings['reference_wall_s'] = time.time() - t
    info = json.loads((work / 'info.json').read_text())
    ref = {path.stem: np.load(path) for path in work.glob('*.npy') if path.stem not in ('x', 'targets')}
    timings['fixture_s'] = time.time() - start
    print(f"\ntimings: {timings}\nreference: {info}")
    return {'pinning': pinning, 'calls': calls, 'ref': ref, 'info': info, 'normal': normal,
            'compiled_used': compiled_used, 'net': net, 'x': x}


def compare(name, actual, expected, rel=1e-4, rtol=1e-3):
    """Elementwise, signed: |actual - expected| <= rel * max|expected| + rtol * |expected|."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = float(np.abs(expected).max())
    assert scale > 0, f"{name}: the reference is all zeros"
    worst = float(np.abs(actual - expected).max())
    print(f"{name}: max|diff| = {worst:.3e}, max|ref| = {scale:.3e}, relative {worst / scale:.3e}")
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rel * scale, err_msg=name)
    return worst / scale


def test_forward_matches_the_reference(run):
    """gluoncam's output and activations are the inference forward pass (reference: native, MKLDNN off)."""
    ref = run['ref']
    for result in [run['pinning']] + run['calls']:
        compare('output', result.output.asnumpy(), ref['output'])
        compare(f'activation {LAYER}', result.activations[LAYER].asnumpy(), ref['free_activation'])
        np.testing.assert_array_equal(result.classes.asnumpy(), TARGETS)
    # the pinned reference passes run on gluoncam's forward point: their outputs are the same function
    for mode in MODES:
        compare(f'pinned reference output ({mode})', ref['pinned_output_' + mode], ref['output'])


def test_reference_rule_relu_is_plain_autograd(run):
    """The autograd.Function ReLU of the reference, with the normal rule, is MXNet's own ReLU gradient."""
    ref = run['ref']
    compare('reference: Function normal vs plain autograd (input)', ref['free_rule_normal'],
            ref['free_plain_normal'], rel=1e-6, rtol=1e-5)
    compare(f'reference: Function normal vs plain autograd ({LAYER})', ref['free_rule_normal_layer'],
            ref['free_plain_normal_layer'], rel=1e-6, rtol=1e-5)


@pytest.mark.parametrize('mode', MODES)
def test_input_gradient_matches_the_reference(run, mode):
    for call in run['calls']:
        compare(f'input gradient ({mode})', call.input_gradients[mode].asnumpy(), run['ref'][mode])


@pytest.mark.parametrize('mode', MODES)
def test_layer_gradient_matches_the_reference(run, mode):
    for call in run['calls']:
        compare(f'{LAYER} gradient ({mode})', call.gradients[mode][LAYER].asnumpy(), run['ref'][mode + '_layer'])


def test_normal_maps_match_the_free_reference(run):
    """Against the reference at its own forward pass: exact agreement unless a near-tie decision flipped."""
    ref, flips = run['ref'], run['info']['flips']
    call = run['calls'][0]
    actual, layer = call.input_gradients['normal'].asnumpy(), call.gradients['normal'][LAYER].asnumpy()
    print(f"decisions that differ between gluoncam's forward pass and the reference's: {flips}")
    # ~30 million ReLU and max-pool decisions; float32 summation order flips a few near-ties, never more
    assert flips['relu'] + flips['pool'] <= 100, flips
    if flips['relu'] + flips['pool'] == 0:
        compare('input gradient (normal, free reference)', actual, ref['free_plain_normal'])
        compare(f'{LAYER} gradient (normal, free reference)', layer, ref['free_plain_normal_layer'])
    else:
        expected = ref['free_plain_normal']
        worst = np.abs(actual - expected).max() / np.abs(expected).max()
        cosine = (actual * expected).sum() / np.sqrt((actual ** 2).sum() * (expected ** 2).sum())
        print(f"input gradient (normal, free reference): relative max|diff| {worst:.3e}, cosine {cosine:.6f}")
        assert cosine > 0.99


def test_guided_and_deconv_differ_from_normal(run):
    """The comparison can fail: the three modes give clearly different maps."""
    grads = {mode: run['calls'][0].input_gradients[mode].asnumpy() for mode in MODES}
    scale = np.abs(grads['normal']).max()
    for mode in ('guided', 'deconv'):
        assert np.abs(grads[mode] - grads['normal']).max() > 0.5 * scale, mode
    assert np.abs(grads['guided'] - grads['deconv']).max() > 0.1 * np.abs(grads['deconv']).max()


def test_repeated_calls_are_identical(run):
    first, second = run['calls']
    pinning = run['pinning']
    for mode in MODES:
        np.testing.assert_array_equal(first.input_gradients[mode].asnumpy(), second.input_gradients[mode].asnumpy())
        np.testing.assert_array_equal(first.gradients[mode][LAYER].asnumpy(), second.gradients[mode][LAYER].asnumpy())
        # capturing more layers does not change the maps either
        np.testing.assert_array_equal(first.input_gradients[mode].asnumpy(),
                                      pinning.input_gradients[mode].asnumpy())
    np.testing.assert_array_equal(first.output.asnumpy(), second.output.asnumpy())
    np.testing.assert_array_equal(first.activations[LAYER].asnumpy(), pinning.activations[LAYER].asnumpy())


def test_the_compiled_normal_recording_matches_the_reference(run):
    """Normal-mode calls from the second on run a compiled graph (in train mode, for max pooling): the same maps.
    So do the calls cut at ReLUs, with compiled pieces: the second of ``calls`` (compared in the tests above)."""
    assert run['compiled_used'] == ['Pieces', 'Recording']
    for call in run['normal']:
        compare('input gradient (normal, compiled)', call.input_gradients['normal'].asnumpy(), run['ref']['normal'])
        compare(f'{LAYER} gradient (normal, compiled)', call.gradients['normal'][LAYER].asnumpy(),
                run['ref']['normal_layer'])
        compare('output (compiled)', call.output.asnumpy(), run['ref']['output'])


def test_lrp_epsilon_is_input_x_gradient_of_the_reference(run):
    """LRP's epsilon rule rescales each layer's gradient by z / (z + epsilon), 1 with epsilon 0 (LRP-0) wherever a
    ReLU passes it: on VGG-16 (ReLUs, max pooling, biases) the relevance is x times the reference's gradient. The
    default epsilon 1e-9 moves it by about 5e-4 of its range here (random weights, small pre-activations)."""
    lrp_0 = {kind: gluoncam.propagation.Epsilon(0) for kind in ('conv', 'dense', 'pooling')}
    relevance = gluoncam.propagation.lrp(run['net'], run['x'], TARGETS, rules=lrp_0)
    compare('LRP-0', relevance.asnumpy(), run['x'].asnumpy() * run['ref']['normal'])
    default = gluoncam.propagation.lrp(run['net'], run['x'], TARGETS)
    compare('LRP epsilon 1e-9', default.asnumpy(), run['x'].asnumpy() * run['ref']['normal'], rel=2e-3)


def test_deeplift_is_complete_on_vgg16(run):
    """DeepLIFT's attributions add up to S(x) - S(baseline) through 13 convolutions, 5 max pools and 15 ReLUs."""
    net, x = run['net'], run['x']
    attributions, delta = gluoncam.propagation.deeplift(net, x, TARGETS)
    output = net(nd.concat(x, nd.zeros_like(x), dim=0)).asnumpy()
    gap = output[[0, 1], TARGETS] - output[[2, 3], TARGETS]
    np.testing.assert_allclose(attributions.asnumpy().reshape(2, -1).sum(axis=1), gap, rtol=1e-3,
                               atol=1e-3 * np.abs(gap).max())
    assert np.abs(delta.asnumpy()).max() <= 1e-3 * np.abs(gap).max()


def test_layer_gradient_x_activation_matches_the_reference(run):
    attribution = gluoncam.layer_attribution.layer_gradient_x_activation(run['net'], run['x'], LAYER, TARGETS)
    expected = run['pinning'].activations[LAYER].asnumpy() * run['ref']['normal_layer']
    compare(f'{LAYER} gradient x activation', attribution.asnumpy(), expected)
