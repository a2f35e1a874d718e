"""The sample format shared by the writer and the reader (format version 1).

One clip is one WebDataset sample, four tar members sharing a key:

- ``KEY.video.npy``  uint8 ``[T, H, W, 3]`` RGB frames (npy v1.0, C order), or
  ``KEY.video.npy.zst`` / ``KEY.video.jpgs`` for the other codecs (see :mod:`shardkin.codecs`)
- ``KEY.audio.npy``  float32 ``[C, S]`` audio that plays during the clip
- ``KEY.cls``        the label as an ASCII decimal integer
- ``KEY.json``       UTF-8 metadata (see :func:`clip_metadata`)

``KEY`` is ``{video_index:08d}_{clip_index:06d}``: unique, ASCII, no dot.
npy payloads are parsed (:mod:`shardkin.npy`) without ``numpy.load`` and only for
the dtypes above, so nothing in a shard can ever be unpickled. Tar members are grouped
into samples by :mod:`shardkin.format.samples`.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from .codecs import MEMBER, RAW, encode_video
from .npy import encode_npy

FORMAT_VERSION = 1
VIDEO = MEMBER[RAW]
AUDIO = "audio.npy"
LABEL = "cls"
META = "json"


def sample_key(video_index: int, clip_index: int) -> str:
    return f"{video_index:08d}_{clip_index:06d}"


def parse_key(key: str) -> tuple[int, int]:
    """``'00000012_000003'`` -> ``(12, 3)``; ValueError for a key shardkin did not make."""
    video, sep, clip = key.partition("_")
    if not (sep and video.isdigit() and clip.isdigit()):
        raise ValueError(f"sample key {key!r} is not VIDEO_CLIP")
    return int(video), int(clip)


def split_member(name: str) -> tuple[str, str]:
    """``'KEY.video.npy'`` -> ``('KEY', 'video.npy')`` (split at the first dot)."""
    key, _, ext = name.partition(".")
    return key, ext


def clip_metadata(
    *,
    path: str,
    class_name: str,
    label: int,
    video_index: int,
    clip_index: int,
    source_frames: list[int],
    start_sec: float,
    end_sec: float,
    fps: float,
    source_fps: float,
    audio_rate: int,
) -> dict[str, Any]:
    """The ``json`` member: where a clip came from."""
    return {
        "format_version": FORMAT_VERSION,
        "path": path,
        "class": class_name,
        "label": label,
        "video_index": video_index,
        "clip_index": clip_index,
        "source_frames": source_frames,
        "start_sec": start_sec,
        "end_sec": end_sec,
        "fps": fps,
        "source_fps": source_fps,
        "audio_rate": audio_rate,
    }


def encode_sample(
    video: np.ndarray, audio: np.ndarray, label: int, meta: dict[str, Any],
    codec: str = RAW, zstd_level: int = 3, jpeg_quality: int = 88,
) -> list[tuple[str, bytes]]:
    """(member extension, payload) pairs, in the order they are written."""
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 [T,H,W,3], got {video.dtype} {video.shape}")
    if audio.dtype != np.float32 or audio.ndim != 2:
        raise ValueError(f"audio must be float32 [C,S], got {audio.dtype} {audio.shape}")
    return [
        encode_video(video, codec, zstd_level, jpeg_quality),
        (AUDIO, encode_npy(audio)),
        (LABEL, str(int(label)).encode("ascii")),
        (META, json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")),
    ]


def decode_label(data: bytes) -> int:
    return int(bytes(data).decode("ascii"))


def decode_meta(data: bytes) -> dict[str, Any]:
    return json.loads(bytes(data).decode("utf-8"))
