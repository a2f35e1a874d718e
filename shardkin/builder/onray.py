"""The Ray executor: shard tasks and probes as Ray tasks on the cluster at ``ray_address``
(or a local one that ends with the build). The plan is still made once on the driver;
each shard task names its input videos (under a ROOT every node can read: a bucket or a
shared file system) and writes its shard straight to the output folder or URL. shardkin
must be installed on every node; Ray is imported only when it is used."""
from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..format.options import ExecutionOptions
from .errors import BuildError, PermanentError
from .lifecycle import keep_signal_handlers
from .tasks import Outcome, Progress, attempt

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
    remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(attempt)
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
