"""``manifest.json``: the record of one built split, written last and atomically by the
builder, as typed records (:class:`Manifest`, :class:`ShardInfo`, :class:`IndexInfo`).

Schema (format versions 1 to 3: see :mod:`.sample`)::

    {
      "format_version": 1,                     # 2: flac or no audio; 3: jpeg video
      "split": "train",
      "options": {...build options...},
      "classes": ["abseiling", ...],          # label = index in this list
      "shards": [{"name": "train-000000.tar", "clips": 120, "bytes": 123456789,
                  "sha256": "..."}],           # names relative to the manifest's folder
      "videos": [{"path": "abseiling/x.mp4", "label": 0, "video_index": 0,
                  "status": "ok" | "partial" | "too_short", "frames": 300,
                  "clips": 18, "tail": 12, "fps": 29.97002997002997, "held": [],
                  "shard": "train-000000.tar", "reason": null,
                  "audio_error": "..."}],     # only where the sound stopped decoding early
      "skipped": [{"path": "...", "reason": "..."}],   # not decodable at all
      "skipped_extensions": {".txt": 2},                # files ignored for their extension
      "index": {"name": "index.npy", "bytes": 1234, "sha256": "..."},
      "video_table": {"name": "videos.npy", ...}, "path_table": {"name": "paths.npy", ...},
      "totals": {"videos": 10, "clips": 180, "bytes": 123, "shards": 1,
                 "skipped": 1, "partial": 0, "too_short": 0, "held": 0, "audio_errors": 0},
      # only in builds of the official Kinetics CSV (counted in totals too):
      "missing": [{"row": 7, "path": "train/ID_000010_000020.mp4", "class": "abseiling"}],
      "unlisted": ["train/notes.txt"],                  # files the CSV does not name
      "duplicates": [{"row": 9, "path": "...", "class": "...", "first_row": 3,
                      "first_class": "..."}]           # rows naming a video again
    }

``index.npy`` (int64 ``[clips, 4]``: shard number in ``shards``, byte offset of the
sample's first tar header, byte length of its members, xxh3-64 of those bytes as made by
:func:`~shardkin.format.tar.checksum`; ``[clips, 3]`` in builds from before checksums)
lists every clip in torchvision's order -- class, video within class, clip within video
-- so clip ``i`` is one positioned read. ``videos.npy`` and ``paths.npy`` list every
video in that order for readers (:mod:`.videos`).
"""
from __future__ import annotations

import functools
import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict

from .options import BuildOptions
from .sample import FORMAT_VERSIONS

MANIFEST = "manifest.json"
HEAD = "head.json"  # the manifest's head, for readers' start-up
INDEX = "index.npy"
REQUIRED_KEYS = ("classes", "format_version", "shards", "split")
HEAD_KEYS = (*REQUIRED_KEYS, "index", "options", "video_table", "path_table")  # head.json
LAYOUT = ("missing", "unlisted", "duplicates")  # an official Kinetics CSV's, when built from one


class ShardInfo(NamedTuple):
    """A shard of the split: its file name (relative to the manifest), clips, bytes, sha256."""

    name: str
    clips: int
    bytes: int
    sha256: str | None = None


class ShardTable(Sequence[ShardInfo]):
    """The shards of a split, stored by column: a Kinetics-700 manifest lists 40k shards,
    and 40k record objects would be traversed by every full garbage collection of every
    DataLoader worker, where four lists of strings and ints are not. Indexing and
    iterating give :class:`ShardInfo` records."""

    def __init__(self, names: list[str], clips: list[int], nbytes: list[int],
                 sha256: list[str | None]) -> None:
        self.names, self.clips, self.bytes, self.sha256 = names, clips, nbytes, sha256

    @classmethod
    def of(cls, shards: Iterable[ShardInfo]) -> ShardTable:
        rows = list(shards)
        return cls([s.name for s in rows], [s.clips for s in rows], [s.bytes for s in rows],
                   [s.sha256 for s in rows])

    @classmethod
    def from_json(cls, entries: list[dict[str, Any]] | dict[str, list]) -> ShardTable:
        """From a manifest's list of shards, or ``head.json``'s columns."""
        if isinstance(entries, dict):
            return cls(entries["name"], entries["clips"], entries["bytes"], entries["sha256"])
        return cls([s["name"] for s in entries], [s["clips"] for s in entries],
                   [s["bytes"] for s in entries], [s.get("sha256") for s in entries])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> ShardInfo:  # type: ignore[override]
        return ShardInfo(self.names[i], self.clips[i], self.bytes[i], self.sha256[i])

    def __iter__(self) -> Iterator[ShardInfo]:
        return map(ShardInfo, self.names, self.clips, self.bytes, self.sha256)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def select(self, keep: Collection[str]) -> ShardTable:
        """The shards named in ``keep``, in this table's order."""
        return ShardTable.of(s for s in self if s.name in keep)


class IndexInfo(NamedTuple):
    """``index.npy``: its name, bytes and sha256."""

    name: str
    bytes: int
    sha256: str


class VideoRecord(TypedDict):
    """What became of one video (``status``: ok, partial or too_short)."""

    path: str
    label: int
    video_index: int
    status: str
    frames: int  # on the build's timeline (builder.timeline): torchvision's count
    clips: int
    tail: int  # frames kept after the last clip (contiguous builds; absent before them)
    fps: float  # the timeline's (absent before it)
    held: list[int]  # frames with no picture of their own, showing the previous one
    shard: str | None
    reason: str | None
    # present only where the sound stopped decoding before the video's end: why; the clips
    # from there on hold only the sound decoded before it (absent before this key existed)
    audio_error: str


@dataclass
class Manifest:
    """One built split. Readers parse only its head (``head.json``, :meth:`head_json`):
    ``videos`` and ``skipped`` are then empty."""

    split: str
    classes: list[str]
    shards: ShardTable
    options: dict[str, Any]
    index: IndexInfo | None = None
    video_table: IndexInfo | None = None  # videos.npy (format.videos); None before it
    path_table: IndexInfo | None = None  # paths.npy
    videos: list[VideoRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_extensions: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    format_version: int = 1  # 2: flac or no audio; 3: jpeg video
    missing: list[dict[str, Any]] | None = None  # LAYOUT: only from an official CSV
    unlisted: list[str] | None = None
    duplicates: list[dict[str, Any]] | None = None

    @functools.cached_property
    def build_options(self) -> BuildOptions:
        """``options`` as typed records (an older build's missing ones as it made them)."""
        return BuildOptions.from_manifest(self.options)

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> Manifest:
        """The manifest of a parsed ``manifest.json``; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{where} is not a shardkin manifest: no {', '.join(missing)}")
        if data["format_version"] not in FORMAT_VERSIONS:
            raise ValueError(f"unsupported manifest format_version {data['format_version']!r} "
                             f"in {where}: this shardkin reads versions "
                             f"{', '.join(map(str, FORMAT_VERSIONS))} (a newer shardkin made it?)")
        try:
            return cls(
                split=data["split"], classes=data["classes"],
                shards=ShardTable.from_json(data["shards"]),
                options=data.get("options") or {},
                index=IndexInfo(**data["index"]) if data.get("index") else None,
                video_table=(IndexInfo(**data["video_table"]) if data.get("video_table")
                             else None),
                path_table=IndexInfo(**data["path_table"]) if data.get("path_table") else None,
                videos=data.get("videos", []), skipped=data.get("skipped", []),
                skipped_extensions=data.get("skipped_extensions", {}),
                totals=data.get("totals", {}), format_version=data["format_version"],
                **{k: data[k] for k in LAYOUT if k in data})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where} is not a valid shardkin manifest ({e})") from None

    @classmethod
    def parse(cls, raw: bytes, where: str = "manifest") -> Manifest:
        """The manifest of ``manifest.json``'s (or ``head.json``'s) bytes."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{where} is not valid JSON ({e})") from None
        return cls.from_json(data, where)

    def head_json(self) -> dict[str, Any]:
        """``head.json``: what readers need at start-up (no ``videos``, ``skipped``), the
        shards by column (a JSON list a column parses faster than an object a shard)."""
        full = self.to_json()
        head = {k: full[k] for k in HEAD_KEYS if full.get(k) is not None}
        head["shards"] = {"name": self.shards.names, "clips": self.shards.clips,
                          "bytes": self.shards.bytes, "sha256": self.shards.sha256}
        return {**head, "totals": self.totals}

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.json`` object (written with sorted keys)."""
        return {"format_version": self.format_version, "split": self.split,
                "options": self.options, "classes": self.classes,
                "shards": [s._asdict() for s in self.shards], "videos": self.videos,
                "skipped": self.skipped, "skipped_extensions": self.skipped_extensions,
                "index": self.index._asdict() if self.index else None, "totals": self.totals,
                **{k: getattr(self, k)._asdict() for k in ("video_table", "path_table")
                   if getattr(self, k) is not None},
                **{k: getattr(self, k) for k in LAYOUT if getattr(self, k) is not None}}
