"""The explainer's contract: targets, bad input, layers, hybridized and foreign networks, threads, state."""
import threading
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import Block, HybridBlock
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam.nn import walk
from gluoncam.session import active_session
from conftest import batch, small_net


def assert_restored(net):
    """No gluoncam attribute left on any block, no session left in this thread."""
    for block in walk(net):
        assert 'hybrid_forward' not in vars(block), block.name
    assert active_session() is None


# ----- targets
def test_default_target_is_the_predicted_class(net, x):
    result = gluoncam.Explainer(net).backprop(x)
    np.testing.assert_array_equal(result.classes.asnumpy(), net(x).asnumpy().argmax(axis=1))


def test_int_list_and_callable_targets_agree(net, x):
    explainer = gluoncam.Explainer(net)
    by_int = explainer.backprop(x, 2).input_gradients['normal'].asnumpy()
    by_list = explainer.backprop(x, [2, 2]).input_gradients['normal'].asnumpy()
    by_numpy = explainer.backprop(x, np.array([2, 2])).input_gradients['normal'].asnumpy()
    by_function = explainer.backprop(x, lambda out: out[:, 2]).input_gradients['normal'].asnumpy()
    np.testing.assert_array_equal(by_int, by_list)
    np.testing.assert_array_equal(by_int, by_numpy)
    np.testing.assert_allclose(by_int, by_function, rtol=1e-6)


def test_per_sample_classes_differ(net, x):
    explainer = gluoncam.Explainer(net)
    mixed = explainer.backprop(x, [0, 4]).input_gradients['normal'].asnumpy()
    np.testing.assert_array_equal(mixed[0], explainer.backprop(x, 0).input_gradients['normal'].asnumpy()[0])
    np.testing.assert_array_equal(mixed[1], explainer.backprop(x, 4).input_gradients['normal'].asnumpy()[1])


def test_class_count_comes_from_the_output():
    net = small_net(classes=3)
    with pytest.raises(ValueError, match=r"class id 3 out of range.*3 classes.*0\.\.2"):
        gluoncam.Explainer(net).backprop(batch(), 3)
    with pytest.raises(ValueError, match="out of range"):
        gluoncam.Explainer(net).backprop(batch(), [0, -1])


@pytest.mark.parametrize('target, message', [
    ([0, 1, 2], "3 class targets for a batch of 2"),
    (1.5, "must be integers"),
    (lambda out: out, "one score per sample"),
])
def test_bad_targets_are_refused(net, x, target, message):
    with pytest.raises(ValueError, match=message):
        gluoncam.Explainer(net).backprop(x, target)
    assert_restored(net)


# ----- inputs
def test_convenient_inputs_are_converted(net, x):
    reference = gluoncam.Explainer(net).backprop(x).input_gradients['normal'].asnumpy()
    from_numpy64 = gluoncam.Explainer(net).backprop(x.asnumpy().astype(np.float64))
    assert from_numpy64.input_gradients['normal'].dtype == np.float32
    np.testing.assert_array_equal(from_numpy64.input_gradients['normal'].asnumpy(), reference)
    single = gluoncam.Explainer(net).backprop(x[0])
    assert single.input_gradients['normal'].shape == (1, 3, 12, 10)
    np.testing.assert_allclose(single.input_gradients['normal'].asnumpy()[0], reference[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('make, message', [
    (lambda x: x.reshape((2, 360)), r"\(N, C, H, W\)"),
    (lambda x: x.expand_dims(0), r"\(N, C, H, W\)"),
    (lambda x: x.reshape((2, 3, 120)), "takes 3 input channels, the input has 2"),
    (lambda x: nd.zeros((2, 4, 12, 10)), "takes 3 input channels, the input has 4"),
    (lambda x: x.transpose((0, 2, 3, 1)), "channels last"),
    (lambda x: nd.where(x > 1, x * np.nan, x), "NaN or infinite"),
    (lambda x: x / (x > 1), "NaN or infinite"),
    (lambda x: np.zeros((0, 3, 12, 10)), "empty"),
])
def test_bad_inputs_are_refused(net, x, make, message):
    with pytest.raises(ValueError, match=message):
        gluoncam.Explainer(net).backprop(make(x))


def test_a_single_image_without_batch_axis_is_accepted_for_dense_nets():
    net = stock.HybridSequential()
    net.add(gluoncam.Dense(4, activation='relu', in_units=3), gluoncam.Dense(2, in_units=4))
    net.initialize()
    result = gluoncam.Explainer(net).backprop(nd.ones((5, 3)))
    assert result.input_gradients['normal'].shape == (5, 3)


# ----- layers
def test_layers_by_path_name_and_block_are_the_same(net, x):
    explainer = gluoncam.Explainer(net)
    result = explainer.backprop(x, 1, layers=['4', net[4].name, net[4]])
    grads = result.gradients['normal']
    assert set(grads) == {'4', net[4].name}
    np.testing.assert_array_equal(grads['4'].asnumpy(), grads[net[4].name].asnumpy())


def test_several_layers_in_one_call_equal_separate_calls(net, x):
    explainer = gluoncam.Explainer(net)
    both = explainer.backprop(x, 1, layers=['0', '4'], modes=('normal', 'guided'))
    for layer in ('0', '4'):
        alone = explainer.backprop(x, 1, layers=[layer], modes=('normal', 'guided'))
        for mode in ('normal', 'guided'):
            np.testing.assert_allclose(both.gradients[mode][layer].asnumpy(),
                                       alone.gradients[mode][layer].asnumpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_array_equal(both.activations[layer].asnumpy(), alone.activations[layer].asnumpy())


def test_unknown_layer_lists_the_valid_names(net, x):
    listing = r"no layer named 'conv99' in 'small'; valid names: small, 0, small_conv0, .*, 8, small_dense1$"
    with pytest.raises(ValueError, match=listing):
        gluoncam.Explainer(net).backprop(x, layers=['conv99'])
    with pytest.raises(ValueError, match="not part of the network"):
        gluoncam.Explainer(net).backprop(x, layers=[stock.Dense(3)])


def test_unknown_mode_is_refused(net, x):
    with pytest.raises(ValueError, match="valid modes: normal, guided, deconv"):
        gluoncam.Explainer(net).backprop(x, modes=('smooth',))


class TwoHeads(HybridBlock):
    """The output uses only ``used``; ``unused`` runs but leads nowhere; ``never`` is not run at all."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.used = gluoncam.Conv2D(4, 3, in_channels=3)
            self.unused = gluoncam.Conv2D(4, 3, in_channels=3)
            self.never = gluoncam.Conv2D(4, 3, in_channels=3)
            self.head = gluoncam.Dense(3)

    def hybrid_forward(self, F, x):
        self.unused(x)
        return self.head(self.used(x))


def test_layers_off_the_output_path_are_refused():
    net = TwoHeads()
    net.initialize()
    x = batch()
    gluoncam.Explainer(net).backprop(x, layers=['used'])
    with pytest.raises(ValueError, match="does not depend on layer 'unused'"):
        gluoncam.Explainer(net).backprop(x, layers=['unused'])
    with pytest.raises(ValueError, match="'never' did not run"):
        gluoncam.Explainer(net).backprop(x, layers=['never'])
    assert_restored(net)


# ----- networks: hybridized, stock, foreign blocks
def test_hybridized_network_gives_the_same_maps_and_stays_hybridized(net, x):
    expected = gluoncam.Explainer(net).backprop(x, layers=['4'], modes=('normal', 'guided'))
    net.hybridize(static_alloc=True)
    net(x)
    cached = net._cached_op
    result = gluoncam.Explainer(net).backprop(x, layers=['4'], modes=('normal', 'guided'))
    for mode in ('normal', 'guided'):
        np.testing.assert_array_equal(result.input_gradients[mode].asnumpy(),
                                      expected.input_gradients[mode].asnumpy())
        np.testing.assert_array_equal(result.gradients[mode]['4'].asnumpy(), expected.gradients[mode]['4'].asnumpy())
    assert all(block._active for block in walk(net) if isinstance(block, HybridBlock))
    net(x)
    assert net._cached_op is cached
    assert_restored(net)


def stock_twin(net):
    """The same network from mxnet.gluon.nn blocks only."""
    twin = stock.HybridSequential(prefix='small_')
    with twin.name_scope():
        twin.add(stock.Conv2D(6, 3, padding=1), stock.BatchNorm(), stock.Activation('relu'), stock.MaxPool2D(2),
                 stock.Conv2D(8, 3, padding=1, activation='relu'), stock.Dropout(0.5),
                 stock.Dense(16, activation='relu'), stock.Dropout(0.3), stock.Dense(5))
    twin.initialize()
    twin(nd.zeros((1, 3, 12, 10)))
    for (_, param), (_, own) in zip(twin.collect_params().items(), net.collect_params().items()):
        param.set_data(own.data())
    return twin


def test_stock_blocks_are_explained_like_gluoncam_blocks(net, x):
    modes = ('normal', 'guided', 'deconv')
    expected = gluoncam.Explainer(net).backprop(x, 1, modes=modes)
    twin = stock_twin(net)
    result = gluoncam.Explainer(twin).backprop(x, 1, modes=modes)
    for mode in modes:
        np.testing.assert_array_equal(result.input_gradients[mode].asnumpy(), expected.input_gradients[mode].asnumpy())
    assert_restored(twin)
    assert type(twin[0]) is stock.Conv2D


def test_convert_swaps_blocks_and_keeps_parameters(net, x):
    twin = stock_twin(net)
    before = {name: param.data().asnumpy() for name, param in twin.collect_params().items()}
    gluoncam.convert(twin)
    assert type(twin[0]) is gluoncam.Conv2D and type(twin[2]) is gluoncam.Activation
    assert type(twin[4].act) is gluoncam.Activation and type(twin[6]) is gluoncam.Dense
    assert type(twin[1]) is stock.BatchNorm
    after = {name: param.data().asnumpy() for name, param in twin.collect_params().items()}
    assert before.keys() == after.keys()
    np.testing.assert_array_equal(twin(x).asnumpy(), net(x).asnumpy())


class ResidualUnit(HybridBlock):
    """A GluonCV-style block: its ReLUs are functional calls inside hybrid_forward."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = stock.Conv2D(channels, 3, padding=1, in_channels=channels)
            self.bn = stock.BatchNorm(in_channels=channels)

    def hybrid_forward(self, F, x):
        y = F.relu(self.bn(self.conv(x)))
        return F.Activation(y + x, act_type='relu')


def residual_net(functional=True):
    net = stock.HybridSequential()
    net.add(stock.Conv2D(4, 3, padding=1, in_channels=3), stock.Activation('relu'), ResidualUnit(4),
            stock.GlobalAvgPool2D(), stock.Dense(3, in_units=4))
    net.initialize(mx.init.Xavier())
    return net


class PlainResidual(HybridBlock):
    """ResidualUnit's computation with gluoncam Activation blocks."""

    def __init__(self, unit):
        super().__init__()
        self.conv, self.bn = unit.conv, unit.bn
        self.relu1, self.relu2 = gluoncam.Activation('relu'), gluoncam.Activation('relu')

    def hybrid_forward(self, F, x):
        return self.relu2(self.relu1(self.bn(self.conv(x))) + x)


def test_functional_relus_in_foreign_blocks_are_guided():
    net = residual_net()
    x = batch(2, (3, 8, 8))
    modes = ('normal', 'guided', 'deconv')
    result = gluoncam.Explainer(net).backprop(x, 2, layers=['2'], modes=modes)
    twin = stock.HybridSequential()
    twin.add(net[0], net[1], PlainResidual(net[2]), net[3], net[4])
    expected = gluoncam.Explainer(twin).backprop(x, 2, layers=['2'], modes=modes)
    for mode in modes:
        np.testing.assert_array_equal(result.input_gradients[mode].asnumpy(), expected.input_gradients[mode].asnumpy())
    assert not np.allclose(result.input_gradients['normal'].asnumpy(), result.input_gradients['guided'].asnumpy())


class DirectCalls(Block):
    """A plain Block calling mx.nd directly: out of gluoncam's reach."""

    def __init__(self, dropout=False, max_pool=False):
        super().__init__()
        self.dropout, self.max_pool = dropout, max_pool
        with self.name_scope():
            self.conv = gluoncam.Conv2D(4, 3, in_channels=3)
            self.dense = gluoncam.Dense(2)

    def forward(self, x):
        y = nd.relu(self.conv(x))
        if self.dropout:
            y = nd.Dropout(y, p=0.5)
        if self.max_pool:
            y = nd.Pooling(y, kernel=(2, 2), stride=(2, 2), pool_type='max')
        return self.dense(y)


def test_relus_out_of_reach_warn_and_name_the_place():
    net = DirectCalls()
    net.initialize()
    with pytest.warns(UserWarning, match=r"ReLU before the output .*outside gluoncam's reach"):
        gluoncam.Explainer(net).backprop(batch(), modes=('guided',))
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        gluoncam.Explainer(net).backprop(batch(), modes=('normal',))


def test_dropout_out_of_reach_runs_as_in_inference():
    net = DirectCalls(dropout=True)
    net.initialize()
    plain = DirectCalls()
    plain.conv, plain.dense = net.conv, net.dense
    x = batch()
    with_dropout = gluoncam.Explainer(net).backprop(x)
    without = gluoncam.Explainer(plain).backprop(x)
    np.testing.assert_array_equal(with_dropout.output.asnumpy(), without.output.asnumpy())
    np.testing.assert_array_equal(with_dropout.input_gradients['normal'].asnumpy(),
                                  without.input_gradients['normal'].asnumpy())


def test_max_pooling_out_of_reach_is_refused():
    net = DirectCalls(max_pool=True)
    net.initialize()
    with pytest.raises(RuntimeError, match="max pooling op runs before the output outside gluoncam's reach"):
        gluoncam.Explainer(net).backprop(batch())


def test_imported_symbol_graphs_are_refused(net, tmp_path):
    net.hybridize()
    net(batch())
    net.export(str(tmp_path / 'small'))
    imported = mx.gluon.SymbolBlock.imports(str(tmp_path / 'small-symbol.json'), ['data'],
                                            str(tmp_path / 'small-0000.params'))
    with pytest.raises(TypeError, match="SymbolBlock .* Python definition"):
        gluoncam.Explainer(imported)
    with pytest.raises(TypeError, match="expected a Gluon Block"):
        gluoncam.Explainer(lambda x: x)


# ----- state, threads, contexts, memory
def test_state_is_restored_when_an_exception_passes_through(net, x):
    net.hybridize()
    net(x)

    def failing(out):
        raise KeyError('boom')

    with pytest.raises(KeyError, match='boom'):
        gluoncam.Explainer(net).backprop(x, failing)
    assert_restored(net)
    assert all(block._active for block in walk(net) if isinstance(block, HybridBlock))
    with pytest.raises(KeyError):
        with gluoncam.Explainer(net) as explainer:
            explainer.backprop(x)
            raise KeyError('inside')
    assert_restored(net)


def test_context_manager_keeps_the_network_prepared_between_calls(net, x):
    twin = stock_twin(net)
    with gluoncam.Explainer(twin) as explainer:
        assert 'hybrid_forward' in vars(twin[0])
        explainer.backprop(x)
        explainer.backprop(x)
        assert 'hybrid_forward' in vars(twin[0])
    assert_restored(twin)


def test_blocks_behave_as_stock_outside_an_explanation(net, x):
    twin = stock_twin(net)
    np.testing.assert_array_equal(net(x).asnumpy(), twin(x).asnumpy())
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), twin(x).asnumpy(), rtol=1e-6)


def test_two_threads_on_one_network_do_not_disturb_each_other(net):
    # Unserialized, MXNet 1.9's engine deadlocks within a few thousand calls like these (see gluoncam.threads);
    # the threads are daemons and joined with a deadline, so that a deadlock fails the test instead of hanging it.
    xs = [batch(2, seed=s) for s in range(4)]
    explainer = gluoncam.Explainer(net)
    expected = [explainer.backprop(x, modes=('normal', 'guided')).input_gradients for x in xs]
    errors, results = [], {}

    def work(k):
        try:
            for repeat in range(60):
                mode = ('normal', 'guided')[(k + repeat) % 2]
                grads = gluoncam.Explainer(net).backprop(xs[k], modes=(mode,)).input_gradients
                results[k, repeat] = (mode, grads[mode].asnumpy())
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), 'the threads deadlocked'
    assert not errors, errors
    for (k, _), (mode, grad) in results.items():
        np.testing.assert_array_equal(grad, expected[k][mode].asnumpy())
    assert_restored(net)


def test_one_thread_runs_mxnet_at_a_time(net):
    """A call holds gluoncam.threads.lock from start to end: another thread's call waits for it."""
    x = batch(2)
    expected = gluoncam.gradients.gradient(net, x, 1).asnumpy()
    inside, release, done = threading.Event(), threading.Event(), []

    def blocking_target(output):
        inside.set()
        release.wait(timeout=60)
        return output[:, 1]

    def call(target):
        done.append((target == 1, gluoncam.gradients.gradient(net, x, target).asnumpy()))

    first = threading.Thread(target=call, args=(blocking_target,), daemon=True)
    first.start()
    assert inside.wait(timeout=60)
    second = threading.Thread(target=call, args=(1,), daemon=True)
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive() and not done  # waiting for the lock, not running beside the first call
    release.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert [plain for plain, _ in done] == [False, True]
    for _, gradient in done:
        np.testing.assert_array_equal(gradient, expected)
    assert gluoncam.threads.lock.acquire(blocking=False)
    gluoncam.threads.lock.release()


def test_arrays_stay_on_the_input_context():
    ctx = mx.cpu(1)
    net = small_net()
    net.collect_params().reset_ctx(ctx)
    x = batch().as_in_context(ctx)
    result = gluoncam.Explainer(net).backprop(x, layers=['4'], modes=('normal', 'guided'))
    arrays = [result.output, result.classes, result.activations['4']] + \
        [grad for grads in result.gradients.values() for grad in grads.values()] + \
        list(result.input_gradients.values())
    assert all(array.context == ctx for array in arrays)
    assert gluoncam.grad_cam(result.activations['4'], result.gradients['normal']['4']).context == ctx
    with pytest.raises(ValueError, match=r"input is on cpu\(0\).*cpu\(1\)"):
        gluoncam.Explainer(net).backprop(batch())


def test_a_calls_recording_is_freed_without_the_garbage_collector(net, x, monkeypatch):
    import gc
    import weakref
    from gluoncam import session
    made = []
    original = session.Session.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(weakref.ref(self))

    monkeypatch.setattr(session.Session, '__init__', init)
    gc.disable()
    try:
        gluoncam.Explainer(net).backprop(x, layers=['4'], modes=('normal', 'guided'))
        assert made and made[0]() is None, "the session (and every activation it holds) outlived the call"
    finally:
        gc.enable()


def rss_mb():
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * 4096 / 2 ** 20


def test_no_memory_growth_over_many_calls(net, x):
    """Over thousands of calls, each by a new explainer (as visualize() makes) or by one held explainer."""
    def call(k):
        explainer = gluoncam.Explainer(net) if k % 2 else held
        explainer.backprop(x, layers=['4'], modes=('normal', 'guided')).input_gradients['guided'].asnumpy()

    held = gluoncam.Explainer(net)
    for k in range(200):
        call(k)
    start = rss_mb()
    for k in range(2000):
        call(k)
    growth = rss_mb() - start
    print(f"RSS growth over 2000 calls: {growth:.1f} MB")
    assert growth < 20
