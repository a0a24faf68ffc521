"""The command line: panels written, bad files reported, clear errors."""
import os
import shutil

import mxnet as mx
import pytest

from gluoncam.cli import main

PHOTO = os.path.join(os.path.dirname(__file__), '..', 'data', 'images', 'jellyfish.jpg')


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    shutil.copy(PHOTO, images / 'jellyfish.jpg')
    (images / 'broken.jpg').write_bytes(b'not a jpeg')
    return images


def test_explain_writes_panels_and_reports_unreadable_files(folder, tmp_path, capsys):
    out = tmp_path / 'out'
    code = main(['explain', str(folder), '--model', 'vgg11', '--random-weights', '--root', str(tmp_path),
                 '--out', str(out), '--top-k', '2'])
    captured = capsys.readouterr()
    assert code == 1
    assert "cannot read" in captured.err and 'broken.jpg' in captured.err
    assert 'RANDOM weights' in captured.out and 'jellyfish.jpg: ' in captured.out
    assert os.listdir(out) == ['jellyfish.png']
    assert os.path.getsize(out / 'jellyfish.png') > 10000


def test_missing_weights_say_what_to_do(tmp_path, capsys):
    assert main(['explain', PHOTO, '--model', 'vgg11', '--root', str(tmp_path), '--out', str(tmp_path)]) == 2
    assert "--random-weights" in capsys.readouterr().err


def test_layer_list_prints_the_names(tmp_path, capsys):
    assert main(['explain', PHOTO, '--model', 'vgg11', '--random-weights', '--root', str(tmp_path),
                 '--layer', 'list']) == 0
    names = capsys.readouterr().out.split('\n')
    assert 'features.0' in names and 'features.28' not in names and 'output' in names


@pytest.mark.skipif(mx.context.num_gpus() > 0, reason='a GPU is present')
def test_gpu_context_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(['explain', PHOTO, '--ctx', 'gpu:0', '--out', str(tmp_path)]) == 2
    assert "MXNet sees 0 GPU" in capsys.readouterr().err


def test_missing_images_and_bad_contexts_are_errors(tmp_path, capsys):
    assert main(['explain', str(tmp_path / 'nothing.jpg'), '--out', str(tmp_path)]) == 2
    assert "no image file, folder or matching pattern" in capsys.readouterr().err
    assert main(['explain', PHOTO, '--ctx', 'tpu', '--out', str(tmp_path)]) == 2
    assert "expected 'cpu' or 'gpu:N'" in capsys.readouterr().err
