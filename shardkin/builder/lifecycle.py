"""The processes of a build end with their builder, however the builder ends.

- **SIGKILL** (``kill -9``, the OOM killer) runs no code in the builder, so its workers
  must be told by the kernel: each worker asks Linux for SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, :func:`worker_init`). A signal from the kernel ends a
  worker wherever it is, also deep in FFmpeg's C code holding the GIL, where no Python
  watchdog thread or signal handler could run; and it ends an idle worker that waits
  for its next task on a pipe whose write end it holds itself (inherited by ``fork``),
  which would otherwise wait forever.
- **Publishing**: a worker checks that its builder is still its parent right before it
  renames a finished shard into place (:func:`builder_alive`), so a shard is never
  published for a builder that died (the check covers systems without the death signal,
  and the signal covers the instant after the check).
- **SIGTERM** (a scheduler's stop) and **SIGINT** (Ctrl-C) raise :class:`BuildInterrupted`
  in the builder (:func:`stop_on_signals`); the executors then kill their workers at
  once (:func:`kill_workers`) rather than wait for shards being decoded, the pipeline
  removes half-written shards, and the lock is released on the way out. Workers ignore
  SIGINT: Ctrl-C in a terminal reaches the whole process group, and the builder alone
  decides what happens.

Workers stay in the builder's process group, so a scheduler that signals the group
reaches them directly too. This works with the ``fork`` and ``spawn`` start methods:
either way the builder is the worker's parent.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_builder_pid: int | None = None  # set in worker processes only


class BuildInterrupted(KeyboardInterrupt):
    """The build was stopped by a signal; ``signum`` says which (SIGINT or SIGTERM).

    A ``KeyboardInterrupt``, so that SIGTERM ends a build the way Ctrl-C does and no
    ``except Exception`` takes it for an error of the build."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent ends (elsewhere the check of
    :func:`builder_alive` remains)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def worker_init(builder_pid: int, then: Any = None, *args: Any) -> None:
    """Initializer of a builder's worker process (see the module's docstring); calls
    ``then(*args)`` after."""
    global _builder_pid
    _builder_pid = builder_pid
    _die_with_parent()
    if os.getppid() != builder_pid:  # the builder died before the request took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # fork copies the builder's handler
    if then is not None:
        then(*args)


def builder_alive() -> bool:
    """False in a worker whose builder has died (True outside workers: in the builder
    itself, or on Ray, whose workers end with their driver's job)."""
    return _builder_pid is None or os.getppid() == _builder_pid


def kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill ``pool``'s worker processes now, then let the pool go: an interrupted or failed
    build does not wait for the shards its workers are decoding."""
    kill = getattr(pool, "kill_workers", None)  # Python 3.14+
    if kill is not None:
        kill()
    else:  # before 3.14 the pool's processes are only in its _processes
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


_ours: set[int] = set()  # the signals whose handler stop_on_signals installed
_received: list[int] = []  # the signals _interrupt turned into BuildInterrupted


def _interrupt(signum: int, frame: Any) -> None:
    for sig in _ours:  # once: further signals must not break the clean-up
        signal.signal(sig, signal.SIG_IGN)
    _received.append(signum)
    raise BuildInterrupted(signum)


def stopping_signal(error: KeyboardInterrupt) -> int:
    """The signal that stopped a build with ``error``: Ray's ``wait`` replaces the
    exception a signal handler raises with a plain KeyboardInterrupt."""
    if isinstance(error, BuildInterrupted):
        return error.signum
    return _received[-1] if _received else signal.SIGINT


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`BuildInterrupted` (once; later
    ones are ignored while the build cleans up). Only where they have Python's default
    handlers and in the main thread (elsewhere signals cannot be handled): a program that
    set its own handlers keeps them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    saved = {sig: signal.getsignal(sig) for sig, default in defaults.items()
             if signal.getsignal(sig) is default}
    if saved:
        _received.clear()
    for sig in saved:
        signal.signal(sig, _interrupt)
        _ours.add(sig)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
            _ours.discard(sig)


@contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """The SIGTERM and SIGINT handlers as they were before the block (in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
