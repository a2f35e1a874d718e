"""What an executor runs (:mod:`.executors`): the types of its signature, one attempt at a
task, and the rules both executors keep for a task run more than once: its progress
counted once (:class:`Videos`), its retries and the videos to skip (:class:`Tries`,
:func:`settle`)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import PermanentError, WorkerDied, is_permanent

# (clips, bytes) after each video; (None, 0) while one is still being built (a heartbeat)
Progress = Callable[[int | None, int], None]
BEAT = 5.0  # seconds between heartbeats at most (less with a shorter video_timeout)
Outcome = tuple[Any, Any, BaseException | None]  # (task, result, error)
Executor = Callable[..., Iterator[Outcome]]


def attempt(fn: Callable, task: Any, **kwargs: Any) -> Any:
    """``fn(task, **kwargs)``; an error retrying cannot fix is returned, not raised, so
    that no executor retries it."""
    try:
        return fn(task, **kwargs)
    except OSError as e:
        if is_permanent(e):
            return PermanentError(f"{type(e).__name__}: {e}")
        raise


class Videos:
    """Progress of tasks that may run more than once: each video counts once (a video
    of a later attempt counts only past where earlier attempts got)."""

    def __init__(self, on_progress: Progress) -> None:
        self._on_progress = on_progress
        self._shown: dict[str, int] = {}
        self._now: dict[tuple[str, int], int] = {}  # videos so far of (task, run)

    def __call__(self, name: str, run: int, clips: int | None, nbytes: int) -> None:
        if clips is None:  # a heartbeat: no video finished
            return
        now = self._now[name, run] = self.reported(name, run) + 1
        if now > self._shown.get(name, 0):
            self._shown[name] = now
            self._on_progress(clips, nbytes)

    def reported(self, name: str, run: int) -> int:
        """How many videos run ``run`` of task ``name`` has reported."""
        return self._now.get((name, run), 0)


def heartbeat(progress: Progress | None, timeout: float | None) -> Callable[[], None] | None:
    """What a task calls after each clip it makes (a probe: each video it probes):
    ``progress(None, 0)``, at most every ``BEAT`` seconds (a quarter of ``timeout`` when
    that is shorter), so that a long video still making clips is not taken for a stuck
    one; None without a ``timeout``."""
    if progress is None or timeout is None:
        return None
    every, last = min(BEAT, timeout / 4), time.monotonic()

    def beat() -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            last = time.monotonic()
            progress(None, 0)

    return beat


def stop_reason(timeout: float) -> str:
    """Why a run was stopped by ``video_timeout`` (its video skipped after two stops): no
    progress (a new clip, a probed video) in that time."""
    return f"stopped after {timeout:g} s without progress"


class Tries:
    """A task's runs so far, those that failed (each counted against the retries), and the
    videos its process died at (after reporting as many): a process that dies twice at
    the same video has that video skipped in later runs (``skip``: its position in the
    task, and how the process died), a run not counted as failed."""

    def __init__(self) -> None:
        self.runs = self.failed = 0
        self.died_at: set[int] = set()
        self.skip: dict[int, str] = {}

    def next_run(self, kwargs: dict) -> dict:
        """Count the task's next run; its keyword arguments: ``kwargs``, ``skip`` added."""
        self.runs += 1
        return {**kwargs, "skip": dict(self.skip)} if self.skip else kwargs

    def skip_if_again(self, at: int, how: str) -> bool:
        """Record a death at video ``at``; whether it was the second there, which makes
        ``at`` a video to skip."""
        if at in self.died_at and at not in self.skip:
            self.skip[at] = how
            return True
        self.died_at.add(at)
        return False


def settle(task: dict, tries: Tries, videos: Videos, result: Any, error: BaseException | None,
           retries: int) -> Outcome | None:
    """The outcome of a task's run that ended with ``result`` or ``error``, or None when
    the task is to run again: its process died at a video for the second time (that video
    is skipped next), or it failed fewer than ``retries`` times. A :class:`PermanentError`
    result is an outcome at once."""
    if isinstance(error, WorkerDied) and tries.skip_if_again(
            videos.reported(task["name"], tries.runs), error.how):
        return None
    if error is None:
        return (task, None, result) if isinstance(result, PermanentError) else (task, result, None)
    if tries.failed < retries:
        tries.failed += 1
        return None
    return task, None, error
