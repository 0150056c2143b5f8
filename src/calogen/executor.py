"""One executor abstraction: run a function over tasks in this process, a local process pool or on Dask.

``executor.map(fn, tasks, retries=r)`` yields ``fn(task)`` in task order whichever executor runs it,
with at most ``2 * workers`` tasks in flight (memory stays bounded when the consumer is slower), and
runs a task that raised again up to ``r`` times. Results never depend on the executor: callers give
every task its own seeds.

- :class:`SerialExecutor`: in this process (Ctrl-C acts at once).
- :class:`PoolExecutor`: ``workers`` spawned processes that leave Ctrl-C to the parent.
- :class:`DaskExecutor`: a Dask ``LocalCluster`` of ``workers`` processes, or the scheduler at
  ``scheduler`` (``tcp://host:8786``; a dask-jobqueue or Dask Gateway cluster's address). Dask is the
  optional extra ``calogen[dask]``, imported only here and only when used. The scheduler reruns the
  tasks of a worker that died; ``retries`` covers tasks that raised.

Example:
    >>> with make_executor("serial") as ex:
    ...     list(ex.map(abs, [-1, 2, -3]))
    [1, 2, 3]
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from calogen.errors import CalogenError

__all__ = ["DaskExecutor", "Executor", "ExecutorError", "PoolExecutor", "SerialExecutor", "make_executor"]

T = TypeVar("T")
R = TypeVar("R")
KINDS = ("serial", "pool", "dask")


class ExecutorError(CalogenError):
    """An executor cannot be set up: unknown kind, bad worker count, Dask missing or unreachable."""


class Executor(Protocol):
    """Runs ``fn`` over tasks and yields the results in task order."""

    kind: str
    workers: int

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, retries: int = 0) -> Iterator[R]:
        """``fn(task)`` for each task, in order; a task that raises is run again up to ``retries`` times."""
        ...

    def close(self) -> None:
        """Release workers (idempotent)."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def _call_with_retries(fn: Callable[[T], R], task: T, retries: int) -> R:
    """``fn(task)``, called again after an exception up to ``retries`` times; the last exception propagates."""
    for attempt in range(retries + 1):
        try:
            return fn(task)
        except Exception:
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


class _Closing:
    """Context-manager support: ``with executor: ...`` closes it."""

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(_Closing):
    """Runs every task in this process, one after another."""

    kind, workers = "serial", 1

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, retries: int = 0) -> Iterator[R]:
        """``fn(task)`` for each task, in order."""
        for task in tasks:
            yield _call_with_retries(fn, task, retries)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _ignore_sigint() -> None:
    """Pool initialiser: Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PoolExecutor(_Closing):
    """Runs tasks in ``workers`` spawned processes (one task alone runs in this process)."""

    kind = "pool"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ExecutorError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, retries: int = 0) -> Iterator[R]:
        """``fn(task)`` for each task, in order; Ctrl-C in the parent terminates the pool."""
        if self.workers == 1 or len(tasks) <= 1:
            yield from SerialExecutor().map(fn, tasks, retries=retries)
            return
        with _sigint_ignored():  # inherited by the new processes: Ctrl-C during their start-up is the parent's
            pool = multiprocessing.get_context("spawn").Pool(min(self.workers, len(tasks)), _ignore_sigint)
        try:
            todo = iter(tasks)
            submit = lambda t: pool.apply_async(_call_with_retries, (fn, t, retries))
            pending = collections.deque(submit(t) for t in _take(todo, 2 * self.workers))
            while pending:
                value = pending.popleft().get()
                pending.extend(submit(t) for t in _take(todo, 1))
                yield value
            pool.close()
        finally:
            pool.terminate()
            pool.join()


def _take(it: Iterator[T], n: int) -> list[T]:
    """The next ``n`` items of ``it`` (fewer at its end)."""
    return [x for _, x in zip(range(n), it, strict=False)]


class DaskExecutor(_Closing):
    """Runs tasks on Dask: a new ``LocalCluster`` of ``workers`` processes, or the scheduler at ``scheduler``.

    Args:
        scheduler: address of a running scheduler (``tcp://host:8786``), or None for a local cluster.
        workers: local cluster workers (ignored with ``scheduler``; in flight: twice the cluster's workers).
        processes: local workers are processes (True) or threads of this process (False).
        client: an existing ``distributed.Client`` to use instead (e.g. a Dask Gateway cluster's
            ``cluster.get_client()``, which carries its credentials); left open by :meth:`close`.
    """

    kind = "dask"

    def __init__(self, scheduler: str | None = None, workers: int = 2, *, processes: bool = True, client: Any = None) -> None:
        if workers < 1:
            raise ExecutorError(f"workers must be >= 1, got {workers}")
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ExecutorError("--executor dask needs Dask: pip install 'calogen[dask]' (dask[distributed])") from None
        self._cluster: Any = None
        self._own_client: Any = None
        logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.getLogger("distributed").level))
        if client is not None:
            self.client, self.workers = client, max(1, len(client.scheduler_info().get("workers", {})))
            return
        try:
            if scheduler is None:
                self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=":0")
                self.client = self._own_client = Client(self._cluster)
            else:
                self.client = self._own_client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ExecutorError(f"cannot reach the Dask scheduler {scheduler}: {exc}; check --scheduler") from None
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {}))) if scheduler else workers

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, retries: int = 0) -> Iterator[R]:
        """``fn(task)`` for each task, in order; the scheduler retries a task ``retries`` times and reruns lost ones."""
        todo = iter(tasks)
        submit = lambda t: self.client.submit(fn, t, retries=retries, pure=False)
        pending = collections.deque(submit(t) for t in _take(todo, 2 * self.workers))
        try:
            while pending:
                value = pending.popleft().result()
                pending.extend(submit(t) for t in _take(todo, 1))
                yield value
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Close the client and, if this executor started it, the local cluster."""
        for part in (self._own_client, self._cluster):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        self._cluster = self._own_client = None


def make_executor(kind: str | None = None, workers: int = 1, scheduler: str | None = None) -> Executor:
    """The executor ``kind`` (``serial``, ``pool``, ``dask``; None: ``pool`` if ``workers > 1`` else ``serial``)."""
    if kind is None:
        kind = "dask" if scheduler else "pool" if workers > 1 else "serial"
    if kind not in KINDS:
        raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(KINDS)}")
    if scheduler is not None and kind != "dask":
        raise ExecutorError(f"--scheduler applies to --executor dask, not {kind}; drop it or use --executor dask")
    if kind == "serial":
        if workers != 1:
            raise ExecutorError(f"--executor serial runs one worker, got --workers {workers}; drop --workers or use pool")
        return SerialExecutor()
    if kind == "pool":
        return PoolExecutor(workers)
    return DaskExecutor(scheduler, workers)
