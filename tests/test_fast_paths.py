"""The fast paths give the same maps as the general ones: recordings cut at ReLU inputs, at ReLU outputs or not at
all; Score-CAM and Ablation-CAM on compiled graphs (the whole network, or the part after the layer) against the
imperative passes, on sequential networks and on ones with skip connections around the layer."""
import warnings
from unittest import mock

import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model
from mxnet import nd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import cams, compiled, explainer as explainer_module
from gluoncam.layers import resolve
from gluoncam.session import Session, relu_cuts_for
from conftest import batch, small_net
from test_explainer import DirectCalls, rss_mb
from test_efficientnet import relu6_net

MODES = {None: ('normal',), 'input': ('normal', 'guided'), 'output': ('normal', 'guided', 'deconv')}


class Residual(HybridBlock):
    """relu(x + conv(relu(conv(x)))), with ReLU6 in the branch: a ReLU's input used by a skip connection too."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv1 = stock.Conv2D(channels, 3, padding=1)
            self.act = gluoncam.ReLU6()
            self.conv2 = stock.Conv2D(channels, 3, padding=1)

    def hybrid_forward(self, F, x):
        return F.relu(x + self.conv2(self.act(self.conv1(x))))


def residual_net():
    mx.random.seed(3)
    net = stock.HybridSequential()
    net.add(stock.Conv2D(4, 3, padding=1), stock.BatchNorm(), stock.Activation('relu'), Residual(4),
            stock.MaxPool2D(2), Residual(4), stock.GlobalAvgPool2D(), stock.Dense(3))
    net.initialize(mx.init.Xavier(magnitude=3))
    net(batch())
    return net


@pytest.mark.parametrize('make', [small_net, residual_net])
def test_the_three_recordings_give_the_same_gradients(make):
    net, x = make(), batch(2)
    layer = '3' if make is residual_net else '4'
    results = {cuts: gluoncam.Explainer(net).backprop(x, 1, [layer], modes) for cuts, modes in MODES.items()}
    reference = results['output']
    for cuts, result in results.items():
        for mode in MODES[cuts]:
            np.testing.assert_allclose(result.input_gradients[mode].asnumpy(),
                                       reference.input_gradients[mode].asnumpy(), rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(result.gradients[mode][layer].asnumpy(),
                                       reference.gradients[mode][layer].asnumpy(), rtol=1e-5, atol=1e-7)
    assert not np.allclose(reference.input_gradients['normal'].asnumpy(),
                           reference.input_gradients['guided'].asnumpy())


def spied_sessions(monkeypatch) -> list:
    """The sessions that explanations make from now on, in order."""
    sessions = []

    class Spy(Session):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sessions.append(self)

    monkeypatch.setattr(explainer_module, 'Session', Spy)
    return sessions


def test_a_normal_recording_cuts_only_at_captured_layers(monkeypatch):
    sessions = spied_sessions(monkeypatch)
    net = residual_net()
    gluoncam.Explainer(net).backprop(batch(), layers=['3'], modes=('normal',))
    gluoncam.Explainer(net).backprop(batch(), layers=['3'], modes=('normal', 'guided'))
    assert len(sessions[0].cuts) == 1
    assert len(sessions[1].cuts) == 1 + 5  # the capture and every ReLU (3 plain, 2 ReLU6)


@pytest.mark.parametrize('modes', MODES.values())
def test_relu6_stops_the_gradient_at_both_bounds(modes):
    """Pre-activations exactly 0 and 6 get no gradient in any recording, as in PyTorch's ReLU6."""
    net = relu6_net()
    net[0].weight.set_data(nd.array(np.eye(5, 3) * 2))
    net[0].bias.set_data(nd.zeros(5))
    x = nd.array([[0., 3., 1.], [1., 0., 2.]])  # z = 2x: 0, 6, 2 | 2, 0, 4
    result = gluoncam.Explainer(net).backprop(x, 1, modes=modes)
    w2 = net[2].weight.data().asnumpy()[1]
    z = x.asnumpy() @ (np.eye(5, 3) * 2).T
    active = (z > 0) & (z < 6)
    for mode in modes:
        g = np.tile(w2, (2, 1)) if mode == 'normal' else np.maximum(np.tile(w2, (2, 1)), 0)
        expected = (g * (active if mode != 'deconv' else 1)) @ (np.eye(5, 3) * 2)
        np.testing.assert_allclose(result.input_gradients[mode].asnumpy(), expected, rtol=1e-6, atol=1e-7)


def test_relus_out_of_reach_warn_after_a_normal_call_too():
    net = DirectCalls()
    net.initialize()
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        gluoncam.Explainer(net).backprop(batch(), modes=('normal',))
    for modes in (('normal', 'guided'), ('deconv',)):
        with pytest.warns(UserWarning, match="outside gluoncam's reach"):
            gluoncam.Explainer(net).backprop(batch(), modes=modes)


# ----- compiled passes
def imperative_only():
    """Score-CAM and Ablation-CAM without compiled graphs: every pass through the network, imperatively."""
    return mock.patch.multiple(compiled, whole=lambda *args: None, downstream=lambda *args: None)


NETS = {
    'small': (small_net, '4', (2, 3, 12, 10)),
    'residual, layer inside a block': (residual_net, '3.conv1', (2, 3, 12, 10)),
    'resnet18_v1, layer inside a block': (lambda: _zoo('resnet18_v1'), 'features.6.0.body.3', (1, 3, 64, 64)),
    'mobilenetv2_0.25, the last block': (lambda: _zoo('mobilenetv2_0.25'), 'features.16', (1, 3, 64, 64)),
}


def _zoo(name):
    mx.random.seed(0)
    net = get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier(magnitude=2))
    return net


@pytest.mark.parametrize('method', ['scorecam', 'ablationcam'])
@pytest.mark.parametrize('name', NETS)
def test_compiled_passes_equal_the_imperative_ones(name, method):
    make, layer, shape = NETS[name]
    net = make()
    x = nd.array(np.random.RandomState(0).randn(*shape).astype(np.float32))
    checks = []
    agrees = compiled.agrees
    with mock.patch.object(compiled, 'agrees', lambda *args: checks.append(agrees(*args)) or checks[-1]):
        fast = cams.cam(net, x, layer, method, batch_size=7).asnumpy()
    assert checks == [True]  # the compiled graph ran, and agreed with the imperative pass
    with imperative_only():
        slow = cams.cam(net, x, layer, method, batch_size=7).asnumpy()
    assert slow.max() > 0
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5 * slow.max())


def test_the_part_after_a_layer_in_a_block_reads_the_skip_connection_from_outside():
    net = residual_net()
    with gluoncam.Explainer(net):
        inside = compiled.downstream(net, resolve(net, '3.conv1'), 'logits')
        after = compiled.downstream(net, resolve(net, '4'), 'logits')
    assert inside.frontier is not None and after.frontier is None
    assert len(inside.context(batch())) == 1  # the block's input, for its skip connection


class ShapeInPython(HybridBlock):
    """Reads a shape in Python: runs imperatively only."""

    def hybrid_forward(self, F, x):
        return x.reshape((x.shape[0], -1))


class DiffersWhenTraced(HybridBlock):
    """Computes something else as a symbol than as arrays: the compiled graph must not be trusted."""

    def hybrid_forward(self, F, x):
        return x * (2 if F is nd else 3)


@pytest.mark.parametrize('odd', [ShapeInPython, DiffersWhenTraced])
@pytest.mark.parametrize('method', ['scorecam', 'ablationcam'])
def test_networks_without_a_faithful_graph_run_imperatively(odd, method):
    net = small_net()
    twisted = stock.HybridSequential()
    twisted.add(*list(net._children.values())[:5], odd(), *list(net._children.values())[5:])
    x = batch(2)
    with gluoncam.Explainer(twisted):
        traced = compiled.whole(twisted, 'logits')
    assert (traced is None) == (odd is ShapeInPython)
    got = cams.cam(twisted, x, '4', method).asnumpy()
    with imperative_only():
        expected = cams.cam(twisted, x, '4', method).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_a_layer_that_runs_twice_has_no_part_after_it():
    net = stock.HybridSequential()
    dense = stock.Dense(4, in_units=4)
    net.add(dense, dense, stock.Dense(2))
    net.initialize()
    net(nd.ones((1, 4)))
    with gluoncam.Explainer(net):
        assert compiled.downstream(net, dense, 'logits') is None
        assert compiled.whole(net, 'logits') is not None


def test_logits_and_outputs_are_compiled_as_scored():
    net = stock.HybridSequential()
    net.add(stock.Dense(3, in_units=4), stock.HybridLambda(lambda F, x: F.softmax(x)))
    net.initialize()
    x = nd.array(np.random.RandomState(0).randn(2, 4))
    with gluoncam.Explainer(net):
        logits, output = compiled.whole(net, 'logits'), compiled.whole(net, 'output')
    np.testing.assert_allclose(logits(x).asnumpy(), net[0](x).asnumpy(), rtol=1e-6)
    np.testing.assert_allclose(output(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)


# ----- compiled recordings: of normal-mode calls, and pieces of calls cut at ReLUs
RECORDED = {  # net, layers, input shape, whether the graph runs in train mode (it has max pooling)
    'small: BatchNorm, max pooling, Dropout': (small_net, ['1', '4'], (2, 3, 12, 10), True),
    'small, a ReLU captured': (small_net, ['2'], (2, 3, 12, 10), True),
    'residual with ReLU6': (residual_net, ['3.conv1', '5'], (2, 3, 12, 10), True),
    'resnet18_v1, layer inside a block': (lambda: _zoo('resnet18_v1'), ['features.6.0.body.3'], (2, 3, 64, 64),
                                          True),
    'mobilenetv2_0.25': (lambda: _zoo('mobilenetv2_0.25'), ['features.16'], (2, 3, 64, 64), False),
}


def no_compiled_recordings():
    return mock.patch.object(explainer_module._Recordings, 'get', lambda *args: None)


def recordings_of(net):
    return list(explainer_module._Recordings._by_net.get(net, {}).values())


def calls_answered_compiled(modes=('normal',)):
    """A spy on the use of the compiled recording (normal mode) or pieces (other modes): ``spy.call_count``."""
    if set(modes) == {'normal'}:
        return mock.patch.object(explainer_module, '_compiled_backprop', wraps=explainer_module._compiled_backprop)
    return mock.patch.object(explainer_module.Explainer, '_pieces_backprop', autospec=True,
                             side_effect=explainer_module.Explainer._pieces_backprop)


RECORDED_MODES = [('normal',), ('normal', 'guided'), ('deconv', 'normal')]


def assert_same_backprops(got, expected, rtol=1e-5, modes=('normal',)):
    for g, e in zip(got, expected):
        pairs = [(g.output, e.output)] + [(g.activations[name], e.activations[name]) for name in e.activations]
        for mode in modes:
            pairs.append((g.input_gradients[mode], e.input_gradients[mode]))
            pairs += [(g.gradients[mode][name], e.gradients[mode][name]) for name in e.activations]
        if e.classes is not None:
            np.testing.assert_array_equal(g.classes.asnumpy(), e.classes.asnumpy())
        for a, b in pairs:
            b = b.asnumpy()
            assert np.abs(b).max() > 0
            np.testing.assert_allclose(a.asnumpy(), b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize('modes', RECORDED_MODES)
@pytest.mark.parametrize('score', ['logits', 'output'])
@pytest.mark.parametrize('name', RECORDED)
def test_compiled_recordings_equal_the_imperative_ones(name, score, modes):
    """From the second call with the same layers, score and cuts, a call runs compiled graphs (checked against
    the imperative recording on that call): outputs, activations and gradients of every mode, layer and target
    agree."""
    make, layers, shape, train_mode = RECORDED[name]
    net = make()
    x = nd.array(np.random.RandomState(0).randn(*shape).astype(np.float32))
    targets = [None, 1, lambda out: out[:, 0] - out[:, 1]]
    explainer = gluoncam.Explainer(net)
    with no_compiled_recordings():
        expected = explainer.backprop_each(x, targets, layers, modes, score=score)
    with calls_answered_compiled(modes) as spy:
        for _ in range(3):
            got = explainer.backprop_each(x, targets, layers, modes, score=score)
    assert spy.call_count == 2  # not the first call; the second one checked, the third used it
    recording, = recordings_of(net)
    assert isinstance(recording, compiled.Recording if modes == ('normal',) else compiled.Pieces)
    assert recording.checked and recording.train_mode == train_mode
    assert_same_backprops(got, expected, modes=modes)


@pytest.mark.parametrize('modes', [('normal', 'guided'), ('deconv',)])
def test_compiled_pieces_cut_where_the_imperative_recording_does(monkeypatch, modes):
    """The cuts of the imperative recording, in its order (every ReLU, the capture, the skips' shared inputs),
    so the sweeps sum in the same order: the maps are the same bit for bit."""
    sessions = spied_sessions(monkeypatch)
    net, x = residual_net(), batch(2)
    explainer = gluoncam.Explainer(net)
    results = [explainer.backprop(x, layers=['3'], modes=modes) for _ in range(3)]
    pieces, = recordings_of(net)
    assert isinstance(pieces, compiled.Pieces) and pieces.checked
    imperative, compiled_cuts = sessions[-3].cuts, sessions[-1].cuts  # the second call's check, the third call
    shared = [name for name, block in net._children.items() if id(block) in explainer_module._shared_outputs[net][
        relu_cuts_for(modes)]]
    assert shared == (['2', '4'] if 'guided' in modes else ['4'])  # a ReLU's output is a leaf when cut there
    assert len(compiled_cuts) == len(imperative) == 5 + 1 + len(shared) == len(pieces.pieces) - 1
    for got, expected in zip(compiled_cuts, imperative):
        assert got.rule == expected.rule
        assert got.upper == expected.upper or got.rule == 'relu input'  # the bound is in the next piece then
        assert got.rule is not None or got.block is expected.block
    for mode in modes:
        for result in results[1:]:
            np.testing.assert_array_equal(result.input_gradients[mode].asnumpy(),
                                          results[0].input_gradients[mode].asnumpy())
            np.testing.assert_array_equal(result.gradients[mode]['3'].asnumpy(),
                                          results[0].gradients[mode]['3'].asnumpy())


@pytest.mark.parametrize('modes', RECORDED_MODES)
def test_a_compiled_recording_changes_no_parameter_statistic_or_gradient(modes):
    net = small_net()
    params = net.collect_params()
    for param in params.values():
        if param.grad_req != 'null':
            param.grad()[:] = 7
    before = {name: (param.data().asnumpy(), param.grad().asnumpy() if param.grad_req != 'null' else None)
              for name, param in params.items()}
    explainer = gluoncam.Explainer(net)
    for _ in range(3):
        explainer.backprop(batch(8), layers=['4'], modes=modes)
    assert recordings_of(net)[0].train_mode  # BatchNorm and Dropout computed in train mode, as in inference
    for name, param in params.items():
        data, grad = before[name]
        np.testing.assert_array_equal(param.data().asnumpy(), data, err_msg=name)
        if grad is not None:
            np.testing.assert_array_equal(param.grad().asnumpy(), grad, err_msg=name)


def test_a_compiled_relu6_stops_the_gradient_at_both_bounds():
    net = relu6_net()
    net[0].weight.set_data(nd.array(np.eye(5, 3) * 2))
    net[0].bias.set_data(nd.zeros(5))
    x = nd.array([[0., 3., 1.], [1., 0., 2.]])  # z = 2x: 0, 6, 2 | 2, 0, 4
    with calls_answered_compiled() as spy:
        grads = [gluoncam.Explainer(net).backprop(x, 1).input_gradients['normal'].asnumpy() for _ in range(3)]
    assert spy.call_count == 2
    z = x.asnumpy() @ (np.eye(5, 3) * 2).T
    expected = (np.tile(net[2].weight.data().asnumpy()[1], (2, 1)) * ((z > 0) & (z < 6))) @ (np.eye(5, 3) * 2)
    for grad in grads:
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)


class DiffersAsSymbol(HybridBlock):
    """Computes something else on symbols than on arrays, whatever F is."""

    def hybrid_forward(self, F, x):
        return x * (3 if isinstance(x, mx.sym.Symbol) else 2)


class RandomizedReLU(HybridBlock):
    """A ReLU that train mode makes random: a graph with max pooling (run in train mode) must not have it."""

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type='rrelu')[0]  # its second output is the random mask


@pytest.mark.parametrize('modes', RECORDED_MODES)
@pytest.mark.parametrize('odd', [DiffersAsSymbol, RandomizedReLU])
def test_networks_without_a_faithful_recording_run_imperatively(odd, modes):
    net = small_net()
    twisted = stock.HybridSequential()
    twisted.add(*list(net._children.values())[:5], odd(), *list(net._children.values())[5:])
    x = batch(2)
    with no_compiled_recordings():
        expected = gluoncam.Explainer(twisted).backprop_each(x, [None], ['4'], modes)
    for _ in range(3):
        got = gluoncam.Explainer(twisted).backprop_each(x, [None], ['4'], modes)
        assert_same_backprops(got, expected, rtol=1e-6, modes=modes)
    assert recordings_of(twisted) == [explainer_module._Recordings.NEVER]


def test_a_few_compiled_recordings_are_kept_per_network():
    net = small_net()
    layer_sets = [['0'], ['1'], ['2'], ['3'], ['4'], ['0', '4']]
    for layers in layer_sets * 2:
        gluoncam.Explainer(net).backprop(batch(), layers=layers)
    kept = [entry for entry in recordings_of(net) if isinstance(entry, compiled.Recording)]
    assert len(kept) == explainer_module._Recordings.KEPT


@pytest.mark.parametrize('modes', [('normal',), ('normal', 'guided')])
def test_no_memory_growth_over_many_compiled_calls(modes):
    net, x = small_net(), batch()
    explainer = gluoncam.Explainer(net)

    def call():
        explainer.backprop(x, layers=['4'], modes=modes).gradients[modes[-1]]['4'].asnumpy()

    for _ in range(200):
        call()
    start = rss_mb()
    for _ in range(2000):
        call()
    growth = rss_mb() - start
    print(f"RSS growth over 2000 compiled calls: {growth:.1f} MB")
    assert growth < 20


@pytest.mark.parametrize('modes', RECORDED_MODES)
def test_a_graph_mxnet_cannot_run_falls_back_to_the_imperative_recording(monkeypatch, modes):
    from mxnet.base import MXNetError
    net, x = small_net(), batch()
    with no_compiled_recordings():
        expected = gluoncam.Explainer(net).backprop_each(x, [None], ['4'], modes)

    def refuse(self, *args):
        raise MXNetError("shape inference failed")

    monkeypatch.setattr(compiled.Recording, 'forward', refuse)
    monkeypatch.setattr(compiled.Pieces, 'forward', refuse)
    for _ in range(3):
        got = gluoncam.Explainer(net).backprop_each(x, [None], ['4'], modes)
        assert_same_backprops(got, expected, rtol=1e-6, modes=modes)
    assert recordings_of(net) == [explainer_module._Recordings.NEVER]


def spied_checks():
    """A spy on the imperative recordings: ``spy.call_args_list`` holds each one's (explainer, x, targets, ...)."""
    return mock.patch.object(explainer_module.Explainer, '_recorded', autospec=True,
                             side_effect=explainer_module.Explainer._recorded)


@pytest.mark.parametrize('modes', RECORDED_MODES)
def test_a_compiled_recording_is_checked_on_the_first_image_of_the_batch(modes):
    """Samples do not interact, so the second call checks its graph against an imperative recording of its first
    image only, with that image's target; a target function is checked on the whole batch."""
    net, x = small_net(), batch(3)
    per_image = np.array([2, 0, 1])
    with no_compiled_recordings():
        expected = gluoncam.Explainer(net).backprop_each(x, [per_image, None], ['4'], modes)
    explainer = gluoncam.Explainer(net)
    with spied_checks() as spy:
        for _ in range(3):
            got = explainer.backprop_each(x, [per_image, None], ['4'], modes)
    (_, first_x, *_), (_, checked_x, checked_targets, *_) = [c.args for c in spy.call_args_list]
    assert first_x.shape[0] == 3 and checked_x.shape[0] == 1
    assert [list(np.ravel(t)) if t is not None else None for t in checked_targets] == [[2], None]
    assert recordings_of(net)[0].checked
    assert_same_backprops(got, expected, modes=modes)

    scored, explainer = [lambda out: out[:, 0] - out[:, 1]], gluoncam.Explainer(small_net())
    with spied_checks() as spy:
        for _ in range(2):
            explainer.backprop_each(x, scored, ['4'], modes)
    assert [c.args[1].shape[0] for c in spy.call_args_list] == [3, 3]


def test_a_repeated_explainer_compiles_at_its_first_call():
    net, x = small_net(), batch(2)
    with calls_answered_compiled() as spy:
        gluoncam.Explainer(net, repeated=True).backprop(x, layers=['4'])
    recording, = recordings_of(net)
    assert spy.call_count == 1 and recording.checked


def test_integrated_gradients_run_compiled_from_their_first_batch():
    net, x = small_net(), batch(1)
    with spied_checks() as spy, calls_answered_compiled() as compiled_calls:
        gluoncam.gradients.integrated_gradients(net, x, steps=8, batch_size=3)
    assert [c.args[1].shape[0] for c in spy.call_args_list] == [1]  # the check, on one path point
    assert compiled_calls.call_count == 3


def test_vgg16_runs_its_imperative_and_compiled_recordings_in_one_mode_and_gets_the_same_gradients():
    """VGG-16's graph runs in train mode (max pooling), where MKLDNN picks other convolution kernels; their rounding
    would flip a few ReLU decisions (moving the gradient by up to 3 % of its maximum on this random image) and the
    compiled graph would be refused. The imperative recording runs its ops in that mode too: the same bits."""
    mx.random.seed(0)
    net = gluoncam.models.get_model('vgg16', pretrained=False)
    net.initialize(mx.init.Xavier())
    x = nd.array(np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32))
    explainer = gluoncam.Explainer(net)
    with calls_answered_compiled() as spy:
        results = [explainer.backprop(x, layers=['features.28']) for _ in range(3)]
    recording, = recordings_of(net)
    assert spy.call_count == 2 and recording.checked and recording.train_mode
    assert compiled.runs_in_train_mode(net) and not compiled.runs_in_train_mode(relu6_net())
    for result in results[1:]:
        np.testing.assert_array_equal(result.input_gradients['normal'].asnumpy(),
                                      results[0].input_gradients['normal'].asnumpy())
        np.testing.assert_array_equal(result.gradients['normal']['features.28'].asnumpy(),
                                      results[0].gradients['normal']['features.28'].asnumpy())
