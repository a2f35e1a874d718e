"""Reading shards from object storage: range requests streamed ahead.

:class:`RangeStream` is a file object over a byte range of an object, fetched in range
requests as large as what the reader has taken so far, from 512 KiB up to ``chunk``
(8 MiB), ``ahead`` of them in flight on a small per-process thread pool, so the network
overlaps the parsing. Each request is retried from its own first byte by
:meth:`shardkin.store.folder.Folder.read_range`, so a cut connection costs at most one
request again and no byte is lost or read twice.
"""
from __future__ import annotations

import io
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .folder import Folder

CHUNK = 8 << 20
FIRST_CHUNK = 512 << 10  # small first requests: the first clips arrive soon


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """This process's fetch threads (made again in a forked DataLoader worker)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(8, thread_name_prefix="shardkin-fetch"))
        return _pool[1]


class RangeStream(io.RawIOBase):
    """Bytes ``start <= i < end`` of an object as a read-only, unseekable file.

    ``sink`` is called with every chunk in order (to cache the shard as it streams);
    :meth:`drain` fetches what the reader left unread, so the sink sees it all.
    """

    def __init__(self, folder: Folder, name: str, start: int, end: int, *,
                 chunk: int = CHUNK, ahead: int = 1,
                 sink: Callable[[memoryview], None] | None = None) -> None:
        super().__init__()
        self._get = lambda a, b: folder.read_range(name, a, b - a, writable=False)
        self._next, self._end, self._chunk, self._ahead = start, end, chunk, ahead
        self._taken = 0  # bytes handed to the reader so far
        self._pending: deque[tuple[Future, int, int]] = deque()
        self._buf = memoryview(b"")
        self._sink = sink
        self._request(1)

    def _request(self, count: int) -> None:
        """Have ``count`` requests in flight, each as large as what the reader has taken so
        far (512 KiB to ``chunk``): a stream read only a little fetches only a little more."""
        while len(self._pending) < count and self._next < self._end:
            size = min(self._chunk, max(FIRST_CHUNK, self._taken))
            stop = min(self._end, self._next + size)
            self._pending.append((_executor().submit(self._get, self._next, stop), self._next,
                                  stop))
            self._next = stop

    def readable(self) -> bool:
        return True

    def _take(self) -> memoryview:
        """The next chunk. One still queued behind other streams' read-ahead is fetched
        here and now instead: what a reader waits for goes before what it may need."""
        future, start, stop = self._pending.popleft()
        data = memoryview(self._get(start, stop) if future.cancel() else future.result())
        self._taken += len(data)
        self._request(self._ahead)
        if self._sink is not None:
            self._sink(data)
        return data

    def readinto(self, b) -> int:
        if not self._buf:
            if not self._pending:
                return 0
            self._buf = self._take()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def drain(self) -> None:
        """Fetch the rest of the range (for the sink), dropping it."""
        self._buf = memoryview(b"")
        while self._pending:
            self._take()

    def close(self) -> None:
        for future, _, _ in self._pending:
            future.cancel()
        self._pending.clear()
        super().close()
