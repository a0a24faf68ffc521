"""Methods scored by metrics (gluoncam.evaluation) and ``gluoncam evaluate``: rows, win %, bootstrap summary,
figures, and the command's outputs and errors."""
import csv
import os

import numpy as np
import pytest
from mxnet import nd

from gluoncam import evaluation
from gluoncam.cli import main
from gluoncam.evaluation import Row
from gluoncam.metrics import METRICS

from conftest import parameters_untouched
from test_methods_catalog import LAYER, tiny_net

PHOTOS = os.path.join(os.path.dirname(__file__), '..', 'data', 'images')
PHOTO = os.path.join(PHOTOS, 'jellyfish.jpg')


def test_win_goes_to_the_lowest_drop_and_ties_are_split():
    rows = [Row('a', 'm1', 'average_drop', 10.0, 0), Row('a', 'm2', 'average_drop', 5.0, 0),
            Row('a', 'm3', 'average_drop', 7.0, 0), Row('b', 'm1', 'average_drop', 0.0, 1),
            Row('b', 'm2', 'average_drop', 0.0, 1), Row('b', 'm3', 'average_drop', 3.0, 1),
            Row('b', 'm1', 'deletion_auc', 0.3, 1)]
    won = {(row.image, row.method): row.score for row in evaluation.win_rows(rows)}
    assert won == {('a', 'm1'): 0, ('a', 'm2'): 100, ('a', 'm3'): 0, ('b', 'm1'): 50, ('b', 'm2'): 50, ('b', 'm3'): 0}
    assert evaluation.win_rows([Row('a', 'm1', 'average_drop', 1.0, 0)]) == []  # one method: nothing to win


def test_statistics_bootstrap_and_best_by_direction():
    rows = [Row(str(i), 'good', 'deletion_auc', v, 0) for i, v in enumerate([0.1, 0.2, 0.3])]
    rows += [Row(str(i), 'bad', 'deletion_auc', v, 0) for i, v in enumerate([0.5, 0.6, 0.7])]
    rows += [Row('0', 'good', 'insertion_auc', 0.9, 0), Row('0', 'bad', 'insertion_auc', 0.4, 0)]
    stats = evaluation.statistics(rows)
    mean, low, high, count = stats['deletion_auc']['good']
    assert mean == pytest.approx(0.2) and count == 3 and 0.1 <= low <= mean <= high <= 0.3
    assert stats['insertion_auc']['bad'][:3] == pytest.approx((0.4, 0.4, 0.4))  # one image: no spread
    assert evaluation.best_methods(stats) == {'deletion_auc': ['good'], 'insertion_auc': ['good']}
    table = evaluation.summary(rows)
    assert '| good | **0.2 [' in table and 'deletion_auc (lower is better)' in table and 'nan' not in table.lower()
    assert evaluation.statistics(rows, seed=3) == evaluation.statistics(rows, seed=3)


def test_evaluate_scores_every_method_by_every_metric(tmp_path):
    net = tiny_net()
    x = nd.array(np.random.default_rng(0).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32))
    net(x)
    names = ['a', 'b', 'c']
    boxes = {name: [[2, 2, 10, 10]] for name in names}
    metrics = list(METRICS)
    with parameters_untouched(net):
        found = evaluation.evaluate(net, [(names[:2], x[:2]), (names[2:], x[2:])], ['gradcam', 'random'], metrics,
                                    LAYER, batch_size=8, steps=4, boxes=boxes)
    values = [value for metric in metrics for value in METRICS[metric].better]
    assert len(found.rows) == 3 * 2 * (len(values) + 1)  # + win
    assert all(np.isfinite(row.score) for row in found.rows)
    assert {row.value for row in found.rows} == set(values) | {'win'}
    assert set(found.curves) == {'gradcam', 'random'} and found.curves['gradcam']['deletion'][0].shape == (2, 5)
    assert set(found.randomized) == {'gradcam', 'random'} and found.randomized_images == ['a', 'b']
    assert found.images == 3 and set(found.seconds) == {(m, part) for m in ('gradcam', 'random')
                                                        for part in ['maps'] + metrics}
    assert found.timing().splitlines()[0] == '| seconds per image | maps | ' + ' | '.join(metrics) + ' |'
    # the random map ignores the network: the randomization test cannot tell it apart from the trained map
    assert all(row.score == pytest.approx(1) for row in found.rows
               if row.method == 'random' and row.value == 'randomization_spearman_abs')
    paths = evaluation.save_figures(found, str(tmp_path / 'figure'))
    assert [os.path.basename(p) for p in paths] == ['figure_curves.png', 'figure_metrics.png',
                                                    'figure_randomization.png']
    assert all(os.path.getsize(p) > 5000 for p in paths)


def test_the_pointing_games_need_boxes():
    net = tiny_net()
    x = nd.ones((1, 3, 16, 16))
    with pytest.raises(ValueError, match="need the objects' boxes of every image; none for 'a'"):
        evaluation.evaluate(net, [(['a'], x)], ['random'], ['pointing'], LAYER)


def test_the_command_writes_results_summary_and_figures(tmp_path, capsys):
    boxes = tmp_path / 'boxes.csv'
    boxes.write_text('image,x1,y1,x2,y2\njellyfish.jpg,100,50,400,300\n')
    out = tmp_path / 'eval'
    code = main(['evaluate', PHOTO, '--root', str(tmp_path / 'models'), '--methods', 'gradcam,random',
                 '--metrics', 'deletion,confidence,pointing', '--steps', '5', '--boxes', str(boxes),
                 '--out', str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(os.listdir(out)) == ['figure_curves.png', 'figure_metrics.png', 'results.csv', 'summary.md']
    with open(out / 'results.csv') as results:
        rows = list(csv.DictReader(results))
    assert {row['method'] for row in rows} == {'gradcam', 'random'}
    assert {row['metric'] for row in rows} == {'deletion_auc', 'average_drop', 'increase_in_confidence',
                                               'confidence_change', 'pointing_game', 'energy_pointing_game', 'win'}
    assert all(row['image'] == PHOTO and row['explained_class'] == '107' for row in rows)
    assert (out / 'summary.md').read_text() in captured.out


@pytest.mark.parametrize('argv, message', [
    (['--metrics', 'nope'], "unknown metric 'nope'; valid: deletion, insertion"),
    (['--methods', 'gradcam,nope'], "unknown method 'nope'; valid: gradcam"),
    (['--metrics', 'pointing'], "needs the objects' boxes: pass --boxes CSV"),
    (['--steps', '0'], "--steps must be at least 1"),
])
def test_command_errors(tmp_path, capsys, argv, message):
    assert main(['evaluate', PHOTO, '--out', str(tmp_path)] + argv) == 2
    assert message in capsys.readouterr().err
