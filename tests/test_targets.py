"""Detection, segmentation and keypoint targets against hand computations; per-box maps against their definition."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as stock

import gluoncam
from gluoncam import cams, detection
from gluoncam.session import RoutedF
from gluoncam.targets import BoxScoreTarget, DetectionScore, KeypointTarget, SegmentationTarget, box_iou
from conftest import batch

BOXES = np.array([[0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 5], [0, 0, 1, 1]], dtype=np.float32)
IDS = np.array([3, 1, 3, -1], dtype=np.float32)  # the last row is padding, as GluonCV's detectors return it


class ToyDetector(HybridBlock):
    """Four 'detections' with fixed classes and boxes; each score is a sigmoid of one channel's mean of a small
    ReLU CNN, so scores depend on the input through a 4-D layer ('body')."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.body = stock.HybridSequential()
            self.body.add(stock.Conv2D(6, 3, padding=1, activation='relu'), stock.Conv2D(4, 3, padding=1))

    def hybrid_forward(self, F, x):
        scores = F.sigmoid(self.body(x).mean(axis=(2, 3)))  # N x 4
        ids = F.zeros_like(scores) + nd.array(IDS, ctx=x.context)
        boxes = F.zeros_like(scores).expand_dims(2) + nd.array(BOXES, ctx=x.context)
        return ids.expand_dims(2), scores.expand_dims(2), boxes


@pytest.fixture
def toy():
    mx.random.seed(3)
    net = ToyDetector()
    net.initialize(mx.init.Xavier())
    return net


def fake_output(scores):
    scores = nd.array(scores).reshape((1, -1, 1))
    return nd.array(IDS).reshape((1, -1, 1)), scores, nd.array(BOXES)[None]


def test_box_iou_by_hand():
    iou = box_iou(nd.array(BOXES[:2]), nd.array(BOXES[1:3])).asnumpy()
    np.testing.assert_allclose(iou, [4 / 28, 3 / 21], rtol=1e-6)  # overlaps 2x2 and 1x3; unions 16+16-4, 16+8-3


def test_detection_score_ranks_by_score_and_skips_padding():
    output = fake_output([0.2, 0.9, 0.5, 0.7])  # the 0.7 is padding (id -1)
    np.testing.assert_allclose(DetectionScore(0)(output).asnumpy(), [0.9])
    np.testing.assert_allclose(DetectionScore(1)(output).asnumpy(), [0.5])
    np.testing.assert_allclose(DetectionScore(2)(output).asnumpy(), [0.2])
    assert DetectionScore(3)(output).asscalar() == 0  # padding scores nothing
    with pytest.raises(ValueError, match=r"detection 4 \(0-based\) asked for: the detector returns 4 detections"):
        DetectionScore(4)(output)


def test_detection_score_among_given_classes():
    output = fake_output([0.2, 0.9, 0.5, 0.7])  # classes 3, 1, 3, padding
    np.testing.assert_allclose(DetectionScore(0, classes=[3])(output).asnumpy(), [0.5])
    np.testing.assert_allclose(DetectionScore(1, classes=[3])(output).asnumpy(), [0.2])
    assert DetectionScore(2, classes=[3])(output).asscalar() == 0
    np.testing.assert_allclose(DetectionScore(1, classes=[1, 3])(output).asnumpy(), [0.5])


def test_box_score_target_adds_iou_and_score_of_the_best_matching_box():
    output = fake_output([0.2, 0.9, 0.5, 0.7])
    target = BoxScoreTarget([3, 1], [[0, 0, 4, 3], [2, 2, 6, 7]], iou_threshold=0.5)
    expected = (12 / 16 + 0.2) + (16 / 20 + 0.9)
    np.testing.assert_allclose(target(output).asnumpy(), [expected], rtol=1e-6)
    one = BoxScoreTarget([3, 3], [[0, 0, 4, 3], [2, 2, 6, 7]], iou_threshold=0.5)  # the 2nd box's label differs
    np.testing.assert_allclose(one(output).asnumpy(), [12 / 16 + 0.2], rtol=1e-6)


def test_a_box_target_that_matches_nothing_names_the_labels_and_the_boxes_found():
    output = fake_output([0.2, 0.9, 0.5, 0.7])
    with pytest.raises(ValueError, match=r"no detection of image 0 matches.*wanted class 7 box \[0\.0, 0\.0, 4\.0, "
                                         r"4\.0\]; found .*class 1 score 0\.900 box \[2\.0, 2\.0, 6\.0, 6\.0\]"):
        BoxScoreTarget([7], [[0, 0, 4, 4]])(output)
    with pytest.raises(ValueError, match="one label per reference box"):
        BoxScoreTarget([1, 2], [[0, 0, 4, 4]])


def test_detection_targets_on_a_classifier_say_what_the_output_is():
    with pytest.raises(ValueError, match=r"needs a detector's output .* returns shape \(2, 5\)"):
        DetectionScore(0)(nd.zeros((2, 5)))


def test_segmentation_target_sums_the_class_logits_over_the_predicted_mask():
    logits = nd.array([[[[1, 5], [0, 2]], [[3, 1], [4, 1]]]])  # 1 x 2 classes x 2 x 2
    np.testing.assert_allclose(SegmentationTarget(0)((logits,)).asnumpy(), [5 + 2])
    np.testing.assert_allclose(SegmentationTarget(1)(logits).asnumpy(), [3 + 4])
    np.testing.assert_allclose(SegmentationTarget(1, mask=[[1, 1], [0, 0]])(logits).asnumpy(), [3 + 1])
    with pytest.raises(ValueError, match=r"class 2 out of range.*2 classes \(valid ids 0\.\.1\)"):
        SegmentationTarget(2)(logits)
    with pytest.raises(ValueError, match=r"the mask is \(3, 3\)"):
        SegmentationTarget(1, mask=np.ones((3, 3)))(logits)


def test_keypoint_target_is_the_heatmap_peak():
    heatmaps = nd.array(np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2))
    np.testing.assert_allclose(KeypointTarget(1)(heatmaps).asnumpy(), [7, 19])
    with pytest.raises(ValueError, match="keypoint 3 out of range"):
        KeypointTarget(3)(heatmaps)


def test_routed_box_decode_equals_mxnets_and_has_a_gradient():
    rng = np.random.RandomState(0)
    data = nd.array(rng.randn(2, 7, 4))
    anchors = nd.array(np.abs(rng.randn(1, 7, 4)) * 5)
    for box_format in ('corner', 'center'):
        for clip in (-1.0, 1.5):
            expected = nd.contrib.box_decode(data, anchors, 0.1, 0.2, 0.3, 0.4, clip=clip, format=box_format)
            got = RoutedF.contrib.box_decode(data, anchors, 0.1, 0.2, 0.3, 0.4, clip=clip, format=box_format)
            assert 'box_decode' in RoutedF.contrib.__dict__  # where GluonCV's decoders look for it
            np.testing.assert_allclose(got.asnumpy(), expected.asnumpy(), rtol=1e-6, atol=1e-6)
    data.attach_grad()
    with autograd.record(train_mode=False):
        out = RoutedF.contrib.box_decode(data, anchors, 0.1, 0.2, 0.3, 0.4, format='corner')
    out.backward(nd.array(rng.randn(*out.shape)))
    assert np.abs(data.grad.asnumpy()).min() > 0


@pytest.mark.parametrize('method', detection.GRADIENT_METHODS)
def test_each_box_map_is_the_cam_of_that_detections_score(toy, method):
    x = batch(2, (3, 6, 6))
    result = detection.explain_boxes(toy, x, 'body.0', method, top_k=4)
    assert result.maps.shape == (2, 4, 6, 6)
    assert not result.valid[:, 3].any() and result.valid[:, :3].all()  # the padding detection ranks last
    for k in range(3):
        expected = cams.cam(toy, x, 'body.0', method, target=DetectionScore(k)).asnumpy()
        np.testing.assert_allclose(result.maps[:, k].asnumpy(), expected, rtol=1e-5, atol=1e-7)
    assert (result.maps[:, 3].asnumpy() == 0).all()
    scores = toy(x)[1][:, :3, 0].asnumpy()
    np.testing.assert_allclose(result.scores[:, :3], -np.sort(-scores, axis=1), rtol=1e-6)
    for i in range(2):
        np.testing.assert_array_equal(result.boxes[i, :3], BOXES[np.argsort(-scores[i])])


def test_box_maps_of_one_class(toy):
    x = batch(1, (3, 6, 6))
    result = detection.explain_boxes(toy, x, 'body.0', 'gradcam', top_k=3, classes=[3])
    assert result.valid[0].tolist() == [True, True, False] and (result.ids[0, :2] == 3).all()
    for k in range(2):
        expected = cams.cam(toy, x, 'body.0', 'gradcam', target=DetectionScore(k, classes=[3])).asnumpy()
        np.testing.assert_allclose(result.maps[:, k].asnumpy(), expected, rtol=1e-5, atol=1e-7)
    assert (result.maps[0, 2].asnumpy() == 0).all()


def test_eigencam_box_maps_are_the_image_map_renormalised_inside_each_box(toy):
    x = batch(1, (3, 6, 6))
    result = detection.explain_boxes(toy, x, 'body.0', 'eigencam', top_k=3)
    image_map = cams.cam(toy, x, 'body.0', 'eigencam').asnumpy()[0]
    np.testing.assert_allclose(result.image_maps.asnumpy()[0], image_map, rtol=1e-5, atol=1e-7)
    for k in range(3):
        x0, y0, x1, y1 = result.boxes[0, k]
        centres = np.arange(6) + 0.5
        inside = ((centres >= y0) & (centres <= y1))[:, None] & ((centres >= x0) & (centres <= x1))[None, :]
        got = result.maps[0, k].asnumpy()
        assert (got[~inside] == 0).all()
        region = image_map[inside]
        span = region.max() - region.min()
        expected = (region - region.min()) / span if span > 0 else np.zeros_like(region)  # constant: all zero
        np.testing.assert_allclose(got[inside], expected, rtol=1e-5, atol=1e-6)


def test_bad_detection_requests_are_refused(toy):
    x = batch(1, (3, 6, 6))
    with pytest.raises(ValueError, match="unknown method 'scorecam' for detection maps; valid: gradcam"):
        detection.explain_boxes(toy, x, 'body.0', 'scorecam')
    with pytest.raises(ValueError, match="the detector returns 4 detections per image"):
        detection.explain_boxes(toy, x, 'body.0', top_k=5)


def test_a_class_target_on_a_detector_describes_the_output_and_points_at_the_targets(toy):
    with pytest.raises(ValueError, match=r"class targets need an output of shape \(N, classes\); the network returns "
                                         r"a tuple of 3: shape \(1, 4, 1\), shape \(1, 4, 1\), shape \(1, 4, 4\).*"
                                         r"gluoncam.targets"):
        gluoncam.Explainer(toy).backprop(batch(1, (3, 6, 6)))
