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
                  "clips": 18, "shard": "train-000000.tar", "reason": null}],
      "skipped": [{"path": "...", "reason": "..."}],   # not decodable at all
      "skipped_extensions": {".txt": 2},                # files ignored for their extension
      "index": {"name": "index.npy", "bytes": 1234, "sha256": "..."},
      "totals": {"videos": 10, "clips": 180, "bytes": 123, "shards": 1,
                 "skipped": 1, "partial": 0, "too_short": 0}
    }

``index.npy`` (int64 ``[clips, 4]``: shard number in ``shards``, byte offset of the
sample's first tar header, byte length of its members, xxh3-64 of those bytes as made by
:func:`~shardkin.format.tar.checksum`; ``[clips, 3]`` in builds from before checksums)
lists every clip in torchvision's order -- class, video within class, clip within video
-- so clip ``i`` is one positioned read.
"""
from __future__ import annotations

import codecs
import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict

from .sample import FORMAT_VERSIONS

MANIFEST = "manifest.json"
INDEX = "index.npy"
REQUIRED_KEYS = ("classes", "format_version", "shards", "split")
HEAD_KEYS = (*REQUIRED_KEYS, "index", "options")  # what readers parse at start-up


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
    def from_json(cls, entries: list[dict[str, Any]]) -> ShardTable:
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
    frames: int
    clips: int
    tail: int  # frames kept after the last clip (contiguous builds; absent before them)
    shard: str | None
    reason: str | None


@dataclass
class Manifest:
    """One built split. Readers parse only its head (:meth:`parse` with ``head=True``):
    ``videos``, ``skipped`` and ``totals`` are then empty."""

    split: str
    classes: list[str]
    shards: ShardTable
    options: dict[str, Any]
    index: IndexInfo | None = None
    videos: list[VideoRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_extensions: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    format_version: int = 1  # 2: flac or no audio; 3: jpeg video

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
                videos=data.get("videos", []), skipped=data.get("skipped", []),
                skipped_extensions=data.get("skipped_extensions", {}),
                totals=data.get("totals", {}), format_version=data["format_version"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where} is not a valid shardkin manifest ({e})") from None

    @classmethod
    def parse(cls, raw: bytes, where: str = "manifest", head: bool = False) -> Manifest:
        """The manifest of ``manifest.json``'s bytes; with ``head``, its head only (fast:
        only the first bytes are decoded when they hold it)."""
        try:
            if not head:
                return cls.from_json(json.loads(raw.decode("utf-8")), where)
            for limit in (*_HEAD_PREFIXES, len(raw)):
                try:
                    data = _head(_decode(raw, limit), where, HEAD_KEYS)
                except ValueError:  # a value cut by the prefix
                    if limit >= len(raw):
                        raise
                    continue
                if all(k in data for k in REQUIRED_KEYS) or limit >= len(raw):
                    break
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{where} is not valid JSON ({e})") from None
        return cls.from_json(data, where)

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.json`` object (written with sorted keys)."""
        return {"format_version": self.format_version, "split": self.split,
                "options": self.options, "classes": self.classes,
                "shards": [s._asdict() for s in self.shards], "videos": self.videos,
                "skipped": self.skipped, "skipped_extensions": self.skipped_extensions,
                "index": self.index._asdict() if self.index else None, "totals": self.totals}


_WS = re.compile(r"[ \t\n\r]*")


_HEAD_PREFIXES = (1 << 22, 1 << 25)  # bytes decoded to find the head, before all of them


def _decode(raw: bytes, limit: int) -> str:
    """The text of ``raw``'s first ``limit`` bytes (a character cut at the end left out)."""
    return codecs.getincrementaldecoder("utf-8")().decode(raw[:limit])


def _head(text: str, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The top-level ``keys`` of a manifest's JSON ``text``, leaving the rest unparsed:
    manifests are written with sorted keys, so ``videos`` (most of a large one) is last
    and a reader's start-up does not pay for it."""
    decoder, out, pos = json.JSONDecoder(), {}, _WS.match(text).end()
    if text[pos : pos + 1] != "{":
        raise ValueError(f"{where} is not a JSON object")
    pos += 1
    while len(out) < len(keys):
        pos = _WS.match(text, pos).end()
        if text[pos : pos + 1] in ("}", ""):
            break
        key, pos = decoder.raw_decode(text, pos)
        if key == "videos" and all(k in out for k in REQUIRED_KEYS):
            break  # what is left to find is optional (an older build's head)
        pos = _WS.match(text, pos).end()
        if text[pos : pos + 1] != ":":
            raise ValueError(f"{where}: malformed JSON at character {pos}")
        value, pos = decoder.raw_decode(text, _WS.match(text, pos + 1).end())
        if key in keys:
            out[key] = value
        pos = _WS.match(text, pos).end()
        pos += text[pos : pos + 1] == ","
    return out
