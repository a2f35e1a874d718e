"""The build plan: which videos go into which shard, made once before any decoding.

Videos are probed (no decoding) to estimate their clips and bytes, shuffled with
the seed so classes mix, and packed greedily into shards of about the target size.
All clips of a video go to one shard. The plan is saved so a resumed build (or a
cluster worker) makes exactly the same shards.
"""
from __future__ import annotations

import random
import re
from typing import Any

from .clips import ClipRule, output_size

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "t": 10**12, "tb": 10**12}


def parse_size(text: str | int) -> int:
    """``'256MB'`` -> 256000000; ``'1GiB'`` -> 1073741824; ints pass through."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read size {text!r}: use e.g. 512MB, 1GiB or a byte count")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# typical raw/encoded size ratios (tools/bench_codecs.py), only to size shards
_SIZE_RATIO = {"raw": 1.0, "zstd": 1.3, "jpeg": 8.0}


def estimate(probe: dict, options: dict[str, Any]) -> tuple[int, int]:
    """(clips, bytes) a probed video is expected to give."""
    rule = ClipRule(options["frames_per_clip"], options["step_between_clips"], probe["fps"],
                    options["frame_rate"])
    clips = rule.num_clips(probe["frames"])
    w, h = output_size(probe["width"], probe["height"], options["width"], options["height"],
                       options["min_dimension"], options["max_dimension"])
    ratio = _SIZE_RATIO.get(options.get("video_codec", "raw"), 1.0)
    return clips, clips * int(options["frames_per_clip"] * w * h * 3 / ratio + 4096)


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
