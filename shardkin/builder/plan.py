"""The build plan: which videos go into which shard, made once before any decoding.

The videos of the split are found (class folders or annotations, then the class
filters and subsets), probed (no decoding) to estimate their clips and bytes, shuffled
with the seed so classes mix, and packed greedily into shards of about the target size.
All clips of a video go to one shard. The plan is saved so a resumed build (or a
cluster worker) makes exactly the same shards.
"""
from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..format.options import BuildOptions, parse_size
from ..format.sample import format_version
from ..store.folder import Folder
from ..store.locate import splits_in
from ..store.split import load_manifest
from .clips import ClipRule, output_size
from .decode import probe_or_reason
from .errors import BuildError
from .executors import local_workers, map_processes
from .scan import VideoEntry, find_classes, list_tree, read_annotations, select

# typical raw/encoded size ratios (tools/bench_codecs.py), only to size shards
_SIZE_RATIO = {"raw": 1.0, "zstd": 1.3, "jpeg": 8.6}


def estimate(probe: dict, options: BuildOptions) -> tuple[int, int]:
    """(clips, bytes) a probed video is expected to give."""
    c, r = options.clips, options.resize
    rule = ClipRule(c.frames_per_clip, c.step_between_clips, probe["fps"], c.frame_rate)
    clips = rule.num_clips(probe["frames"])
    w, h = output_size(probe["width"], probe["height"], r.width, r.height, r.min_dimension,
                       r.max_dimension)
    ratio = _SIZE_RATIO.get(options.storage.video_codec, 1.0)
    return clips, clips * int(c.frames_per_clip * w * h * 3 / ratio + 4096)


def assign_shards(
    videos: list[dict], split: str, seed: int, shard_bytes: int, clips_per_shard: int | None
) -> list[dict]:
    """Pack videos (each with ``est_clips``/``est_bytes``) into named shards, in a seeded order."""
    order = list(range(len(videos)))
    random.Random(f"{seed}/shards").shuffle(order)
    shards: list[dict] = []
    current: list[int] = []
    clips = size = 0
    for i in order:
        current.append(videos[i]["video_index"])
        clips += videos[i]["est_clips"]
        size += videos[i]["est_bytes"]
        full = clips >= clips_per_shard if clips_per_shard else size >= shard_bytes
        if full:
            shards.append(current)
            current, clips, size = [], 0, 0
    if current:
        shards.append(current)
    return [{"name": f"{split}-{n:06d}.tar", "videos": v} for n, v in enumerate(shards)]



def class_list(root: Path, split: str, options: BuildOptions) -> list[str] | None:
    """The classes that labels index: those of ``--classes-from`` (a text file with one
    class per line, or a build: see :func:`~shardkin.store.split.locate`), else the class
    folders of ``root``; None with ``--annotations`` (its labels tell)."""
    source, storage = options.selection.classes_from, options.execution.storage_options
    if source is None:
        return None if options.selection.annotations else find_classes(root)
    if source.endswith(".txt"):
        lines = Path(source).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    # labels agree across the splits of a build: its first split (or this one) will do
    split = next(iter(splits_in(Folder(source, storage))), split)
    return load_manifest(source, split, storage)["classes"]


def gather(root: Path, split: str, options: BuildOptions) -> dict:
    """Videos of the split after class filters and subsets, with what was left out."""
    sel = options.selection
    classes = class_list(root, split, options)
    skipped: list[dict] = []
    other: Counter = Counter()
    if sel.annotations:
        videos, classes = read_annotations(sel.annotations, classes)
    else:
        try:
            videos, other, skipped = list_tree(root, split, classes, sel.extensions)
        except FileNotFoundError as e:
            raise BuildError(f"{e}: check ROOT and --split") from None
    if sel.classes:
        unknown = sorted(set(sel.classes) - set(classes))
        if unknown:
            more = " ..." if len(classes) > 10 else ""
            raise BuildError(f"--classes names unknown classes: {', '.join(unknown)} "
                             f"(known: {', '.join(classes[:10])}{more})")
        label = {c: i for i, c in enumerate(sel.classes)}
        videos = [VideoEntry(v.path, v.class_name, label[v.class_name])
                  for v in videos if v.class_name in label]
        classes = list(sel.classes)
    videos = select(videos, sel.fraction, sel.limit, sel.seed)
    return {"classes": classes, "videos": videos, "skipped": skipped,
            "skipped_extensions": dict(sorted(other.items()))}


def make_plan(root: Path, split: str, options: BuildOptions) -> dict:
    """Probe the videos of the split and pack them into shards: the saved plan."""
    found = gather(root, split, options)
    paths = [os.fspath(root / v.path) for v in found["videos"]]
    probes = list(tqdm(map_processes(probe_or_reason, paths, local_workers(options.execution)),
                       total=len(paths), desc=f"probe {split}", unit="video",
                       disable=not options.execution.progress))
    videos, skipped = [], list(found["skipped"])
    for v, p in zip(found["videos"], probes, strict=True):
        if "error" in p:
            skipped.append({"path": v.path, "reason": p["error"]})
            continue
        clips, nbytes = estimate(p, options)
        videos.append({"video_index": len(videos), "path": v.path, "class": v.class_name,
                       "label": v.label, "est_frames": p["frames"], "est_clips": clips,
                       "est_bytes": nbytes,
                       "est_decode": p["frames"] * p["width"] * p["height"]})
    storage = options.storage
    shards = assign_shards(videos, split, options.selection.seed, parse_size(storage.shard_size),
                           storage.clips_per_shard)
    version = format_version(options.audio.audio_codec, storage.video_codec)
    return {"format_version": version, "split": split,
            "options": options.to_manifest(), "classes": found["classes"], "videos": videos,
            "skipped": skipped, "skipped_extensions": found["skipped_extensions"],
            "shards": shards}
