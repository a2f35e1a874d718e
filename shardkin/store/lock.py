"""One builder per output split: a lock held for the build's life.

Local folders: a lock (``lockf``) on ``OUT/<split>/.build.lock``, released by the kernel
when the builder ends, however it ends (the file names its holder and is removed at the
end). Object storage: a lease object ``.build.lease`` created with a conditional write
(S3 ``If-None-Match: *``: of two builders only one can create it), holding its owner
and an expiry ``LEASE_SECONDS`` ahead, renewed by a thread while the build runs and
deleted at the end; a lease left by a builder that died expires (at once when it ran on
this machine and its process is gone), and ``break_lock`` (``shardkin build
--break-lock``) removes one at once.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

from .folder import Folder

LOCK = ".build.lock"
LEASE = ".build.lease"
LEASE_SECONDS = 600.0
_HELD: set[str] = set()  # local lock files this process holds


class LockedError(RuntimeError):
    """Another build holds the split; the message names it and says what to do."""


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}


def _describe(owner: dict[str, Any]) -> str:
    return (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
            f" ({owner.get('command') or 'shardkin.build'})")


def _dead(owner: dict[str, Any]) -> bool:
    """Whether the lease's builder ran on this machine and is gone (killed, say)."""
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


class BuildLock:
    """The lock on split folder ``folder``; use as a context manager."""

    def __init__(self, folder: Folder, break_lock: bool = False) -> None:
        self.folder, self.break_lock = folder, break_lock
        self.owner = _owner()
        self._file: Any = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockedError` naming the build that holds it."""
        if self.folder.remote:
            self._take_lease()
        else:
            self._take_local()

    def _take_local(self) -> None:
        path = self.folder.path(LOCK)
        if os.path.realpath(path) in _HELD:  # POSIX locks do not exclude their own process
            raise LockedError(f"{self.folder.url} is being built by this process already")
        while True:
            self._file = open(path, "a+")
            try:
                # a POSIX record lock: unlike flock, not held on by the worker processes the
                # build forks, so it ends with the builder, even on kill -9
                fcntl.lockf(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                self._file.seek(0)
                text = self._file.read()
                self._file.close()
                self._file = None
                try:
                    holder = _describe(json.loads(text))
                except ValueError:
                    holder = "another process"
                raise LockedError(f"{self.folder.url} is being built by {holder}: wait for "
                                  "that build to end or stop it, then run this one again") from None
            try:  # the holder removes the file as it ends: locked a removed file? again
                if os.stat(path).st_ino == os.fstat(self._file.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            self._file.close()
        _HELD.add(os.path.realpath(path))
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(self.owner))
        self._file.flush()

    def _lease(self) -> bytes:
        return json.dumps({**self.owner, "expires": time.time() + LEASE_SECONDS}).encode()

    def _take_lease(self) -> None:
        if self.break_lock:
            self.folder.delete(LEASE)
        for _ in range(2):
            try:
                self.folder.create(LEASE, self._lease())
                break
            except FileExistsError:
                held = self._holder()
                if held is not None and held.get("expires", 0) > time.time() and not _dead(held):
                    left = held["expires"] - time.time()
                    raise LockedError(
                        f"{self.folder.url} is being built by {_describe(held)}; its lease "
                        f"expires in {left / 60:.0f} min unless renewed. Wait for that build, "
                        "or if it is no longer running, break the lease: shardkin build ... "
                        f"--break-lock (or delete {self.folder.path(LEASE)})") from None
                self.folder.delete(LEASE)  # expired: its builder died
        else:
            raise LockedError(f"{self.folder.url}: another build took the lease meanwhile")
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="shardkin-lease")
        self._renewer.start()

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.folder.read_bytes(LEASE))
        except (FileNotFoundError, ValueError):
            return None

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4):
            held = self._holder()
            if held is None or held.get("id") != self.owner["id"]:
                return  # broken by someone else: theirs now
            self.folder.write_bytes(LEASE, self._lease())

    def release(self) -> None:
        if self._file is not None:
            _HELD.discard(os.path.realpath(self.folder.path(LOCK)))
            os.unlink(self.folder.path(LOCK))  # before unlocking: see _take_local
            self._file.close()
            self._file = None
        if self._renewer is not None:
            self._stop.set()
            self._renewer.join()
            self._renewer = None
            held = self._holder()
            if held is not None and held.get("id") == self.owner["id"]:
                self.folder.delete(LEASE)
