"""``manifest.json``: the record of one built split, written last and atomically
(by :mod:`shardkin.builder` through :class:`shardkin.storage.Folder`).

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
import os
import re
from pathlib import Path
from typing import Any

from .storage import Folder, is_url

MANIFEST = "manifest.json"
INDEX = "index.npy"


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def manifest_path(source: str | os.PathLike, split: str | None = None) -> Path:
    """The local manifest file of ``source`` (see :func:`locate_manifest`)."""
    if Path(source).is_file():
        return Path(source)
    folder, name = locate_manifest(source, split)
    if folder.remote:
        raise ValueError(f"{folder.url} is a URL: this reads local builds only")
    return Path(folder.path(name))


def locate_manifest(source: str | os.PathLike, split: str | None = None,
                    storage_options: dict | None = None, attempts: int = 5) -> tuple[Folder, str]:
    """(folder, file name) of the manifest of ``source``: a manifest file or URL, a split
    folder, or a build folder with ``split`` -- local or on object storage."""
    text = os.fspath(source)
    if text.endswith(".json"):
        head, _, name = text.rstrip("/").rpartition("/") if is_url(text) else (
            os.path.dirname(text) or ".", "", os.path.basename(text))
        return Folder(head, storage_options, attempts), name
    folder = Folder(text, storage_options, attempts)
    if folder.exists(MANIFEST):
        return folder, MANIFEST
    if split is not None and folder.child(split).exists(MANIFEST):
        return folder.child(split), MANIFEST
    where = folder.child(split).path(MANIFEST) if split else folder.path(MANIFEST)
    raise FileNotFoundError(f"no shardkin manifest at {where}: build one with `shardkin build ROOT "
                            f"{text}{' --split ' + split if split else ''}`")


def load_manifest(source: str | os.PathLike, split: str | None = None) -> dict[str, Any]:
    manifest = read_json(manifest_path(source, split))
    if manifest.get("format_version") != 1:
        raise ValueError(f"unsupported manifest format_version {manifest.get('format_version')!r}")
    return manifest


_WS = re.compile(r"[ \t\n\r]*")
READER_KEYS = ("classes", "format_version", "shards", "split")


def manifest_head(text: str, where: str | os.PathLike = "manifest",
                  keys: tuple[str, ...] = READER_KEYS) -> dict[str, Any]:
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
        pos = _WS.match(text, pos).end()
        if text[pos : pos + 1] != ":":
            raise ValueError(f"{where}: malformed JSON at character {pos}")
        value, pos = decoder.raw_decode(text, _WS.match(text, pos + 1).end())
        if key in keys:
            out[key] = value
        pos = _WS.match(text, pos).end()
        pos += text[pos : pos + 1] == ","
    missing = [k for k in keys if k not in out]
    if missing:
        raise ValueError(f"{where} is not a shardkin manifest: no {', '.join(missing)}")
    if out["format_version"] != 1:
        raise ValueError(f"unsupported manifest format_version {out['format_version']!r}")
    return out
