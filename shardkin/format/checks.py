"""The format's checks, each in one place: what a video and an audio array must be, and
whether a sample's bytes match the checksum its index row keeps.

:func:`video_problem` / :func:`audio_problem` (uint8 ``[T, H, W, 3]``, float32 ``[C, S]``)
serve the writer (:func:`~shardkin.format.sample.encode_sample`), the webdataset decoder,
both readers and ``shardkin verify``. :class:`SampleHash` is the checksum check of both
readers: the xxh3-64 of a sample's bytes taken in order wherever they land (tar headers
and small members as the tar reader walks them, arrays as they are read into a batch),
so the bytes are hashed while they are still in the CPU's cache, never copied for it
and never read twice; bytes no reader wanted are read for it (:attr:`SampleHash.fill`).
:func:`mismatch` is the one wording of a failed checksum, ``verify``'s too.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xxhash

from .tar import ShardError, as_int64

VIDEO_DTYPE, AUDIO_DTYPE = np.dtype(np.uint8), np.dtype(np.float32)
Bytes = bytes | bytearray | memoryview
KEEP = 8 << 10  # bytes a check keeps while it waits (headers, small members); more is read again


def video_problem(dtype: Any, shape: Sequence[int]) -> str | None:
    """Why an array of ``dtype`` and ``shape`` is not a clip's frames (uint8 ``[T,H,W,3]``)."""
    if np.dtype(dtype) != VIDEO_DTYPE or len(shape) != 4 or shape[3] != 3:
        return f"video is {np.dtype(dtype)} {list(shape)}, not uint8 [T,H,W,3]"
    return None


def audio_problem(dtype: Any, shape: Sequence[int]) -> str | None:
    """Why an array of ``dtype`` and ``shape`` is not a clip's sound (float32 ``[C,S]``)."""
    if np.dtype(dtype) != AUDIO_DTYPE or len(shape) != 2:
        return f"audio is {np.dtype(dtype)} {list(shape)}, not float32 [C,S]"
    return None


def require(problem: str | None) -> None:
    """ValueError for a problem found by the functions above."""
    if problem is not None:
        raise ValueError(problem)


def mismatch(start: int, end: int) -> str:
    """The wording of a sample whose bytes ``start..end-1`` fail their checksum."""
    return (f"damaged: bytes {start}-{end - 1}: the sample does not match its checksum in the "
            "index (the shard changed after it was built)")


class SampleHash:
    """The checksum check of one sample: its index row says it is bytes ``start..end-1``
    with xxh3-64 ``want``; ``where`` names it in the error.

    Bytes are given with their offset in the shard, in any order and overlapping:
    :meth:`keep` for bytes that stay as they are (read while walking the tar),
    :meth:`feed` for bytes that land where they will change (a batch slot, reused).
    Each byte is hashed once, in order: a piece that continues what was hashed is hashed
    at once; a kept piece waits for the bytes before it (copied, at most ``keep`` bytes:
    beyond that they are read again when needed); a fed piece is hashed at once, after
    the bytes before it, read with ``fill(offset, n)`` when no one else has them (its
    bytes are hashed at once: they may be a reused buffer).
    :meth:`complete` hashes the rest (``fill`` again) and returns the error or None.
    """

    __slots__ = ("start", "end", "want", "where", "fill", "pos", "error", "done", "_h", "_kept",
                 "_room")

    def __init__(self, start: int, end: int, want: int, where: str,
                 fill: Callable[[int, int], Bytes] | None = None, keep: int = KEEP) -> None:
        self.start, self.end, self.want, self.where, self.fill = start, end, want, where, fill
        self.pos = start  # bytes before this are hashed
        self.error: str | None = None
        self.done = False
        self._h = xxhash.xxh3_64()
        self._kept: list[tuple[int, Bytes]] = []  # pieces after a gap, by offset
        self._room = keep  # bytes it may still keep

    @classmethod
    def failed(cls, where: str, error: str) -> SampleHash:
        """A check that failed before any byte was hashed (e.g. no index row fits)."""
        check = cls(0, 0, 0, where)
        check._fail(error)
        return check

    def _fail(self, error: str) -> None:
        self.error, self.done, self._kept, self.fill = f"{self.where}: {error}", True, [], None

    def _hash(self, offset: int, data: Bytes) -> None:
        """Hash what ``data`` (at ``offset <= pos``) adds past ``pos``, up to ``end``."""
        stop = min(offset + len(data), self.end)
        if stop > self.pos:
            self._h.update(data[self.pos - offset : stop - offset])
            self.pos = stop

    def _advance(self) -> None:
        kept = self._kept
        while kept and kept[0][0] <= self.pos:
            self._hash(*kept.pop(0))
        if self.pos >= self.end and not self.done:
            self._finish()

    def keep(self, offset: int, data: Bytes) -> None:
        """Bytes that stay valid: hashed now if they continue the hash, else kept (within
        its room; bytes it cannot keep are read again when their turn comes)."""
        if offset > self.pos:  # after a gap
            n = len(data)
            if n <= self._room and not self.done and offset < self.end:
                self._room -= n
                kept = self._kept
                i = len(kept)
                while i and kept[i - 1][0] > offset:
                    i -= 1
                kept.insert(i, (offset, bytes(data)))
            return
        if not self.done:
            self._hash(offset, data)
            self._advance()

    def feed(self, offset: int, data: Bytes) -> None:
        """Bytes that have just landed and will change: hashed now, after those before."""
        if self.done:
            return
        if offset > self.pos:
            self._catch_up(min(offset, self.end))
            if self.done:
                return
        stop = min(offset + len(data), self.end)
        if stop > self.pos:  # as _hash, inline: the hot path
            self._h.update(data[self.pos - offset : stop - offset])
            self.pos = stop
            if self._kept or stop == self.end:
                self._advance()

    def _catch_up(self, offset: int) -> None:
        """Hash every byte before ``offset``: kept pieces, the gaps read with ``fill``."""
        while not self.done and self.pos < offset:
            kept = self._kept
            if kept and kept[0][0] <= self.pos:
                self._advance()
                continue
            stop = min(offset, kept[0][0]) if kept else offset
            data = self.fill(self.pos, stop - self.pos) if self.fill else b""
            if len(data) != stop - self.pos:
                self._fail(f"truncated: bytes {self.pos}-{stop - 1} cannot be read "
                           "to check the sample")
                return
            self._hash(self.pos, data)
            self._advance()

    def span(self, start: int, end: int) -> None:
        """The sample turned out to be bytes ``start..end-1``: it must be where its row says."""
        if not self.done and (start, end) != (self.start, self.end):
            self._fail(f"is bytes {start}-{end - 1}, its index row says {self.start}-"
                       f"{self.end - 1}: the shard or its index was changed after the build")

    def complete(self) -> str | None:
        """Hash what is left (read with ``fill``); the error, or None when the bytes match."""
        self._catch_up(self.end)
        return self.error

    def _finish(self) -> None:
        self.done, self._kept, self.fill = True, [], None
        if as_int64(self._h.intdigest()) != self.want:
            self.error = f"{self.where}: {mismatch(self.start, self.end)}"

    def raise_error(self) -> None:
        """ShardError if the check has failed (so far)."""
        if self.error is not None:
            raise ShardError(self.error)
