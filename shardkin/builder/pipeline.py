"""``shardkin.build``: a Kinetics-style split becomes clip shards plus a manifest.

Steps: options -> check the output folder -> plan (scan, probe, pack; saved) -> build
the shards not yet done through an executor -> ``index.npy`` -> the manifest, last.
Re-running the same call after an interruption keeps the finished shards and ends
with the same bytes.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from ..format.codecs import JPEG_PSNR
from ..format.codecs import MEMBER as VIDEO_CODECS
from ..format.manifest import (
    HEAD,
    INDEX,
    MANIFEST,
)
from ..format.options import DEFAULT_EXTENSIONS, BuildOptions
from ..format.videos import PATHS, VIDEOS
from ..store.folder import Folder
from ..store.lock import BuildLock, LockedError
from . import shard
from .errors import BuildError, PermanentError
from .executors import EXECUTORS
from .lifecycle import stop_on_signals
from .plan import make_plan
from .publish import add_reader_files, finish
from .source import Root
from .summary import summary

PLAN = ".build/plan.json"


def build(
    root: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "train",
    frames_per_clip: int = 16,
    step_between_clips: int | None = None,
    frame_rate: float | None = None,
    *,
    timeline: str = "torchcodec",
    width: int = 0,
    height: int = 0,
    min_dimension: int = 0,
    max_dimension: int = 0,
    audio_rate: int = 0,
    audio_channels: int = 0,
    audio_codec: str | None = None,
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
    jpeg_psnr: float | None = JPEG_PSNR,
    jpeg_quality: int | None = None,
    workers: int | None = None,
    decode_threads: int | None = None,
    overwrite: bool = False,
    break_lock: bool = False,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    video_timeout: float | None = None,
) -> dict[str, Any]:
    """Build ``out/<split>/`` shards and manifest from ``root/<split>/<class>/<video>``.

    ``root`` and ``out`` are local folders or fsspec URLs (``s3://bucket/prefix``;
    credentials and endpoint from the environment or ``storage_options``, the same for
    both). ``executor="ray"`` runs the probes and the shard tasks on the Ray cluster at
    ``ray_address`` (default: start a local one). ``annotations`` may be the official
    Kinetics CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``) of a split
    folder as downloaded (see :mod:`.official`).

    Clip arguments follow ``torchvision.datasets.Kinetics`` (``frames_per_clip``,
    ``step_between_clips`` -- default ``frames_per_clip``, i.e. clips do not overlap --
    and ``frame_rate``; ``timeline``: whose frame count and fps, torchvision 0.28's by
    default); ``width``/``height``/``min_dimension``/``max_dimension`` and
    ``audio_rate``/``audio_channels`` follow its ``_video_*``/``_audio_*`` arguments.
    Every option is described in :mod:`shardkin.format.options`. Returns the manifest
    (see :mod:`shardkin.format.manifest`).
    """
    given = dict(locals())  # the arguments: the three places, then every option by name
    del given["root"], given["out"], given["split"]
    return build_split(root, out, split, BuildOptions.from_kwargs(**given))


def build_split(root: str | os.PathLike, out: str | os.PathLike, split: str,
                options: BuildOptions) -> dict[str, Any]:
    """:func:`build` with its options as one record; returns the manifest."""
    t0 = time.monotonic()
    run = options.execution
    root = Root(root, run.storage_options)
    root.check()
    if options.storage.video_codec not in VIDEO_CODECS:
        raise BuildError(f"unknown video codec {options.storage.video_codec!r}: use one of "
                         f"{', '.join(VIDEO_CODECS)}")
    if run.executor not in EXECUTORS:
        raise BuildError(f"unknown executor {run.executor!r}: use "
                         f"{' or '.join(map(repr, EXECUTORS))}")
    if run.video_timeout is not None and run.video_timeout <= 0:
        raise BuildError(f"--video-timeout takes seconds above 0, not {run.video_timeout:g} "
                         "(leave it out for no limit)")
    folder = Folder(out, run.storage_options).child(split)
    try:
        folder.make()
    except Exception as e:  # s3fs/gcsfs/botocore raise many kinds
        raise BuildError(f"cannot write to {folder.url}: {type(e).__name__}: {e} (check the "
                         "path or bucket, the credentials and the endpoint)") from None
    try:
        with stop_on_signals(), BuildLock(folder, run.break_lock):
            return _build_locked(folder, root, split, options, t0)
    except LockedError as e:
        raise BuildError(str(e)) from None


def _build_locked(folder: Folder, root: Root, split: str, options: BuildOptions,
                  t0: float) -> dict[str, Any]:
    """The build, while this process holds the split's lock."""
    run = options.execution
    try:
        finished = _check_existing(folder, split, options.to_manifest(), run.overwrite)
    except BuildError:
        raise
    except Exception as e:  # s3fs/gcsfs/botocore raise many kinds
        raise BuildError(f"cannot read {folder.url}: {type(e).__name__}: {e} (check the "
                         "path or bucket, the credentials and the endpoint)") from None
    if finished is not None:
        added = add_reader_files(folder, finished)
        if run.progress:
            print(f"{folder.url}: already built with these options, "
                  f"{'added ' + ', '.join(added) if added else 'nothing to do'}",
                  file=sys.stderr)
        return finished
    _remove_temporaries(folder, split)
    if folder.exists(PLAN):
        plan = folder.read_json(PLAN)
    else:
        plan = make_plan(root, split, options)
        folder.write_json(PLAN, plan, compact=True)  # bounded memory at 650k videos
    try:
        records = _build_shards(folder, root, plan, options)
    except BaseException:  # its workers are gone: what they left half-written goes too
        _remove_temporaries(folder, split)
        raise
    manifest = finish(folder, plan, records)
    folder.delete(".build")
    _remove_temporaries(folder, split)
    if run.progress:
        print(summary(manifest, time.monotonic() - t0), file=sys.stderr)
    return manifest


def _check_existing(folder: Folder, split: str, recorded: dict, overwrite: bool) -> dict | None:
    """Return a finished manifest for the same options; refuse other options unless overwrite."""
    previous = next((folder.read_json(n) for n in (MANIFEST, PLAN) if folder.exists(n)), None)
    if previous is None:
        return None
    before = BuildOptions.from_manifest(previous["options"]).to_manifest()  # older: defaults
    if before == recorded:
        return previous if folder.exists(MANIFEST) else None
    if not overwrite:
        changed = sorted(k for k in set(recorded) | set(before) if recorded.get(k) != before.get(k))
        raise BuildError(f"{folder.url} holds a build with other options ({', '.join(changed)}): "
                         f"pass --overwrite to replace it, or choose another OUT")
    for name in folder.names(f"{split}-"):
        folder.delete(name)
    for name in (MANIFEST, HEAD, INDEX, VIDEOS, PATHS, ".build"):
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
    if not folder.exists(shard.record_name(name)):
        return None
    record = folder.read_json(shard.record_name(name))
    if record.get("fingerprint") is None:
        return record if folder.size(name) == record["bytes"] else None
    return record if folder.fingerprint(name) == record["fingerprint"] else None


def _build_shards(folder: Folder, root: Root, plan: dict, options: BuildOptions) -> dict[str, dict]:
    """The record of every shard of the plan: those finished earlier, the rest built now
    by the executor (BuildError naming the shards that failed)."""
    by_index = {v["video_index"]: v for v in plan["videos"]}
    records = {s["name"]: r for s in plan["shards"] if (r := _done_record(folder, s["name"]))}
    todo = [{"name": s["name"], "videos": [by_index[i] for i in s["videos"]]}
            for s in plan["shards"] if s["name"] not in records]
    # longest first, so the last shards to finish are short ones (output is the same)
    todo.sort(key=lambda t: -sum(v["est_decode"] for v in t["videos"]))
    bar = tqdm(total=len(plan["videos"]), desc=f"build {plan['split']}", unit="video",
               disable=not options.execution.progress,
               initial=sum(len(r["videos"]) for r in records.values()))
    counts = {"clips": sum(r["clips"] for r in records.values()),
              "bytes": sum(r["bytes"] for r in records.values())}

    def on_progress(clips: int, nbytes: int) -> None:
        counts["clips"] += clips
        counts["bytes"] += nbytes
        bar.update(1)
        bar.set_postfix(clips=counts["clips"], MB=f"{counts['bytes'] / 1e6:.0f}", refresh=False)

    run = EXECUTORS[options.execution.executor]
    errors = []
    # shard.build_shard is looked up now, so that tests can stand in for it
    outcomes = run(shard.build_shard, todo, on_progress, options.execution,
                   root=root.url, out=folder.url, options=options)
    try:
        for task, record, error in outcomes:
            if isinstance(error, PermanentError):
                raise BuildError(f"{task['name']}: {error}. Retrying cannot fix this: free "
                                 "space, fix the permissions or choose another OUT, then re-run "
                                 "the same command (finished shards are kept)") from None
            if error is not None:
                errors.append(f"{task['name']}: {type(error).__name__}: {error}")
            else:
                records[task["name"]] = record
    finally:
        outcomes.close()  # stops the workers still running, when the loop ended early
        bar.close()
    if errors:
        raise BuildError(f"{len(errors)} shard(s) failed after retries; finished shards are kept, "
                         "re-run the same command to retry:\n  " + "\n  ".join(errors))
    return records
