"""The local executor: a worker process that dies takes down only its own task, which runs
again on a new process while the other workers' tasks go on; a video its process dies on
twice is skipped."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from shardkin.builder.errors import BuildError, WorkerDied
from shardkin.builder.executors import ordered_map, run_local, start_method
from shardkin.format.options import ExecutionOptions


def _videos(task: dict, progress, decode_threads: int, marks: str,
            skip: dict[int, str] | None = None) -> list:
    """A stand-in shard task of ``task["videos"]`` videos: records each run; video
    ``task["die"]`` kills the process (the OOM killer, a crash in a decoder) on the task's
    first run, or on every run with ``task["always"]``; with ``task["moving"]`` every run
    dies, at video ``run - 1``. Every video takes a moment, so that tasks run side by
    side. Returns what became of each video."""
    runs = Path(marks, task["name"])
    with open(runs, "a") as f:
        f.write("x")
    run = runs.stat().st_size
    die = run - 1 if task.get("moving") else task.get("die")
    done = []
    for i in range(task.get("videos", 1)):
        if skip and i in skip:
            done.append(skip[i])
        elif i == die and (run == 1 or task.get("always") or task.get("moving")):
            os.kill(os.getpid(), task.get("signal", signal.SIGKILL))
        elif i == task.get("hang"):
            time.sleep(600)  # a decoder caught in a loop
        else:
            time.sleep(0.1)
            done.append("ok")
        progress(1, 10)
    return done


def _run(tasks: list[dict], marks: Path, workers: int = 3,
         video_timeout: float | None = None) -> tuple[dict, int, dict]:
    """Outcomes by task name (its result, or its error), videos counted, runs by task."""
    seen = []
    outcomes = run_local(_videos, tasks, lambda c, b: seen.append((c, b)),
                         ExecutionOptions(workers=workers, video_timeout=video_timeout),
                         retries=2, marks=str(marks))
    results = {t["name"]: r if e is None else e for t, r, e in outcomes}
    return results, len(seen), {p.name: p.stat().st_size for p in marks.iterdir()}


def test_tasks_whose_process_died_run_again_alone(tmp_path):
    """Every other task kills its worker once: those run again (twice in all), the others
    once, untouched by their neighbours' deaths; each video is counted once."""
    assert start_method() == "fork"  # this process joined no Ray
    tasks = [{"name": f"t{i}", "videos": 2, "die": 1 if i % 2 else None} for i in range(8)]
    results, counted, runs = _run(tasks, tmp_path)
    assert results == {f"t{i}": ["ok", "ok"] for i in range(8)}
    assert runs == {f"t{i}": 2 if i % 2 else 1 for i in range(8)}
    assert counted == 16


def test_a_video_its_process_dies_on_twice_is_skipped(tmp_path):
    """The video is skipped on the third run, with how its process died; the task's other
    videos are built; other tasks run once."""
    tasks = [{"name": "oom", "videos": 4, "die": 2, "always": True},
             {"name": "crash", "videos": 3, "die": 0, "always": True, "signal": signal.SIGUSR1},
             *({"name": f"ok{i}", "videos": 3} for i in range(3))]
    results, counted, runs = _run(tasks, tmp_path, workers=2)
    assert results == {"oom": ["ok", "ok", "SIGKILL: out of memory?", "ok"],
                       "crash": ["SIGUSR1", "ok", "ok"],
                       **{f"ok{i}": ["ok"] * 3 for i in range(3)}}
    assert runs == {"oom": 3, "crash": 3, "ok0": 1, "ok1": 1, "ok2": 1}
    assert counted == 16


def test_a_video_stuck_past_the_timeout_is_stopped_and_skipped(tmp_path):
    """A video whose decoding never ends is stopped after ``video_timeout`` seconds; stopped
    twice, it is skipped; videos slower than the timeout in all but none are untouched."""
    tasks = [{"name": "stuck", "videos": 3, "hang": 1}, {"name": "ok", "videos": 4}]
    t = time.monotonic()
    results, counted, runs = _run(tasks, tmp_path, workers=2, video_timeout=2.0)
    assert results == {"stuck": ["ok", "stopped after 2 s without progress", "ok"],
                       "ok": ["ok"] * 4}
    assert runs == {"stuck": 3, "ok": 1} and counted == 7
    assert time.monotonic() - t < 30


def test_a_task_dying_at_changing_places_fails_after_its_retries(tmp_path):
    """Deaths at a different video each run point at no video: three runs, then the task
    fails naming how its process died."""
    tasks = [{"name": "flaky", "videos": 3, "moving": True}, {"name": "ok", "videos": 2}]
    results, counted, runs = _run(tasks, tmp_path, workers=2)
    assert isinstance(results["flaky"], WorkerDied)
    assert str(results["flaky"]) == \
        "its worker process died (SIGKILL: out of memory?)"
    assert results["ok"] == ["ok", "ok"] and runs == {"flaky": 3, "ok": 1}
    assert counted == 2 + 2  # the flaky task's first two videos, once each


def _square(item: tuple[int, str], beat=None) -> int:
    """``n * n``; item 17 kills its process on every call, item 23 on its first (marked in
    folder ``marks``), item 31 never ends (a probe caught in a loop) unless the test sets
    no timeout."""
    n, marks = item
    first = Path(marks, str(n))
    if n == 17 or (n == 23 and not first.exists()):
        first.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if n == 31 and beat is not None:
        time.sleep(600)
    return n * n


def test_ordered_map_survives_an_item_that_kills_its_process(tmp_path):
    """In order, every result in place; the item that kills its process every time gives
    ``died(item, how)``, the one that killed it once its result."""
    items = [(n, str(tmp_path)) for n in range(40)]
    run = ExecutionOptions(workers=2)
    got = list(ordered_map(_square, items, run, died=lambda item, how: (item[0], how)))
    assert got == [(17, "SIGKILL: out of memory?") if n == 17 else n * n for n in range(40)]
    with pytest.raises(WorkerDied, match=r"died \(SIGKILL: out of memory\?\)"):
        list(ordered_map(_square, items, run))


def test_ordered_map_stops_an_item_that_never_ends(tmp_path):
    """With ``video_timeout``, an item that goes that long without a heartbeat is stopped;
    stopped twice, it gives ``died(item, how)``; the others' results are in place."""
    items = [(n, str(tmp_path)) for n in range(28, 36)]
    run = ExecutionOptions(workers=2, video_timeout=2.0)
    t = time.monotonic()
    got = list(ordered_map(_square, items, run, died=lambda item, how: (item[0], how)))
    assert got == [(31, "stopped after 2 s without progress") if n == 31 else n * n
                   for n in range(28, 36)]
    assert time.monotonic() - t < 20


def _slow(item: int, beat=None) -> int:
    """Four steps of 0.8 s, a heartbeat after each (a chunk of slow probes)."""
    for _ in range(4):
        time.sleep(0.8)
        beat()
    return item


def test_ordered_map_does_not_stop_an_item_that_keeps_beating():
    """3.2 s in all under a 2 s timeout: its heartbeats keep it going."""
    assert list(ordered_map(_slow, [1, 2], ExecutionOptions(workers=2, video_timeout=2.0))) \
        == [1, 2]


def test_ordered_map_raises_what_keeps_failing(tmp_path):
    """An item that raises every time is tried three times, then the map raises."""
    with pytest.raises(BuildError, match=r"failed, 3 times: TypeError"):
        list(ordered_map(_square, [(1, str(tmp_path)), (None, str(tmp_path))],
                         ExecutionOptions(workers=1)))
