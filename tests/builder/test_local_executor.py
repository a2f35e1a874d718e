"""The local executor: a worker process that dies takes down only its own task, which runs
again on a new process; the other workers' tasks go on."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from shardkin.builder.errors import WorkerDied
from shardkin.builder.executors import run_local, start_method
from shardkin.format.options import ExecutionOptions


def _dies(task: dict, progress, decode_threads: int, marks: str) -> str:
    """Records each run of a task; a ``"die"`` task kills its process (the OOM killer, a
    crash) on its first run, or on every run with ``"always"``; others take a moment, so
    that they run beside the dying ones."""
    runs = Path(marks, task["name"])
    with open(runs, "a") as f:
        f.write("x")
    progress(1, 10)
    if task.get("die") and (task["die"] == "always" or runs.stat().st_size == 1):
        os.kill(os.getpid(), task.get("signal", signal.SIGKILL))
    time.sleep(0.3)
    return task["name"] + " done"


def _run(tasks: list[dict], marks: Path, workers: int = 3) -> tuple[list, list, dict]:
    seen = []
    outcomes = list(run_local(_dies, tasks, lambda c, b: seen.append((c, b)),
                              ExecutionOptions(workers=workers), retries=2, marks=str(marks)))
    runs = {p.name: p.stat().st_size for p in marks.iterdir()}
    return outcomes, seen, runs


def test_tasks_whose_process_died_run_again_alone(tmp_path):
    """Every other task kills its worker on its first run: those run again (twice in all),
    the others run once, untouched by their neighbours' deaths; each task's video is
    counted once."""
    assert start_method() == "fork"  # this process joined no Ray
    tasks = [{"name": f"t{i}", "die": "once" if i % 2 else None} for i in range(8)]
    outcomes, seen, runs = _run(tasks, tmp_path)
    assert sorted((t["name"], r, e) for t, r, e in outcomes) == \
        [(f"t{i}", f"t{i} done", None) for i in range(8)]
    assert runs == {f"t{i}": 2 if i % 2 else 1 for i in range(8)}
    assert len(seen) == 8


def test_a_task_that_always_kills_its_process_is_named_with_how(tmp_path):
    tasks = [{"name": "oom", "die": "always"}, {"name": "crash", "die": "always",
                                                "signal": signal.SIGUSR1},
             *({"name": f"ok{i}"} for i in range(3))]
    outcomes, seen, runs = _run(tasks, tmp_path, workers=2)
    failed = {t["name"]: e for t, r, e in outcomes if e is not None}
    assert sorted(failed) == ["crash", "oom"]
    assert all(isinstance(e, WorkerDied) for e in failed.values())
    assert "died (SIGKILL: out of memory?)" in str(failed["oom"])
    assert "died (SIGUSR1)" in str(failed["crash"])
    assert runs == {"oom": 3, "crash": 3, "ok0": 1, "ok1": 1, "ok2": 1}
    assert sorted(r for t, r, e in outcomes if e is None) == [f"ok{i} done" for i in range(3)]
    assert len(seen) == 5
