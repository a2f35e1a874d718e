"""``videos.npy`` and ``paths.npy``: every video a build listed, for readers, in binary.

One row a video, in torchvision's order (the order ``torchvision.datasets.Kinetics`` lists
the same tree: class, then video), videos that gave no clip included, so that a reader's
``samples`` and ``video_clips`` line up with torchvision's. Readers memory-map both files
and read rows when they need them: nothing here grows a reader's start-up with the data.

``videos.npy`` is int64 ``[len(COLUMNS), videos]``, a column a row, so that a reader
memory-maps one column as a plain array (no copy, only its pages read; a row a video
would make every column a strided copy touching the whole table):

- ``video_index``: the video's number in sample keys and ``index.npy``'s order, -1 for a
  video that was listed but not built (unreadable: see ``status``);
- ``label``; ``status``: an index into :data:`STATUS`;
- ``clips``: stored clips (0 when too short or not built); ``tail``: frames kept after the
  last clip (contiguous builds); ``frames``: timeline frames; ``held``: frames of them
  showing the previous picture (:mod:`shardkin.builder.timeline`);
- ``fps``: the timeline's fps, a float64 stored bit for bit in the int64 column;
- ``shard``: the number of the shard holding its clips (-1 for none), so that a shard's
  samples are found without sorting ``index.npy``;
- ``path_end``: where the video's path ends in ``paths.npy``, uint8 UTF-8 of every path
  (relative to the build's ROOT), one after the other.

The index rows of video ``v`` are ``clips`` rows starting at the sum of the clips of the
videos before it (videos are in ``video_index`` order, and unbuilt videos have none).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .npy import decode_npy, encode_npy

VIDEOS, PATHS = "videos.npy", "paths.npy"
COLUMNS = ("video_index", "label", "status", "clips", "tail", "frames", "held", "fps",
           "shard", "path_end")
STATUS = ("ok", "partial", "too_short", "failed", "skipped")
_COL = {name: i for i, name in enumerate(COLUMNS)}


def encode_videos(videos: Iterable[Mapping[str, Any]]) -> tuple[bytes, bytes]:
    """``videos.npy`` and ``paths.npy`` of manifest-like video records in listing order
    (``path``, ``label``, ``status``; ``video_index``, ``clips``, ``tail``, ``frames``,
    ``held`` (a list), ``fps`` and ``shard`` (a number) where known)."""
    rows, paths, end = [], [], 0
    for v in videos:
        path = v["path"].encode("utf-8")
        end += len(path)
        paths.append(path)
        fps = np.array(float(v.get("fps") or 0.0)).view(np.int64)
        rows.append([v.get("video_index", -1) if v["status"] != "skipped" else -1, v["label"],
                     STATUS.index(v["status"]), v.get("clips", 0), v.get("tail", 0),
                     v.get("frames", 0), len(v.get("held") or ()), int(fps),
                     v.get("shard", -1), end])
    table = np.ascontiguousarray(np.array(rows, np.int64).reshape(-1, len(COLUMNS)).T)
    return encode_npy(table), encode_npy(np.frombuffer(b"".join(paths), np.uint8))


class VideoTable:
    """The rows of ``videos.npy`` (an int64 array, memory-mapped or in memory) and the bytes
    of ``paths.npy`` (read on first use, by ``paths``: a callable)."""

    def __init__(self, table: np.ndarray, paths: Any) -> None:
        if table.ndim != 2 or table.shape[0] != len(COLUMNS):
            raise ValueError(f"{VIDEOS} is {table.shape}, not [{len(COLUMNS)}, videos]")
        self.table, self._paths, self._blob = table, paths, None

    def __len__(self) -> int:
        return self.table.shape[1]

    def column(self, name: str) -> np.ndarray:
        """One column as int64 (``fps``: as float64), a view of the table."""
        values = self.table[_COL[name]]
        return values.view(np.float64) if name == "fps" else values

    @property
    def blob(self) -> np.ndarray:
        """``paths.npy``'s bytes, uint8."""
        if self._blob is None:
            self._blob = self._paths() if callable(self._paths) else self._paths
        return self._blob

    def path(self, i: int) -> str:
        ends = self.table[_COL["path_end"]]
        end, start = int(ends[i]), int(ends[i - 1]) if i > 0 else 0
        return bytes(self.blob[start:end]).decode("utf-8")

    def ends_with(self, suffixes: Sequence[str]) -> np.ndarray:
        """bool per video: its lowercased path ends with one of ``suffixes``, as
        torchvision's ``has_file_allowed_extension`` tests a file name (vectorised over
        the path bytes: no path is decoded)."""
        ends = self.column("path_end")
        starts = np.concatenate([[0], ends[:-1]])
        blob = self.blob
        keep = np.zeros(len(ends), bool)
        for suffix in {s.lower().encode("utf-8") for s in suffixes}:
            n = len(suffix)
            fits = ends - starts >= n
            if not n:
                keep |= True
                continue
            tail = blob[(ends[fits, None] - n + np.arange(n)).reshape(-1)].reshape(-1, n)
            lower = np.where((tail >= 65) & (tail <= 90), tail + 32, tail)  # ASCII A-Z
            match = np.zeros(len(ends), bool)
            match[fits] = (lower == np.frombuffer(suffix, np.uint8)).all(axis=1)
            keep |= match
        return keep

    def built(self) -> np.ndarray:
        """Positions of the rows of built videos (``video_index`` >= 0), in order."""
        return np.flatnonzero(self.column("video_index") >= 0)

    def first_rows(self) -> np.ndarray:
        """Each row's first row in ``index.npy``."""
        clips = self.column("clips")
        return np.cumsum(clips) - clips


def encode_manifest_videos(videos: Sequence[Mapping[str, Any]],
                           shards: Sequence[str]) -> tuple[bytes, bytes]:
    """:func:`encode_videos` of an older build's manifest ``videos`` (built videos only) and
    shard names."""
    number = {name: i for i, name in enumerate(shards)}
    return encode_videos({**v, "shard": number.get(v.get("shard"), -1)}
                         for v in sorted(videos, key=lambda v: v["video_index"]))


def table_from_manifest(videos: Sequence[Mapping[str, Any]],
                        shards: Sequence[str]) -> VideoTable:
    """The table of an older build, from its manifest."""
    table, paths = encode_manifest_videos(videos, shards)
    return VideoTable(decode_npy(table), decode_npy(paths))
