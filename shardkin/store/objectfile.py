"""Seekable, read-only files for readers that seek (PyAV's demuxers reading a video from a
bucket): :class:`ObjectFile` over an object in a store, :class:`SharedFile` over a local copy.

:class:`Blocks` holds an object's bytes as fixed blocks fetched by retried range requests
(:meth:`~shardkin.store.folder.Folder.read_range`): the last ``keep`` blocks are kept, so
memory is bounded whatever the object's size, and while a block is read the next
``ahead`` are fetched in the background (the network overlaps the decoding). Every
:class:`ObjectFile` opened on the same :class:`Blocks` shares them (a probe's demuxer reads
only the blocks it asks for). A video the build decodes is read by three demuxers, one of
them to its end first: it is copied once into a local file that each reads through a
:class:`SharedFile` of its own.
"""
from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import BinaryIO

from .folder import Folder
from .ranges import _executor


class Blocks:
    """Blocks of ``block`` bytes of object ``name`` of ``folder``, which is ``size`` bytes
    long (None: asked of the store when first needed)."""

    def __init__(self, folder: Folder, name: str, size: int | None = None, *,
                 block: int = 8 << 20, keep: int = 4, ahead: int = 1) -> None:
        self.folder, self.name, self.block = folder, name, block
        self._size, self._keep, self._ahead = size, max(keep, ahead + 1), ahead
        self._lock = threading.Lock()
        self._blocks: OrderedDict[int, Future] = OrderedDict()

    @property
    def size(self) -> int:
        if self._size is None:
            size = self.folder.size(self.name)
            if size is None:
                raise FileNotFoundError(f"{self.folder.path(self.name)} does not exist")
            self._size = size
        return self._size

    def _fetch(self, k: int) -> bytes:
        start = k * self.block
        length = min(self.block, self.size - start)
        return self.folder.read_range(self.name, start, length, writable=False)

    def get(self, k: int) -> bytes:
        """Block ``k`` (empty past the end); starts fetching the next ``ahead`` ones."""
        if k * self.block >= self.size:
            return b""
        with self._lock:
            future = self._blocks.get(k)
            if future is not None and future.cancel():  # still queued: fetch it here, now
                future = None
            mine = future is None
            if mine:
                future = self._blocks[k] = Future()
            self._blocks.move_to_end(k)
            for j in range(k + 1, k + 1 + self._ahead):
                if j * self.block < self.size and j not in self._blocks:
                    self._blocks[j] = _executor().submit(self._fetch, j)
            while len(self._blocks) > self._keep:
                self._blocks.popitem(last=False)[1].cancel()
        if mine:
            try:
                future.set_result(self._fetch(k))
            except BaseException as e:  # noqa: BLE001 - raised below, to every reader
                future.set_exception(e)
        try:
            return future.result()
        except BaseException:
            with self._lock:  # a later read tries again
                if self._blocks.get(k) is future:
                    del self._blocks[k]
            raise


class Positioned(io.RawIOBase):
    """A read-only, seekable file reading at a position of its own (``_pos``); a subclass
    gives its ``size`` and ``readinto``."""

    _pos = 0

    @property
    def size(self) -> int:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos}.get(whence)
        if base is None:
            base = self.size  # io.SEEK_END
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos


class SharedFile(Positioned):
    """A reader of its own over an open local file shared by several (each demuxer of a
    video copied from a store): positioned reads, so each keeps its place; holds ``file``
    open as long as it lives."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file, self._fd = file, file.fileno()
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def readinto(self, b) -> int:
        n = os.preadv(self._fd, [b], self._pos)
        self._pos += n
        return n


class ObjectFile(Positioned):
    """A read-only, seekable file over :class:`Blocks`."""

    def __init__(self, blocks: Blocks) -> None:
        super().__init__()
        self._blocks = blocks

    @property
    def size(self) -> int:
        return self._blocks.size

    def readinto(self, b) -> int:
        """Fill ``b`` as far as the object goes (across blocks)."""
        out, done = memoryview(b).cast("B"), 0
        while done < len(out):
            k, offset = divmod(self._pos, self._blocks.block)
            data = self._blocks.get(k)
            n = min(len(out) - done, len(data) - offset)
            if n <= 0:
                break
            out[done : done + n] = memoryview(data)[offset : offset + n]
            self._pos += n
            done += n
        return done
