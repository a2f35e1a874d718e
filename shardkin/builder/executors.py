"""Run shard tasks: on local worker processes or on a Ray cluster, with one signature.

An executor calls ``fn(task, decode_threads=..., **kwargs)`` for each task and yields
``(task, result, error)`` as tasks finish; a task that raises, or whose process dies,
is tried ``retries`` more times before its error is yielded, and the others finish.
A video whose process dies twice (or is stopped twice after ``video_timeout``) is then
skipped (``fn`` is passed ``skip``), with the same rules on both (:mod:`.tasks`).
An error retrying cannot fix (a full disk, a refused permission: :func:`is_permanent`)
is yielded at once as a :class:`PermanentError`, untried again. ``on_progress(clips,
bytes)`` is called once per video, also when its shard is tried again.
:data:`EXECUTORS` names them; :func:`ordered_map` (the probes) runs an ordered map
through either, with the same rules.

Local processes: :mod:`.processes`; Ray (``--executor ray``): :mod:`.onray`; what both
run: :mod:`.tasks`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..format.options import ExecutionOptions
from .errors import BuildError, PermanentError, WorkerDied
from .onray import connect_ray, run_ray
from .processes import local_workers, run_local, start_method
from .tasks import Executor, Outcome, Progress, heartbeat

EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}


def ordered_map(fn: Callable, items: Iterable, execution: ExecutionOptions, *,
                died: Callable[[Any, str], Any] | None = None, retries: int = 2) -> Iterator:
    """``map(fn, items)``, in order, each item a task of the executor ``execution`` names,
    so that the items keep the executors' rules: one whose worker dies runs again on
    another; one its worker dies on twice, or that is stopped twice after going
    ``video_timeout`` seconds without a heartbeat, gives ``died(item, how)`` (without
    ``died``: raises :class:`WorkerDied`); one that raises is tried ``retries`` more times,
    then raises :class:`BuildError`. ``fn(item, beat=beat)``: ``beat()`` (None without a
    timeout) says the item is still moving (a probe: after each video)."""
    tasks = [{"name": str(i), "fn": fn, "item": item} for i, item in enumerate(items)]
    outcomes = EXECUTORS[execution.executor](_item, tasks, lambda clips, nbytes: None,
                                             execution, retries, timeout=execution.video_timeout)
    finished: dict[int, Any] = {}  # results waiting for those before them
    given = 0
    try:
        for task, result, error in outcomes:
            if error is not None:
                tried = "" if isinstance(error, PermanentError) else f", {retries + 1} times"
                hint = (" (is shardkin installed on every node, with its extras for ROOT's "
                        "store?)" if execution.executor == "ray" else "")
                raise BuildError(f"a task failed{tried}: {type(error).__name__}: {error}{hint}")
            if isinstance(result, WorkerDied):  # twice on this item: it is skipped then
                if died is None:
                    raise result
                result = died(task["item"], result.how)
            finished[int(task["name"])] = result
            while given in finished:
                yield finished.pop(given)
                given += 1
    finally:
        outcomes.close()  # stops the tasks still running when the caller stopped early


def _item(task: dict, progress: Progress, decode_threads: int, timeout: float | None = None,
          skip: dict[int, str] | None = None) -> Any:
    """:func:`ordered_map`'s task: ``fn(item, beat=...)``, or the death it is to skip."""
    if skip:
        return WorkerDied(skip[0])
    return task["fn"](task["item"], beat=heartbeat(progress, timeout))


__all__ = ["EXECUTORS", "Executor", "Outcome", "Progress", "connect_ray", "local_workers",
           "ordered_map", "run_local", "run_ray", "start_method"]
