"""The local executor: shard tasks on worker processes of this machine, each a pool of its
own (:func:`run_local`)."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..format.options import ExecutionOptions
from .errors import WorkerDied
from .lifecycle import kill_workers, worker_init
from .tasks import Outcome, Progress, Tries, Videos, attempt, settle, stop_reason

_progress_queue: Any = None


def local_workers(execution: ExecutionOptions) -> int:
    """Worker processes of a local build: ``workers``, or one per core."""
    return execution.workers or os.cpu_count() or 1


def start_method() -> str:
    """How worker processes start: fork (a worker starts in milliseconds with av and numpy
    already imported; the build itself starts no threads), but spawn in a process that
    joined Ray: a forked child cannot shut down the gRPC threads of Ray's client it
    inherits, and crashes when it frees that client."""
    ray = sys.modules.get("ray")
    joined = ray is not None and getattr(ray, "is_initialized", lambda: False)()
    return "fork" if "fork" in mp.get_all_start_methods() and not joined else "spawn"


def _pool(workers: int, context: Any, then: Callable | None = None,
          *args: Any) -> ProcessPoolExecutor:
    """Worker processes that end with the builder (:func:`.lifecycle.worker_init`), each
    calling ``then(*args)`` first."""
    return ProcessPoolExecutor(workers, mp_context=context, initializer=worker_init,
                               initargs=(os.getpid(), then, *args))


def _init(q: Any) -> None:
    global _progress_queue
    _progress_queue = q


def _call(fn: Callable, task: Any, run: int, kwargs: dict) -> Any:
    def report(clips: int | None, nbytes: int) -> None:
        _progress_queue.put((task["name"], run, clips, nbytes))

    return attempt(fn, task, progress=report, **kwargs)


class _Worker:
    """One worker process, a pool of its own: a process that dies (the OOM killer, a crash
    in a decoder) takes down only the task it ran, which is thus known, while the other
    workers' shards go on. Its progress queue is a SimpleQueue, written in the task's
    thread: a video's progress is in the pipe before its task's result."""

    def __init__(self, ctx: Any) -> None:
        self.queue = ctx.SimpleQueue()
        self.pool = _pool(1, ctx, _init, self.queue)
        self.since = time.monotonic()  # when its task started, or last reported (heartbeats too)
        self.stopped = ""  # why stop_if_stuck killed it

    def submit(self, *args: Any) -> Future:
        self.since = time.monotonic()
        return self.pool.submit(*args)

    def drain(self, videos: Videos) -> None:
        while not self.queue.empty():
            videos(*self.queue.get())
            self.since = time.monotonic()

    def stop_if_stuck(self, timeout: float | None) -> None:
        """Kill the process if it has gone more than ``timeout`` seconds without a report."""
        if timeout is not None and not self.stopped and time.monotonic() - self.since > timeout:
            self.stopped = stop_reason(timeout)
            kill_workers(self.pool)

    def close(self, videos: Videos, kill: bool = False) -> None:
        """Shut down the process (idle, or dead), or ``kill`` it: the build was interrupted,
        or its caller stopped, and its shard is not awaited."""
        if kill:
            kill_workers(self.pool)
        else:
            self.pool.shutdown(cancel_futures=True)
        self.drain(videos)
        self.queue.close()

    def died(self, videos: Videos) -> WorkerDied:
        """The error of a task whose process died, saying how it died."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.close(videos)  # the dead process is reaped
        codes = [p.exitcode for p in processes if p.exitcode]
        return WorkerDied(self.stopped or (_exit(codes[0]) if codes else ""))


def _exit(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal)."""
    if code >= 0:
        return f"exit status {code}"
    name = signal.Signals(-code).name
    return f"{name}: out of memory?" if -code == signal.SIGKILL else name


def run_local(fn: Callable, tasks: list, on_progress: Progress, execution: ExecutionOptions,
              retries: int = 2, **kwargs: Any) -> Iterator[Outcome]:
    """Run the tasks on ``workers`` local processes, ``decode_threads`` each (default:
    the cores shared out); a failed task is tried again after the others waiting, a
    task whose process died on a new process. A video whose process dies twice (a crash
    in its decoder, or out of memory) is passed to ``fn`` to be skipped (``skip``: its
    position in the task, and how the process died), so its shard's other videos are
    built. With ``video_timeout``, a process that goes longer without progress (no
    clip reported, heartbeats included: :func:`~.tasks.heartbeat`) is killed: that
    counts as its death."""
    workers = local_workers(execution)
    kwargs["decode_threads"] = execution.decode_threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context(start_method())
    videos = Videos(on_progress)
    todo = deque(tasks)
    tries = {id(t): Tries() for t in tasks}
    idle: list[_Worker] = []
    running: dict[Future, tuple[Any, _Worker]] = {}
    finished = False
    try:
        while todo or running:
            while todo and len(running) < workers:
                task = todo.popleft()
                worker = idle.pop() if idle else _Worker(ctx)
                t = tries[id(task)]
                args = t.next_run(kwargs)  # progress is told apart by run
                running[worker.submit(_call, fn, task, t.runs, args)] = task, worker
            done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                task, worker = running.pop(fut)
                worker.drain(videos)
                error: BaseException | None = fut.exception()
                if isinstance(error, BrokenProcessPool):
                    error = worker.died(videos)
                else:
                    idle.append(worker)
                outcome = settle(task, tries[id(task)], videos,
                                 None if error else fut.result(), error, retries)
                if outcome is None:
                    todo.append(task)
                else:
                    yield outcome
            for _, worker in running.values():
                worker.drain(videos)
                worker.stop_if_stuck(execution.video_timeout)
        finished = True
    finally:
        for worker in idle:
            worker.close(videos)
        for _, worker in running.values():
            worker.close(videos, kill=not finished)
