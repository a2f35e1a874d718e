"""What a finished build writes, last: ``index.npy``, the video table (``videos.npy``,
``paths.npy``), ``head.json`` and then ``manifest.json``, the publish point, once a listing
shows every shard it names (nothing broken is ever published). Also gives a build made
before the reader files its ``head.json`` and video table, from its manifest."""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import numpy as np

from ..format.manifest import (
    HEAD,
    INDEX,
    LAYOUT,
    MANIFEST,
    IndexInfo,
    Manifest,
    ShardInfo,
    ShardTable,
)
from ..format.npy import encode_npy
from ..format.videos import PATHS, VIDEOS, encode_manifest_videos, encode_videos
from ..store.folder import Folder
from .errors import BuildError


def _write(folder: Folder, name: str, data: bytes) -> IndexInfo:
    folder.write_bytes(name, data)
    return IndexInfo(name, len(data), hashlib.sha256(data).hexdigest())


def finish(folder: Folder, plan: dict, records: dict[str, dict]) -> dict[str, Any]:
    """Write ``index.npy``, ``videos.npy``, ``paths.npy``, ``head.json``, then the manifest;
    returns the manifest."""
    index = _write(folder, INDEX, encode_npy(_index(plan, records)))
    videos, paths = encode_videos(_listing(plan, records))
    manifest = _manifest(plan, records, index, _write(folder, VIDEOS, videos),
                         _write(folder, PATHS, paths))
    _check_published(folder, manifest)
    folder.write_json(HEAD, manifest.head_json(), compact=True)
    manifest = manifest.to_json()
    folder.write_json(MANIFEST, manifest)
    return manifest


def _check_published(folder: Folder, manifest: Manifest) -> None:
    """Before the manifest is published: one listing shows every shard it names, and the
    index, with the recorded size; BuildError (nothing published) if not."""
    found = folder.sizes()
    files = [manifest.index, manifest.video_table, manifest.path_table]
    wrong = [f"{name}: {'missing' if found.get(name) is None else f'{found[name]} bytes'}, "
             f"recorded {size}"
             for name, size in [*zip(manifest.shards.names, manifest.shards.bytes),
                                *((f.name, f.bytes) for f in files)]
             if found.get(name) != size]
    if wrong:
        raise BuildError(f"{folder.url}: not published, the files differ from their records "
                         "(removed or replaced by another process?): " + "; ".join(wrong[:5])
                         + "; re-run the same command to rebuild them")


def _index(plan: dict, records: dict[str, dict]) -> np.ndarray:
    """Rows (shard number, offset, length, checksum) of every clip, in torchvision's order."""
    rows = []
    for n, s in enumerate(plan["shards"]):
        for v in records[s["name"]]["videos"]:
            rows += [(v["video_index"], k, n, *sample) for k, sample in enumerate(v["samples"])]
    rows.sort()
    width = min((len(r) - 2 for r in rows), default=4)  # 3: shards of an older version
    return np.array([r[2 : 2 + width] for r in rows], dtype=np.int64).reshape(-1, width)


def _listing(plan: dict, records: dict[str, dict]) -> list[dict]:
    """Every video the plan listed, in listing order: its record, or for a video that could
    not be probed its path, label and ``status: skipped``."""
    number = {s["name"]: n for n, s in enumerate(plan["shards"])}
    built = {v["video_index"]: {**v, "shard": number.get(v["shard"], -1)}
             for r in records.values() for v in r["videos"]}
    rows = [(v["position"], built[v["video_index"]]) for v in plan["videos"]]
    rows += [(s["position"], {**s, "status": "skipped"})
             for s in plan["skipped"] if "position" in s]
    return [v for _, v in sorted(rows, key=lambda r: r[0])]


def _manifest(plan: dict, records: dict[str, dict], index: IndexInfo, video_table: IndexInfo,
              path_table: IndexInfo) -> Manifest:
    """The manifest of the plan's shards, from their records."""
    shards, videos, failed = [], [], []
    for s in plan["shards"]:
        r = records[s["name"]]
        shards.append(ShardInfo(r["name"], r["clips"], r["bytes"], r["sha256"]))
        for v in r["videos"]:
            v = {k: val for k, val in v.items() if k != "samples"}
            (failed if v["status"] == "failed" else videos).append(v)
    videos.sort(key=lambda v: v["video_index"])
    skipped = [{"path": v["path"], "reason": v["reason"]} for v in plan["skipped"] + failed]
    status = Counter(v["status"] for v in videos)
    layout = {k: plan[k] for k in LAYOUT if k in plan}  # an official download's
    totals = {"videos": len(videos), "clips": sum(s.clips for s in shards),
              "bytes": sum(s.bytes for s in shards), "shards": len(shards),
              "skipped": len(skipped), "partial": status["partial"],
              "too_short": status["too_short"],
              "held": sum(len(v.get("held", ())) for v in videos),
              "audio_errors": sum(1 for v in videos if v.get("audio_error")),
              "skipped_extensions": sum(plan["skipped_extensions"].values()),
              **{k: len(v) for k, v in layout.items()}}
    return Manifest(split=plan["split"], classes=plan["classes"], shards=ShardTable.of(shards),
                    options=plan["options"], index=index, video_table=video_table,
                    path_table=path_table, videos=videos, skipped=skipped,
                    skipped_extensions=plan["skipped_extensions"], totals=totals,
                    format_version=plan["format_version"], **layout)


def add_reader_files(folder: Folder, manifest: dict[str, Any]) -> list[str]:
    """Give a build made before ``head.json`` and ``videos.npy`` the files readers start
    from (made from its manifest: its built videos, no shard offsets); the names added."""
    if folder.exists(HEAD):
        return []
    m = Manifest.from_json(manifest, folder.path(MANIFEST))
    added = [HEAD]
    if m.video_table is None:
        videos, paths = encode_manifest_videos(m.videos, m.shards.names)
        m.video_table, m.path_table = _write(folder, VIDEOS, videos), _write(folder, PATHS, paths)
        manifest.update({k: getattr(m, k)._asdict() for k in ("video_table", "path_table")})
        folder.write_json(MANIFEST, manifest)
        added = [VIDEOS, PATHS, HEAD]
    folder.write_json(HEAD, m.head_json(), compact=True)
    return added
