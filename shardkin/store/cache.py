"""A local cache of remote shards, bounded in size, shared by the processes of one machine.

Files are named by the shard's sha256 from the manifest (content-addressed: a rebuilt
dataset never reads a stale copy, and two datasets share what they have in common).
A shard enters the cache as it streams for the first time: its chunks are written to
a temporary file and hashed, and the file is renamed into place only when its size
and sha256 match the manifest. The temporary file's name is the shard's, created
exclusively: one process of the machine fills a shard, the others stream meanwhile
(the claim of a process that died filling it expires after an hour untouched). The
least recently used files are then removed until the cache fits ``max_bytes`` (under
an ``flock``, so concurrent workers do not race); a file removed while another worker
reads it stays readable to that worker. A cache that cannot be written (disk full,
permissions) warns and is skipped: the data still streams, training goes on.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import time
import warnings
from typing import BinaryIO

from ..format.options import parse_size

_STALE_TEMP = 3600.0  # seconds: temporary files older than this were left by a dead worker


class ShardCache:
    """Shards by sha256 under ``folder``, at most ``max_bytes`` in all."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"cache size must be positive, got {max_bytes}")
        self.folder, self.max_bytes = os.fspath(folder), max_bytes
        os.makedirs(self.folder, exist_ok=True)

    def path(self, sha256: str) -> str:
        return os.path.join(self.folder, f"{sha256}.tar")

    def open(self, sha256: str, size: int) -> BinaryIO | None:
        """The cached shard, unbuffered, marked as just used; None if it is not cached."""
        try:
            f = open(self.path(sha256), "rb", buffering=0)
        except FileNotFoundError:
            return None
        if os.fstat(f.fileno()).st_size != size:  # not ours: never published like this
            f.close()
            return None
        try:
            os.utime(self.path(sha256))
        except FileNotFoundError:  # evicted just now; the open file still reads
            pass
        return f

    def writer(self, sha256: str, size: int) -> CacheWriter | None:
        """A writer that adds the shard once all its bytes arrived, or None if it cannot fit,
        another process is filling it, or the cache cannot be written."""
        if size > self.max_bytes:
            return None
        try:
            _remove_stale(os.path.join(self.folder, f".{sha256}.tmp"))
            return CacheWriter(self, sha256, size)
        except FileExistsError:
            return None
        except OSError as e:
            _warn(self.folder, e)
            return None

    def evict(self) -> None:
        """Remove least recently used shards until the cache fits, and stale temporary files."""
        with open(os.path.join(self.folder, ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = []
            for entry in os.scandir(self.folder):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                if entry.name.endswith(".tar"):
                    entries.append((st.st_mtime, st.st_size, entry.path))
                elif entry.name.endswith(".tmp"):
                    _remove_stale(entry.path)
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                _unlink(path)
                total -= size


class CacheWriter:
    """Takes a shard's bytes in order; :meth:`commit` publishes them if they are right."""

    def __init__(self, cache: ShardCache, sha256: str, size: int) -> None:
        self.cache, self.sha256, self.size = cache, sha256, size
        self._tmp = os.path.join(cache.folder, f".{sha256}.tmp")
        self._file = open(self._tmp, "xb")  # FileExistsError: another process fills it
        self._hash = hashlib.sha256()
        self._written = 0

    def __call__(self, chunk: memoryview) -> None:
        if self._file.closed:  # gave up after a write error
            return
        try:
            self._file.write(chunk)
        except OSError as e:
            _warn(self.cache.folder, e)
            self.abort()
            return
        self._hash.update(chunk)
        self._written += len(chunk)

    def commit(self) -> bool:
        """Publish the shard if its size and sha256 match; True if it was."""
        if self._file.closed:
            return False
        try:
            self._file.close()
            if self._written != self.size or self._hash.hexdigest() != self.sha256:
                _unlink(self._tmp)
                return False
            os.replace(self._tmp, self.cache.path(self.sha256))
            self.cache.evict()
            return True
        except OSError as e:
            _warn(self.cache.folder, e)
            _unlink(self._tmp)
            return False

    def abort(self) -> None:
        self._file.close()
        _unlink(self._tmp)


def _warn(folder: str, error: OSError) -> None:
    warnings.warn(f"shardkin: cannot write the shard cache {folder} ({error}); reading on "
                  "without caching this shard", stacklevel=3)


def _remove_stale(path: str) -> None:
    """Remove a temporary file left by a process that died filling it (untouched an hour)."""
    try:
        if time.time() - os.stat(path).st_mtime > _STALE_TEMP:
            _unlink(path)
    except FileNotFoundError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def open_cache(folder: str | os.PathLike | None, size: str | int) -> ShardCache | None:
    """The cache at ``folder`` holding at most ``size`` (``"100GB"``), or None."""
    return None if folder is None else ShardCache(folder, parse_size(size))
