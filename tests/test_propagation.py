"""The propagation family (gluoncam.propagation) against its definitions: DeepLIFT's rescale and max-pooling rules
computed by hand, completeness, DeepLIFT-SHAP as a mean of DeepLIFT, GradientSHAP's draws reproduced by hand and
its expectation against Integrated Gradients, LRP's rules by hand on a two-layer net and their conservation."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import gradients as G
from gluoncam import propagation as P
from conftest import batch, parameters_untouched, small_net
from test_gradient_methods import linear_net, weights

CLASSES = [1, 3, 0]


def conv_net(pool='avg', bias=False, seed=0):
    """Convolution, ReLU, pooling, convolution, ReLU, dense ReLU, dense: with ``bias=False`` every layer
    conserves relevance and is positively homogeneous."""
    mx.random.seed(seed)
    net = stock.HybridSequential()
    pooling = stock.AvgPool2D(2) if pool == 'avg' else stock.MaxPool2D(2)
    net.add(stock.Conv2D(4, 3, padding=1, use_bias=bias, activation='relu'), pooling,
            stock.Conv2D(6, 3, padding=1, use_bias=bias), stock.Activation('relu'),
            stock.Dense(8, activation='relu', use_bias=bias), stock.Dense(5, use_bias=bias))
    net.initialize(mx.init.Xavier(magnitude=2))
    net(nd.zeros((1, 3, 12, 10)))
    if bias:
        for param in net.collect_params('.*bias').values():
            param.set_data(nd.random.normal(0, 0.3, shape=param.shape))
    return net


def two_layer_net(activation='relu', hidden=7, classes=4, features=6, seed=0):
    """Dense(hidden, activation) then Dense(classes), both with biases, on flat inputs."""
    mx.random.seed(seed)
    net = stock.HybridSequential()
    if isinstance(activation, str):
        net.add(stock.Dense(hidden, activation=activation, in_units=features))
    else:
        net.add(stock.Dense(hidden, in_units=features), activation)
    net.add(stock.Dense(classes, in_units=hidden))
    net.initialize(mx.init.Normal(0.7))
    for param in net.collect_params('.*bias').values():
        param.set_data(nd.random.normal(0, 0.5, shape=param.shape))
    return net


def flat(n, features=6, seed=1):
    return nd.array(np.random.RandomState(seed).randn(n, features).astype(np.float32))


def dense_params(net):
    return [(layer.weight.data().asnumpy().astype(np.float64), layer.bias.data().asnumpy().astype(np.float64))
            for layer in net if isinstance(layer, stock.Dense)]


def target_scores(net, x, classes):
    return net(x).asnumpy()[np.arange(len(classes)), classes]


def row_sums(array):
    return array.asnumpy().reshape((array.shape[0], -1)).sum(axis=1)


# ----------------------------------------------------------------------------------------------------------
# DeepLIFT


@pytest.mark.parametrize('make', [small_net, lambda: conv_net('avg', bias=True), lambda: conv_net('max')],
                         ids=['small_net (max pool, BatchNorm, Dropout)', 'avg pool with biases', 'max pool'])
def test_deeplift_completeness(make):
    net, x, baseline = make(), batch(3), batch(1, seed=4)
    attributions, delta = P.deeplift(net, x, CLASSES, baseline=baseline)
    assert attributions.shape == x.shape
    expected = target_scores(net, x, CLASSES) - target_scores(net, nd.tile(baseline, (3, 1, 1, 1)), CLASSES)
    np.testing.assert_allclose(row_sums(attributions), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(delta.asnumpy(), row_sums(attributions) - expected, atol=1e-5)
    assert np.abs(delta.asnumpy()).max() < 1e-5
    # not gradient x (x - x0), which is incomplete on these nonlinear nets
    plain = G.gradient(net, x, CLASSES).asnumpy() * (x - baseline).asnumpy()
    assert np.abs(plain.reshape((3, -1)).sum(axis=1) - expected).max() > 1e-3


ACTIVATIONS = {
    'relu': (lambda: 'relu', lambda v: np.maximum(v, 0)),
    'tanh': (lambda: 'tanh', np.tanh),
    'sigmoid': (lambda: 'sigmoid', lambda v: 1 / (1 + np.exp(-v))),
    'softrelu': (lambda: 'softrelu', lambda v: np.log1p(np.exp(v))),
    'leaky': (lambda: stock.LeakyReLU(0.1), lambda v: np.where(v > 0, v, 0.1 * v)),
    'elu': (lambda: stock.ELU(0.7), lambda v: np.where(v > 0, v, 0.7 * (np.exp(v) - 1))),
    'relu6': (lambda: gluoncam.ReLU6(), lambda v: np.clip(v, 0, 6)),
}


@pytest.mark.parametrize('activation', list(ACTIVATIONS))
def test_deeplift_one_hidden_layer_by_hand(activation):
    make, f = ACTIVATIONS[activation]
    net, x, baseline = two_layer_net(make()), flat(3), flat(3, seed=7) * 4
    (w1, b1), (w2, _) = dense_params(net)
    x64, x0 = x.asnumpy().astype(np.float64), baseline.asnumpy().astype(np.float64)
    z, z0 = x64 @ w1.T + b1, x0 @ w1.T + b1
    multiplier = (f(z) - f(z0)) / (z - z0)  # the rescale rule (no |z - z0| is tiny here)
    expected = (x64 - x0) * ((multiplier * w2[[2, 0, 3]]) @ w1)
    attributions, delta = P.deeplift(net, x, [2, 0, 3], baseline=baseline)
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-4, atol=1e-6)
    assert np.abs(delta.asnumpy()).max() < 1e-5


def test_deeplift_where_the_input_equals_the_baseline():
    """A sample equal to its baseline: every unit sees no difference and takes its plain slope; the
    attributions are zero, not NaN, and the other sample is unaffected."""
    net, x = two_layer_net(), flat(2)
    baseline = x.copy()
    baseline[1] = flat(1, seed=9)[0]
    attributions, delta = P.deeplift(net, x, [1, 2], baseline=baseline)
    assert np.isfinite(attributions.asnumpy()).all()
    np.testing.assert_array_equal(attributions.asnumpy()[0], 0)
    assert np.abs(attributions.asnumpy()[1]).max() > 0
    assert np.abs(delta.asnumpy()).max() < 1e-5


def test_deeplift_max_pool_rule_by_hand():
    """Max pooling then a dense layer: captum's rule routes g * (max(p, p0) - p0) to the input's maxima and
    g * (p - max(p, p0)) to the baseline's, and the attribution at each position is what was routed there."""
    mx.random.seed(3)
    net = stock.HybridSequential()
    net.add(stock.MaxPool2D(2), stock.Dense(3))
    net.initialize(mx.init.Normal(1))
    x, baseline = batch(2, shape=(2, 4, 6), seed=2), batch(2, shape=(2, 4, 6), seed=3)
    net(x)
    w = net[1].weight.data().asnumpy()
    classes = [2, 0]
    expected = np.zeros(x.shape)
    for i, c in enumerate(classes):
        g = w[c].reshape((2, 2, 3))
        for ch in range(2):
            for r in range(2):
                for q in range(3):
                    window = (ch, slice(2 * r, 2 * r + 2), slice(2 * q, 2 * q + 2))
                    a, a0 = x.asnumpy()[i][window], baseline.asnumpy()[i][window]
                    p, p0 = a.max(), a0.max()
                    top = max(p, p0)
                    ia, ia0 = np.unravel_index(a.argmax(), a.shape), np.unravel_index(a0.argmax(), a0.shape)
                    expected[i, ch, 2 * r + ia[0], 2 * q + ia[1]] += g[ch, r, q] * (top - p0)
                    expected[i, ch, 2 * r + ia0[0], 2 * q + ia0[1]] += g[ch, r, q] * (p - top)
    attributions, delta = P.deeplift(net, x, classes, baseline=baseline)
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-4, atol=1e-6)
    assert np.abs(delta.asnumpy()).max() < 1e-5


def test_deeplift_of_linear_net_is_gradient_times_difference():
    net, x, baseline = linear_net(), batch(3), batch(3, seed=8)
    attributions, delta = P.deeplift(net, x, CLASSES, baseline=baseline)
    np.testing.assert_allclose(attributions.asnumpy(), (x - baseline).asnumpy() * weights(net, CLASSES),
                               rtol=1e-5, atol=1e-6)
    assert np.abs(delta.asnumpy()).max() < 1e-4


def test_deeplift_baselines_of_every_accepted_form():
    net, x = small_net(), batch(2)
    zeros, _ = P.deeplift(net, x, [1, 2])
    np.testing.assert_array_equal(P.deeplift(net, x, [1, 2], baseline=0.0)[0].asnumpy(), zeros.asnumpy())
    one = batch(1, seed=6)
    by_image = P.deeplift(net, x, [1, 2], baseline=one[0].asnumpy())[0].asnumpy()
    np.testing.assert_array_equal(P.deeplift(net, x, [1, 2], baseline=one)[0].asnumpy(), by_image)
    np.testing.assert_array_equal(P.deeplift(net, x, [1, 2], baseline=nd.tile(one, (2, 1, 1, 1)))[0].asnumpy(),
                                  by_image)
    assert not np.allclose(by_image, zeros.asnumpy())


def test_deeplift_default_target_is_the_predicted_class_and_callable_targets():
    net, x = small_net(), batch(3)
    predicted = net(x).asnumpy().argmax(axis=1)
    np.testing.assert_array_equal(P.deeplift(net, x)[0].asnumpy(), P.deeplift(net, x, predicted)[0].asnumpy())
    by_function, delta = P.deeplift(net, x, lambda out: out[:, 1] - out[:, 2])
    expected = P.deeplift(net, x, 1)[0].asnumpy() - P.deeplift(net, x, 2)[0].asnumpy()
    np.testing.assert_allclose(by_function.asnumpy(), expected, rtol=1e-4, atol=1e-6)
    assert np.abs(delta.asnumpy()).max() < 1e-5


# ----------------------------------------------------------------------------------------------------------
# DeepLIFT-SHAP


def test_deeplift_shap_is_the_mean_of_deeplift_over_baselines():
    net, x, baselines = small_net(), batch(2), batch(3, seed=5)
    attributions, delta = P.deeplift_shap(net, x, [4, 1], baselines=baselines, batch_size=4)
    assert attributions.shape == x.shape and delta.shape == (2, 3)
    each = [P.deeplift(net, x, [4, 1], baseline=baselines[b:b + 1]) for b in range(3)]
    np.testing.assert_allclose(attributions.asnumpy(), np.mean([a.asnumpy() for a, _ in each], axis=0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(delta.asnumpy(), np.stack([d.asnumpy() for _, d in each], axis=1), atol=1e-6)
    # batch-size invariance, and the predicted class by default
    again, _ = P.deeplift_shap(net, x, net(x).asnumpy().argmax(axis=1), baselines=baselines, batch_size=1)
    np.testing.assert_allclose(P.deeplift_shap(net, x, baselines=baselines)[0].asnumpy(), again.asnumpy(),
                               rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# GradientSHAP


def test_gradient_shap_is_its_draws_by_hand():
    net, x, baselines = small_net(), batch(2), batch(3, seed=5)
    samples, stdevs, seed = 4, 0.2, 11
    attributions, delta = P.gradient_shap(net, x, [2, 0], baselines, n_samples=samples, stdevs=stdevs, seed=seed,
                                          batch_size=3)
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, 3, size=2 * samples)
    alphas = rng.uniform(0, 1, size=2 * samples).astype(np.float32)
    noise = rng.standard_normal((2 * samples, 3, 12, 10), dtype=np.float32) * np.float32(stdevs)
    expected, expected_delta = np.zeros(x.shape, np.float32), np.zeros((2, samples))
    for row in range(2 * samples):
        i, k = divmod(row, samples)
        noisy = x.asnumpy()[i] + noise[row]
        reference = baselines.asnumpy()[chosen[row]]
        point = nd.array((reference + alphas[row] * (noisy - reference))[None])
        attribution = (noisy - reference) * G.gradient(net, point, [[2, 0][i]]).asnumpy()[0]
        expected[i] += attribution / samples
        ends = target_scores(net, nd.array(np.stack([noisy, reference])), [[2, 0][i]] * 2)
        expected_delta[i, k] = attribution.sum() - (ends[0] - ends[1])
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(delta.asnumpy(), expected_delta, rtol=1e-3, atol=1e-5)
    assert np.abs(delta.asnumpy()).max() > 1e-3  # one draw of the path is not complete on a nonlinear net


def test_gradient_shap_seed_repeatable_seeds_differ_and_batch_size_invariant():
    net, x, baselines = small_net(), batch(2), batch(3, seed=5)
    first = P.gradient_shap(net, x, baselines=baselines, n_samples=3, stdevs=0.1, seed=0)[0].asnumpy()
    again = P.gradient_shap(net, x, baselines=baselines, n_samples=3, stdevs=0.1, seed=0, batch_size=1)[0]
    np.testing.assert_allclose(again.asnumpy(), first, rtol=1e-5, atol=1e-7)
    other = P.gradient_shap(net, x, baselines=baselines, n_samples=3, stdevs=0.1, seed=1)[0].asnumpy()
    assert not np.allclose(first, other)


def test_gradient_shap_expectation_is_integrated_gradients():
    """One zero baseline, no noise: E_a[(x - x0) dS/dx(x0 + a (x - x0))] is Integrated Gradients, and the
    mean of the draws' sums is S(x) - S(x0) within its standard error (each draw's sum is its delta plus
    S(x) - S(x0))."""
    net, x, zeros = conv_net('avg', bias=True), batch(2), nd.zeros((1, 3, 12, 10))
    samples = 1500
    shap, delta = P.gradient_shap(net, x, [1, 4], zeros, n_samples=samples, seed=0, batch_size=500)
    ig, _ = G.integrated_gradients(net, x, [1, 4], steps=64)
    shap, ig = shap.asnumpy(), ig.asnumpy()
    assert np.abs(shap - ig).max() < 0.08 * np.abs(ig).max()
    difference = target_scores(net, x, [1, 4]) - target_scores(net, nd.zeros_like(x), [1, 4])
    standard_error = delta.asnumpy().std(axis=1) / np.sqrt(samples)
    assert (standard_error > 0).all()
    assert (np.abs(shap.reshape((2, -1)).sum(axis=1) - difference) < 4 * standard_error + 1e-5).all()


def test_gradient_shap_of_linear_net_is_exact():
    net, x, baselines = linear_net(), batch(3), batch(4, seed=5)
    attributions, delta = P.gradient_shap(net, x, CLASSES, baselines, n_samples=6, seed=2)
    rng = np.random.default_rng(2)
    chosen = rng.integers(0, 4, size=18).reshape((3, 6))
    expected = (x.asnumpy() - baselines.asnumpy()[chosen].mean(axis=1)) * weights(net, CLASSES)
    np.testing.assert_allclose(attributions.asnumpy(), expected, rtol=1e-4, atol=1e-5)
    assert delta.shape == (3, 6) and np.abs(delta.asnumpy()).max() < 1e-4


# ----------------------------------------------------------------------------------------------------------
# LRP


def lrp_dense_by_hand(a, w, b, relevance, rule):
    """One dense layer's relevance rule, written out (a: N x in, w: out x in, relevance: N x out)."""
    def stab(t, eps):
        return t + eps * np.where(t >= 0, 1, -1)

    if rule[0] in ('epsilon', 'gamma', 'z+'):
        name, eps = rule[0], rule[-1]
        w_rule = {'epsilon': w, 'gamma': w + rule[1] * np.maximum(w, 0), 'z+': np.maximum(w, 0)}[name]
        return a * ((relevance / stab(a @ w_rule.T + b, eps)) @ w_rule)
    _, alpha, beta = rule
    a_pos, a_neg, w_pos, w_neg = np.maximum(a, 0), np.minimum(a, 0), np.maximum(w, 0), np.minimum(w, 0)
    z_pos = a_pos @ w_pos.T + a_neg @ w_neg.T + np.maximum(b, 0)
    z_neg = a_pos @ w_neg.T + a_neg @ w_pos.T + np.minimum(b, 0)
    # a unit without contributions of one sign passes no relevance through that sign
    share_pos = np.divide(relevance, z_pos, out=np.zeros_like(relevance), where=z_pos != 0)
    share_neg = np.divide(relevance, z_neg, out=np.zeros_like(relevance), where=z_neg != 0)
    return alpha * (a_pos * (share_pos @ w_pos) + a_neg * (share_pos @ w_neg)) - \
        beta * (a_pos * (share_neg @ w_neg) + a_neg * (share_neg @ w_pos))


def lrp_two_layers_by_hand(net, x, classes, first, second):
    (w1, b1), (w2, b2) = dense_params(net)
    x64 = x.asnumpy().astype(np.float64)
    hidden = np.maximum(x64 @ w1.T + b1, 0)
    out = hidden @ w2.T + b2
    relevance = np.zeros_like(out)
    relevance[np.arange(len(classes)), classes] = out[np.arange(len(classes)), classes]
    return lrp_dense_by_hand(x64, w1, b1, lrp_dense_by_hand(hidden, w2, b2, relevance, second), first)


@pytest.mark.parametrize('rule, spec', [
    (('epsilon', 1e-9), 'epsilon'), (('epsilon', 0.5), P.Epsilon(0.5)), (('gamma', 0.25, 1e-9), 'gamma'),
    (('gamma', 1.0, 1e-9), P.Gamma(1.0)), (('z+', 1e-9), 'z+'), (('alpha_beta', 2.0, 1.0), 'alpha_beta'),
    (('alpha_beta', 1.0, 0.0), P.AlphaBeta(1, 0))], ids=str)
def test_lrp_rules_by_hand_on_two_dense_layers(rule, spec):
    net, x, classes = two_layer_net(), flat(3), [0, 3, 1]
    expected = lrp_two_layers_by_hand(net, x, classes, rule, rule)
    got = P.lrp(net, x, classes, rules={'dense': spec}).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)


def test_lrp_rule_per_layer_name_overrides_the_kind():
    net, x, classes = two_layer_net(), flat(3), [2, 2, 0]
    expected = lrp_two_layers_by_hand(net, x, classes, ('epsilon', 0.5), ('z+', 1e-9))
    by_name = P.lrp(net, x, classes, rules={'dense': 'z+', net[0].name: P.Epsilon(0.5)}).asnumpy()
    by_path = P.lrp(net, x, classes, rules={'1': 'z+', '0': P.Epsilon(0.5)}).asnumpy()
    by_block = P.lrp(net, x, classes, rules={net[1]: P.ZPlus(), net[0]: P.Epsilon(0.5)}).asnumpy()
    for got in (by_name, by_path, by_block):
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize('pool', ['avg', 'max'])
def test_lrp_epsilon_is_input_times_gradient_on_bias_free_relu_nets(pool):
    net, x = conv_net(pool), batch(3)
    expected = G.input_x_gradient(net, x, CLASSES).asnumpy()
    np.testing.assert_allclose(P.lrp(net, x, CLASSES).asnumpy(), expected, rtol=1e-4, atol=1e-6)


def test_lrp_0_passes_nothing_through_a_zero_output_and_is_input_times_gradient_with_biases():
    """Epsilon 0 (LRP-0): a unit whose output is exactly 0 passes no relevance (not 0 / 0); elsewhere the relevance
    is input x gradient, biases or not, since every ReLU that passes a gradient has z / (z + 0) = 1."""
    net, x = conv_net('max', bias=True), batch(3)
    first = net[0]
    weight = first.weight.data()
    weight[0] = 0  # channel 0 of the first convolution: z = its bias; 0 with the bias zeroed
    first.weight.set_data(weight)
    bias = first.bias.data()
    bias[0] = 0
    first.bias.set_data(bias)
    lrp_0 = {kind: P.Epsilon(0) for kind in ('conv', 'dense', 'pooling')}
    relevance = P.lrp(net, x, CLASSES, rules=lrp_0).asnumpy()
    assert np.isfinite(relevance).all()
    np.testing.assert_allclose(relevance, G.input_x_gradient(net, x, CLASSES).asnumpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('rules', [None, {'conv': 'gamma', 'dense': 'gamma'}, {'conv': 'z+', 'dense': 'z+'},
                                   {'conv': 'alpha_beta', 'dense': 'epsilon'}, {'conv': P.Gamma(2.0)}], ids=str)
@pytest.mark.parametrize('pool', ['avg', 'max'])
def test_lrp_conserves_relevance_on_bias_free_nets(rules, pool):
    """Non-negative images and positive target scores: every unit on the way has positive contributions, so
    no rule loses relevance to a zero denominator."""
    net = conv_net(pool)
    x = nd.array(np.random.RandomState(3).uniform(0, 1, (3, 3, 12, 10)).astype(np.float32))
    classes = net(x).asnumpy().argmax(axis=1)
    scores = target_scores(net, x, classes)
    assert (scores > 0).all()
    relevance = P.lrp(net, x, classes, rules=rules)
    np.testing.assert_allclose(row_sums(relevance), scores, rtol=1e-3, atol=1e-6)


def test_lrp_with_biases_and_batchnorm_absorbs_relevance_and_gamma_zero_is_epsilon():
    net, x = small_net(), batch(3)
    epsilon = P.lrp(net, x, CLASSES).asnumpy()
    assert np.isfinite(epsilon).all()
    assert np.abs(epsilon.reshape((3, -1)).sum(axis=1) - target_scores(net, x, CLASSES)).max() > 1e-3
    gamma_zero = P.lrp(net, x, CLASSES, rules={'conv': P.Gamma(0.0), 'dense': P.Gamma(0.0)}).asnumpy()
    np.testing.assert_allclose(gamma_zero, epsilon, rtol=1e-4, atol=1e-7)
    assert not np.allclose(P.lrp(net, x, CLASSES, rules={'conv': 'z+'}).asnumpy(), epsilon)


def test_lrp_rule_not_for_a_layer_kind_names_the_layer():
    net, x = small_net(), batch(1)
    with pytest.raises(ValueError, match=r"gamma rule does not apply to pooling layers.*epsilon"):
        P.lrp(net, x, rules={'pooling': 'gamma'})
    with pytest.raises(ValueError, match=r"z\+ rule does not apply to batchnorm layer 'small_batchnorm0'"):
        P.lrp(net, x, rules={net[1]: 'z+'})
    with pytest.raises(ValueError, match=rf"alpha_beta rule does not apply to batchnorm layer 'small_batchnorm0' "
                                         rf"\(set for '{net.name}'\)"):
        P.lrp(net, x, rules={net.name: P.AlphaBeta()})


def test_lrp_bad_rules_list_valid_values():
    net, x = small_net(), batch(1)
    with pytest.raises(ValueError) as error:
        P.lrp(net, x, rules={'dense': 'zplus'})
    for name in ('epsilon', 'gamma', 'z+', 'alpha_beta'):
        assert name in str(error.value)
    with pytest.raises(ValueError, match="no layer named 'dense9'.*valid names"):
        P.lrp(net, x, rules={'dense9': 'epsilon'})
    with pytest.raises(ValueError, match='alpha - beta = 1'):
        P.AlphaBeta(1, 1)
    with pytest.raises(ValueError, match='epsilon must be'):
        P.Epsilon(-1)
    softmax_net = stock.HybridSequential()
    softmax_net.add(stock.Dense(3), stock.HybridLambda(lambda F, v: F.softmax(v)))
    softmax_net.initialize()
    with pytest.raises(ValueError, match="score='logits'"):
        P.lrp(softmax_net, flat(2), score='output')
    assert P.lrp(softmax_net, flat(2)).shape == (2, 6)


# ----------------------------------------------------------------------------------------------------------
# batches, side effects, bad input


def test_every_method_per_sample_equals_single_image():
    net, x, baselines = small_net(), batch(3), batch(2, seed=5)
    results = {
        'deeplift': lambda v, c: P.deeplift(net, v, c)[0],
        'deeplift_shap': lambda v, c: P.deeplift_shap(net, v, c, baselines)[0],
        'lrp': lambda v, c: P.lrp(net, v, c, rules={'conv': 'gamma'}),
    }
    for name, method in results.items():
        whole = method(x, CLASSES).asnumpy()
        for i in range(3):
            np.testing.assert_allclose(whole[i], method(x[i:i + 1], [CLASSES[i]]).asnumpy()[0], rtol=1e-4,
                                       atol=1e-6, err_msg=name)


def test_no_parameter_gradients_and_network_unchanged():
    net, x = small_net(), batch(2)
    net.hybridize()
    with parameters_untouched(net):
        P.deeplift(net, x)
        P.deeplift_shap(net, x, baselines=batch(3, seed=5), batch_size=4)
        P.gradient_shap(net, x, baselines=batch(3, seed=5), n_samples=3, stdevs=0.1, seed=0)
        P.lrp(net, x)
        P.lrp(net, x, rules={'conv': 'alpha_beta', 'dense': 'z+'})
    assert net._active
    np.testing.assert_array_equal(net(x).asnumpy(), small_net()(x).asnumpy())
    assert all('hybrid_forward' not in vars(block) for block in gluoncam.nn.walk(net))  # interception undone


@pytest.mark.parametrize('call, message', [
    (lambda net, x: P.deeplift(net, x, baseline=batch(2, shape=(3, 10, 12))), r'baseline must .*\(3, 12, 10\)'),
    (lambda net, x: P.deeplift(net, x, baseline=batch(3)), r'baseline must'),
    (lambda net, x: P.deeplift(net, x, score='probabilities'), 'valid: logits, output'),
    (lambda net, x: P.deeplift(net, x, target=[1, 2, 3]), '3 class targets for a batch of 2'),
    (lambda net, x: P.deeplift_shap(net, x), 'baselines are required'),
    (lambda net, x: P.deeplift_shap(net, x, baselines=batch(2, shape=(1, 12, 10))), r'baselines must have'),
    (lambda net, x: P.deeplift_shap(net, x, [1, 2, 3], baselines=batch(2)), 'class targets for a batch of 2'),
    (lambda net, x: P.deeplift_shap(net, x, baselines=batch(2), batch_size=0), 'batch_size'),
    (lambda net, x: P.gradient_shap(net, x, baselines=np.zeros((0, 3, 12, 10))), r'B >= 1'),
    (lambda net, x: P.gradient_shap(net, x, baselines=batch(2), n_samples=0), 'n_samples'),
    (lambda net, x: P.gradient_shap(net, x, baselines=batch(2), stdevs=-1.0), 'stdevs'),
    (lambda net, x: P.lrp(net, x, rules={3.5: 'epsilon'}), 'rules keys are layer kinds'),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(small_net(), batch(2))
