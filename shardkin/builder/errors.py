"""The errors of a build."""
from __future__ import annotations

import errno

# what retrying a shard cannot fix: the disk or quota is full, writing is not allowed
PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class BuildError(RuntimeError):
    """The build cannot go on; the message says what to do."""


class PermanentError(BuildError):
    """A shard failed in a way retrying cannot fix; the build stops at once."""


class WorkerDied(BuildError):
    """A worker process died (killed, or crashed) running a task; ``how``: the signal or
    exit status, when known."""

    def __init__(self, how: str = "") -> None:
        super().__init__(how)  # the args: pickled and unpickled as they are
        self.how = how

    def __str__(self) -> str:
        return f"its worker process died{f' ({self.how})' if self.how else ''}"


def is_permanent(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in PERMANENT_ERRNOS
