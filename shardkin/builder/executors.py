"""Run shard tasks: on local worker processes or on a Ray cluster, with one signature.

An executor calls ``fn(task, decode_threads=..., **kwargs)`` for each task and yields
``(task, result, error)`` as tasks finish; a task that raises, or whose process dies,
is tried ``retries`` more times before its error is yielded, and the others finish.
A video whose process dies twice (or is stopped twice after ``video_timeout``) is then
skipped (``fn`` is passed ``skip``), with the same rules on both (:mod:`.tasks`).
An error retrying cannot fix (a full disk, a refused permission: :func:`is_permanent`)
is yielded at once as a :class:`PermanentError`, untried again. ``on_progress(clips,
bytes)`` is called once per video, also when its shard is tried again.
:data:`EXECUTORS` names them.

Local processes: :mod:`.processes`; Ray (``--executor ray``): :mod:`.onray`; what both
run: :mod:`.tasks`.
"""
from __future__ import annotations

from .onray import connect_ray, map_ray, run_ray
from .processes import local_workers, map_processes, run_local, start_method
from .tasks import Executor, Outcome, Progress

EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}

__all__ = ["EXECUTORS", "Executor", "Outcome", "Progress", "connect_ray", "local_workers",
           "map_processes", "map_ray", "run_local", "run_ray", "start_method"]
