"""Run shard tasks on a Ray cluster (``--executor ray``): same tasks, same bytes.

The plan is made once on the driver; each task names its input videos (under a
ROOT every node can read: a shared file system) and writes its shard straight to
the output folder or URL. Ray retries a task whose worker died, and one that
raised, ``retries`` times; a task that keeps failing is reported, the rest finish.
shardkin must be installed on every node.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

INSTALL_HINT = "the Ray executor needs Ray: pip install 'shardkin[ray]'"


def connect(address: str | None) -> None:
    """Join ``address`` ("auto", "HOST:PORT", "ray://HOST:PORT") or start a local Ray."""
    try:
        import ray
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)


def run_tasks(
    fn: Callable, tasks: list, on_progress: Callable[[int, int], None], address: str | None = None,
    retries: int = 2, **kwargs: Any,
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn(task, **kwargs)`` as Ray tasks; yield (task, result, error) as they finish.

    Progress is reported per finished shard, video by video, from its record.
    """
    import ray

    connect(address)
    remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(fn)
    pending = {remote.remote(task, **kwargs): task for task in tasks}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            task = pending.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - reported to the caller
                cause = getattr(e, "cause", None)  # RayTaskError wraps the task's exception
                yield task, None, cause if isinstance(cause, BaseException) else e
                continue
            for video in record["videos"]:
                on_progress(video["clips"], sum(size for _, size in video["samples"]))
            yield task, record, None
