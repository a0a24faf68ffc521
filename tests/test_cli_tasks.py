"""``gluoncam explain`` on GluonCV detectors, segmenters and pose networks (random weights, small inputs): panels and
raw files written with the right shapes, sensible printed lines, clear one-line errors."""
import os
import re
import shutil

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluoncam import zoo
from gluoncam.cli import main, size_pair, to_image_pixels

PHOTO = os.path.join(os.path.dirname(__file__), '..', 'data', 'images', 'hummingbird.jpg')
pytestmark = pytest.mark.filterwarnings("ignore:Parameter .* is already initialized")  # zoo.get_model on FCN
VOC = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'diningtable', 'dog',
       'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
DETECTOR = ['--model', 'yolo3_mobilenet0.25_voc', '--random-weights', '--size', '128,128']
SEGMENTER = ['--model', 'fcn_resnet50_voc', '--random-weights', '--size', '64,64']
POSE = ['--model', 'simple_pose_resnet18_v1b', '--random-weights', '--size', '128,96']
BOX_LINE = re.compile(r'^  (\w+) (\d\.\d\d) at \((-?\d+), (-?\d+), (-?\d+), (-?\d+)\)$')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """A bundled photo (500 x 333) and a random picture (160 x 120)."""
    folder = tmp_path_factory.mktemp('images')
    shutil.copy(PHOTO, folder / 'bird.jpg')
    noise = np.random.RandomState(0).randint(0, 256, size=(120, 160, 3)).astype(np.uint8)
    cv2.imwrite(str(folder / 'noise.png'), noise)
    return folder


@pytest.fixture(autouse=True)
def seed():
    """The same random weights whatever ran before."""
    mx.random.seed(0)


def explain(capsys, *argv):
    code = main(['explain'] + [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_panels(path, count):
    """A figure of ``count`` panels side by side, not blank."""
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[0] > 200 and 300 * count <= picture.shape[1] < 330 * count
    assert picture.std() > 10  # not blank


def test_detect_prints_draws_and_saves_each_box(images, tmp_path, capsys):
    code, out, _ = explain(capsys, images, *DETECTOR, '--top-k', '3', '--out', tmp_path)
    assert code == 0
    assert 'RANDOM weights' in out
    for stem, (height, width) in (('bird', (333, 500)), ('noise', (120, 160))):
        lines = out.split(f'{stem}.{"jpg" if stem == "bird" else "png"}: 3 box(es):\n')[1].splitlines()[:3]
        parsed = [BOX_LINE.match(line) for line in lines]
        assert all(parsed), lines
        assert all(match.group(1) in VOC for match in parsed)
        scores = [float(match.group(2)) for match in parsed]
        assert scores == sorted(scores, reverse=True)
        saved = np.load(tmp_path / f'{stem}_boxes.npz')
        assert saved['ids'].shape == (3,) and saved['scores'].shape == (3,)
        assert saved['boxes'].shape == (3, 4) and saved['maps'].shape == (3, 4, 4)  # 128 / 32
        np.testing.assert_allclose(saved['boxes'][0], [float(v) for v in parsed[0].groups()[2:]], atol=0.5)
        assert [VOC[k] for k in saved['ids']] == [match.group(1) for match in parsed]
        centres = (saved['boxes'][:, :2] + saved['boxes'][:, 2:]) / 2
        assert ((centres >= 0) & (centres <= [width, height])).all()  # in the original image's pixels
        assert_panels(tmp_path / f'{stem}.png', 4)


def test_detect_one_class_with_eigencam_and_a_score_floor(images, tmp_path, capsys):
    code, out, _ = explain(capsys, images / 'bird.jpg', *DETECTOR, '--class', 'Dog', '--method', 'eigencam',
                           '--out', tmp_path)
    assert code == 0, out
    found = int(re.search(r'bird\.jpg: (\d) box\(es\):\n', out).group(1))
    lines = out.split('box(es):\n')[1].splitlines()[:found]
    assert 1 <= found <= 5 and all(BOX_LINE.match(line).group(1) == 'dog' for line in lines), out
    saved = np.load(tmp_path / 'bird_boxes.npz')
    assert (saved['ids'] == VOC.index('dog')).all() and saved['maps'].shape == (found, 4, 4)
    code, out, _ = explain(capsys, images / 'bird.jpg', *DETECTOR, '--min-score', '0.99', '--out', tmp_path)
    assert code == 0 and 'bird.jpg: 0 box(es)\n' in out
    assert np.load(tmp_path / 'bird_boxes.npz')['maps'].shape == (0, 4, 4)
    assert_panels(tmp_path / 'bird.png', 1)


def test_boxes_are_scaled_from_the_input_to_the_image():
    boxes = to_image_pixels(np.array([[10, 20, 30, 40]], np.float32), (128, 128), (256, 512))
    np.testing.assert_allclose(boxes, [[40, 40, 120, 80]])


def test_segment_explains_the_main_class_or_the_asked_one(images, tmp_path, capsys):
    code, out, _ = explain(capsys, images / 'noise.png', *SEGMENTER, '--out', tmp_path / 'main')
    assert code == 0
    shares, explained = re.search(r'noise\.png: (.*); explaining (\S+) \(\d+\)', out).groups()
    assert explained != 'background' and explained in shares
    assert abs(sum(float(share) for share in re.findall(r'(\d+\.\d)%', shares)) - 100) < 40  # the top 5
    mask = np.load(tmp_path / 'main' / 'noise_mask.npy')
    assert mask.shape == (480, 480) and mask.max() < 21  # FCN upsamples to its crop size
    assert np.load(tmp_path / 'main' / 'noise_gradcam.npy').shape == (8, 8)  # 64 / 8
    assert_panels(tmp_path / 'main' / 'noise.png', 3)
    code, out, _ = explain(capsys, images / 'noise.png', *SEGMENTER, '--class', 'person', '--method',
                           'gradcam,layercam', '--out', tmp_path / 'person')
    assert code == 0 and 'explaining person (15)' in out
    assert sorted(os.listdir(tmp_path / 'person')) == ['noise.png', 'noise_gradcam.npy', 'noise_layercam.npy',
                                                       'noise_mask.npy']


def test_pose_marks_the_keypoint_peak_and_explains_it(images, tmp_path, capsys):
    code, out, _ = explain(capsys, images, *POSE, '--keypoint', 'left_eye', '--out', tmp_path)
    assert code == 0
    for stem, (height, width) in (('bird', (333, 500)), ('noise', (120, 160))):
        x, y = map(int, re.search(rf'{stem}\.\w+: left_eye peak \S+ at \((\d+), (\d+)\)', out).groups())
        assert 0 <= x <= width and 0 <= y <= height
        assert np.load(tmp_path / f'{stem}_gradcam.npy').shape == (32, 24)  # the heatmaps' resolution
        assert_panels(tmp_path / f'{stem}.png', 2)


def test_params_load_into_a_gluoncv_model(images, tmp_path, capsys):
    net = zoo.get_model('simple_pose_resnet18_v1b', pretrained=False)
    net(mx.nd.zeros((1, 3, 128, 96)))  # deferred shapes
    net.save_parameters(str(tmp_path / 'pose.params'))
    argv = [images / 'noise.png', '--model', 'simple_pose_resnet18_v1b', '--size', '128,96']
    maps = []
    for out in ('first', 'second'):
        mx.random.seed(len(out))  # the loaded weights, not the random ones, decide the maps
        assert explain(capsys, *argv, '--params', tmp_path / 'pose.params', '--out', tmp_path / out)[0] == 0
        maps.append(np.load(tmp_path / out / 'noise_gradcam.npy'))
    np.testing.assert_array_equal(*maps)
    (tmp_path / 'bad.params').write_bytes(b'not parameters')
    code, _, err = explain(capsys, *argv, '--params', tmp_path / 'bad.params', '--out', tmp_path)
    assert code == 2 and "cannot load --params" in err and 'Invalid NDArray file format' in err


def test_a_gluoncv_classifier_classifies_by_default(tmp_path, capsys):
    code, out, _ = explain(capsys, PHOTO, '--model', 'resnet18_v1', '--random-weights', '--size', '64', '--method',
                           'gradcam', '--top-k', '2', '--out', tmp_path)
    assert code == 0
    assert re.search(r'hummingbird\.jpg: [^,]+ \(\d+\) 0\.\d{3}, [^,]+ \(\d+\) 0\.\d{3}$', out, re.M)
    assert np.load(tmp_path / 'hummingbird_gradcam.npy').shape == (2, 2)


def test_layer_list_of_a_gluoncv_model(capsys):
    code, out, _ = explain(capsys, PHOTO, *DETECTOR, '--layer', 'list')
    assert code == 0 and zoo.ARCHITECTURES['YOLOV3'][1] in out.split('\n')


@pytest.mark.parametrize('argv, message', [
    (['--model', 'yolo3_mobilenet0.25_vocc'], "unknown model 'yolo3_mobilenet0.25_vocc'; did you mean "
                                               "'yolo3_mobilenet0.25_voc'"),
    (DETECTOR + ['--class', 'dgo'], "did you mean 'dog'?); valid: aeroplane, bicycle"),
    (SEGMENTER + ['--class', 'persn'], "did you mean 'person'?); valid: background, airplane"),
    (POSE + ['--keypoint', 'left_eyes'], "did you mean 'left_eye'"),
    (POSE + ['--keypoint', '17'], "--keypoint 17: keypoint ids are 0..16"),
    (['--model', 'resnet18_v1', '--random-weights', '--size', '32', '--task', 'detect'],
     "a detection target needs a detector's output (class ids, scores, boxes); the network returns shape (1, 1000)"),
    (['--model', 'resnet18_v1', '--random-weights', '--size', '32', '--task', 'pose'],
     "a keypoint target needs heatmaps of shape (N, keypoints, H, W); the network returns shape (1, 1000)"),
    (DETECTOR + ['--task', 'segment'], "the network returns a tuple of 3: shape (1, 100, 1)"),
    (SEGMENTER + ['--task', 'classify'], "(N, classes, H, W): use --task segment"),
    (DETECTOR + ['--keypoint', 'nose'], "--keypoint is for --task pose, not detect"),
    (DETECTOR + ['--method', 'saliency'], "--task detect makes maps by: gradcam, gradcam++"),
    (DETECTOR + ['--method', 'gradcam,eigencam'], "--task detect takes one --method"),
    (['--model', 'yolo3_mobilenet0.25_voc'], "--random-weights"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, argv, message):
    code, _, err = explain(capsys, PHOTO, *argv, '--root', tmp_path, '--out', tmp_path)
    assert code == 2
    assert err.startswith('gluoncam: error: ') and err.count('\n') == 1, err
    assert message in err


def test_bad_sizes_are_refused():
    assert size_pair('64,48') == (64, 48) and size_pair('96') == (96, 96)
    with pytest.raises(SystemExit):
        main(['explain', PHOTO, '--size', '64x48'])
