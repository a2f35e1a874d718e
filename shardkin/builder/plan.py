"""The build plan: which videos go into which shard, made once before any decoding.

The videos of the split are found (class folders or annotations, then the class
filters and subsets), probed (no decoding) to estimate their clips and bytes, shuffled
with the seed so classes mix, and packed greedily into shards of about the target size.
All clips of a video go to one shard. The plan is saved so a resumed build (or a
cluster worker) makes exactly the same shards.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

from tqdm import tqdm

from ..format.manifest import LAYOUT
from ..format.options import BuildOptions, parse_size
from ..format.sample import format_version
from ..store.folder import Folder
from ..store.locate import splits_in
from ..store.split import load_manifest
from . import official
from .clips import ClipRule, output_size
from .errors import BuildError
from .executors import local_workers, ordered_map
from .scan import VideoEntry, find_classes, list_tree, read_annotations, select
from .source import PROBE_THREADS, Root, as_root, probe_chunk

# typical raw/encoded size ratios (tools/bench_codecs.py), only to size shards
PROBE_CHUNK = 256  # videos a probe task takes (a store's: its threads share them)
PROBE_PER_PROCESS = 4096  # a store's videos a local probe process is started for
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



def class_list(root: Root | Path, split: str, options: BuildOptions) -> list[str] | None:
    """The classes that labels index: those of ``--classes-from`` (a text file with one
    class per line, or a build: see :func:`~shardkin.store.split.locate`), else the class
    folders of ``root``; None with ``--annotations`` (its labels tell)."""
    source, storage = options.selection.classes_from, options.execution.storage_options
    if source is None:
        return None if options.selection.annotations else find_classes(as_root(root, storage))
    if source.endswith(".txt"):
        lines = Path(source).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    # labels agree across the splits of a build: its first split (or this one) will do
    split = next(iter(splits_in(Folder(source, storage))), split)
    return load_manifest(source, split, storage)["classes"]


def _annotated(root: Root, split: str, csv_path: str, classes: list[str] | None) -> dict:
    """The videos an annotation CSV names: the official Kinetics kind (told by its header:
    :mod:`.official`) with what is missing, unlisted or named twice, or ``path,label``."""
    text = root.read_text(csv_path)
    if not official.is_official(text, csv_path):
        videos, classes = read_annotations(csv_path, classes, text)
        return {"videos": videos, "classes": classes}
    if not root.is_dir(split):
        raise FileNotFoundError(f"split folder {root.url}/{split} does not exist: the "
                                f"official layout keeps a split's videos there")
    rows = official.read_rows(text, csv_path)
    try:
        return official.arrange(rows, root.files(split), split, classes)
    except ValueError as e:  # labels not in --classes-from's list
        raise ValueError(f"{csv_path}: {e}") from None


def gather(root: Root | Path, split: str, options: BuildOptions) -> dict:
    """Videos of the split after class filters and subsets, with what was left out."""
    sel = options.selection
    root = as_root(root, options.execution.storage_options)
    classes = class_list(root, split, options)
    skipped: list[dict] = []
    other: Counter = Counter()
    extra: dict = {}
    if sel.annotations:
        try:
            extra = _annotated(root, split, sel.annotations, classes)
        except (FileNotFoundError, ValueError) as e:
            raise BuildError(str(e)) from None
        videos, classes = extra.pop("videos"), extra.pop("classes")
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
        videos = [VideoEntry(v.path, v.class_name, label[v.class_name], v.size)
                  for v in videos if v.class_name in label]
        classes = list(sel.classes)
    videos = select(videos, sel.fraction, sel.limit, sel.seed)
    return {"classes": classes, "videos": videos, "skipped": skipped,
            "skipped_extensions": dict(sorted(other.items())), **extra}


def _died(path: object, how: str) -> dict:
    """The probe of a video whose worker process died probing it (or was stopped), twice."""
    return {"error": f"worker process died probing it twice: {how}"}


def _probes(root: Root, videos: list[VideoEntry], options: BuildOptions) -> Iterator[dict]:
    """:func:`~.decode.probe_or_reason` of each video, in order, as tasks of the build's
    executor (its rules: :func:`~.executors.ordered_map`), in chunks: on local processes,
    each with threads for a store (many requests in flight), or on Ray. A chunk whose
    worker dies (or is stopped after ``video_timeout`` without a video probed) twice is
    probed again video by video, and the video that kills its worker is recorded skipped."""
    run = options.execution
    threads = PROBE_THREADS if root.remote else 1
    chunk = PROBE_CHUNK if root.remote else PROBE_CHUNK // 8
    chunks = [[(v.path, v.size) for v in videos[i:i + chunk]]
              for i in range(0, len(videos), chunk)]
    task = partial(probe_chunk, root.url, run.storage_options, threads=threads)
    if run.executor == "local" and root.remote:  # a few thousand videos a process's threads
        run = replace(run, workers=min(local_workers(run), -(-len(videos) // PROBE_PER_PROCESS)))

    def died(chunk: list, how: str) -> list[dict]:  # one of them: each alone then
        alone = ordered_map(task, [[v] for v in chunk], run,
                            died=lambda one, how: [_died(one, how)])
        return [probe for probes in alone for probe in probes]

    for probes in ordered_map(task, chunks, run, died=died):
        yield from probes


def make_plan(root: Root | Path, split: str, options: BuildOptions) -> dict:
    """Probe the videos of the split and pack them into shards: the saved plan."""
    root = as_root(root, options.execution.storage_options)
    found = gather(root, split, options)
    probes = tqdm(_probes(root, found["videos"], options), total=len(found["videos"]),
                  desc=f"probe {split}", unit="video", disable=not options.execution.progress)
    videos, skipped = [], list(found["skipped"])
    for position, (v, p) in enumerate(zip(found["videos"], probes, strict=True)):
        if "error" in p:  # listed all the same (videos.npy): torchvision lists it
            skipped.append({"path": v.path, "reason": p["error"], "label": v.label,
                            "position": position})
            continue
        clips, nbytes = estimate(p, options)
        videos.append({"video_index": len(videos), "path": v.path, "class": v.class_name,
                       "label": v.label, "est_frames": p["frames"], "est_clips": clips,
                       "est_bytes": nbytes, "position": position,
                       "est_decode": p["frames"] * p["width"] * p["height"],
                       **({"bytes": v.size} if v.size is not None else {})})
    storage = options.storage
    shards = assign_shards(videos, split, options.selection.seed, parse_size(storage.shard_size),
                           storage.clips_per_shard)
    layout = {k: found[k] for k in LAYOUT if k in found}
    version = format_version(options.audio.audio_codec, storage.video_codec)
    return {"format_version": version, "split": split,
            "options": options.to_manifest(), "classes": found["classes"], "videos": videos,
            "skipped": skipped, "skipped_extensions": found["skipped_extensions"],
            "shards": shards, **layout}
