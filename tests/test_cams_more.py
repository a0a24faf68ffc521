"""The rest of pytorch-grad-cam's CAM family (FullGrad, KPCA-CAM, Shapley-CAM, Finer-CAM, FEM), torch-cam's SS-CAM
and IS-CAM, and the aug_smooth / eigen_smooth options, against hand computations: closed forms on tiny nets,
scikit-learn and numpy SVD directly, loops over masks one forward pass at a time, and FullGrad's completeness."""
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn as stock
from sklearn.decomposition import KernelPCA

import gluoncam
from gluoncam import cams, maps
from gluoncam.explainer import Explainer
from conftest import batch, parameters_untouched, small_net

LAYER = '4'  # Conv2D(6 -> 8) with fused ReLU: N x 8 x 6 x 5 for a 12 x 10 input


@pytest.fixture(scope='module')
def net():
    return small_net()


@pytest.fixture(scope='module')
def x():
    return batch(2)


def _activation_and_gradient(net, x, layer=LAYER, target=None):
    result = Explainer(net).backprop(x, target, [layer])
    return result.activations[layer].asnumpy(), result.gradients['normal'][layer].asnumpy()


def _svd_projection(values):
    """numpy reference of the principal component: per sample, the centred positions projected on the first
    right singular vector, signed to correlate positively with the channel mean."""
    out = []
    for sample in values.astype(np.float64):
        c = sample.shape[0]
        positions = sample.reshape(c, -1).T
        centred = positions - positions.mean(axis=0)
        projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        if ((projection - projection.mean()) * positions.mean(axis=1)).sum() < 0:
            projection = -projection
        out.append(projection.reshape(sample.shape[1:]))
    return np.array(out)


def _upsample(a, size):
    return maps.upsample(nd.array(a), size).asnumpy().astype(np.float64)


def _minmax(a):
    span = a.max() - a.min()
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


# ----- FullGrad
def biased_relu_net(seed=2):
    """Conv (bias), BatchNorm, ReLU, max pool, conv with fused ReLU, Dense without bias: every bias is a conv's
    or a BatchNorm's, so FullGrad's completeness holds exactly."""
    mx.random.seed(seed)
    net = stock.HybridSequential(prefix='biased_')
    with net.name_scope():
        net.add(gluoncam.Conv2D(5, 3, padding=1), stock.BatchNorm(), gluoncam.Activation('relu'),
                stock.MaxPool2D(2), gluoncam.Conv2D(6, 3, padding=1, activation='relu'),
                gluoncam.Dense(4, use_bias=False))
    net.initialize(mx.init.Xavier(magnitude=2))
    net(nd.zeros((1, 3, 8, 6)))
    net[0].bias.set_data(nd.random.normal(0, 0.5, shape=net[0].bias.shape))
    net[4].bias.set_data(nd.random.normal(0, 0.5, shape=net[4].bias.shape))
    bn = net[1]
    bn.running_mean.set_data(nd.random.normal(0, 0.3, shape=bn.running_mean.shape))
    bn.running_var.set_data(nd.random.uniform(0.5, 2, shape=bn.running_var.shape))
    bn.gamma.set_data(nd.random.uniform(0.5, 1.5, shape=bn.gamma.shape))
    bn.beta.set_data(nd.random.normal(0, 0.3, shape=bn.beta.shape))
    return net


def test_full_grad_completeness_on_a_relu_net_with_biases():
    net = biased_relu_net()
    x = batch(3, (3, 8, 6), seed=4)
    for target in (None, [1, 2, 3]):
        input_term, terms = cams.full_grad_parts(net, x, target)
        assert sorted(terms) == sorted([net[0].name, net[1].name, net[4].name])
        logits = net(x).asnumpy().astype(np.float64)
        classes = logits.argmax(axis=1) if target is None else np.array(target)
        score = logits[np.arange(3), classes]
        bias_total = sum(term.asnumpy().astype(np.float64).reshape(3, -1).sum(axis=1) for term in terms.values())
        total = input_term.asnumpy().astype(np.float64).reshape(3, -1).sum(axis=1) + bias_total
        np.testing.assert_allclose(total, score, rtol=1e-4, atol=1e-5)
        assert np.abs(bias_total).min() > 1e-2 * np.abs(score).max()  # the biases matter: the test can fail


def test_full_grad_bias_terms_are_bias_times_the_gradient_before_the_fused_relu():
    net = biased_relu_net()
    x = batch(2, (3, 8, 6), seed=5)
    _, terms = cams.full_grad_parts(net, x, 1)
    result = Explainer(net).backprop(x, 1, ['4', '1'])
    A, G = result.activations['4'].asnumpy(), result.gradients['normal']['4'].asnumpy()
    bias = net[4].bias.data().asnumpy()
    np.testing.assert_allclose(terms[net[4].name].asnumpy(), bias[None, :, None, None] * G * (A > 0), rtol=1e-6)
    bn = net[1]
    bn_bias = bn.beta.data().asnumpy() - bn.running_mean.data().asnumpy() * bn.gamma.data().asnumpy() / np.sqrt(
        bn.running_var.data().asnumpy() + 1e-5)
    np.testing.assert_allclose(terms[bn.name].asnumpy(),
                               bn_bias[None, :, None, None] * result.gradients['normal']['1'].asnumpy(), rtol=1e-5)


def _psi(a):
    """pytorch-grad-cam's scale_cam_image of each map of the last two axes."""
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1])
    shifted = flat - flat.min(axis=1, keepdims=True)
    return (shifted / (1e-7 + shifted.max(axis=1, keepdims=True))).reshape(a.shape)


def _full_grad_stack(net, x, target=None):
    """The N x K x H x W terms FullGrad sums, from its signed parts, post-processed as pytorch-grad-cam does."""
    input_term, terms = cams.full_grad_parts(net, x, target)
    size = x.shape[2:]
    stack = [_psi(np.abs(input_term.asnumpy().astype(np.float64)))]
    for term in terms.values():
        per_channel = _psi(np.abs(term.asnumpy().astype(np.float64)))
        n, c = per_channel.shape[:2]
        upsampled = _upsample(per_channel.reshape(n * c, *per_channel.shape[2:]), size).reshape(n, c, *size)
        stack.append(upsampled.sum(axis=1, keepdims=True))
    return np.concatenate(stack, axis=1)


def test_full_grad_map_is_the_post_processed_sum_of_its_parts(net, x):
    expected = _psi(_full_grad_stack(net, x).sum(axis=1))
    got = cams.full_grad(net, x).asnumpy()
    assert got.shape == (2, 12, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cams.cam(net, x, None, 'fullgrad').asnumpy(), got, rtol=1e-6)
    with pytest.warns(UserWarning, match='ignored'):
        with_layers = cams.cam(net, x, [LAYER, '1'], 'fullgrad').asnumpy()
    np.testing.assert_allclose(with_layers, got, rtol=1e-6)
    other = cams.full_grad(net, x, target=[4, 0]).asnumpy()
    assert np.abs(other - got).max() > 1e-2


def test_full_grad_eigen_smooth_is_the_principal_component_of_its_terms(net, x):
    stack = _full_grad_stack(net, x)
    expected = _psi(_svd_projection(stack))
    got = cams.full_grad(net, x, eigen_smooth=True).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert np.abs(got - cams.full_grad(net, x).asnumpy()).max() > 1e-2


# ----- KPCA-CAM
@pytest.mark.parametrize('kernel, gamma', [('sigmoid', None), ('rbf', 0.5)])
def test_kpca_cam_is_scikit_learns_first_kernel_component(net, x, kernel, gamma):
    _, activations = Explainer(net).forward(x, [LAYER])
    A = activations[LAYER].asnumpy()
    n, c, h, w = A.shape
    raw = cams.cam(net, x, LAYER, cams.KPCACAM(kernel=kernel, gamma=gamma, orient=False, relu=False)).asnumpy()
    oriented = cams.cam(net, x, LAYER, cams.KPCACAM(kernel=kernel, gamma=gamma)).asnumpy()
    for i in range(n):
        positions = A[i].reshape(c, -1).T
        expected = KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform(
            positions - positions.mean(axis=0))[:, 0]
        np.testing.assert_allclose(raw[i].ravel(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
        if ((expected - expected.mean()) * positions.mean(axis=1)).sum() < 0:
            expected = -expected
        np.testing.assert_allclose(oriented[i].ravel(), np.maximum(expected, 0), rtol=1e-4,
                                   atol=1e-5 * np.abs(expected).max())
    assert raw.min() < 0 < raw.max()
    if kernel == 'sigmoid':  # the default of pytorch-grad-cam
        np.testing.assert_allclose(cams.cam(net, x, LAYER, 'kpcacam').asnumpy(), oriented, rtol=1e-6)


# ----- FEM
def test_fem_weights_are_the_fraction_of_positions_k_sigma_above_the_channel_mean():
    rng = np.random.RandomState(3)
    A = np.abs(rng.randn(2, 4, 5, 6)).astype(np.float32) ** 2
    expected = np.zeros((2, 5, 6))
    for i in range(2):
        for k in range(4):
            threshold = A[i, k].mean() + 1.5 * A[i, k].std()
            expected[i] += (A[i, k] > threshold).mean() * A[i, k]
    got = cams.FEM(k=1.5)(nd.array(A), None, None).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, cams.FEM(k=0.5)(nd.array(A), None, None).asnumpy())


def test_fem_binary_weights_follow_the_channel_means():
    rng = np.random.RandomState(4)
    A = np.abs(rng.randn(2, 6, 4, 4)).astype(np.float32)
    A[0, 2] += 3  # one channel stands out in the first sample
    A[1, 4] += 2
    got = cams.FEM(k=1.0, binary=True)(nd.array(A), None, None).asnumpy()
    expected = np.zeros((2, 4, 4))
    for i in range(2):
        means = A[i].mean(axis=(1, 2))
        chosen = means > means.mean() + means.std()
        expected[i] = (chosen[:, None, None] * A[i]).sum(axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got[0], A[0, 2], rtol=1e-6)  # binary: that channel alone


def test_fem_on_a_network_uses_the_layer_activations(net, x):
    _, activations = Explainer(net).forward(x, [LAYER])
    np.testing.assert_allclose(cams.cam(net, x, LAYER, 'fem').asnumpy(),
                               cams.FEM()(activations[LAYER], None, None).asnumpy(), rtol=1e-6)


# ----- Shapley-CAM
def tiny_net(seed=6):
    mx.random.seed(seed)
    net = stock.HybridSequential(prefix='tiny_')
    with net.name_scope():
        net.add(gluoncam.Conv2D(3, 3, padding=1), gluoncam.Dense(4))
    net.initialize(mx.init.Xavier(magnitude=2))
    net(nd.zeros((1, 2, 4, 3)))
    return net


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _closed_form(net, x, head):
    """Per sample, the gradient and Hessian-vector product H a at the conv's output a for S = head(W a + b)."""
    A = net[0](x).asnumpy().astype(np.float64)
    W, b = (p.data().asnumpy().astype(np.float64) for p in (net[1].weight, net[1].bias))
    grads, hvps = [], []
    for a in A.reshape(len(A), -1):
        z = W @ a + b
        if head == 'square':  # S = |z|^2
            grad, hessian = 2 * W.T @ z, 2 * W.T @ W
        else:  # S = softmax(z)_1
            p = _softmax(z)
            e = np.eye(len(z))[1]
            grad = W.T @ (p[1] * (e - p))
            hessian_z = p[1] * (np.outer(e - p, e - p) - np.diag(p) + np.outer(p, p))
            hessian = W.T @ hessian_z @ W
        grads.append(grad)
        hvps.append(hessian @ a)
    return A, np.array(grads).reshape(A.shape), np.array(hvps).reshape(A.shape)


HEADS = {'square': lambda out: (out ** 2).sum(axis=1), 'softmax': lambda out: nd.softmax(out, axis=1)[:, 1]}


@pytest.mark.parametrize('head', ['square', 'softmax'])
def test_shapley_cam_hessian_product_matches_the_closed_form(head):
    net = tiny_net()
    x = batch(2, (2, 4, 3), seed=7)
    A, G, hvp = _closed_form(net, x, head)
    with Explainer(net) as explainer:
        scorer = cams.Scorer(explainer, x, None, HEADS[head], '0', 'logits', 1, None)
        got = cams.ShapleyCAM().hessian_product(scorer).asnumpy()
    np.testing.assert_allclose(got, hvp, rtol=2e-2, atol=2e-3 * np.abs(hvp).max())
    weights = (G - 0.5 * hvp).mean(axis=(2, 3), keepdims=True)
    expected = np.maximum((weights * A).sum(axis=1), 0)
    shapley = cams.cam(net, x, '0', 'shapleycam', target=HEADS[head]).asnumpy()
    np.testing.assert_allclose(shapley, expected, rtol=2e-2, atol=2e-3 * np.abs(expected).max())
    gradcam = cams.cam(net, x, '0', 'gradcam', target=HEADS[head]).asnumpy()
    assert np.abs(shapley - gradcam).max() > 0.05 * np.abs(gradcam).max()  # the Hessian term matters


def test_shapley_cam_with_class_targets_scales_the_layer_for_each_sample(net, x):
    """On a net that is piecewise linear after the layer, the finite difference is (almost) zero: Grad-CAM."""
    shapley = cams.cam(net, x, LAYER, 'shapleycam', target=[1, 3]).asnumpy()
    gradcam = cams.cam(net, x, LAYER, 'gradcam', target=[1, 3]).asnumpy()
    np.testing.assert_allclose(shapley, gradcam, rtol=1e-2, atol=1e-2 * gradcam.max())


# ----- Finer-CAM
def _finer_target(net, x, target=None, alpha=1.0, ranks=(1, 2, 3)):
    """The weighted difference score, classes ranked by hand."""
    logits = net(x).asnumpy()
    n = len(logits)
    main = logits.argmax(axis=1) if target is None else np.broadcast_to(np.asarray(target), (n,))
    comparisons = []
    for i in range(n):
        others = [j for j in np.argsort(np.abs(logits[i] - logits[i, main[i]]), kind='stable') if j != main[i]]
        comparisons.append([others[r - 1] for r in ranks])
    comparisons = np.array(comparisons)

    def score(out):
        """One row per sample, or any number of rows of one sample (Score-CAM's batches of masked inputs)."""
        rows = out.shape[0]
        p = nd.softmax(out, axis=1)
        y_main = nd.pick(out, nd.array(np.resize(main, rows)), axis=1)
        numerator = denominator = 0
        for k in range(comparisons.shape[1]):
            index = nd.array(np.resize(comparisons[:, k], rows))
            w = nd.pick(p, index, axis=1)
            numerator = numerator + w * (y_main - alpha * nd.pick(out, index, axis=1))
            denominator = denominator + w
        return numerator / (denominator + 1e-9)
    return score, comparisons


def test_finer_cam_is_grad_cam_of_the_weighted_difference_score(net, x):
    score, _ = _finer_target(net, x)
    expected = cams.cam(net, x, LAYER, 'gradcam', target=score).asnumpy()
    got = cams.cam(net, x, LAYER, 'finercam').asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * expected.max())
    assert not np.allclose(got, cams.cam(net, x, LAYER, 'gradcam').asnumpy())
    score, _ = _finer_target(net, x, target=[2, 0], alpha=0.5, ranks=(1, 4))
    expected = cams.cam(net, x, LAYER, 'layercam', target=score).asnumpy()
    got = cams.cam(net, x, LAYER, cams.FinerCAM('layercam', alpha=0.5, comparison=(1, 4)), target=[2, 0]).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_finer_cam_with_score_cam_scores_the_difference_on_masked_inputs(net, x):
    one = x[1:2]
    score, _ = _finer_target(net, one, target=3)
    expected = cams.cam(net, one, LAYER, 'scorecam', target=score).asnumpy()
    got = cams.cam(net, one, LAYER, cams.FinerCAM('scorecam'), target=3, batch_size=3).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())
    # batched rows of two samples pick each sample's own classes
    both = cams.cam(net, x, LAYER, cams.FinerCAM('scorecam'), target=[0, 3], batch_size=5).asnumpy()
    np.testing.assert_allclose(both[1], got[0], rtol=1e-4, atol=1e-6 * got.max())


# ----- SS-CAM and IS-CAM against loops over masks, one forward pass each
def _masks(A, size):
    n, c = A.shape[:2]
    return np.array([[_upsample(_minmax(A[i, k].astype(np.float64))[None], size)[0] for k in range(c)]
                     for i in range(n)])


def _score_weights(net, x, A, inputs_for, samples, target):
    """softmax_c(mean_i S(inputs_for(sample, channel, i, row))), one forward pass per masked input."""
    n, c = A.shape[:2]
    logits = net(x).asnumpy()
    classes = logits.argmax(axis=1) if target is None else np.asarray(target)
    weights = np.zeros((n, c))
    for i in range(n):
        for k in range(c):
            scores = [net(nd.array(inputs_for(i, k, s, (i * c + k) * samples + s)[None])).asnumpy()[0, classes[i]]
                      for s in range(samples)]
            weights[i, k] = np.mean(scores)
    return _softmax(weights)


def _map(weights, A):
    return np.maximum((weights[:, :, None, None] * A).sum(axis=1), 0)


def test_sscam_matches_a_loop_over_noisy_masks(net, x):
    A, _ = _activation_and_gradient(net, x)
    masks, xs, size = _masks(A, (12, 10)), x.asnumpy().astype(np.float64), (12, 10)

    def noisy(i, k, s, row):
        noise = 0.5 * np.random.default_rng([4, k, s]).standard_normal(size)
        return (xs[i] * (masks[i, k] + noise)).astype(np.float32)

    expected = _map(_score_weights(net, x, A, noisy, 3, [1, 2]), A)
    method = cams.SSCAM(samples=3, std=0.5, seed=4)
    for batch_size in (5, 64):
        got = cams.cam(net, x, LAYER, method, target=[1, 2], batch_size=batch_size).asnumpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())
    other_seed = cams.cam(net, x, LAYER, cams.SSCAM(samples=3, std=0.5, seed=5), target=[1, 2]).asnumpy()
    assert not np.allclose(got, other_seed)
    fresh = [cams.cam(net, x, LAYER, cams.SSCAM(samples=2, seed=None)).asnumpy() for _ in range(2)]
    assert not np.allclose(*fresh)


def test_iscam_matches_a_loop_over_scaled_masks(net, x):
    A, _ = _activation_and_gradient(net, x)
    masks, xs = _masks(A, (12, 10)), x.asnumpy().astype(np.float64)
    samples = 4
    coefficients = np.cumsum(np.arange(1, samples + 1) / samples)
    np.testing.assert_allclose(coefficients, [0.25, 0.75, 1.5, 2.5])  # torch-cam's cumulative coefficients

    def scaled(i, k, s, row):
        return (coefficients[s] * xs[i] * masks[i, k]).astype(np.float32)

    expected = _map(_score_weights(net, x, A, scaled, samples, None), A)
    for batch_size in (3, 100):
        got = cams.cam(net, x, LAYER, cams.ISCAM(samples=samples), batch_size=batch_size).asnumpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())
    assert not np.allclose(got, cams.cam(net, x, LAYER, 'scorecam').asnumpy())


# ----- Ablation-CAM over several layers
def test_ablation_cam_over_several_layers_fuses_the_per_layer_maps(net, x):
    layers = ['1', LAYER]
    got = cams.cam(net, x, layers, 'ablationcam', batch_size=4).asnumpy()
    single = [cams.cam(net, x, layer, 'ablationcam', batch_size=50).asnumpy() for layer in layers]
    expected = np.mean([[_minmax(_upsample(one[i:i + 1], (12, 10))[0]) for i in range(2)] for one in single],
                       axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(_minmax(_upsample(single[1][:1], (12, 10))[0]), got[0])


# ----- aug_smooth and eigen_smooth
@pytest.mark.parametrize('method, layers', [('gradcam', LAYER), ('eigencam', ['1', LAYER]), ('fullgrad', None)])
def test_aug_smooth_averages_the_six_augmented_maps_flipped_back(net, x, method, layers):
    classes = net(x).asnumpy().argmax(axis=1)
    expected = np.zeros((2, 12, 10))
    for flipped in (False, True):
        for factor in (0.9, 1.0, 1.1):
            augmented = factor * (nd.flip(x, axis=3) if flipped else x)
            one = cams.cam(net, augmented, layers, method, target=classes).asnumpy()
            for i in range(2):
                scaled = _minmax(_upsample(one[i:i + 1], (12, 10))[0])
                expected[i] += scaled[:, ::-1] if flipped else scaled
    expected /= 6
    got = cams.cam(net, x, layers, method, aug_smooth=True).asnumpy()
    assert got.shape == (2, 12, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    plain = cams.cam(net, x, layers, method).asnumpy()
    plain = np.array([_minmax(_upsample(plain[i:i + 1], (12, 10))[0]) for i in range(2)])
    assert np.abs(got - plain).max() > 1e-2


def test_aug_smooth_of_several_methods_equals_each_alone(net, x):
    both = cams.cam(net, x, LAYER, ['gradcam++', 'fem'], target=[0, 1], aug_smooth=True)
    for method in ('gradcam++', 'fem'):
        np.testing.assert_allclose(both[method].asnumpy(),
                                   cams.cam(net, x, LAYER, method, target=[0, 1], aug_smooth=True).asnumpy(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('method', ['gradcam', 'layercam', 'gradcamelementwise', 'fem', 'shapleycam'])
def test_eigen_smooth_is_the_principal_component_of_the_weighted_activations(net, x, method):
    A, G = _activation_and_gradient(net, x, target=2)
    weighted = {'gradcam': G.mean(axis=(2, 3), keepdims=True) * A, 'layercam': np.maximum(G, 0) * A,
                'gradcamelementwise': np.maximum(G * A, 0),
                'fem': cams.FEM().weighted(nd.array(A), None, None).asnumpy(),
                'shapleycam': None}[method]
    if weighted is None:  # piecewise linear after the layer: Shapley's weights are Grad-CAM's, nearly
        weighted = G.mean(axis=(2, 3), keepdims=True) * A
    expected = np.maximum(_svd_projection(weighted), 0)
    got = cams.cam(net, x, LAYER, method, target=2, eigen_smooth=True).asnumpy()
    tolerance = 1e-2 if method == 'shapleycam' else 1e-4
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * expected.max())
    assert np.abs(got - cams.cam(net, x, LAYER, method, target=2).asnumpy()).max() > 1e-3 * expected.max()


def test_eigen_smooth_leaves_eigen_cam_unchanged(net, x):
    for method in ('eigencam', 'eigengradcam'):
        np.testing.assert_array_equal(cams.cam(net, x, LAYER, method, eigen_smooth=True).asnumpy(),
                                      cams.cam(net, x, LAYER, method).asnumpy())


# ----- batches, network untouched, errors
NEW_METHODS = ['fullgrad', 'kpcacam', 'shapleycam', 'finercam', 'fem', cams.SSCAM(samples=2), cams.ISCAM(samples=2)]


@pytest.mark.parametrize('method', NEW_METHODS)
def test_each_sample_of_a_batch_equals_its_single_image_result(net, x, method):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        together = cams.cam(net, x, LAYER, method, target=[3, 1], batch_size=3).asnumpy()
        for i, target in enumerate([3, 1]):
            alone = cams.cam(net, x[i], LAYER, method, target=target).asnumpy()
            np.testing.assert_allclose(together[i], alone[0], rtol=1e-4, atol=1e-5 * max(together.max(), 1e-6))


def test_new_methods_and_smoothing_leave_the_network_untouched(net, x):
    with parameters_untouched(net):
        cams.cam(net, x, [LAYER], NEW_METHODS, batch_size=4)
        cams.cam(net, x, LAYER, ['gradcam', 'scorecam'], aug_smooth=True, eigen_smooth=True)
        cams.full_grad_parts(net, x)


def test_bad_options_give_clear_errors(net, x):
    with pytest.raises(ValueError, match="unknown CAM method 'kpca'") as info:
        cams.cam(net, x, LAYER, 'kpca')
    for name in ('fullgrad', 'kpcacam', 'shapleycam', 'finercam', 'fem', 'sscam', 'iscam'):
        assert name in str(info.value)
    with pytest.raises(ValueError, match='k .*non-negative'):
        cams.FEM(k=-1)
    with pytest.raises(ValueError, match='samples'):
        cams.SSCAM(samples=0)
    with pytest.raises(ValueError, match='std'):
        cams.SSCAM(std=-1)
    with pytest.raises(ValueError, match='samples'):
        cams.ISCAM(samples=0)
    with pytest.raises(ValueError, match='step'):
        cams.ShapleyCAM(step=0)
    with pytest.raises(ValueError, match="unknown kernel 'nope'.*sigmoid"):
        cams.KPCACAM(kernel='nope')
    with pytest.raises(ValueError, match='gamma'):
        cams.KPCACAM(gamma=-1)
    with pytest.raises(ValueError, match='rank'):
        cams.FinerCAM(comparison=[0, 1])
    with pytest.raises(ValueError, match='base'):
        cams.FinerCAM('fullgrad')
    with pytest.raises(ValueError, match="unknown CAM method 'grad'"):
        cams.FinerCAM('grad')
    with pytest.raises(ValueError, match='class targets'):
        cams.cam(net, x, LAYER, 'finercam', target=lambda out: out[:, 0])
    with pytest.raises(ValueError, match='at least one layer'):
        cams.cam(net, x, None, 'gradcam')
    with pytest.raises(ValueError, match='at least one layer'):
        cams.cam(net, x, [], ['fullgrad', 'fem'])
    with pytest.raises(TypeError, match='full_grad'):
        cams.FullGrad()(nd.ones((1, 2, 3, 3)), None, None)
    with pytest.raises(ValueError, match='no CAM method'):
        cams.cam(net, x, LAYER, [])
