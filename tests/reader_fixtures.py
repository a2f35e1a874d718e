"""Synthetic shards for the reader tests, written with tarfile (not shardkin's writer).

Clip ``(v, c)`` has frames whose pixels are a seeded function of ``(v, c, frame)``,
audio with ``1 + v % 2`` channels and ``10 + (v + c) % 7`` samples, label ``v % 3``.
Each video's clips are adjacent in one shard, as the builder writes them.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardkin.format.sample import clip_metadata, encode_sample, sample_key

CLASSES = ["abseiling", "archery", "bowling"]
FRAMES, SIZE = 4, 8


def clip_video(v: int, c: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    return np.stack([np.random.default_rng([v, c, t]).integers(0, 256, (size, size, 3), np.uint8)
                     for t in range(frames)])


def clip_audio(v: int, c: int) -> np.ndarray:
    channels, samples = 1 + v % 2, 10 + (v + c) % 7
    return (np.arange(channels * samples, dtype=np.float32).reshape(channels, samples)
            + v * 1000 + c)


def video_path(v: int) -> str:
    return f"{CLASSES[v % 3]}/video_{v:04d}.mp4"


def sample_members(v: int, c: int, codec: str = "raw") -> list[tuple[str, bytes]]:
    meta = clip_metadata(path=video_path(v), class_name=CLASSES[v % 3], label=v % 3,
                         video_index=v, clip_index=c,
                         source_frames=list(range(c * FRAMES, (c + 1) * FRAMES)),
                         start_sec=c * FRAMES / 30, end_sec=(c + 1) * FRAMES / 30, fps=30.0,
                         source_fps=30.0, audio_rate=16000)
    key = sample_key(v, c)
    return [(f"{key}.{ext}", data)
            for ext, data in encode_sample(clip_video(v, c), clip_audio(v, c), v % 3, meta, codec)]


def write_tar(path: Path, members: Sequence[tuple[str, bytes]],
              fmt: int = tarfile.USTAR_FORMAT) -> tuple[int, str]:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def make_split(out: Path, clips_per_video: Sequence[int], videos_per_shard: int,
               split: str = "train", codec: str = "raw") -> Path:
    """Write ``out/split/`` shards (video stored with ``codec``) and manifest; returns
    the split folder."""
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    shards, videos = [], []
    for first in range(0, len(clips_per_video), videos_per_shard):
        name = f"{split}-{len(shards):06d}.tar"
        members, count = [], 0
        for v in range(first, min(first + videos_per_shard, len(clips_per_video))):
            for c in range(clips_per_video[v]):
                members += sample_members(v, c, codec)
            count += clips_per_video[v]
            videos.append({"path": video_path(v), "label": v % 3, "video_index": v,
                           "status": "ok", "frames": clips_per_video[v] * FRAMES,
                           "clips": clips_per_video[v], "shard": name, "reason": None})
        nbytes, sha = write_tar(folder / name, members)
        shards.append({"name": name, "clips": count, "bytes": nbytes, "sha256": sha})
    manifest = {"format_version": 1, "split": split, "options": {}, "classes": CLASSES,
                "shards": shards, "videos": videos, "skipped": [], "skipped_extensions": {},
                "totals": {"videos": len(videos), "clips": sum(clips_per_video),
                           "bytes": sum(s["bytes"] for s in shards), "shards": len(shards),
                           "skipped": 0, "partial": 0, "too_short": 0}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def all_keys(clips_per_video: Sequence[int]) -> list[tuple[int, int]]:
    return [(v, c) for v, n in enumerate(clips_per_video) for c in range(n)]
