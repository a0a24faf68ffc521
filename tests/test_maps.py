"""Maps against their formulas, and the pictures visualize() makes."""
import cv2
import numpy as np
import pytest
from mxnet import nd

import gluoncam
from gluoncam import maps
from gluoncam.visualize import overlay, render, resize
from conftest import batch, small_net


def test_grad_cam_matches_a_hand_computed_case():
    activation = np.zeros((1, 2, 2, 2), np.float32)
    activation[0, 0] = [[1, 2], [3, 4]]
    activation[0, 1] = [[4, 0], [0, 4]]
    gradient = np.zeros_like(activation)
    gradient[0, 0] = [[1, 1], [1, 1]]      # weight 1
    gradient[0, 1] = [[-2, 0], [0, -2]]    # weight -1
    cam = maps.grad_cam(nd.array(activation), nd.array(gradient)).asnumpy()
    np.testing.assert_allclose(cam[0], [[0, 2], [3, 0]])  # relu([[1-4, 2], [3, 4-4]])


def test_grad_cam_matches_brute_force_on_random_maps():
    rng = np.random.RandomState(0)
    activation, gradient = rng.randn(3, 5, 4, 6), rng.randn(3, 5, 4, 6)
    cam = maps.grad_cam(nd.array(activation), nd.array(gradient)).asnumpy()
    for n in range(3):
        expected = np.zeros((4, 6))
        for c in range(5):
            expected += gradient[n, c].mean() * activation[n, c]
        np.testing.assert_allclose(cam[n], np.maximum(expected, 0), rtol=1e-5, atol=1e-6)


def test_grad_cam_refuses_non_4d_layers():
    with pytest.raises(ValueError, match="4-D"):
        maps.grad_cam(nd.ones((2, 8)), nd.ones((2, 8)))


def test_saliency_is_the_largest_absolute_channel_gradient():
    gradient = nd.array([[[[1, -5]], [[-3, 2]], [[0, 0]]]])
    np.testing.assert_array_equal(maps.saliency(gradient).asnumpy(), [[[3, 5]]])


def test_normalize_scales_each_map_and_keeps_constant_maps_finite():
    values = nd.array([[[1, 3], [5, 9]], [[2, 2], [2, 2]], [[0, 0], [0, 0]]])
    normalized = maps.normalize(values).asnumpy()
    np.testing.assert_allclose(normalized[0], [[0, 0.25], [0.5, 1]])
    np.testing.assert_array_equal(normalized[1:], 0)


def test_guided_grad_cam_multiplies_by_the_upsampled_cam():
    guided = nd.ones((1, 3, 4, 4))
    cam = nd.array([[[0, 1], [2, 3]]])
    result = maps.guided_grad_cam(guided, cam).asnumpy()
    expected = cv2.resize(np.float32([[0, 1], [2, 3]]), (4, 4), interpolation=cv2.INTER_LINEAR)
    for channel in range(3):
        np.testing.assert_allclose(result[0, channel], expected, atol=1e-5)


def test_upsampling_keeps_height_and_width_apart():
    cam = nd.array(np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    assert maps.upsample(cam, (4, 9)).shape == (1, 4, 9)
    assert resize(np.zeros((2, 3), np.uint8), (40, 90)).shape == (40, 90)


def test_visualize_fits_non_square_originals(net):
    x = batch(1)
    original = np.random.RandomState(0).randint(0, 255, (30, 50, 3)).astype(np.uint8)
    heatmap, guided, saliency = gluoncam.visualize(net, x, original, '4')
    assert heatmap.shape == (30, 50, 3) and heatmap.dtype == np.uint8
    assert guided.shape == (30, 50, 3) and saliency.shape == (30, 50)
    assert saliency.max() > 200  # the peak, blurred a little by resizing 12 x 10 -> 30 x 50


def test_visualize_matches_the_maps_it_is_made_of(net):
    x = batch(1)
    original = np.full((12, 10, 3), 100, np.uint8)
    heatmap, guided, saliency = gluoncam.visualize(net, x, original, '4', class_id=2, alpha=1.0)
    result = gluoncam.Explainer(net).backprop(x, 2, ['4'], ('normal', 'guided'))
    raw = maps.grad_cam(result.activations['4'], result.gradients['normal']['4']).asnumpy()[0]
    resized = cv2.resize(raw, (10, 12), interpolation=cv2.INTER_LINEAR)  # resized first, then scaled to [0, 1]
    cam = (resized - resized.min()) / (resized.max() - resized.min())
    assert np.abs(heatmap.astype(int) - overlay(original, cam, alpha=1.0).astype(int)).max() <= 1
    expected_saliency = maps.normalize(maps.saliency(result.input_gradients['normal'])).asnumpy()[0]
    np.testing.assert_array_equal(saliency, np.uint8(np.round(expected_saliency * 255)))


def test_colormap_is_a_parameter(net):
    x, original = batch(1), np.zeros((12, 10, 3), np.uint8)
    jet = gluoncam.visualize(net, x, original, '4', colormap=cv2.COLORMAP_JET)[0]
    bone = gluoncam.visualize(net, x, original, '4', colormap=cv2.COLORMAP_BONE)[0]
    assert not np.array_equal(jet, bone)


def test_visualize_a_batch_gives_one_picture_per_image(net):
    x = batch(3)
    originals = [np.zeros((12 + i, 10, 3), np.uint8) for i in range(3)]
    heatmaps, guideds, saliencies = gluoncam.visualize(net, x, originals, '4')
    assert [h.shape for h in heatmaps] == [(12, 10, 3), (13, 10, 3), (14, 10, 3)]
    single = gluoncam.visualize(net, x[1], originals[1], '4')
    np.testing.assert_array_equal(single[0], heatmaps[1])
    with pytest.raises(ValueError, match="2 original images for a batch of 3"):
        gluoncam.visualize(net, x, originals[:2], '4')


def test_visualize_names_4d_layers_when_given_a_dense_one(net):
    with pytest.raises(ValueError, match=r"layer '6' gives output of shape \(1, 16\).*small_conv0"):
        gluoncam.visualize(net, batch(1), np.zeros((12, 10, 3), np.uint8), '6')


def test_an_all_zero_cam_is_a_valid_result(net):
    """A class no channel speaks for gives a zero map, not NaN."""
    x = nd.zeros((1, 3, 12, 10))
    heatmap, guided, saliency = gluoncam.visualize(net, x, np.zeros((12, 10, 3), np.uint8), '4',
                                                   class_id=lambda out: out[:, 0] * 0)
    for picture in (heatmap, guided, saliency):
        assert np.isfinite(picture).all()
    assert saliency.max() == 0


def test_upsampling_with_aligned_corners_follows_its_definition():
    """PyTorch's UpsamplingBilinear2d: output pixel i samples the input at i * (h - 1) / (H - 1)."""
    m = np.random.RandomState(0).rand(3, 4).astype(np.float32)
    size = (7, 9)
    rows, cols = (np.arange(n) * (k - 1) / (n - 1) for n, k in zip(size, m.shape))
    expected = np.empty(size)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            y0, x0 = min(int(y), m.shape[0] - 2), min(int(x), m.shape[1] - 2)
            dy, dx = y - y0, x - x0
            expected[i, j] = (m[y0, x0] * (1 - dy) * (1 - dx) + m[y0, x0 + 1] * (1 - dy) * dx +
                              m[y0 + 1, x0] * dy * (1 - dx) + m[y0 + 1, x0 + 1] * dy * dx)
    got = maps.upsample(nd.array(m[None]), size, align_corners=True).asnumpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(maps.upsample(nd.array(m[None]), size).asnumpy()[0] - expected).max() > 1e-2  # the default differs


@pytest.mark.parametrize('method', ['hirescam', 'saliency', 'guided-backprop'])
def test_a_narrow_peak_reaches_full_scale_after_the_resize(method):
    """Maps are scaled to [0, 1] after resizing to the image, so a one-pixel peak of a 7 x 7 map still reaches the
    top of the colour scale (scaled first, the bilinear resize would lower it)."""
    peak = np.zeros((7, 7), np.float32)
    peak[3, 3] = 1
    raw = peak if method != 'guided-backprop' else np.stack([peak] * 3)
    picture = render(np.zeros((224, 224, 3), np.uint8), raw, method, alpha=1.0)
    if method == 'hirescam':
        top = cv2.cvtColor(cv2.applyColorMap(np.uint8([[255]]), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0, 0]
        assert (picture == top).all(axis=-1).any()
    else:
        assert picture.max() == 255


def test_visualize_is_the_function_and_the_module():
    """``gluoncam.visualize(...)`` and ``gluoncam.visualize.render(...)``, as the README writes them."""
    from gluoncam import visualize
    assert callable(visualize) and visualize.render is render
    picture = gluoncam.visualize.render(np.zeros((8, 8, 3), np.uint8), np.eye(4, dtype=np.float32), 'gradcam')
    assert picture.shape == (8, 8, 3)
    net = small_net()
    heatmap, _, _ = gluoncam.visualize(net, batch(1), np.zeros((12, 10, 3), np.uint8), '4')
    assert heatmap.shape == (12, 10, 3)


def test_nearest_upsampling_takes_pixel_floor_of_i_h_over_H():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = maps.upsample(nd.array(m[None]), (7, 9), nearest=True).asnumpy()[0]
    rows, cols = np.floor(np.arange(7) * 3 / 7).astype(int), np.floor(np.arange(9) * 4 / 9).astype(int)
    np.testing.assert_array_equal(got, m[rows][:, cols])


def test_guided_grad_cam_options_follow_captum_and_pytorch_grad_cam():
    rng = np.random.RandomState(0)
    guided = nd.array(rng.randn(1, 3, 6, 6).astype(np.float32))
    cam = nd.array(rng.rand(1, 3, 3).astype(np.float32) + 1)
    nearest = maps.guided_grad_cam(guided, cam, nearest=True).asnumpy()  # captum: nearest, unscaled
    np.testing.assert_allclose(nearest, guided.asnumpy() * np.repeat(np.repeat(cam.asnumpy(), 2, 1), 2, 2)[:, None],
                               rtol=1e-6)
    scaled = maps.guided_grad_cam(guided, cam, scaled=True).asnumpy()  # pytorch-grad-cam: a [0, 1] mask
    mask = cv2.resize(cam.asnumpy()[0], (6, 6), interpolation=cv2.INTER_LINEAR)
    mask = (mask - mask.min()) / (mask.max() - mask.min())
    np.testing.assert_allclose(scaled, guided.asnumpy() * mask[None, None], rtol=1e-5, atol=1e-6)
