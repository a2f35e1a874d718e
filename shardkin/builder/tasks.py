"""What an executor runs (:mod:`.executors`): the types of its signature, and one attempt
at a task."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .errors import PermanentError, is_permanent

Progress = Callable[[int, int], None]  # (clips, bytes) after each video
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
