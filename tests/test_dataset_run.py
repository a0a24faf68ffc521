"""``gluoncam explain`` over a dataset: every image found (recursively), outputs mirroring the input tree, nothing
overwritten or lost, an index of every outcome, a killed run resumed, several contexts, clear errors."""
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from gluoncam import Explainer, dataset_run
from gluoncam.cli import main
from gluoncam.images import find_images

PHOTOS = os.path.join(os.path.dirname(__file__), '..', 'data', 'images')
SMALL = ['--model', 'mobilenetv2_0.25', '--random-weights', '--size', '64', '--method', 'gradcam,saliency']
IGNORED = ('seconds', 'context', 'worker')  # what may differ between equal runs


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """10 images in class folders and at the root (equal stems in different folders, x.webp and x.tiff side by
    side), one unreadable file, one hidden file."""
    root = tmp_path_factory.mktemp('tree')
    photos = ['jellyfish.jpg', 'volcano.jpg']
    for folder in ('jellyfish', 'Snow_Leopard', 'other'):
        (root / folder).mkdir()
        for name in photos:
            shutil.copy(os.path.join(PHOTOS, name), root / folder / name)
    picture = cv2.imread(os.path.join(PHOTOS, 'volcano.jpg'))
    cv2.imwrite(str(root / 'x.webp'), picture)
    cv2.imwrite(str(root / 'x.tiff'), picture[:, ::-1])
    shutil.copy(os.path.join(PHOTOS, 'hummingbird.jpg'), root / 'same.jpg')
    shutil.copy(os.path.join(PHOTOS, 'jellyfish.jpg'), root / 'other' / 'same.jpg')
    (root / 'other' / 'broken.png').write_bytes(b'not a png')
    (root / '.hidden.jpg').write_bytes(b'left out')
    return root


def explain(*argv):
    return main(['explain'] + [str(a) for a in argv])


def index_rows(out):
    with open(os.path.join(out, 'index.csv'), newline='') as file:
        return list(csv.DictReader(file))


def output_files(out):
    """Every output file under ``out`` (relative paths), hidden files and the index aside."""
    found = set()
    for directory, _, names in os.walk(out):
        found |= {os.path.relpath(os.path.join(directory, name), out) for name in names
                  if not name.startswith('.') and not name.startswith('index.')}
    return found


def assert_same_run(out, expected):
    """The same index (but times and places) and the same files, maps equal, as the run in ``expected``."""
    got, want = index_rows(out), index_rows(expected)
    assert [row['image'] for row in got] == [row['image'] for row in want]
    for row, reference in zip(got, want):
        assert abs(float(row.pop('probability') or 0) - float(reference.pop('probability') or 0)) < 1e-5
        assert {k: v for k, v in row.items() if k not in IGNORED} == \
            {k: v for k, v in reference.items() if k not in IGNORED}
    assert output_files(out) == output_files(expected)
    for name in output_files(out):
        if name.endswith('.npy'):
            np.testing.assert_allclose(np.load(os.path.join(out, name)), np.load(os.path.join(expected, name)),
                                       rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.fixture(scope='module')
def reference(tree, tmp_path_factory):
    """The uninterrupted run on one context."""
    out = tmp_path_factory.mktemp('reference')
    assert explain(tree, *SMALL, '--batch-size', '2', '--out', out) == 1  # the unreadable file
    return out


# ----------------------------------------------------------------------------------------------- finding images

def test_folders_are_searched_recursively_unless_asked_not_to(tree, tmp_path):
    found = find_images([str(tree)])
    relative = [os.path.relpath(path, tree) for path in found]
    assert len(found) == 11 and '.hidden.jpg' not in relative
    assert relative[:2] == [os.path.join('Snow_Leopard', 'jellyfish.jpg'), os.path.join('Snow_Leopard',
                                                                                          'volcano.jpg')]
    assert sorted(os.path.relpath(p, tree) for p in find_images([str(tree)], recursive=False)) == \
        ['same.jpg', 'x.tiff', 'x.webp']
    assert find_images([str(tree / 'same.jpg'), str(tree)])[0].endswith('same.jpg')  # each file once
    assert len(find_images([str(tree / 'same.jpg'), str(tree)])) == 11
    assert len(find_images([str(tree / '**' / '*.jpg')])) == 8  # glob with subfolders
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no image .* in it or its subfolders"):
        find_images([str(tmp_path / 'empty')])
    shutil.copy(os.path.join(PHOTOS, 'volcano.jpg'), tmp_path / 'empty' / 'sub')
    with pytest.raises(FileNotFoundError, match="subfolders not searched: --no-recursive"):
        find_images([str(tmp_path / 'empty')], recursive=False)


def test_output_stems_never_collide():
    stems = dataset_run.output_stems(['a/same.jpg', 'b/same.jpg', 'x.webp', 'x.tiff', 'X.png', 'y.jpg'],
                                     ['.png', '_gradcam.npy'])
    assert stems == ['a/same', 'b/same', 'x.webp', 'x.tiff', 'X.png', 'y']
    endings = dataset_run.file_endings(['guided-gradcam'])  # a_guided.png vs a's map a_guided_gradcam.npy
    assert dataset_run.output_stems(['a.jpg', 'a_guided_gradcam.jpg'], endings + ['_gradcam.npy']) == \
        ['a', 'a_guided_gradcam']
    assert dataset_run.output_stems(['a.jpg', 'a_guided.jpg'], ['.png', '_gradcam.npy', '_guided_gradcam.npy']) == \
        ['a', 'a_guided~2']


# ------------------------------------------------------------------------------------------- the run and index

def test_the_run_mirrors_the_tree_and_indexes_every_outcome(tree, reference):
    rows = index_rows(reference)
    assert tuple(rows[0]) == dataset_run.COLUMNS
    assert len(rows) == 11 * 2  # every image found (the unreadable one too) and method
    images = {row['image'] for row in rows}
    assert {'same.jpg', 'other/same.jpg', 'x.webp', 'x.tiff', 'other/broken.png'} <= images
    by_key = {(row['image'], row['method']): row for row in rows}
    ok = by_key[('other/same.jpg', 'gradcam')]
    assert ok['status'] == 'ok' and ok['error'] == '' and ok['layer'] and ok['context'] == 'cpu(0)'
    assert ok['panel'] == 'other/same.png' and ok['map'] == 'other/same_gradcam.npy' and ok['worker'] == ''
    assert 0 < float(ok['probability']) <= 1 and ok['predicted_class'] == ok['explained_class']
    assert by_key[('other/same.jpg', 'saliency')]['layer'] == ''  # saliency uses no layer
    assert by_key[('x.webp', 'gradcam')]['panel'] == 'x.webp.png' and by_key[('same.jpg', 'gradcam')]['panel'] == \
        'same.png'
    broken = by_key[('other/broken.png', 'gradcam')]
    assert broken['status'] == 'error' and 'cannot read' in broken['error'] and broken['map'] == ''
    # labels from class folder names (any case, '_' for ' '); none for a folder that names no class
    assert by_key[('jellyfish/volcano.jpg', 'gradcam')]['label'] == '107'
    assert by_key[('Snow_Leopard/volcano.jpg', 'gradcam')]['label_name'] == 'snow leopard'
    assert by_key[('other/volcano.jpg', 'gradcam')]['label'] == ''
    for row in rows:
        if row['status'] == 'ok':
            assert os.path.isfile(reference / row['panel']) and os.path.isfile(reference / row['map'])
    assert np.load(reference / 'other' / 'same_gradcam.npy').shape == (2, 2)
    assert not np.array_equal(np.load(reference / 'x.webp_saliency.npy'), np.load(reference / 'x.tiff_saliency.npy'))
    assert not [name for name in os.listdir(reference) if name.endswith(dataset_run.PARTIAL)]


def test_labels_from_a_csv(tmp_path, capsys):
    shutil.copy(os.path.join(PHOTOS, 'jellyfish.jpg'), tmp_path / 'a.jpg')
    shutil.copy(os.path.join(PHOTOS, 'volcano.jpg'), tmp_path / 'b.jpg')
    (tmp_path / 'labels.csv').write_text('image,label\na.jpg,Jellyfish\nb.jpg,980\nnot_in_run.jpg,1\n')
    out = tmp_path / 'out'
    assert explain(tmp_path / 'a.jpg', tmp_path / 'b.jpg', *SMALL, '--labels', tmp_path / 'labels.csv',
                   '--out', out) == 0
    labels = {row['image']: (row['label'], row['label_name']) for row in index_rows(out)}
    assert labels == {'a.jpg': ('107', 'jellyfish'), 'b.jpg': ('980', 'volcano')}
    assert 'labels: 2 of 2 image(s), from --labels' in capsys.readouterr().out
    (tmp_path / 'bad.csv').write_text('a.jpg,no such class\n')
    assert explain(tmp_path / 'a.jpg', *SMALL, '--labels', tmp_path / 'bad.csv', '--out', out) == 2
    assert "line 1: 'no such class' is neither a class id" in capsys.readouterr().err


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    shutil.copy(os.path.join(PHOTOS, 'jellyfish.jpg'), tmp_path / 'a.jpg')
    shutil.copy(os.path.join(PHOTOS, 'volcano.jpg'), tmp_path / 'b.jpg')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'a.png').write_bytes(b'somebody else\'s')
    assert explain(tmp_path, *SMALL, '--out', out) == 0
    assert (out / 'a.png').read_bytes() == b'somebody else\'s' and not (out / 'a_gradcam.npy').exists()
    rows = {(row['image'], row['method']): row for row in index_rows(out)}
    assert rows[('a.jpg', 'gradcam')]['status'] == 'skipped' and '--overwrite' in rows[('a.jpg', 'gradcam')]['error']
    assert rows[('a.jpg', 'gradcam')]['panel'] == 'a.png' and rows[('b.jpg', 'gradcam')]['status'] == 'ok'
    assert '1 skipped: their outputs existed and were kept' in capsys.readouterr().out
    assert explain(tmp_path, *SMALL, '--out', out) == 0  # still kept on a rerun
    assert (out / 'a.png').read_bytes() == b'somebody else\'s'
    assert explain(tmp_path, *SMALL, '--out', out, '--overwrite') == 0
    assert cv2.imread(str(out / 'a.png')) is not None
    assert {row['status'] for row in index_rows(out)} == {'ok'}


def test_a_run_with_other_options_does_not_mix_into_out(tmp_path, capsys):
    shutil.copy(os.path.join(PHOTOS, 'jellyfish.jpg'), tmp_path / 'a.jpg')
    out = tmp_path / 'out'
    assert explain(tmp_path / 'a.jpg', *SMALL, '--out', out) == 0
    assert explain(tmp_path / 'a.jpg', *SMALL[:-1], 'gradcam', '--out', out) == 2
    assert "holds the results of a run with other options (methods" in capsys.readouterr().err


@pytest.mark.parametrize('below, message', [('', "is a file, not a folder"), ('sub', "cannot be made")])
def test_a_bad_out_is_an_error_before_any_work(tmp_path, capsys, below, message):
    (tmp_path / 'file').write_text('x')
    out = tmp_path / 'file' / below if below else tmp_path / 'file'
    started = time.perf_counter()
    assert explain(os.path.join(PHOTOS, 'jellyfish.jpg'), '--out', out) == 2
    err = capsys.readouterr().err
    assert err.startswith('gluoncam: error: --out') and message in err and err.count('\n') == 1
    assert time.perf_counter() - started < 5  # no model was loaded


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes anywhere')
def test_an_unwritable_out_is_an_error(tmp_path, capsys):
    tmp_path.chmod(0o500)
    try:
        assert explain(os.path.join(PHOTOS, 'jellyfish.jpg'), '--out', tmp_path / 'out') == 2
    finally:
        tmp_path.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


def test_no_image_found_is_an_error_with_the_reason(tmp_path, capsys):
    (tmp_path / 'sub').mkdir()
    shutil.copy(os.path.join(PHOTOS, 'jellyfish.jpg'), tmp_path / 'sub')
    assert explain(tmp_path, '--no-recursive', '--out', tmp_path / 'out') == 2
    assert "no image" in capsys.readouterr().err
    (tmp_path / 'notes').mkdir()
    assert explain(tmp_path / 'notes', '--out', tmp_path / 'out') == 2
    assert "no image (.jpg" in capsys.readouterr().err


def test_outputs_inside_the_explained_folder_are_not_inputs(tmp_path, capsys):
    shutil.copy(os.path.join(PHOTOS, 'jellyfish.jpg'), tmp_path / 'a.jpg')
    assert explain(tmp_path, *SMALL, '--out', tmp_path / 'out') == 0
    capsys.readouterr()
    assert explain(tmp_path, *SMALL, '--out', tmp_path / 'out') == 0
    captured = capsys.readouterr()
    assert 'left out 1 file(s) under --out' in captured.err and '1 done before (resumed)' in captured.out
    assert [row['image'] for row in index_rows(tmp_path / 'out')] == ['a.jpg', 'a.jpg']


# ------------------------------------------------------------------------------------------------ resume, devices

def test_a_killed_run_resumes_to_the_same_index(tree, reference, tmp_path, capsys):
    out = tmp_path / 'out'
    argv = [sys.executable, '-m', 'gluoncam.cli', 'explain', str(tree), *SMALL, '--batch-size', '2', '--out',
            str(out)]
    run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and run.poll() is None:
        if (out / 'index.csv').exists() and len(index_rows(out)) >= 4:
            break
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, 'the run ended before it could be killed'
    done = dataset_run.read_index(str(out / 'index.csv'))  # a last line cut short by the kill left out
    assert 4 <= len(done) < 22
    finished = [image for image in {row['image'] for row in done}
                if [row['status'] for row in done if row['image'] == image] == ['ok', 'ok']]
    for row in done:  # what the index names is whole
        assert row['status'] != 'ok' or np.load(out / row['map']).size and cv2.imread(str(out / row['panel'])).size
    for name in output_files(out):  # and so is every file that looks complete
        assert (np.load(out / name) if name.endswith('.npy') else cv2.imread(str(out / name))).size
    assert explain(tree, *SMALL, '--batch-size', '2', '--out', out) == 1
    assert f"{len(finished)} done before (resumed)" in capsys.readouterr().err  # beside the error's note
    assert_same_run(out, reference)
    assert not [name for name in os.listdir(out) if name.endswith(dataset_run.PARTIAL)]


def test_two_contexts_give_the_single_context_run(tree, reference, tmp_path, capsys):
    out = tmp_path / 'out'
    assert explain(tree, *SMALL, '--batch-size', '2', '--ctx', 'cpu:0,cpu:1', '--out', out) == 1
    assert_same_run(out, reference)
    assert {row['context'] for row in index_rows(out)} == {'cpu(0)', 'cpu(1)'}
    assert 'images/s on cpu(0), cpu(1)' in capsys.readouterr().out


def test_bad_contexts(capsys, tmp_path):
    assert explain(os.path.join(PHOTOS, 'jellyfish.jpg'), '--ctx', 'cpu:0,cpu:0', '--out', tmp_path) == 2
    assert "names a context twice" in capsys.readouterr().err


def test_printed_lines_never_land_in_the_bar_and_it_ends_once(tree, tmp_path, monkeypatch):
    screen = io.StringIO()  # stdout and stderr on one terminal
    monkeypatch.setattr(sys, 'stdout', screen)
    monkeypatch.setattr(sys, 'stderr', screen)
    assert explain(tree / 'other', *SMALL, '--out', tmp_path) == 1
    lines = rendered(screen.getvalue())
    predictions = [line for line in lines if line.startswith(str(tree / 'other'))]
    assert len(predictions) == 3
    assert all(len(re.findall(r' \(\d+\) [01]\.\d{3}(?:, |$)', line)) == 5 for line in predictions), predictions
    assert sum('100%' in line for line in lines) == 1
    assert [line for line in lines if 'cannot read' in line] == [f"error: cannot read '{tree / 'other' / 'broken.png'}'"
                                                                  f" as an image"]


def rendered(text):
    """What a terminal shows of ``text``: each carriage return starts overwriting the line."""
    lines = []
    for raw in text.split('\n'):
        line = ''
        for part in raw.split('\r'):
            line = part + line[len(part):]
        lines.append(line.rstrip())
    return lines


# ---------------------------------------------------------------------------------------------------- errors

def test_unknown_layers_suggest_close_names(capsys, tmp_path):
    assert explain(os.path.join(PHOTOS, 'jellyfish.jpg'), *SMALL, '--layer', 'features.stage4', '--out',
                   tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "--layer 'features.stage4' is not a layer of mobilenetv2_0.25" in err
    assert "closest: 'features." in err and '--layer list' in err and len(err) < 400


def test_params_of_another_network_are_one_line(tmp_path, capsys):
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3), nn.Dense(2))
    net.initialize()
    net(mx.nd.zeros((1, 3, 8, 8)))
    net.save_parameters(str(tmp_path / 'other.params'))
    (tmp_path / 'corrupt.params').write_bytes(b'garbage')
    for name, message in (('other.params', "the file has no parameter"), ('corrupt.params', "Invalid NDArray")):
        argv = ['--model', 'mobilenetv2_0.25', '--params', tmp_path / name, '--out', tmp_path / 'out']
        assert explain(os.path.join(PHOTOS, 'jellyfish.jpg'), *argv) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and name in err and message in err and len(err) < 300, err


def tiny_net(kernel=5):
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, kernel), nn.Activation('relu'), nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize()
    return net


def test_an_image_smaller_than_the_network_takes_is_a_clear_value_error():
    net = tiny_net()
    for call in (lambda x: Explainer(net).backprop(x), lambda x: Explainer(net).forward(x)):
        with pytest.raises(ValueError, match=r"the input is 1 x 1 pixels, smaller than HybridSequential can take: "
                                             r"a kernel is larger than its feature map.*it takes 5 x 5 pixels"):
            call(mx.nd.zeros((1, 3, 1, 1)))
    assert Explainer(net).backprop(mx.nd.zeros((1, 3, 5, 5))).output.shape == (1, 3)
    with pytest.raises(ValueError, match=r"the input is 4 x 9 pixels.*it takes 5 x 5"):
        Explainer(net).backprop(mx.nd.zeros((1, 3, 4, 9)))  # initialized now: MXNet's own error, explained


def test_the_index_in_parquet_has_the_csv_rows_typed(reference):
    pytest.importorskip('pyarrow', reason='Parquet is written only where pyarrow is installed')
    import pandas as pd
    assert dataset_run.write_parquet(str(reference)) == os.path.join(str(reference), 'index.parquet')
    table = pd.read_parquet(reference / 'index.parquet')
    rows = index_rows(reference)
    assert list(table.columns) == list(dataset_run.COLUMNS) and len(table) == len(rows)
    assert str(table['predicted_class'].dtype) == 'Int64' and table['probability'].dtype == np.float64
    for got, row in zip(table.to_dict('records'), rows):
        assert got['image'] == row['image'] and got['method'] == row['method'] and got['map'] == row['map']
        assert (pd.isna(got['label']) and row['label'] == '') or got['label'] == int(row['label'])
