"""One lock for the MXNet work of every thread.

MXNet 1.x's Python front end is not thread-safe: operations pushed from two threads at once can deadlock its
engine or crash the process. Measured with mxnet 1.9.1 (pip, CPU) and no gluoncam code: four threads each running
a small CNN's forward pass deadlocked within a few hundred rounds, and four threads recording autograd crashed
("The any container is empty"); with the pushes serialized, 1,000 rounds of each ran clean, waiting for the
results (``asnumpy``) outside the lock.

Every public gluoncam function that runs MXNet holds :data:`lock` for the whole call, so that explanations in
several threads run one after the other, each as if it were alone. Code of your own that runs MXNet in a thread
beside gluoncam's should hold it too::

    with gluoncam.threads.lock:
        probabilities = net(x).softmax()
"""
import functools
import threading
from typing import Callable, TypeVar

__all__ = ['lock', 'serialized']

lock = threading.RLock()

Function = TypeVar('Function', bound=Callable)


def serialized(function: Function) -> Function:
    """``function``, holding :data:`lock` while it runs."""
    @functools.wraps(function)
    def holding_the_lock(*args, **kwargs):
        with lock:
            return function(*args, **kwargs)
    return holding_the_lock  # type: ignore[return-value]
