"""The one way GreenCert uses more cores of a machine: a standard process pool (``concurrent.futures``).

Used by the fleet-day run (``fleet.py``: bundles on workers) and by the fold of a large power
series (``compute/fold.py``: device shards on workers). Beyond one machine, parallelism is
Airflow's (mapped tasks on Celery or Kubernetes workers), never a protocol of our own.

* Workers come from a **fork server**, not ``fork``: an Airflow task process has threads, and a
  fork copies their locks in whatever state they are. The fork server is a fresh single-threaded
  process that imports the ``preload`` modules once; each worker is forked from it with them
  imported (spawned workers would import them each, about 2 s of CPU apiece).
* A **daemonic process** (a Celery worker's task) may not start processes, and a pool worker must
  not start a pool of its own (the machine's cores are already taken): there the same tasks run one
  after the other in the calling process (:class:`InThisProcess`), and the results are the same.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

_IN_WORKER = False


def mark_worker() -> None:
    """Pool initializer part: this process is a pool worker (it runs nested work in-process)."""
    global _IN_WORKER
    _IN_WORKER = True


def may_start_processes() -> bool:
    """Whether this process may start a pool: not a daemon (multiprocessing forbids it), not a worker."""
    return not multiprocessing.current_process().daemon and not _IN_WORKER


def process_pool(
    workers: int,
    preload: Sequence[str],
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` forked from the fork server (``preload`` applies when it starts first)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))  # no effect once the fork server runs
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start, initargs=(initializer, initargs)
    )


def _start(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    mark_worker()
    if initializer is not None:
        initializer(*initargs)


class InThisProcess(concurrent.futures.Executor):
    """An executor that runs each task at once, in this process (the pool's stand-in in a daemon)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # raised again by result(), as a pool's future does
            future.set_exception(exc)
        return future
