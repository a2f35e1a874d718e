"""The Ray executor: shard tasks and probes as Ray tasks on the cluster at ``ray_address``
(or a local one that ends with the build). The plan is still made once on the driver;
each shard task names its input videos (under a ROOT every node can read: a bucket or a
shared file system) and writes its shard straight to the output folder or URL. shardkin
must be installed on every node; Ray is imported only when it is used.

The driver, not Ray, retries a task, with the local executor's rules (:mod:`.tasks`):
each task reports every video it finishes to a small actor, so the driver knows which
video a worker that died was on (skipped after two deaths there) and which has gone
longer than ``video_timeout`` without progress, a clip or a heartbeat (stopped)."""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..format.options import ExecutionOptions
from .errors import WorkerDied
from .lifecycle import keep_signal_handlers
from .tasks import (
    Outcome,
    Progress,
    Tries,
    Videos,
    attempt,
    settle,
    stop_reason,
)

RAY_INSTALL_HINT = "the Ray executor needs Ray: pip install 'shardkin[ray]'"


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


def _error(ray: Any, error: BaseException, stopped: str | None = None) -> BaseException:
    """The error of a Ray task: :class:`WorkerDied` when its worker process died (or was
    ``stopped``, saying why), the task's own exception when it raised one."""
    if stopped:
        return WorkerDied(stopped)
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        return WorkerDied("killed by Ray's memory monitor: out of memory")
    if isinstance(error, ray.exceptions.WorkerCrashedError):
        return WorkerDied("its Ray worker crashed or was killed; its node's Ray logs say how")
    cause = getattr(error, "cause", None)  # RayTaskError wraps the task's exception
    return cause if isinstance(cause, BaseException) else error


class _Reports:
    """The progress the running tasks report, ``(task name, run, clips, bytes)`` (clips
    None: the run started, or a heartbeat), handed to the driver in batches: a Ray actor
    of no CPU."""

    def __init__(self) -> None:
        self.items: list[tuple] = []

    def put(self, item: tuple) -> None:
        self.items.append(item)

    def take(self) -> list[tuple]:
        items, self.items = self.items, []
        return items


def _call(fn: Callable, task: dict, run: int, reports: Any, kwargs: dict) -> Any:
    """One run of a task on a Ray worker, reporting to ``reports`` as it goes (each report
    awaited: what a worker reported before it died is known)."""
    import ray

    def report(clips: int | None, nbytes: int) -> None:
        ray.get(reports.put.remote((task["name"], run, clips, nbytes)))

    report(None, 0)  # started: it may have waited for a CPU
    return attempt(fn, task, progress=report, **kwargs)


def run_ray(fn: Callable, tasks: list, on_progress: Progress, execution: ExecutionOptions,
            retries: int = 2, **kwargs: Any) -> Iterator[Outcome]:
    """Run the tasks on the Ray cluster at ``ray_address``, one CPU and ``decode_threads``
    (default 1) each, with the local executor's retries, skips and ``video_timeout``
    (:func:`~.processes.run_local`); progress is reported video by video. Tasks are
    submitted as others finish, four a CPU ahead: the driver holds few at once (a
    Kinetics-700 build has 40k shards), and each wait looks at few."""
    connect_ray(execution.ray_address, execution.workers)
    import ray

    kwargs["decode_threads"] = execution.decode_threads or 1
    remote = ray.remote(num_cpus=1, max_retries=0)(_call)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    # on the driver's node (the head node for Ray Client): it ends only with the build
    reports = ray.remote(num_cpus=0, scheduling_strategy=here)(_Reports).remote()
    running: dict = {}  # ref -> task, of the tasks submitted and not finished
    try:
        yield from _ray_outcomes(ray, remote, reports, fn, tasks, kwargs, running,
                                 Videos(on_progress), execution.video_timeout, retries)
    finally:  # interrupted, or the caller stopped: the running tasks are stopped too
        for ref in running:
            ray.cancel(ref, force=True)
        ray.kill(reports)


def _ray_outcomes(ray: Any, remote: Any, reports: Any, fn: Callable, tasks: list,
                  kwargs: dict, running: dict, videos: Videos, timeout: float | None,
                  retries: int) -> Iterator[Outcome]:
    """The outcomes of the tasks as they finish, submitted four a CPU ahead."""
    ahead = max(4, 4 * int(ray.cluster_resources().get("CPU", 1)))
    todo = deque(tasks)
    tries = {id(t): Tries() for t in tasks}
    since: dict[tuple[str, int], float] = {}  # (task, run) -> when it started or last reported
    stopped: dict = {}  # ref -> why it was stopped
    while todo or running:
        while todo and len(running) < ahead:
            task = todo.popleft()
            t = tries[id(task)]
            args = t.next_run(kwargs)  # progress is told apart by run
            running[remote.remote(fn, task, t.runs, reports, args)] = task
        done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
        for name, run, clips, nbytes in ray.get(reports.take.remote()):
            since[name, run] = time.monotonic()
            videos(name, run, clips, nbytes)
        for ref in done:
            task = running.pop(ref)
            t = tries[id(task)]
            since.pop((task["name"], t.runs), None)
            why = stopped.pop(ref, None)  # it may have finished as it was stopped
            try:
                result, error = ray.get(ref), None
            except Exception as e:  # noqa: BLE001 - settled below
                result, error = None, _error(ray, e, why)
            outcome = settle(task, t, videos, result, error, retries)
            if outcome is None:
                todo.append(task)
            else:
                yield outcome
        for ref, task in running.items():  # a video that never ends: its worker stopped
            started = since.get((task["name"], tries[id(task)].runs))
            if timeout and started and ref not in stopped and time.monotonic() - started > timeout:
                stopped[ref] = stop_reason(timeout)
                ray.cancel(ref, force=True)
