"""Run shard tasks: on local worker processes or on a Ray cluster, with one signature.

An executor calls ``fn(task, decode_threads=..., **kwargs)`` for each task and yields
``(task, result, error)`` as tasks finish; a task that raises, or whose process dies,
is tried ``retries`` more times before its error is yielded, and the others finish.
Locally a video whose process dies twice is then skipped (:func:`run_local`: ``fn`` is
passed ``skip``); on Ray, Ray retries a task whose worker died.
An error retrying cannot fix (a full disk, a refused permission: :func:`is_permanent`)
is yielded at once as a :class:`PermanentError`, untried again. ``on_progress(clips,
bytes)`` is called once per video, also when its shard is tried again.
:data:`EXECUTORS` names them.

With Ray (``--executor ray``) the plan is still made once on the driver, its probes run
as Ray tasks (:func:`map_ray`, an ordered map with few tasks in flight); each shard task
names its input videos (under a ROOT every node can read: a bucket or a shared file
system) and writes its shard straight to the output folder or URL. shardkin must be
installed on every node; Ray is imported only when it is used.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..format.options import ExecutionOptions
from .errors import BuildError, PermanentError, WorkerDied, is_permanent
from .lifecycle import keep_signal_handlers, kill_workers, worker_init

Progress = Callable[[int, int], None]  # (clips, bytes) after each video
Outcome = tuple[Any, Any, BaseException | None]  # (task, result, error)
Executor = Callable[..., Iterator[Outcome]]
RAY_INSTALL_HINT = "the Ray executor needs Ray: pip install 'shardkin[ray]'"

_progress_queue: Any = None


def local_workers(execution: ExecutionOptions) -> int:
    """Worker processes of a local build: ``workers``, or one per core."""
    return execution.workers or os.cpu_count() or 1


def map_processes(fn: Callable, items: Iterable, workers: int, chunksize: int = 8) -> Iterator:
    """``map(fn, items)`` over worker processes, in order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = _pool(workers, mp.get_context(start_method()))
    done = False
    try:
        yield from pool.map(fn, items, chunksize=chunksize)
        done = True
    finally:
        if done:
            pool.shutdown()
        else:  # interrupted, or the caller stopped early
            kill_workers(pool)


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
    def report(clips: int, nbytes: int) -> None:
        _progress_queue.put((task["name"], run, clips, nbytes))

    return _attempt(fn, task, progress=report, **kwargs)


def _attempt(fn: Callable, task: Any, **kwargs: Any) -> Any:
    """``fn(task, **kwargs)``; an error retrying cannot fix is returned, not raised, so
    that no executor retries it."""
    try:
        return fn(task, **kwargs)
    except OSError as e:
        if is_permanent(e):
            return PermanentError(f"{type(e).__name__}: {e}")
        raise


class _Videos:
    """Progress of tasks that may run more than once: each video counts once (a video
    of a later attempt counts only past where earlier attempts got)."""

    def __init__(self, on_progress: Progress) -> None:
        self._on_progress = on_progress
        self._shown: dict[str, int] = {}
        self._now: dict[tuple[str, int], int] = {}  # videos so far of (task, run)

    def __call__(self, name: str, run: int, clips: int, nbytes: int) -> None:
        now = self._now[name, run] = self.reported(name, run) + 1
        if now > self._shown.get(name, 0):
            self._shown[name] = now
            self._on_progress(clips, nbytes)

    def reported(self, name: str, run: int) -> int:
        """How many videos run ``run`` of task ``name`` has reported."""
        return self._now.get((name, run), 0)


class _Tries:
    """A task's runs so far, those that failed (each counted against ``retries``), and the
    videos its process died at (after reporting as many): a process that dies twice at
    the same video has that video skipped in later runs (``skip``: its position in the
    task, and how the process died), a run not counted as failed."""

    def __init__(self) -> None:
        self.runs = self.failed = 0
        self.died_at: set[int] = set()
        self.skip: dict[int, str] = {}

    def died(self, at: int, how: str) -> bool:
        """Whether dying at video ``at`` (again) makes it one to skip."""
        if at in self.died_at and at not in self.skip:
            self.skip[at] = how
            return True
        self.died_at.add(at)
        return False


class _Worker:
    """One worker process, a pool of its own: a process that dies (the OOM killer, a crash
    in a decoder) takes down only the task it ran, which is thus known, while the other
    workers' shards go on. Its progress queue is a SimpleQueue, written in the task's
    thread: a video's progress is in the pipe before its task's result."""

    def __init__(self, ctx: Any) -> None:
        self.queue = ctx.SimpleQueue()
        self.pool = _pool(1, ctx, _init, self.queue)

    def drain(self, videos: _Videos) -> None:
        while not self.queue.empty():
            videos(*self.queue.get())

    def close(self, videos: _Videos, kill: bool = False) -> None:
        """Shut down the process (idle, or dead), or ``kill`` it: the build was interrupted,
        or its caller stopped, and its shard is not awaited."""
        if kill:
            kill_workers(self.pool)
        else:
            self.pool.shutdown(cancel_futures=True)
        self.drain(videos)
        self.queue.close()

    def died(self, videos: _Videos) -> WorkerDied:
        """The error of a task whose process died, saying how it died."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.close(videos)  # the dead process is reaped
        codes = [p.exitcode for p in processes if p.exitcode]
        return WorkerDied(_exit(codes[0]) if codes else "")


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
    built."""
    workers = local_workers(execution)
    kwargs["decode_threads"] = execution.decode_threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context(start_method())
    videos = _Videos(on_progress)
    todo = deque(tasks)
    tries = {id(t): _Tries() for t in tasks}
    idle: list[_Worker] = []
    running: dict[Future, tuple[Any, _Worker]] = {}
    finished = False
    try:
        while todo or running:
            while todo and len(running) < workers:
                task = todo.popleft()
                worker, t = idle.pop() if idle else _Worker(ctx), tries[id(task)]
                t.runs += 1  # progress is told apart by run
                args = {**kwargs, "skip": dict(t.skip)} if t.skip else kwargs
                running[worker.pool.submit(_call, fn, task, t.runs, args)] = task, worker
            done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                task, worker = running.pop(fut)
                t = tries[id(task)]
                worker.drain(videos)
                error: BaseException | None = fut.exception()
                if isinstance(error, BrokenProcessPool):
                    error = worker.died(videos)
                    if t.died(videos.reported(task["name"], t.runs), error.how):
                        todo.append(task)
                        continue
                else:
                    idle.append(worker)
                if error is None and isinstance(fut.result(), PermanentError):
                    yield task, None, fut.result()
                elif error is None:
                    yield task, fut.result(), None
                elif t.failed < retries:
                    t.failed += 1
                    todo.append(task)
                else:
                    yield task, None, error
            for _, worker in running.values():
                worker.drain(videos)
        finished = True
    finally:
        for worker in idle:
            worker.close(videos)
        for _, worker in running.values():
            worker.close(videos, kill=not finished)


def connect_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join ``address`` ("auto", "HOST:PORT", "ray://HOST:PORT") or the cluster named by
    ``RAY_ADDRESS``; with neither, start a local Ray of ``num_cpus`` (default: all cores)
    that ends with this process, however it ends (:mod:`.localray`)."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_INSTALL_HINT) from None
    if ray.is_initialized():
        return
    with keep_signal_handlers():  # ray.init sets its own for SIGTERM (documented)
        if address is None and not os.environ.get("RAY_ADDRESS"):
            from . import localray

            temp = localray.start(num_cpus or os.cpu_count() or 1)
            ray.init(log_to_driver=False, _temp_dir=temp)  # found there
        else:
            ray.init(address=address, log_to_driver=False)


def _apply(fn: Callable, item: Any) -> Any:
    return fn(item)


def map_ray(fn: Callable, items: Iterable, execution: ExecutionOptions,
            retries: int = 2) -> Iterator:
    """``map(fn, items)`` as Ray tasks of one CPU each on the cluster at ``ray_address``, in
    order; at most two tasks a CPU in flight, so that the driver holds few items and
    results at once (probing a Kinetics-700-sized split)."""
    connect_ray(execution.ray_address, execution.workers)  # the build's own cluster, if local
    import ray

    remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(_apply)
    ahead = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: deque = deque()

    def result() -> Any:
        try:
            return ray.get(pending.popleft())
        except Exception as e:  # noqa: BLE001 - RayTaskError wraps the task's exception
            cause = getattr(e, "cause", None) or e
            raise BuildError(f"a Ray task failed {retries + 1} times: {type(cause).__name__}: "
                             f"{cause} (is shardkin installed on every node, with its "
                             "extras for ROOT's store?)") from None

    try:
        for item in items:
            pending.append(remote.remote(fn, item))
            if len(pending) >= ahead:
                yield result()
        while pending:
            yield result()
    finally:  # stopped early (an error, Ctrl-C): no probe left running on the cluster
        for ref in pending:
            ray.cancel(ref, force=True)


def run_ray(fn: Callable, tasks: list, on_progress: Progress, execution: ExecutionOptions,
            retries: int = 2, **kwargs: Any) -> Iterator[Outcome]:
    """Run the tasks on the Ray cluster at ``ray_address``, one CPU and ``decode_threads``
    (default 1) each; progress is reported per finished shard, video by video. Tasks are
    submitted as others finish, four a CPU ahead: the driver holds few at once (a
    Kinetics-700 build has 40k shards), and each wait looks at few."""
    connect_ray(execution.ray_address, execution.workers)
    import ray

    kwargs["decode_threads"] = execution.decode_threads or 1
    remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(_attempt)
    pending: dict = {}
    try:
        yield from _ray_outcomes(ray, remote, fn, tasks, kwargs, pending, on_progress)
    finally:  # interrupted, or the caller stopped: the running tasks are stopped too
        for ref in pending:
            ray.cancel(ref, force=True)


def _ray_outcomes(ray: Any, remote: Any, fn: Callable, tasks: list, kwargs: dict,
                  pending: dict, on_progress: Progress) -> Iterator[Outcome]:
    """The outcomes of the tasks as they finish, submitted four a CPU ahead (``pending``:
    refs to the tasks submitted and not finished)."""
    ahead = max(4, 4 * int(ray.cluster_resources().get("CPU", 1)))
    waiting = iter(tasks)
    while True:
        for task in itertools.islice(waiting, max(0, ahead - len(pending))):
            pending[remote.remote(fn, task, **kwargs)] = task
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            task = pending.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - reported to the caller
                cause = getattr(e, "cause", None)  # RayTaskError wraps the task's exception
                yield task, None, cause if isinstance(cause, BaseException) else e
                continue
            if isinstance(record, PermanentError):
                yield task, None, record
                continue
            for video in record["videos"]:
                on_progress(video["clips"], sum(sample[1] for sample in video["samples"]))
            yield task, record, None


EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}
