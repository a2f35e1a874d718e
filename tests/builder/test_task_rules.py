"""The rules both executors keep for a task run more than once (``builder/tasks.py``), as
pure functions: which run's outcome is final, which video is skipped, what progress
counts."""
from __future__ import annotations

from shardkin.builder.errors import PermanentError, WorkerDied
from shardkin.builder.tasks import Tries, Videos, settle

TASK = {"name": "train-000000.tar"}


def _run(tries: Tries, videos: Videos, reported: int, result=None, error=None):
    """One run of TASK that reported ``reported`` videos, then ended so."""
    kwargs = tries.next_run({"decode_threads": 1})
    for _ in range(reported):
        videos(TASK["name"], tries.runs, 1, 10)
    return kwargs, settle(TASK, tries, videos, result, error, retries=2)


def test_a_result_or_a_permanent_error_is_final_at_once():
    tries, videos = Tries(), Videos(lambda clips, nbytes: None)
    assert _run(tries, videos, 3, result={"ok": 1})[1] == (TASK, {"ok": 1}, None)
    full = PermanentError("OSError: no space left")
    assert _run(Tries(), videos, 0, result=full)[1] == (TASK, None, full)


def test_an_error_is_tried_twice_more_then_final():
    tries, videos = Tries(), Videos(lambda clips, nbytes: None)
    error = RuntimeError("disk on fire")
    assert _run(tries, videos, 1, error=error)[1] is None
    assert _run(tries, videos, 1, error=error)[1] is None
    assert _run(tries, videos, 1, error=error)[1] == (TASK, None, error)
    assert (tries.runs, tries.failed) == (3, 2)


def test_a_second_death_at_one_video_skips_it_uncounted():
    tries, videos = Tries(), Videos(lambda clips, nbytes: None)
    kwargs, outcome = _run(tries, videos, 2, error=WorkerDied("SIGSEGV"))  # on video 2
    assert outcome is None and "skip" not in kwargs and tries.failed == 1
    kwargs, outcome = _run(tries, videos, 2, error=WorkerDied("SIGSEGV"))  # there again
    assert outcome is None and "skip" not in kwargs and tries.failed == 1
    kwargs, outcome = _run(tries, videos, 5, result={"ok": 1})
    assert kwargs["skip"] == {2: "SIGSEGV"} and outcome == (TASK, {"ok": 1}, None)


def test_deaths_at_changing_videos_fail_after_the_retries():
    tries, videos = Tries(), Videos(lambda clips, nbytes: None)
    died = WorkerDied("SIGKILL: out of memory?")
    assert _run(tries, videos, 0, error=died)[1] is None
    assert _run(tries, videos, 1, error=died)[1] is None
    assert _run(tries, videos, 2, error=died)[1] == (TASK, None, died)
    assert tries.skip == {}


def test_each_video_counts_once_across_runs():
    shown = []
    tries, videos = Tries(), Videos(lambda clips, nbytes: shown.append(clips))
    _run(tries, videos, 3, error=WorkerDied("SIGSEGV"))
    _run(tries, videos, 5, result={})
    assert len(shown) == 5  # the second run's first 3 videos were counted by the first
    assert videos.reported(TASK["name"], 1) == 3 and videos.reported(TASK["name"], 2) == 5
