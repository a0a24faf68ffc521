"""``gluoncam explain --dask ADDRESS``: the dataset run's batches as tasks of a Dask distributed cluster.

Each worker process loads the model once (a copy cached by the options that shape it) and explains the batches
it is given, writing the panels and maps straight into OUT (a path every worker must reach, as it must reach the
images: a shared disk); the client appends each batch's index rows as its task completes. A worker lost
mid-run costs nothing but time: Dask runs its unfinished tasks again on the others, and every file is written
whole under a temporary name before it is renamed into place.

Dask is optional (``pip install 'gluoncam[dask]'``); without ``--dask`` nothing of it is imported.
"""
import argparse
import os
from dataclasses import replace
from typing import Callable, Dict, List, Sequence, Tuple

from . import cli, threads
from .dataset_run import Item, Model, Outcome, batches, explain_batch, load_copy, read_batch

_MODELS: Dict[Tuple, Model] = {}  # in each worker process: its model copies, by the options that shape them
MODEL_OPTIONS = ('model', 'params', 'random_weights', 'root', 'size', 'layer', 'ctx', 'task', 'method', 'class_id',
                 'keypoint', 'min_score', 'top_k', 'batch_size')


def client_for(address: str):
    """A Client of the cluster at ``address``, or of a new local one for ``'local'`` / ``'local:N'`` (N worker
    processes of one thread each); the cluster to close afterwards, or None."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise RuntimeError("--dask needs Dask's distributed scheduler: pip install 'gluoncam[dask]' (or "
                           "'dask[distributed]')") from None
    if address == 'local' or address.startswith('local:'):
        count = address.partition(':')[2] or '2'
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--dask {address!r}: expected 'local:N' with N worker processes, e.g. local:2")
        cluster = LocalCluster(n_workers=int(count), threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=30), None
    except (OSError, TimeoutError) as error:
        raise RuntimeError(f"--dask {address!r}: cannot reach the Dask scheduler ({error})") from None


def run_on_dask(args: argparse.Namespace, address: str, todo: Sequence[Item],
                consume: Callable[[List[Outcome]], None]) -> None:
    """Explain ``todo`` on the cluster at ``address``, a task per batch; ``consume`` gets each batch's outcomes as
    its task completes (in this process). Paths travel absolute: the workers' working folders may differ."""
    from dask.distributed import as_completed
    client, cluster = client_for(address)
    out = os.path.abspath(args.out)
    shipped = argparse.Namespace(**{key: getattr(args, key, None) for key in MODEL_OPTIONS})
    shipped.params = shipped.params and os.path.abspath(shipped.params)
    shipped.root = shipped.root and os.path.abspath(shipped.root)
    try:
        futures = [client.submit(explain_task, shipped, out, [replace(item, path=os.path.abspath(item.path))
                                                              for item in batch], pure=False)
                   for batch in batches(todo, args.batch_size)]
        for future in as_completed(futures, loop=client.loop):  # default_client() may be another Client
            consume(future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def explain_task(args: argparse.Namespace, out: str, items: Sequence[Item]) -> List[Outcome]:
    """One batch, on a worker: decoded, explained and written by the worker's copy of the model."""
    from dask.distributed import get_worker
    model = worker_model(args)
    read, x = read_batch(model, items)
    return explain_batch(model, out, read, x, worker=get_worker().address)


def worker_model(args: argparse.Namespace) -> Model:
    """This process's copy of the model the options ask for, loaded at its first task (on the first --ctx)."""
    key = tuple(repr(getattr(args, option, None)) for option in MODEL_OPTIONS)
    with threads.lock:  # loading runs MXNet, and the dict is shared by the worker's threads
        if key not in _MODELS:
            context = cli.parse_contexts(args.ctx)[0]
            _MODELS[key] = load_copy(args, context)
        return _MODELS[key]
