"""The CAM family (gluoncam.cams) against its definitions: each method brute-forced in numpy (explicit loops over
channels, forward passes run one channel at a time), hand-computed tiny cases, batches, several layers, errors and
softmax scoring."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import cams, maps
from gluoncam.explainer import Explainer
from conftest import batch, small_net

LAYER = '4'          # Conv2D(6 -> 8) with fused ReLU: N x 8 x 6 x 5 for a 12 x 10 input
GRADIENT_METHODS = ['gradcam', 'gradcam++', 'xgradcam', 'hirescam', 'layercam']
ALL_METHODS = GRADIENT_METHODS + ['eigencam', 'scorecam', 'ablationcam']
RTOL, ATOL = 1e-4, 1e-6


@pytest.fixture(scope='module')
def net():
    return small_net()


@pytest.fixture(scope='module')
def x():
    return batch(3)


def _np(array):
    return array.asnumpy().astype(np.float64)


def _predicted(net, x):
    return net(x).asnumpy().argmax(axis=1)


# ----- numpy references (explicit loops over samples and channels)
def _relu(a):
    return np.maximum(a, 0)


def _weighted_sum(A, G, weight):
    """relu(sum_k weight(A_k, G_k) * A_k), one sample and one channel at a time; ``weight`` gives a scalar (one
    weight per channel) or a map (one per position)."""
    n, c = A.shape[:2]
    out = np.zeros((n,) + A.shape[2:])
    for i in range(n):
        for k in range(c):
            out[i] += weight(A[i, k], G[i, k]) * A[i, k]
    return _relu(out)


def ref_gradcam(A, G):
    return _weighted_sum(A, G, lambda a, g: g.mean())


def _gradcam_plus_plus_weight(a, g):
    """The documented formula, alpha = G^2 / (2 G^2 + sum A G^3), with no epsilon; weight sum(alpha relu(G))."""
    denominator = 2 * g ** 2 + a.sum() * g ** 3
    alpha = np.zeros_like(g)
    nonzero = g != 0
    alpha[nonzero] = g[nonzero] ** 2 / denominator[nonzero]
    return (alpha * _relu(g)).sum()


def ref_gradcam_plus_plus(A, G):
    return _weighted_sum(A, G, _gradcam_plus_plus_weight)


def ref_xgradcam(A, G):
    return _weighted_sum(A, G, lambda a, g: (a * g).sum() / a.sum() if a.sum() != 0 else 0.0)


def ref_hirescam(A, G):
    return _weighted_sum(A, G, lambda a, g: g)


def ref_layercam(A, G):
    return _weighted_sum(A, G, lambda a, g: _relu(g))


REFERENCES = {'gradcam': ref_gradcam, 'gradcam++': ref_gradcam_plus_plus, 'xgradcam': ref_xgradcam,
              'hirescam': ref_hirescam, 'layercam': ref_layercam}


def ref_eigencam_projection(A):
    """Per sample: the centred hw x C matrix projected on its first right singular vector, signed so that it
    correlates positively with the mean activation over channels; also the singular values."""
    n, c, h, w = A.shape
    projections, singular = [], []
    for i in range(n):
        positions = A[i].reshape(c, h * w).T                       # hw x C
        centred = positions - positions.mean(axis=0, keepdims=True)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        mean_activation = positions.mean(axis=1)
        if ((projection - projection.mean()) * mean_activation).sum() < 0:
            projection = -projection
        projections.append(projection.reshape(h, w))
        singular.append(s)
    return np.array(projections), singular


def _target_classes(net, x, target):
    if target is None:
        return _predicted(net, x)
    return np.broadcast_to(np.asarray(target), (x.shape[0],))


def ref_scorecam(net, x, layer_net, target=None, score=lambda out: out):
    """Score-CAM, one channel and one forward pass at a time: mask_c = minmax(upsample(A_c)), s_c = S(x * mask_c),
    W = softmax(s), relu(sum_c W_c A_c). ``layer_net`` maps the input to the layer's output."""
    classes = _target_classes(net, x, target)
    A = layer_net(x)
    n, c = A.shape[:2]
    out = np.zeros((n,) + A.shape[2:])
    for i in range(n):
        scores = np.zeros(c)
        for k in range(c):
            mask = maps.normalize(maps.upsample(A[i:i + 1, k], x.shape[2:], align_corners=True))   # 1 x H x W
            scores[k] = score(net(x[i:i + 1] * mask.expand_dims(1))).asnumpy()[0, classes[i]]
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        for k in range(c):
            out[i] += weights[k] * A[i, k].asnumpy()
    return _relu(out)


def _run_ablated(net, A, i, k, split):
    """net[split:] (the network after the layer) on sample i of the layer output A (numpy), channel k zeroed."""
    ablated = A[i:i + 1].copy()
    ablated[:, k] = 0
    return net[split:](nd.array(ablated)).asnumpy()[0]


def ablation_weights(net, x, target=None, split=5):
    """W_c = (S - S_c) / S, running small_net from its layer '4' on (net[split:]) with channel c zeroed."""
    classes = _target_classes(net, x, target)
    A = net[:split](x).asnumpy()
    original = net(x).asnumpy()
    n, c = A.shape[:2]
    weights = np.zeros((n, c))
    for i in range(n):
        S = original[i, classes[i]]
        for k in range(c):
            S_k = _run_ablated(net, A, i, k, split)[classes[i]]
            weights[i, k] = (S - S_k) / S
    return weights, A.astype(np.float64)


def _activation_and_gradient(net, x, layer=LAYER, target=None, score='logits'):
    result = gluoncam.Explainer(net).backprop(x, target, [layer], ('normal',), score=score)
    return _np(result.activations[layer]), _np(result.gradients['normal'][layer])


# ----- gradient methods
@pytest.mark.parametrize('layer', [LAYER, '3', '0'])
@pytest.mark.parametrize('target', [None, [0, 3, 4]])
@pytest.mark.parametrize('method', GRADIENT_METHODS)
def test_gradient_methods_match_their_formulas(net, x, method, target, layer):
    A, G = _activation_and_gradient(net, x, layer, target)
    expected = REFERENCES[method](A, G)
    got = cams.cam(net, x, layer, method, target=target).asnumpy()
    assert got.shape == A.shape[:1] + A.shape[2:]
    assert expected.max() > 0  # a non-trivial map
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * expected.max())


def _rescaled_small_net(t):
    """small_net with layer '4' (conv + ReLU, positively homogeneous) scaled by t and the next Dense by 1/t: the
    same function, with A -> t A and G -> G / t at layer '4'."""
    net = small_net()
    net(batch(1))
    for param in (net[4].weight, net[4].bias):
        param.set_data(param.data() * t)
    net[6].weight.set_data(net[6].weight.data() / t)
    return net


@pytest.mark.parametrize('method', GRADIENT_METHODS)
def test_maps_do_not_change_when_a_layer_is_rescaled_inside_the_same_function(net, x, method):
    """All five gradient formulas are invariant under A -> t A, G -> G / t."""
    t = 100.0
    rescaled = _rescaled_small_net(t)
    np.testing.assert_allclose(rescaled(x).asnumpy(), net(x).asnumpy(), rtol=1e-4, atol=1e-6)
    A, G = _activation_and_gradient(net, x)
    A_t, G_t = _activation_and_gradient(rescaled, x)
    np.testing.assert_allclose(A_t, t * A, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(G_t, G / t, rtol=1e-3, atol=1e-9)
    expected = cams.cam(net, x, LAYER, method).asnumpy()
    np.testing.assert_allclose(cams.cam(rescaled, x, LAYER, method).asnumpy(), expected, rtol=1e-3,
                               atol=1e-4 * expected.max())


@pytest.mark.parametrize('method', ['eigencam', 'scorecam', 'ablationcam'])
def test_activation_weighted_forward_maps_scale_with_the_layer(net, x, method):
    """Eigen-CAM projects A; Score-CAM's weights (normalized masks) and Ablation-CAM's depend only on the
    scores: the maps scale by t."""
    t = 100.0
    expected = cams.cam(net, x, LAYER, method).asnumpy()
    np.testing.assert_allclose(cams.cam(_rescaled_small_net(t), x, LAYER, method).asnumpy(), t * expected,
                               rtol=1e-3, atol=1e-4 * t * expected.max())


def test_gradient_methods_use_the_gradient_of_the_target_logit(net, x):
    """G really is dS/dA: compare with MXNet's own autograd on net[5:] (no BatchNorm, Dropout or max pooling
    after layer '4', so the recording mode does not matter)."""
    target = [1, 2, 0]
    A, G = _activation_and_gradient(net, x, target=target)
    a = net[:5](x)
    a.attach_grad()
    with autograd.record(train_mode=False):
        score = nd.pick(net[5:](a), nd.array(target), axis=1).sum()
    score.backward()
    np.testing.assert_allclose(A, _np(a), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(G, _np(a.grad), rtol=1e-4, atol=1e-7)


def _tiny_case():
    A = np.zeros((1, 2, 2, 2), np.float32)
    A[0, 0] = [[1, 2], [3, 4]]      # sum 10
    A[0, 1] = [[0, 1], [1, 0]]      # sum 2
    return A


def test_gradcam_plus_plus_hand_computed():
    A = _tiny_case()
    G = np.zeros_like(A)
    G[0, 0] = [[1, 0], [-1, 2]]
    G[0, 1] = 0.5
    # channel 0: alpha = g^2 / (2 g^2 + 10 g^3): g=1 -> 1/12, g=0 -> 0, g=-1 -> -1/8, g=2 -> 4/88 = 1/22
    #            W_0 = 1/12 * 1 + 1/22 * 2 = 23/132 (the negative gradient contributes nothing)
    # channel 1: alpha = 0.25 / (0.5 + 2 * 0.125) = 1/3, W_1 = 4 * 1/3 * 0.5 = 2/3
    w0, w1 = 23 / 132, 2 / 3
    method = cams.GradCAMPlusPlus()
    weights = method.weights(nd.array(A), nd.array(G), None).asnumpy()
    np.testing.assert_allclose(weights.ravel(), [w0, w1], rtol=1e-5)
    expected = [[w0 * 1, w0 * 2 + w1], [w0 * 3 + w1, w0 * 4]]
    np.testing.assert_allclose(method(nd.array(A), nd.array(G), None).asnumpy()[0], expected, rtol=1e-5)
    np.testing.assert_allclose(ref_gradcam_plus_plus(A.astype(np.float64), G.astype(np.float64))[0], expected,
                               rtol=1e-12)


def test_xgradcam_hand_computed():
    A = _tiny_case()
    G = np.zeros_like(A)
    G[0, 0] = [[1, 0], [-1, 2]]     # sum A*G = 1 - 3 + 8 = 6, W_0 = 6 / 10 = 0.6
    G[0, 1] = [[5, -1], [-3, 7]]    # sum A*G = -1 - 3 = -4, W_1 = -4 / 2 = -2
    method = cams.XGradCAM()
    weights = method.weights(nd.array(A), nd.array(G), None).asnumpy()
    np.testing.assert_allclose(weights.ravel(), [0.6, -2], rtol=1e-5)
    # relu(0.6 * A_0 - 2 * A_1) = relu([[0.6, 1.2 - 2], [1.8 - 2, 2.4]])
    np.testing.assert_allclose(method(nd.array(A), nd.array(G), None).asnumpy()[0], [[0.6, 0], [0, 2.4]],
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('method', [cams.GradCAMPlusPlus, cams.XGradCAM])
def test_an_all_zero_channel_gets_a_finite_weight(method):
    A = _tiny_case()
    A = np.concatenate([A, np.zeros((1, 1, 2, 2), np.float32)], axis=1)   # a dead channel
    G = np.ones_like(A)
    weights = method().weights(nd.array(A), nd.array(G), None).asnumpy()
    assert np.all(np.isfinite(weights))
    cam = method()(nd.array(A), nd.array(G), None).asnumpy()
    np.testing.assert_allclose(cam, method()(nd.array(A[:, :2]), nd.array(G[:, :2]), None).asnumpy(), rtol=1e-6)


def test_hirescam_and_layercam_hand_computed():
    A = _tiny_case()
    G = np.zeros_like(A)
    G[0, 0] = [[1, 0], [-1, 2]]
    G[0, 1] = [[5, -1], [-3, 7]]
    # HiRes: relu(G_0 A_0 + G_1 A_1) = relu([[1, 0 - 1], [-3 - 3, 8]])
    np.testing.assert_allclose(cams.HiResCAM()(nd.array(A), nd.array(G), None).asnumpy()[0], [[1, 0], [0, 8]])
    # Layer-CAM: relu(G)_0 A_0 + relu(G)_1 A_1 = [[1, 0], [0, 8]] + [[0, 0], [0, 0]]
    np.testing.assert_allclose(cams.LayerCAM()(nd.array(A), nd.array(G), None).asnumpy()[0], [[1, 0], [0, 8]])


# ----- Eigen-CAM
@pytest.mark.parametrize('layer', [LAYER, '0'])
def test_eigencam_is_the_first_principal_component_projection(net, x, layer):
    A = _np(gluoncam.Explainer(net).forward(x, [layer])[1][layer])
    projection, singular = ref_eigencam_projection(A)
    for s in singular:
        assert s[0] > 1.01 * s[1]  # a well-defined first component: the test is meaningful
    got = cams.cam(net, x, layer, 'eigencam').asnumpy()
    scale = np.abs(projection).max()
    # up to sign, |projection| is the SVD's
    np.testing.assert_allclose(got, _relu(projection), rtol=1e-4, atol=1e-4 * scale)
    assert np.all(got >= 0)
    assert np.all(got[projection < -1e-3 * scale] == 0)   # the relu
    # the chosen sign correlates positively with the mean activation over channels, the other one would not
    for i in range(A.shape[0]):
        mean_activation = A[i].mean(axis=0)
        assert ((projection[i] - projection[i].mean()) * mean_activation).sum() > 0


def test_eigencam_sign_follows_the_strong_activations():
    """A blob that every channel fires on: the first component is +-(the channel mix); Eigen-CAM must light the
    blob, not its complement, whichever sign the eigen-solver returns; flipping the data's orientation cannot
    flip the map."""
    rng = np.random.RandomState(0)
    blob = np.zeros((6, 5))
    blob[1:3, 2:4] = 1
    mix = np.array([1.0, 2.0, 0.5, 1.5])
    A = (mix[:, None, None] * blob + 0.01 * rng.rand(4, 6, 5))[None].astype(np.float32)
    cam = cams.EigenCAM()(nd.array(A), None, None).asnumpy()[0]
    assert cam[blob == 1].min() > 0.5 * cam.max()
    assert cam[blob == 0].max() < 0.05 * cam.max()
    # a channel permutation changes nothing
    permuted = cams.EigenCAM()(nd.array(A[:, ::-1].copy()), None, None).asnumpy()[0]
    np.testing.assert_allclose(permuted, cam, rtol=1e-4, atol=1e-5)


# ----- Score-CAM
@pytest.mark.parametrize('batch_size', [1, 5, 64])
def test_scorecam_matches_brute_force(net, x, batch_size):
    expected = ref_scorecam(net, x, net[:5])
    got = cams.cam(net, x, LAYER, 'scorecam', batch_size=batch_size).asnumpy()
    assert expected.max() > 0
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_scorecam_per_sample_targets_and_callable_target(net, x):
    target = [4, 0, 2]
    expected = ref_scorecam(net, x, net[:5], target)
    got = cams.cam(net, x, LAYER, 'scorecam', target=target, batch_size=7).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    by_function = cams.cam(net, x, LAYER, 'scorecam', target=lambda out: out[:, 2], batch_size=7).asnumpy()
    np.testing.assert_allclose(by_function, cams.cam(net, x, LAYER, 'scorecam', target=2).asnumpy(),
                               rtol=1e-5, atol=1e-7)


def test_scorecam_batch_sizes_agree(net, x):
    results = [cams.cam(net, x, LAYER, 'scorecam', batch_size=b).asnumpy() for b in (1, 3, 64)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-7)


# ----- Ablation-CAM
@pytest.mark.parametrize('batch_size', [1, 5, 64])
@pytest.mark.parametrize('target', [None, [2, 4, 1]])
def test_ablationcam_matches_brute_force(net, x, target, batch_size):
    weights, A = ablation_weights(net, x, target)
    expected = np.zeros((A.shape[0],) + A.shape[2:])
    for i in range(A.shape[0]):
        for k in range(A.shape[1]):
            expected[i] += weights[i, k] * A[i, k]
    expected = _relu(expected)
    got = cams.cam(net, x, LAYER, 'ablationcam', target=target, batch_size=batch_size).asnumpy()
    assert expected.max() > 0
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * expected.max())


def test_ablationcam_top_weight_is_the_channel_whose_deletion_hurts_most(net, x):
    classes = _predicted(net, x)
    weights, _ = ablation_weights(net, x)
    a = net[:5](x).asnumpy()
    scores = net(x).asnumpy()
    with gluoncam.Explainer(net) as explainer:
        output, acts = explainer.forward(x, [LAYER])
        original = cams.target_scores(output, None, nd.array(classes), slice(0, 3))
        scorer = cams.Scorer(explainer, x, nd.array(classes), None, LAYER, 'logits', 4, original)
        library_weights = cams.AblationCAM().weights(acts[LAYER], None, scorer).asnumpy()[:, :, 0, 0]
    np.testing.assert_allclose(library_weights, weights, rtol=1e-4, atol=1e-6)
    assert np.all(scores[np.arange(3), classes] > 0)  # (S - S_c) / S orders channels by S - S_c only if S > 0
    for i in range(x.shape[0]):
        drops = []
        for k in range(a.shape[1]):
            drops.append(scores[i, classes[i]] - _run_ablated(net, a, i, k, 5)[classes[i]])
        assert int(np.argmax(library_weights[i])) == int(np.argmax(drops))
        np.testing.assert_allclose(library_weights[i], np.array(drops) / scores[i, classes[i]], rtol=1e-4,
                                   atol=1e-6)


# ----- batches
@pytest.mark.parametrize('method', ALL_METHODS)
def test_each_sample_of_a_batch_equals_its_single_image_result(net, x, method):
    together = cams.cam(net, x, LAYER, method, batch_size=5).asnumpy()
    per_sample = cams.cam(net, x, LAYER, method, target=[3, 0, 1], batch_size=5).asnumpy()
    for i in range(x.shape[0]):
        alone = cams.cam(net, x[i:i + 1], LAYER, method).asnumpy()
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-4, atol=1e-6)
        alone_target = cams.cam(net, x[i], LAYER, method, target=[3, 0, 1][i]).asnumpy()  # C x H x W input
        np.testing.assert_allclose(per_sample[i], alone_target[0], rtol=1e-4, atol=1e-6)
    if method != 'eigencam':  # the one method that has no target
        assert not np.allclose(together, per_sample)  # targets are honoured: other classes, other maps


# ----- several layers
@pytest.mark.parametrize('method', ['gradcam', 'eigencam', 'ablationcam'])
def test_several_layers_average_the_normalized_upsampled_maps(net, x, method):
    layers = ['0', '4']
    got = cams.cam(net, x, layers, method).asnumpy()
    assert got.shape == (3, 12, 10)
    single = [cams.cam(net, x, layer, method) for layer in layers]
    assert single[0].shape == (3, 12, 10) and single[1].shape == (3, 6, 5)
    expected = np.zeros((3, 12, 10))
    for one in single:
        for i in range(3):
            resized = maps.upsample(one[i:i + 1], (12, 10)).asnumpy()[0].astype(np.float64)
            expected[i] += (resized - resized.min()) / (resized.max() - resized.min())
    expected /= len(layers)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1
    # a tuple is several layers too, and a one-element list is normalized and upsampled
    np.testing.assert_allclose(cams.cam(net, x, tuple(layers), method).asnumpy(), got, rtol=1e-6)
    one = cams.cam(net, x, ['4'], method).asnumpy()
    assert one.shape == (3, 12, 10)
    np.testing.assert_allclose(one.max(axis=(1, 2)), 1, rtol=1e-6)


def test_a_layer_given_as_a_block_equals_its_name(net, x):
    np.testing.assert_array_equal(cams.cam(net, x, net[4], 'gradcam').asnumpy(),
                                  cams.cam(net, x, LAYER, 'gradcam').asnumpy())


# ----- errors
def test_unknown_method_lists_the_valid_ones(net, x):
    with pytest.raises(ValueError, match='unknown CAM method') as info:
        cams.cam(net, x, LAYER, 'gradcam+++')
    for method in ALL_METHODS:
        assert method in str(info.value)


@pytest.mark.parametrize('batch_size', [0, -1])
def test_batch_size_below_one_is_refused(net, x, batch_size):
    with pytest.raises(ValueError, match='batch_size'):
        cams.cam(net, x, LAYER, 'scorecam', batch_size=batch_size)


@pytest.mark.parametrize('method', ALL_METHODS)
def test_a_layer_without_4d_output_is_refused(net, x, method):
    with pytest.raises(ValueError, match='4-D'):
        cams.cam(net, x, '6', method)


# ----- softmax scoring
def softmax_net(scale=1.0, seed=3):
    """Two fused-ReLU convolutions, a Dense, and a stock block applying F.softmax (no BatchNorm, Dropout or
    pooling: plain autograd gives the reference gradients in any mode). MXNet 1.9's Activation op has no
    'softmax' act_type (stock nn.Activation('softmax') fails in net(x)), hence a HybridLambda."""
    mx.random.seed(seed)
    net = stock.HybridSequential(prefix='soft_')
    with net.name_scope():
        net.add(gluoncam.Conv2D(4, 3, padding=1, activation='relu'),
                gluoncam.Conv2D(6, 3, strides=2, padding=1, activation='relu'),
                gluoncam.Dense(5), stock.HybridLambda(lambda F, z: F.softmax(z)))
    net.initialize(mx.init.Xavier(magnitude=2))
    net(nd.zeros((1, 3, 12, 10)))
    if scale != 1:
        net[2].weight.set_data(net[2].weight.data() * scale)
        net[2].bias.set_data(net[2].bias.data() * scale)
    return net


def test_a_named_hybrid_lambda_softmax_is_explained():
    mx.random.seed(3)
    named = stock.HybridSequential()
    named.add(gluoncam.Conv2D(4, 3, padding=1, activation='relu'), gluoncam.Dense(5), stock.HybridLambda('softmax'))
    named.initialize()
    x = batch(2)
    assert named(x).shape == (2, 5)  # fine outside an explanation
    logits = cams.cam(named, x, '0', 'gradcam', score='logits').asnumpy()
    np.testing.assert_allclose(logits, cams.cam(named[:2], x, '0', 'gradcam').asnumpy(), rtol=1e-5)


def test_softmax_net_setup():
    net = softmax_net()
    x = batch(3)
    p = net(x).asnumpy()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(p, _softmax(net[:3](x).asnumpy()), rtol=1e-5)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize('method', ALL_METHODS)
def test_logits_scoring_equals_the_net_without_its_softmax(method):
    net = softmax_net()
    x = batch(3)
    plain = net[:3]
    logits = cams.cam(net, x, '1', method, score='logits').asnumpy()
    np.testing.assert_allclose(logits, cams.cam(plain, x, '1', method).asnumpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cams.cam(net, x, '1', method).asnumpy(), logits, rtol=1e-6)  # the default
    output = cams.cam(net, x, '1', method, score='output').asnumpy()
    if method == 'eigencam':  # no score at all
        np.testing.assert_allclose(output, logits, rtol=1e-6)
    else:
        assert not np.allclose(output, logits, rtol=1e-3, atol=1e-6)
        # a network without a softmax is scored on its output either way
        np.testing.assert_allclose(cams.cam(plain, x, '1', method, score='output').asnumpy(),
                                   cams.cam(plain, x, '1', method).asnumpy(), rtol=1e-6)


@pytest.mark.parametrize('method', GRADIENT_METHODS)
def test_output_scoring_uses_the_probability_gradient(method):
    """dp_k/dA = p_k (dz_k/dA - sum_j p_j dz_j/dA), from the logit gradients of the net without its softmax."""
    net = softmax_net()
    x = batch(3)
    plain = net[:3]
    z = plain(x).asnumpy()
    p = _softmax(z.astype(np.float64))
    k = z.argmax(axis=1)
    A, _ = _activation_and_gradient(plain, x, '1')
    logit_grads = [_activation_and_gradient(plain, x, '1', target=j)[1] for j in range(5)]
    G = np.zeros_like(A)
    for i in range(3):
        mixed = sum(p[i, j] * logit_grads[j][i] for j in range(5))
        G[i] = p[i, k[i]] * (logit_grads[k[i]][i] - mixed)
    A_out, G_out = _activation_and_gradient(net, x, '1', score='output')
    np.testing.assert_allclose(A_out, A, rtol=1e-6)
    np.testing.assert_allclose(G_out, G, rtol=1e-4, atol=1e-6 * np.abs(G).max())
    expected = REFERENCES[method](A, G)
    np.testing.assert_allclose(cams.cam(net, x, '1', method, score='output').asnumpy(), expected,
                               rtol=RTOL, atol=ATOL * max(expected.max(), 1e-12))


@pytest.mark.parametrize('method', ['scorecam', 'ablationcam'])
def test_output_scoring_of_forward_methods_scores_probabilities(method):
    net = softmax_net()
    x = batch(3)
    got = cams.cam(net, x, '1', method, score='output', batch_size=4).asnumpy()
    if method == 'scorecam':
        expected = ref_scorecam(net, x, net[:2])
    else:
        weights, A = ablation_weights(net, x, split=2)
        expected = np.zeros((3,) + A.shape[2:])
        for i in range(3):
            for c in range(A.shape[1]):
                expected[i] += weights[i, c] * A[i, c]
        expected = _relu(expected)
    assert expected.max() > 0
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * expected.max())


@pytest.mark.parametrize('method', ['gradcam', 'gradcam++', 'hirescam', 'layercam'])
def test_a_saturated_softmax_kills_output_gradients_but_not_logit_ones(method):
    net = softmax_net(scale=1000.0)
    x = batch(3)
    p = net(x).asnumpy()
    assert np.all(p.max(axis=1) > 1 - 1e-6), p.max(axis=1)
    logits = cams.cam(net, x, '1', method, score='logits').asnumpy()
    output = cams.cam(net, x, '1', method, score='output').asnumpy()
    assert np.all(logits.max(axis=(1, 2)) > 1e-2)
    assert np.all(output.max(axis=(1, 2)) < 1e-5 * logits.max(axis=(1, 2)))


def test_backprop_output_score_input_gradient_is_the_probability_gradient():
    net = softmax_net()
    x = batch(3)
    explainer = gluoncam.Explainer(net)
    by_output = explainer.backprop(x, score='output')
    by_logits = explainer.backprop(x, score='logits')
    k = net(x).asnumpy().argmax(axis=1)
    np.testing.assert_array_equal(by_output.classes.asnumpy(), k)
    np.testing.assert_allclose(by_output.output.asnumpy(), net(x).asnumpy(), rtol=1e-6)  # probabilities
    grad_out = _np(by_output.input_gradients['normal'])
    grad_logit = _np(by_logits.input_gradients['normal'])

    def autograd_input_gradient(block, classes):
        xv = x.copy()
        xv.attach_grad()
        with autograd.record(train_mode=False):
            score = nd.pick(block(xv), nd.array(classes), axis=1).sum()
        score.backward()
        return _np(xv.grad)

    # MXNet's own autograd through the softmax, and through the logits
    np.testing.assert_allclose(grad_out, autograd_input_gradient(net, k), rtol=1e-4,
                               atol=1e-6 * np.abs(grad_out).max())
    np.testing.assert_allclose(grad_logit, autograd_input_gradient(net[:3], k), rtol=1e-4,
                               atol=1e-6 * np.abs(grad_logit).max())
    # explicit chain rule: dp_k/dx = p_k (dz_k/dx - sum_j p_j dz_j/dx)
    p = _softmax(net[:3](x).asnumpy().astype(np.float64))
    dz = [_np(explainer.backprop(x, j, score='logits').input_gradients['normal']) for j in range(5)]
    for i in range(3):
        chain = p[i, k[i]] * (dz[k[i]][i] - sum(p[i, j] * dz[j][i] for j in range(5)))
        np.testing.assert_allclose(grad_out[i], chain, rtol=1e-4, atol=1e-6 * np.abs(chain).max())
    assert not np.allclose(grad_out, grad_logit, rtol=1e-2)


def test_backprop_output_score_matches_finite_differences():
    """Central differences of p_k in float64 along a few random directions."""
    net = softmax_net()
    x = batch(1)
    grad = _np(gluoncam.Explainer(net).backprop(x, score='output').input_gradients['normal'])
    k = int(net(x).asnumpy().argmax())
    net64 = softmax_net()
    net64.cast('float64')
    for name, param in net.collect_params().items():
        net64.collect_params()[name].set_data(param.data().astype('float64'))
    x64 = x.astype('float64')
    rng = np.random.RandomState(0)
    for _ in range(3):
        direction = rng.randn(*x.shape)
        direction /= np.linalg.norm(direction)
        d = nd.array(direction, dtype='float64')
        eps = 1e-5
        numeric = (net64(x64 + eps * d).asnumpy()[0, k] - net64(x64 - eps * d).asnumpy()[0, k]) / (2 * eps)
        assert abs(numeric) > 1e-5
        np.testing.assert_allclose((grad * direction).sum(), numeric, rtol=1e-3, atol=1e-8)



def test_several_methods_share_one_forward_and_one_sweep(net, x, monkeypatch):
    methods = list(cams.CAM_METHODS)
    expected = {method: cams.cam(net, x, LAYER, method, batch_size=7).asnumpy() for method in methods}
    calls = {'backprop': 0, 'forward': 0}
    for name in calls:
        def counted(self, *args, _name=name, _original=getattr(Explainer, name), **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(Explainer, name, counted)
    gradient_only = cams.cam(net, x, LAYER, ['gradcam', 'gradcam++', 'layercam'])
    assert calls == {'backprop': 1, 'forward': 0} and list(gradient_only) == ['gradcam', 'gradcam++', 'layercam']
    every = cams.cam(net, x, [LAYER], methods, batch_size=7)
    for method in methods:
        np.testing.assert_allclose(every[method].asnumpy(), _np(cams.cam(net, x, [LAYER], method, batch_size=7)),
                                   rtol=1e-5, atol=1e-6, err_msg=method)
    shared = cams.cam(net, x, LAYER, methods, batch_size=7)
    for method in methods:
        np.testing.assert_allclose(shared[method].asnumpy(), expected[method], rtol=1e-5, atol=1e-6,
                                   err_msg=method)
    with pytest.raises(ValueError, match="unknown CAM method 'nope'"):
        cams.cam(net, x, LAYER, ['gradcam', 'nope'])


# ----- options that reproduce the peers' numbers
def test_cams_before_the_final_relu_keep_their_sign(net, x):
    """relu=False (captum's LayerGradCam default): sum_c W_c A_c, signed; its positive part is the usual map."""
    result = Explainer(net).backprop(x, 3, [LAYER])
    A, G = result.activations[LAYER].asnumpy(), result.gradients['normal'][LAYER].asnumpy()
    expected = (G.mean(axis=(2, 3), keepdims=True) * A).sum(axis=1)
    signed = cams.cam(net, x, LAYER, cams.GradCAM(relu=False), target=3).asnumpy()
    np.testing.assert_allclose(signed, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert signed.min() < 0 < signed.max()
    np.testing.assert_allclose(np.maximum(signed, 0), cams.cam(net, x, LAYER, 'gradcam', target=3).asnumpy(),
                               rtol=1e-5, atol=1e-7)


def test_gradcam_plus_plus_with_pytorch_grad_cams_epsilon():
    """alpha = G^2 / (2 G^2 + sum A * G^3 + eps), 0 where G = 0; W = sum relu(G) * alpha (pytorch-grad-cam)."""
    rng = np.random.RandomState(0)
    A = np.abs(rng.randn(2, 3, 4, 5)).astype(np.float32)
    G = (rng.randn(2, 3, 4, 5) * 1e-3).astype(np.float32)
    G[0, 0, 0, :2] = 0
    eps = 1e-6
    g2, g3 = G.astype(np.float64) ** 2, G.astype(np.float64) ** 3
    alpha = np.where(G != 0, g2 / (2 * g2 + A.sum(axis=(2, 3), keepdims=True) * g3 + eps), 0)
    weights = (np.maximum(G, 0) * alpha).sum(axis=(2, 3), keepdims=True)
    expected = np.maximum((weights * A).sum(axis=1), 0)
    got = cams.GradCAMPlusPlus(epsilon=eps)(nd.array(A), nd.array(G), None).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())
    exact = cams.GradCAMPlusPlus()(nd.array(A), nd.array(G), None).asnumpy()
    assert np.abs(exact - got).max() > 1e-2 * expected.max()  # with gradients this small, epsilon matters


def test_cam_takes_methods_with_options_beside_names(net, x):
    signed = cams.GradCAM(relu=False)
    both = cams.cam(net, x, LAYER, ['gradcam', signed])
    assert set(both) == {'gradcam', signed}
    np.testing.assert_allclose(both['gradcam'].asnumpy(), np.maximum(both[signed].asnumpy(), 0), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="unknown CAM method 'grad-cam'.*CAMMethod"):
        cams.cam(net, x, LAYER, 'grad-cam')


# ----- more of pytorch-grad-cam's CAMs
def random_maps(seed=0):
    rng = np.random.RandomState(seed)
    A = np.abs(rng.randn(2, 4, 5, 6)).astype(np.float32)
    G = rng.randn(2, 4, 5, 6).astype(np.float32)
    return A, G


def test_eigen_grad_cam_is_the_first_component_of_gradient_times_activation():
    A, G = random_maps()
    got = cams.EigenGradCAM()(nd.array(A), nd.array(G), None).asnumpy()
    for i in range(2):
        values = (A[i] * G[i]).reshape(4, -1).T.astype(np.float64)  # positions x channels
        centred = values - values.mean(axis=0)
        projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        projection *= np.sign(((projection - projection.mean()) * values.mean(axis=1)).sum())
        np.testing.assert_allclose(got[i], np.maximum(projection, 0).reshape(5, 6), rtol=1e-4,
                                   atol=1e-5 * np.abs(projection).max())


def test_grad_cam_elementwise_rectifies_each_element_before_the_sum():
    A, G = random_maps(1)
    got = cams.GradCAMElementWise()(nd.array(A), nd.array(G), None).asnumpy()
    np.testing.assert_allclose(got, np.maximum(G * A, 0).sum(axis=1), rtol=1e-6)
    assert not np.allclose(got, np.maximum((G * A).sum(axis=1), 0))


def test_random_cam_draws_uniform_weights_per_sample_and_channel(net, x):
    A, _ = random_maps(2)
    weights = np.random.default_rng(5).uniform(-1, 1, (2, 4))
    got = cams.RandomCAM(seed=5, relu=False)(nd.array(A), None, None).asnumpy()
    np.testing.assert_allclose(got, (weights[:, :, None, None] * A).sum(axis=1), rtol=1e-5, atol=1e-6)
    first, again = (cams.cam(net, x, LAYER, 'randomcam').asnumpy() for _ in range(2))
    np.testing.assert_array_equal(first, again)
    other = cams.cam(net, x, LAYER, cams.RandomCAM(seed=1)).asnumpy()
    assert not np.array_equal(first, other)
