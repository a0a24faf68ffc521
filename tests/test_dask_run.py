"""``gluoncam explain --dask``: a LocalCluster of 2 worker processes gives the single-process run's outputs and
index, and a worker killed mid-run loses no image."""
import csv
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from gluoncam.cli import main

distributed = pytest.importorskip('dask.distributed', reason="Dask is optional: pip install 'gluoncam[dask]'")

PHOTOS = os.path.join(os.path.dirname(__file__), '..', 'data', 'images')
SMALL = ['--model', 'mobilenetv2_0.25', '--random-weights', '--size', '64', '--method', 'gradcam,saliency',
         '--batch-size', '1']
IGNORED = ('seconds', 'context', 'worker')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """6 images in a class folder and another, one unreadable file."""
    root = tmp_path_factory.mktemp('images')
    for folder in ('jellyfish', 'other'):
        (root / folder).mkdir()
        for name in ('jellyfish.jpg', 'volcano.jpg', 'hummingbird.jpg'):
            shutil.copy(os.path.join(PHOTOS, name), root / folder / name)
    (root / 'other' / 'broken.jpg').write_bytes(b'not a jpeg')
    return root


@pytest.fixture(scope='module')
def reference(images, tmp_path_factory):
    """The single-process run."""
    out = tmp_path_factory.mktemp('reference')
    assert main(['explain', str(images), *SMALL, '--out', str(out)]) == 1
    return out


@pytest.fixture(scope='module')
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as local:
        with distributed.Client(local) as client:
            client.wait_for_workers(2, timeout=120)
            yield local, client


def rows_of(out):
    with open(os.path.join(out, 'index.csv'), newline='') as file:
        return list(csv.DictReader(file))


def assert_same_run(out, expected):
    got, want = rows_of(out), rows_of(expected)
    assert len(got) == len(want) == 7 * 2
    for row, reference in zip(got, want):
        assert abs(float(row.pop('probability') or 0) - float(reference.pop('probability') or 0)) < 1e-5
        assert {k: v for k, v in row.items() if k not in IGNORED} == \
            {k: v for k, v in reference.items() if k not in IGNORED}
    for row in want:
        if row['map']:
            np.testing.assert_allclose(np.load(os.path.join(out, row['map'])),
                                       np.load(os.path.join(expected, row['map'])), rtol=1e-5, atol=1e-7)
            assert os.path.getsize(os.path.join(out, row['panel'])) > 1000


def test_two_workers_give_the_single_process_run(images, reference, cluster, tmp_path, capsys):
    local, _ = cluster
    out = tmp_path / 'out'
    assert main(['explain', str(images), *SMALL, '--out', str(out), '--dask', local.scheduler_address]) == 1
    assert_same_run(out, reference)
    workers = {row['worker'] for row in rows_of(out) if row['status'] == 'ok'}
    assert workers == set(local.scheduler_info['workers'])  # both did their share
    assert f"on Dask cluster {local.scheduler_address}" in capsys.readouterr().out


def test_a_worker_killed_mid_run_loses_no_image(images, reference, cluster, tmp_path):
    local, client = cluster
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    out = tmp_path / 'out'
    killed = []

    def kill_after_the_first_image():
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / 'index.csv').exists() and len(rows_of(out)) >= 2:
                os.kill(pids[victim], signal.SIGKILL)
                killed.append(len(rows_of(out)))
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_the_first_image)
    killer.start()
    assert main(['explain', str(images), *SMALL, '--out', str(out), '--dask', local.scheduler_address]) == 1
    killer.join()
    assert killed and killed[0] < 14, 'the worker was not killed mid-run'
    assert_same_run(out, reference)
    assert not [name for name in os.listdir(out / 'other') if name.endswith('.partial')]
