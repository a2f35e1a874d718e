"""One way to open a built split and its shards: local, cached or remote, retried.

:func:`open_split` finds the manifest of a source (a manifest file or URL, a split
folder, a build folder with ``split``, or shard paths of one split folder) and
returns a :class:`Split`; :meth:`Split.open` opens a shard, or the byte range of some
of its samples, for reading: a local file (unbuffered, positioned reads safe in
forked workers), a copy in the local shard cache, or a :class:`~.ranges.RangeStream`
of retried range requests that fills the cache as it streams. ``ShardDataset``,
``Kinetics``, ``info``, ``verify``, ``show`` and ``--classes-from`` all open builds here.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..format.manifest import HEAD, INDEX, MANIFEST, Manifest, ShardTable
from ..format.npy import decode_npy, parse_header
from ..format.tar import BLOCK, ShardError
from ..format.videos import VideoTable, table_from_manifest
from .cache import CacheWriter, ShardCache
from .folder import Folder
from .locate import choose, locate
from .ranges import RangeStream

_scratch = threading.local()


def scratch(n: int) -> memoryview:
    """``n`` bytes of this thread's scratch buffer, reused (fresh memory costs a page fault
    per 4 KiB): for bytes read only to be hashed at once. Valid until its next use."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < n:
        buf = _scratch.buf = bytearray(max(n, 1 << 20))
    return memoryview(buf)[:n]


class LocalShard:
    """A shard file open for positioned reads (closed when the last clip read from it is)."""

    def __init__(self, path: str, file: BinaryIO | None = None) -> None:
        self.path, self.file = path, None
        self.file = open(path, "rb", buffering=0) if file is None else file

    def __del__(self) -> None:
        if self.file is not None:
            self.file.close()


class Opened:
    """A shard opened by :meth:`Split.open`: ``file`` reads from sample ``first`` on,
    which starts at byte ``offset`` of the shard.

    ``local`` is the shard file when its payloads can be read later by position
    (local or cached); otherwise ``file`` is a stream. Call :meth:`finish` once the
    samples wanted are read (a whole shard streaming into the cache is then completed
    and published), and :meth:`close` in the end.
    """

    def __init__(self, file: BinaryIO, local: LocalShard | None, first: int = 0,
                 offset: int = 0, cache: CacheWriter | None = None) -> None:
        self.file, self.local, self.first, self.offset = file, local, first, offset
        self._cache = cache

    def finish(self) -> None:
        if self._cache is not None:
            self.file.drain()
            self._cache.commit()
            self._cache = None

    def close(self) -> None:
        if self._cache is not None:
            self._cache.abort()
            self._cache = None
        if self.local is None:
            self.file.close()


SCANS = 64  # shard lookups by a scan of the video table before it is sorted (sample_ranges)

@dataclass
class Split:
    """A built split: its folder, manifest, the shards chosen (all by default) and an
    optional local shard cache for remote builds."""

    folder: Folder
    manifest_name: str
    manifest: Manifest
    shards: ShardTable
    cache: ShardCache | None = None

    def __post_init__(self) -> None:
        self._numbers: dict[str, int] | None = None
        self._table: VideoTable | None = None
        self._rows: np.ndarray | None = None  # index.npy, memory-mapped when local
        self._first_rows: np.ndarray | None = None
        self._counts: tuple[np.ndarray, np.ndarray] | None = None
        self._scans = 0  # shards' videos found by a scan of the table (see _videos_in)
        self._by_shard: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def where(self) -> str:
        """The manifest's path or URL, for messages."""
        return self.folder.path(self.manifest_name)

    def path(self, name: str) -> str:
        return self.folder.path(name)

    def read_array(self, name: str) -> np.ndarray:
        """The npy file ``name`` of the split: memory-mapped when local (the page cache
        shares it among processes, and only the rows used are read); on object storage
        fetched, once a machine into the shard cache when there is one, and memory-mapped
        from there."""
        path = self.path(name)
        if self.folder.remote:
            entry = next((e for e in (self.manifest.index, self.manifest.video_table,
                                      self.manifest.path_table) if e and e.name == name), None)
            path = self._cached(entry) if entry is not None and self.cache else None
            if path is None:
                return decode_npy(self.folder.read_bytes(name))
        with open(path, "rb") as f:
            offset, dtype, shape = parse_header(f.read(4096))
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype, "r", offset, shape).view(np.ndarray)  # faster rows

    def _cached(self, entry: Any) -> str | None:
        """The local copy of a file of the split in the shard cache (fetched into it when
        missing); None when the cache cannot take it."""
        cached = self.cache.open(entry.sha256, entry.bytes)
        if cached is None:
            writer = self.cache.writer(entry.sha256, entry.bytes)
            if writer is None:
                return None
            writer(memoryview(self.folder.read_bytes(entry.name)))
            if not writer.commit():
                return None
        else:
            cached.close()
        return self.cache.path(entry.sha256)

    def read_index(self) -> np.ndarray:
        """``index.npy``: int64 ``[clips, 4]`` (shard number, offset, length, checksum;
        ``[clips, 3]`` in builds from before checksums)."""
        return self.read_array(self.manifest.index.name if self.manifest.index else INDEX)

    def video_table(self) -> VideoTable:
        """Every video the build listed (:mod:`shardkin.format.videos`), read on first use;
        for a build older than ``videos.npy``, made from its whole manifest."""
        if self._table is None:
            m = self.manifest
            if m.video_table is not None and m.path_table is not None:
                self._table = VideoTable(self.read_array(m.video_table.name),
                                         lambda: self.read_array(m.path_table.name))
            else:
                raw = self.folder.read_bytes(self.manifest_name)
                self._table = table_from_manifest(Manifest.parse(raw, self.where).videos,
                                                  m.shards.names)
        return self._table

    def loaded_index(self) -> bool:
        """Whether :meth:`index_rows` has read the index in this process."""
        return self._rows is not None

    def index_rows(self) -> np.ndarray | None:
        """``index.npy`` (:meth:`read_index`), once a process; None when the build has
        none. ShardError when it is not an index."""
        if self._rows is None:
            try:
                rows = self.read_index()
            except FileNotFoundError:
                return None
            except ValueError as e:
                raise ShardError(f"{self.path(INDEX)}: {e}") from None
            if rows.dtype != np.int64 or rows.ndim != 2 or rows.shape[1] not in (3, 4):
                raise ShardError(f"{self.path(INDEX)}: {rows.dtype} {list(rows.shape)} is not "
                                 "int64 [clips, 4]")
            self._rows = rows
        return self._rows

    def first_rows(self) -> np.ndarray:
        """The index row of each video's first clip, in ``video_index`` order."""
        if self._first_rows is None:
            counts = self.clips_per_video()
            self._first_rows = np.cumsum(counts) - counts
        return self._first_rows

    def clips_per_video(self) -> np.ndarray:
        """int64 clip counts of the split's built videos in ``video_index`` order
        (torchvision's), videos too short for a clip included with 0."""
        return self.video_counts()[0]

    def video_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`clips_per_video`, and the frames each video keeps after its last clip
        (contiguous builds keep them for clips cut at read time; zeros for older builds);
        taken from the video table once a process."""
        if self._counts is None:
            table = self.video_table()
            clips, tail, built = table.column("clips"), table.column("tail"), table.built()
            # every video built (the usual case): the table's own columns, no copy
            self._counts = (clips, tail) if len(built) == len(table) else (
                clips[built], tail[built])
        return self._counts

    def open_file(self, name: str, size: int) -> BinaryIO:
        """File ``name`` of the split (``size`` bytes) for one front-to-back read: a local
        file, or a stream of retried range requests."""
        if self.folder.remote:
            return RangeStream(self.folder, name, 0, size)
        return open(self.path(name), "rb", buffering=0)

    def open(self, shard: int, start: int = 0, stop: int | None = None) -> Opened:
        """Shard number ``shard`` (of :attr:`shards`), to read samples ``start..stop``."""
        info = self.shards[shard]
        path = self.path(info.name)
        if not self.folder.remote:
            local = LocalShard(path)
            return Opened(local.file, local)
        cached = self.cache and info.sha256 and self.cache.open(info.sha256, info.bytes)
        if cached:
            local = LocalShard(path, cached)
            return Opened(local.file, local)
        # With a cache, the first process to claim the shard streams all of it (walking to
        # the samples wanted, fetching the rest once they are read) and caches it.
        writer = self.cache.writer(info.sha256, info.bytes) if (
            self.cache and info.sha256) else None
        stop = info.clips if stop is None else stop
        ranges = None if writer is not None or (start == 0 and stop == info.clips) else (
            self.sample_ranges(self.number(shard)))
        starts = None if ranges is None else ranges[:, 0]
        first = 0 if starts is None else start
        begin = 0 if starts is None else int(starts[start])
        end = (info.bytes if starts is None or stop == info.clips
               else int(starts[stop]) + BLOCK)  # the next header ends the last sample
        return Opened(RangeStream(self.folder, info.name, begin, end, sink=writer), None, first,
                      begin, writer)

    def number(self, shard: int) -> int:
        """The manifest's number (``index.npy``'s) of shard number ``shard`` of those read."""
        every = self.manifest.shards
        if self.shards is every:
            return shard
        if self._numbers is None:  # shard name -> its number, once a process
            self._numbers = {n: k for k, n in enumerate(every.names)}
        return self._numbers[self.shards[shard].name]

    def sample_ranges(self, number: int) -> np.ndarray | None:
        """(byte offset, byte length[, checksum]) of each sample of shard ``number`` (the
        manifest's) in shard order: ``index.npy``'s rows of the videos the video table puts
        in that shard (no sort of the whole index, whatever its size); None for builds
        without an index (streams then walk from the start)."""
        rows = self.index_rows()
        if rows is None:
            return None
        videos = self._videos_in(number)
        clips, first = self.clips_per_video()[videos], self.first_rows()[videos]
        clips, first = clips[clips > 0], first[clips > 0]
        order = np.argsort(rows[first, 1])  # the videos as stored: by their first byte
        clips, first = clips[order], first[order]
        ends = np.cumsum(clips)
        picks = np.repeat(first - (ends - clips), clips) + np.arange(int(ends[-1]) if len(
            ends) else 0)
        return rows[picks, 1:]

    def _videos_in(self, number: int) -> np.ndarray:
        """The ``video_index`` of the videos in shard ``number``. The first lookups of a
        process scan the table's shard column (1.2 ms at 2.56M videos: a first batch needs a
        few); past :data:`SCANS`, the column is sorted once (0.3 s there) and each lookup is
        a search, so that reading every shard costs O(videos), not O(shards x videos)."""
        table = self.video_table()  # columns are memory-mapped views: nothing copied
        shard, index = table.column("shard"), table.column("video_index")
        if self._by_shard is None and self._scans < SCANS:
            self._scans += 1
            return index[shard == number]
        if self._by_shard is None:
            order = np.argsort(shard, kind="stable")
            self._by_shard = shard[order], index[order]
        sorted_shards, videos = self._by_shard
        lo, hi = np.searchsorted(sorted_shards, [number, number + 1])
        return videos[lo:hi]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_numbers": None, "_table": None, "_rows": None,
                "_first_rows": None, "_counts": None, "_scans": 0,
                "_by_shard": None}  # read again where needed


def open_split(source: Any, split: str | None = None, *, storage_options: dict | None = None,
               attempts: int = 5, head: bool = True, strict_split: bool = False,
               cache: ShardCache | None = None) -> Split:
    """The split of ``source`` (see :func:`locate`); ``head``: read only what readers need,
    ``head.json`` (a build made before it: its whole manifest, which may take seconds at
    Kinetics size; re-running its build command adds the file), else the whole manifest."""
    folder, name, chosen = locate(source, split, storage_options, attempts)
    where = folder.path(name)
    read = HEAD if head and name == MANIFEST and folder.exists(HEAD) else name
    manifest = Manifest.parse(folder.read_bytes(read), folder.path(read))
    if strict_split and split is not None and manifest.split != split:
        raise FileNotFoundError(f"{where} is the manifest of split {manifest.split!r}, "
                                f"not {split!r}: leave out --split or pass the build folder")
    return Split(folder, name, manifest, choose(manifest.shards, chosen, where), cache)


def load_manifest(source: str | os.PathLike, split: str | None = None,
                  storage_options: dict | None = None) -> dict[str, Any]:
    """The whole ``manifest.json`` of ``source`` (local or a URL), checked, as parsed JSON."""
    folder, name, _ = locate(source, split, storage_options)
    data = folder.read_json(name)
    Manifest.from_json(data, folder.path(name))
    return data
