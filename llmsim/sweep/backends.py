"""Where sweep points run: in this process, on a local process pool, or on Ray.

A backend is a context manager whose ``imap_unordered(fn, items)`` yields ``(item,
fn(item))`` as each finishes (any order); ``fn`` must be an importable module-level
function and ``items`` picklable. At most ``2 x workers`` items are in flight, so a sweep of
many points never queues them all at once. Chosen through :data:`BACKENDS`, one mapping.

* ``serial``: one after the other, in this process (no start-up cost; the reference).
* ``local``: :class:`concurrent.futures.ProcessPoolExecutor` with the ``forkserver`` start
  method and llmsim's replay modules preloaded in the server, so each worker starts from a
  process that has imported them once (no fork of a driver holding threads; no re-import
  per worker). Default ``workers``: the CPUs this process may run on.
* ``ray``: one Ray task per point (``num_cpus=1``, no retries: a point is deterministic).
  Without ``address`` a local Ray instance of ``workers`` CPUs is started (no dashboard)
  and shut down at the end; with ``address`` (``ray://host:10001``, ``host:6379`` or
  ``auto``) an existing cluster is joined. Workers there need llmsim installed and must see
  the experiment's files at the same paths (a shared filesystem); ``LLMSIM_DATA_DIR`` is
  passed to them when set here. Needs the ``ray`` package (in the ``dev`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, TypeVar

from llmsim.errors import ConfigError, LlmsimError

__all__ = ["BACKENDS", "Backend", "BackendKind", "default_workers", "open_backend"]

T = TypeVar("T")
R = TypeVar("R")

_PRELOAD = ["llmsim.sweep.point", "llmsim.replay", "llmsim.api", "llmsim.trace.llmservingsim"]
"""Modules the forkserver imports once (the replay stack: pandas, numpy, pydantic)."""


class BackendKind(StrEnum):
    """Backend names of ``llmsim sweep --backend``."""

    LOCAL = "local"
    RAY = "ray"
    SERIAL = "serial"


class Backend(Protocol):
    """Runs ``fn`` over items; see the module doc."""

    workers: int

    def __enter__(self) -> Backend: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def imap_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        ...


def default_workers() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class SerialBackend:
    """Items one after the other in this process."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if address is not None:
            raise ConfigError("--address applies to the ray backend only", field="--address")
        self.workers = 1

    def __enter__(self) -> SerialBackend:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def imap_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, fn(item)


class PoolBackend:
    """A local process pool (forkserver, replay modules preloaded)."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if address is not None:
            raise ConfigError("--address applies to the ray backend only", field="--address")
        self.workers = workers or default_workers()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> PoolBackend:
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pool is not None:
            # on an error or Ctrl-C: drop what has not started, don't wait for the rest
            self._pool.shutdown(wait=kind is None, cancel_futures=True)
            self._pool = None

    def imap_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        if self._pool is None:
            raise RuntimeError("use the backend as a context manager")
        pool = self._pool
        todo = iter(items)
        pending: dict[Future[R], T] = {}

        def fill() -> None:
            while len(pending) < 2 * self.workers:
                item = next(todo, _END)
                if item is _END:
                    return
                pending[pool.submit(fn, item)] = item

        try:
            fill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    yield item, fut.result()
                fill()
        finally:
            for fut in pending:
                fut.cancel()


_END: Any = object()


class RayBackend:
    """One Ray task per item, on a local Ray instance or an existing cluster."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("the ray backend needs the ray package: pip install ray "
                              "(or pip install -e '.[dev]')", field="--backend") from None
        self.address = address
        self.workers = workers or default_workers()
        self._started = False

    def __enter__(self) -> RayBackend:
        import ray

        if not ray.is_initialized():
            env = {k: os.environ[k] for k in ("LLMSIM_DATA_DIR",) if k in os.environ}
            runtime_env = {"env_vars": env} if env else None
            if self.address is None:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         runtime_env=runtime_env)
            else:
                ray.init(address=self.address, log_to_driver=False, runtime_env=runtime_env)
                cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
                self.workers = max(1, int(cpus))
            self._started = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def imap_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        import ray

        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        todo = iter(items)
        pending: dict[Any, T] = {}

        def fill() -> None:
            while len(pending) < 2 * self.workers:
                item = next(todo, _END)
                if item is _END:
                    return
                pending[remote.remote(item)] = item

        try:
            fill()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    item = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, LlmsimError):  # the task's own error, unwrapped
                            raise cause from None
                        raise
                    yield item, value
                fill()
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


BACKENDS: dict[BackendKind, type[SerialBackend | PoolBackend | RayBackend]] = {
    BackendKind.LOCAL: PoolBackend,
    BackendKind.RAY: RayBackend,
    BackendKind.SERIAL: SerialBackend,
}


def open_backend(kind: BackendKind | str, *, workers: int | None = None,
                 address: str | None = None) -> SerialBackend | PoolBackend | RayBackend:
    """The backend ``kind`` (not started: use it in a ``with`` block).

    Raises:
        ConfigError: an unknown kind, ``workers`` < 1, ``address`` without ``ray``, or ray
            not installed.
    """
    try:
        name = BackendKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in BackendKind)
        raise ConfigError(f"unknown backend {kind!r} (known: {known})", field="--backend") from None
    if workers is not None and workers < 1:
        raise ConfigError(f"must be >= 1, got {workers}", field="--workers")
    return BACKENDS[name](workers, address)
