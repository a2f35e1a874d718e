"""The local executor: worker processes that die are replaced and their tasks run again."""
from __future__ import annotations

import os
from pathlib import Path

from shardkin.builder.executors import run_local, start_method
from shardkin.format.options import ExecutionOptions


def _dies_on_first_run(task: dict, progress, decode_threads: int, marks: str) -> str:
    """Every task's first run kills its worker process (a crash, the OOM killer)."""
    mark = Path(marks, task["name"])
    progress(1, 10)
    if not mark.exists():
        mark.write_text("x")
        os._exit(1)
    return task["name"] + " done"


def test_tasks_of_a_broken_pool_run_again(tmp_path):
    """Every worker dies mid-task, so the pool breaks with several tasks finished at once
    (each with BrokenProcessPool): each runs again on a fresh pool and succeeds once."""
    assert start_method() == "fork"  # this process joined no Ray
    tasks = [{"name": f"t{i}"} for i in range(6)]
    seen = []
    outcomes = list(run_local(_dies_on_first_run, tasks, lambda c, b: seen.append((c, b)),
                              ExecutionOptions(workers=3), retries=2, marks=str(tmp_path)))
    assert sorted((t["name"], r, e) for t, r, e in outcomes) == \
        [(f"t{i}", f"t{i} done", None) for i in range(6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"t{i}" for i in range(6)]
    assert len(seen) == 6  # each task's video counted once, though some ran twice
