"""Per-box maps and box targets on GluonCV's own detectors (random weights, small inputs)."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

import gluoncam
from gluoncam import cams, detection, zoo
from gluoncam.targets import BoxScoreTarget, DetectionScore


def image(size, seed=0):
    return nd.array(np.random.RandomState(seed).rand(1, 3, size, size).astype(np.float32))


@pytest.fixture(scope='module')
def yolo():
    mx.random.seed(0)
    return zoo.get_model('yolo3_mobilenet0.25_voc', pretrained=False)


@pytest.fixture(scope='module')
def faster_rcnn():
    mx.random.seed(0)
    net = zoo.get_model('faster_rcnn_resnet50_v1b_voc', pretrained=False)
    net._rpn_test_post_nms = net.rpn._test_post_nms = 8  # 8 regions instead of 300: seconds, not minutes
    net.rpn._test_pre_nms = 200
    return net


def test_yolo_box_maps_equal_one_cam_per_detection_score(yolo):
    x = image(128)
    layer = zoo.default_layer(yolo)
    result = detection.explain_boxes(yolo, x, layer, 'gradcam', top_k=3)
    assert result.maps.shape[:2] == (1, 3) and result.valid.all()
    ids, scores, boxes = yolo(x)
    order = np.argsort(-scores[0, :, 0].asnumpy(), kind='stable')[:3]
    np.testing.assert_allclose(result.scores[0], scores[0, order, 0].asnumpy(), rtol=1e-5)
    for k in range(3):
        expected = cams.cam(yolo, x, layer, 'gradcam', target=DetectionScore(k)).asnumpy()
        np.testing.assert_allclose(result.maps[:, k].asnumpy(), expected, rtol=1e-4, atol=1e-30)


def test_yolo_hybridized_gives_the_same_box_maps_and_stays_hybridized(yolo):
    x = image(128, seed=1)
    expected = detection.explain_boxes(yolo, x, 'stages.2', 'layercam', top_k=2).maps.asnumpy()
    yolo.hybridize()
    try:
        before = yolo(x)[1].asnumpy()
        got = detection.explain_boxes(yolo, x, 'stages.2', 'layercam', top_k=2).maps.asnumpy()
        assert yolo._active
        np.testing.assert_array_equal(yolo(x)[1].asnumpy(), before)
    finally:
        yolo.hybridize(False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-30)


def test_faster_rcnn_runs_its_inference_path_and_its_box_decoder_has_gradients(faster_rcnn):
    """Faster R-CNN returns detections only on its inference path (its training path takes ground truth), and
    MXNet's own box_decode op has no gradient and crashes its backward pass: gluoncam routes it."""
    x = image(128)
    expected = [part.asnumpy() for part in faster_rcnn(x)]
    output = gluoncam.Explainer(faster_rcnn).backprop(x, DetectionScore(0)).output
    for got, want in zip(output, expected):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-4)  # the same boxes and scores
    result = detection.explain_boxes(faster_rcnn, x, 'features', 'gradcam', top_k=2)
    assert result.valid.all() and np.abs(result.maps.asnumpy()).sum() > 0
    first_box_size = lambda out: (out[2][:, 0, 2:] - out[2][:, 0, :2]).sum(axis=1)  # noqa: E731
    box_size = gluoncam.Explainer(faster_rcnn).backprop(x, first_box_size)
    gradient = box_size.input_gradients['normal'].asnumpy()
    assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0  # the decoded box depends on the input


def test_a_box_target_matching_nothing_on_a_real_detector_names_what_was_found(yolo):
    with pytest.raises(ValueError, match=r"no detection of image 0 matches .* found \(top 5 by score\) class"):
        gluoncam.Explainer(yolo).backprop(image(128), BoxScoreTarget([0], [[0, 0, 1, 1]]))
