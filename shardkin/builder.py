"""``shardkin.build``: a Kinetics-style split becomes clip shards plus a manifest.

Steps: scan (classes, videos, subsets) -> probe and plan (saved) -> build the shards
not yet done, in parallel -> write the manifest last. Re-running the same call after
an interruption keeps the finished shards and ends with the same bytes.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from .codecs import MEMBER as VIDEO_CODECS
from .decode import probe_or_reason
from .local import map_processes, run_tasks
from .manifest import INDEX, MANIFEST, load_manifest
from .plan import assign_shards, estimate, parse_size
from .npy import encode_npy
from .sample import FORMAT_VERSION
from .scan import DEFAULT_EXTENSIONS, VideoEntry, find_classes, list_tree, read_annotations, select
from .storage import Folder
from .worker import build_shard, record_name

PLAN = ".build/plan.json"


class BuildError(RuntimeError):
    """The build cannot go on; the message says what to do."""


def _class_list(root: Path, classes_from: str | None, annotations: str | None) -> list[str] | None:
    if classes_from:
        p = Path(classes_from)
        if p.suffix == ".txt":
            return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        split = None if (p / MANIFEST).is_file() or p.is_file() else next(
            (d.name for d in sorted(p.iterdir()) if (d / MANIFEST).is_file()), None)
        return load_manifest(p, split)["classes"]
    return None if annotations else find_classes(root)


def _gather(root: Path, split: str, opts: dict) -> dict:
    """Videos of the split after class filters and subsets, with what was left out."""
    classes = _class_list(root, opts["classes_from"], opts["annotations"])
    skipped: list[dict] = []
    other: Counter = Counter()
    if opts["annotations"]:
        videos, classes = read_annotations(opts["annotations"], classes)
    else:
        try:
            videos, other, skipped = list_tree(root, split, classes, tuple(opts["extensions"]))
        except FileNotFoundError as e:
            raise BuildError(f"{e}: check ROOT and --split") from None
    if opts["classes"]:
        unknown = sorted(set(opts["classes"]) - set(classes))
        if unknown:
            raise BuildError(f"--classes names unknown classes: {', '.join(unknown)} "
                             f"(known: {', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''})")
        chosen = sorted(opts["classes"])
        label = {c: i for i, c in enumerate(chosen)}
        videos = [VideoEntry(v.path, v.class_name, label[v.class_name])
                  for v in videos if v.class_name in label]
        classes = chosen
    videos = select(videos, opts["fraction"], opts["limit"], opts["seed"])
    return {"classes": classes, "videos": videos, "skipped": skipped,
            "skipped_extensions": dict(sorted(other.items()))}


def _make_plan(root: Path, split: str, opts: dict, workers: int, progress: bool) -> dict:
    found = _gather(root, split, opts)
    paths = [os.fspath(root / v.path) for v in found["videos"]]
    probes = list(tqdm(map_processes(probe_or_reason, paths, workers), total=len(paths),
                       desc=f"probe {split}", unit="video", disable=not progress))
    videos, skipped = [], list(found["skipped"])
    for v, p in zip(found["videos"], probes):
        if "error" in p:
            skipped.append({"path": v.path, "reason": p["error"]})
            continue
        clips, nbytes = estimate(p, opts)
        videos.append({"video_index": len(videos), "path": v.path, "class": v.class_name,
                       "label": v.label, "est_frames": p["frames"], "est_clips": clips,
                       "est_bytes": nbytes,
                       "est_decode": p["frames"] * p["width"] * p["height"]})
    shards = assign_shards(videos, split, opts["seed"], parse_size(opts["shard_size"]),
                           opts["clips_per_shard"])
    return {"format_version": FORMAT_VERSION, "split": split, "options": opts,
            "classes": found["classes"], "videos": videos, "skipped": skipped,
            "skipped_extensions": found["skipped_extensions"], "shards": shards}


def _check_existing(folder: Folder, split: str, opts: dict, overwrite: bool) -> dict | None:
    """Return a finished manifest for the same options; refuse other options unless overwrite."""
    previous = next((folder.read_json(n) for n in (MANIFEST, PLAN) if folder.exists(n)), None)
    if previous is None:
        return None
    if previous["options"] == opts:
        return previous if folder.exists(MANIFEST) else None
    if not overwrite:
        changed = sorted(k for k in set(opts) | set(previous["options"])
                         if opts.get(k) != previous["options"].get(k))
        raise BuildError(f"{folder.url} holds a build with other options ({', '.join(changed)}): "
                         f"pass --overwrite to replace it, or choose another OUT")
    for name in folder.names(f"{split}-"):
        folder.delete(name)
    for name in (MANIFEST, INDEX, ".build"):
        folder.delete(name)
    return None


def _remove_temporaries(folder: Folder, split: str) -> None:
    """Delete shards left half-written by a killed worker (never visible as shards)."""
    for name in folder.names(f".{split}-"):
        if ".tmp-" in name:
            folder.delete(name)


def _done_record(folder: Folder, name: str) -> dict | None:
    """The record of a shard finished earlier, if the shard is still the one it records:
    the same fingerprint (size and the store's checksum, S3 ETag or GCS md5, or local
    modification time), or the recorded size where the store keeps no checksum; a shard
    changed or replaced since is made again. Nothing is re-read."""
    if not folder.exists(record_name(name)):
        return None
    record = folder.read_json(record_name(name))
    if record.get("fingerprint") is None:
        return record if folder.size(name) == record["bytes"] else None
    return record if folder.fingerprint(name) == record["fingerprint"] else None


def _index(plan: dict, records: dict[str, dict]) -> np.ndarray:
    """Rows (shard number, offset, length) of every clip, in torchvision's order."""
    rows = []
    for n, s in enumerate(plan["shards"]):
        for v in records[s["name"]]["videos"]:
            rows += [(v["video_index"], k, n, off, size) for k, (off, size) in enumerate(v["samples"])]
    rows.sort()
    return np.array([r[2:] for r in rows], dtype=np.int64).reshape(-1, 3)


def _manifest(plan: dict, records: dict[str, dict], index: dict) -> dict:
    shards, videos, failed = [], [], []
    for s in plan["shards"]:
        r = records[s["name"]]
        shards.append({k: r[k] for k in ("name", "clips", "bytes", "sha256")})
        for v in r["videos"]:
            v = {k: val for k, val in v.items() if k != "samples"}
            (failed if v["status"] == "failed" else videos).append(v)
    videos.sort(key=lambda v: v["video_index"])
    skipped = plan["skipped"] + [{"path": v["path"], "reason": v["reason"]} for v in failed]
    status = Counter(v["status"] for v in videos)
    totals = {"videos": len(videos), "clips": sum(s["clips"] for s in shards),
              "bytes": sum(s["bytes"] for s in shards), "shards": len(shards),
              "skipped": len(skipped), "partial": status["partial"],
              "too_short": status["too_short"],
              "skipped_extensions": sum(plan["skipped_extensions"].values())}
    return {"format_version": FORMAT_VERSION, "split": plan["split"], "options": plan["options"],
            "classes": plan["classes"], "shards": shards, "videos": videos, "skipped": skipped,
            "skipped_extensions": plan["skipped_extensions"], "index": index, "totals": totals}


def build(
    root: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "train",
    frames_per_clip: int = 16,
    step_between_clips: int | None = None,
    frame_rate: float | None = None,
    *,
    width: int = 0,
    height: int = 0,
    min_dimension: int = 0,
    max_dimension: int = 0,
    audio_rate: int = 0,
    audio_channels: int = 0,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    classes: Sequence[str] | None = None,
    classes_from: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    fraction: float | None = None,
    limit: int | None = None,
    seed: int = 0,
    shard_size: str | int = "256MB",
    clips_per_shard: int | None = None,
    video_codec: str = "raw",
    zstd_level: int = 3,
    jpeg_quality: int = 88,
    workers: int | None = None,
    decode_threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Build ``out/<split>/`` shards and manifest from ``root/<split>/<class>/<video>``.

    ``out`` is a local folder or an fsspec URL (``s3://bucket/prefix``; credentials and
    endpoint from the environment or ``storage_options``). ``executor="ray"`` runs the
    shard tasks on the Ray cluster at ``ray_address`` (default: start a local one).

    Clip arguments follow ``torchvision.datasets.Kinetics`` (``frames_per_clip``,
    ``step_between_clips`` -- default ``frames_per_clip``, i.e. clips do not overlap --
    and ``frame_rate``); ``width``/``height``/``min_dimension``/``max_dimension`` and
    ``audio_rate``/``audio_channels`` follow its ``_video_*``/``_audio_*`` arguments.
    Returns the manifest (see :mod:`shardkin.manifest`).
    """
    t0 = time.monotonic()
    root = Path(root)
    if not root.is_dir():
        raise BuildError(f"dataset root {root} does not exist or is not a folder")
    folder = Folder(out, storage_options).child(split)
    workers = workers or os.cpu_count() or 1
    threads = decode_threads or max(1, (os.cpu_count() or 1) // workers)
    opts = {
        "frames_per_clip": int(frames_per_clip),
        "step_between_clips": int(step_between_clips or frames_per_clip),
        "frame_rate": float(frame_rate) if frame_rate else None,
        "width": int(width), "height": int(height), "min_dimension": int(min_dimension),
        "max_dimension": int(max_dimension), "audio_rate": int(audio_rate),
        "audio_channels": int(audio_channels),
        "extensions": sorted(e.lower().lstrip(".") for e in extensions),
        "classes": sorted(classes) if classes else None,
        "classes_from": os.fspath(classes_from) if classes_from else None,
        "annotations": os.fspath(annotations) if annotations else None,
        "fraction": fraction, "limit": limit, "seed": int(seed),
        "shard_size": str(shard_size), "clips_per_shard": clips_per_shard,
        "video_codec": video_codec, "zstd_level": int(zstd_level) if video_codec == "zstd" else None,
        "jpeg_quality": int(jpeg_quality) if video_codec == "jpeg" else None,
    }
    if video_codec not in VIDEO_CODECS:
        raise BuildError(f"unknown video codec {video_codec!r}: use one of {', '.join(VIDEO_CODECS)}")
    try:
        folder.make()
        finished = _check_existing(folder, split, opts, overwrite)
    except Exception as e:  # s3fs/gcsfs/botocore raise many kinds
        raise BuildError(f"cannot write to {folder.url}: {type(e).__name__}: {e} (check the "
                         "path or bucket, the credentials and the endpoint)") from None
    if finished is not None:
        if progress:
            print(f"{folder.url}: already built with these options, nothing to do", file=sys.stderr)
        return finished
    _remove_temporaries(folder, split)
    if folder.exists(PLAN):
        plan = folder.read_json(PLAN)
    else:
        plan = _make_plan(root, split, opts, workers, progress)
        folder.write_json(PLAN, plan)

    by_index = {v["video_index"]: v for v in plan["videos"]}
    records = {s["name"]: r for s in plan["shards"] if (r := _done_record(folder, s["name"]))}
    todo = [{"name": s["name"], "videos": [by_index[i] for i in s["videos"]]}
            for s in plan["shards"] if s["name"] not in records]
    # longest first, so the last shards to finish are short ones (output is the same)
    todo.sort(key=lambda t: -sum(v["est_decode"] for v in t["videos"]))
    bar = tqdm(total=len(plan["videos"]), desc=f"build {split}", unit="video",
               disable=not progress, initial=sum(len(r["videos"]) for r in records.values()))
    counts = {"clips": sum(r["clips"] for r in records.values()),
              "bytes": sum(r["bytes"] for r in records.values())}

    def on_progress(clips: int, nbytes: int) -> None:
        counts["clips"] += clips
        counts["bytes"] += nbytes
        bar.update(1)
        bar.set_postfix(clips=counts["clips"], MB=f"{counts['bytes'] / 1e6:.0f}", refresh=False)

    job = dict(root=os.fspath(root.resolve()), out=folder.url, options=opts,
               storage_options=storage_options)
    if executor == "ray":
        from . import raydist

        results = raydist.run_tasks(build_shard, todo, on_progress, address=ray_address,
                                    decode_threads=decode_threads or 1, **job)
    elif executor == "local":
        results = run_tasks(build_shard, todo, workers, on_progress, decode_threads=threads, **job)
    else:
        raise BuildError(f"unknown executor {executor!r}: use 'local' or 'ray'")
    errors = []
    for task, record, error in results:
        if error is not None:
            errors.append(f"{task['name']}: {type(error).__name__}: {error}")
        else:
            records[task["name"]] = record
    bar.close()
    if errors:
        raise BuildError(f"{len(errors)} shard(s) failed after retries; finished shards are kept, "
                         "re-run the same command to retry:\n  " + "\n  ".join(errors))
    index = encode_npy(_index(plan, records))
    folder.write_bytes(INDEX, index)
    manifest = _manifest(plan, records, {"name": INDEX, "bytes": len(index),
                                         "sha256": hashlib.sha256(index).hexdigest()})
    folder.write_json(MANIFEST, manifest)
    folder.delete(".build")
    _remove_temporaries(folder, split)
    if progress:
        print(summary(manifest, time.monotonic() - t0), file=sys.stderr)
    return manifest


def summary(manifest: dict, seconds: float) -> str:
    """A short table of what a build made and left out."""
    t = manifest["totals"]
    reasons = Counter(s["reason"].split(":")[0] for s in manifest["skipped"])
    rows = [
        ("split", manifest["split"]),
        ("classes", len(manifest["classes"])),
        ("videos with clips", t["videos"] - t["too_short"]),
        ("  of which partial", t["partial"]),
        ("videos too short", t["too_short"]),
        ("videos skipped", t["skipped"]),
        *((f"  {r}", n) for r, n in reasons.most_common()),
        ("files of other types", t["skipped_extensions"]),
        ("clips", t["clips"]),
        ("shards", t["shards"]),
        ("size", f"{t['bytes'] / 1e9:.3f} GB"),
        ("time", f"{seconds:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
