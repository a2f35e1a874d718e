"""``manifest.json``: the record of one built split, written last and atomically by the
builder, as typed records (:class:`Manifest`, :class:`ShardInfo`, :class:`IndexInfo`).

Schema (format version 1)::

    {
      "format_version": 1,
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

``index.npy`` (int64 ``[clips, 3]``: shard number in ``shards``, byte offset of the
sample's first tar header, byte length of its members) lists every clip in
torchvision's order -- class, video within class, clip within video -- so clip
``i`` is one positioned read.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

from .sample import FORMAT_VERSION

MANIFEST = "manifest.json"
INDEX = "index.npy"
REQUIRED_KEYS = ("classes", "format_version", "shards", "split")
HEAD_KEYS = (*REQUIRED_KEYS, "index", "options")  # what readers parse at start-up


@dataclass(frozen=True)
class ShardInfo:
    """A shard of the split: its file name (relative to the manifest), clips, bytes, sha256."""

    name: str
    clips: int
    bytes: int
    sha256: str | None = None


@dataclass(frozen=True)
class IndexInfo:
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
    shard: str | None
    reason: str | None


@dataclass
class Manifest:
    """One built split. Readers parse only its head (:meth:`parse` with ``head=True``):
    ``videos``, ``skipped`` and ``totals`` are then empty."""

    split: str
    classes: list[str]
    shards: list[ShardInfo]
    options: dict[str, Any]
    index: IndexInfo | None = None
    videos: list[VideoRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_extensions: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> Manifest:
        """The manifest of a parsed ``manifest.json``; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{where} is not a shardkin manifest: no {', '.join(missing)}")
        if data["format_version"] != FORMAT_VERSION:
            raise ValueError(f"unsupported manifest format_version {data['format_version']!r} "
                             f"in {where}: this shardkin reads version {FORMAT_VERSION}")
        try:
            return cls(
                split=data["split"], classes=data["classes"],
                shards=[ShardInfo(s["name"], int(s["clips"]), int(s["bytes"]), s.get("sha256"))
                        for s in data["shards"]],
                options=data.get("options") or {},
                index=IndexInfo(**data["index"]) if data.get("index") else None,
                videos=data.get("videos", []), skipped=data.get("skipped", []),
                skipped_extensions=data.get("skipped_extensions", {}),
                totals=data.get("totals", {}), format_version=data["format_version"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where} is not a valid shardkin manifest ({e})") from None

    @classmethod
    def parse(cls, text: str, where: str = "manifest", head: bool = False) -> Manifest:
        """The manifest of ``manifest.json``'s text; with ``head``, its head only (fast)."""
        try:
            data = _head(text, where, HEAD_KEYS) if head else json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON ({e})") from None
        return cls.from_json(data, where)

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.json`` object (written with sorted keys)."""
        return {"format_version": self.format_version, "split": self.split,
                "options": self.options, "classes": self.classes,
                "shards": [asdict(s) for s in self.shards], "videos": self.videos,
                "skipped": self.skipped, "skipped_extensions": self.skipped_extensions,
                "index": asdict(self.index) if self.index else None, "totals": self.totals}


_WS = re.compile(r"[ \t\n\r]*")


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
