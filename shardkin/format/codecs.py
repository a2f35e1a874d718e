"""How a clip's frames are stored: the video member of a sample, one per codec.

| codec | member            | payload                                                       |
|-------|-------------------|---------------------------------------------------------------|
| raw   | ``video.npy``     | npy v1.0, uint8 ``[T, H, W, 3]`` (the default)                 |
| zstd  | ``video.npy.zst`` | a zstd frame whose content is exactly the raw ``video.npy``   |
| jpeg  | ``video.jpgs``    | a header, then the clip as one baseline JPEG, 4:4:4 (:mod:`.jpeg`) |

zstd is lossless (bit-identical to raw after decoding); jpeg is lossy: each clip at the
lowest quality whose PSNR over the clip reaches a target (default :data:`JPEG_PSNR` dB),
or at one given quality (``tools/bench_codecs.py`` measures both). zstd needs
``zstandard`` and jpeg needs ``simplejpeg`` (libjpeg-turbo; it releases the GIL):
``pip install 'shardkin[codecs]'``.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from . import jpeg
from .jpeg import JPEG_LOWEST, JPEG_PSNR, clip_psnr
from .npy import decode_npy, encode_npy

RAW, ZSTD, JPEG = "raw", "zstd", "jpeg"
MEMBER = {RAW: "video.npy", ZSTD: "video.npy.zst", JPEG: "video.jpgs"}
VIDEO_MEMBERS = tuple(MEMBER.values())
# a clip's frames claiming more than this (64 GB) are damage, refused before allocating
_MAX_CLIP_BYTES = 1 << 36
_HINT = "pip install 'shardkin[codecs]'"


def _zstandard():
    try:
        import zstandard
    except ImportError:
        raise ImportError(f"zstd shards need the zstandard package: {_HINT}") from None
    return zstandard


def encode_video(video: np.ndarray, codec: str = RAW, zstd_level: int = 3,
                 jpeg_quality: int | None = None, jpeg_psnr: float = JPEG_PSNR
                 ) -> tuple[str, bytes]:
    """(member extension, payload) of uint8 ``[T, H, W, 3]`` frames; jpeg at
    ``jpeg_quality`` when given, else at a quality (from :data:`JPEG_LOWEST` to 100) whose
    PSNR over the clip is at least ``jpeg_psnr`` (100 if none is): the lowest on every
    4th frame, raised until the whole clip reaches it."""
    if codec == RAW:
        return MEMBER[RAW], encode_npy(video)
    if codec == ZSTD:
        compressor = _zstandard().ZstdCompressor(level=zstd_level, write_content_size=True)
        return MEMBER[ZSTD], compressor.compress(encode_npy(video))
    if codec == JPEG:
        return MEMBER[JPEG], jpeg.encode(video, jpeg_quality, jpeg_psnr)
    raise ValueError(f"unknown video codec {codec!r}: use raw, zstd or jpeg")


def video_member(members: Collection[str]) -> str:
    """Which of a sample's members holds its frames."""
    for member in VIDEO_MEMBERS:
        if member in members:
            return member
    raise ValueError(f"no video member (one of {', '.join(VIDEO_MEMBERS)})")


def decode_sample_video(members: Mapping[str, Any]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames of a sample given its members, whatever the codec."""
    member = video_member(members)
    return decode_video(member, members[member])


def decode_video(member: str, data: bytes | bytearray | memoryview, start: int = 0,
                 stop: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames of a video member (raw: no copy), or its frames
    ``start..stop``, decoded into ``out`` when given (jpeg: only those frames' rows are
    decoded)."""
    if member == MEMBER[JPEG]:
        return jpeg.decode(data, start, stop, out)
    if member == MEMBER[RAW]:
        frames = decode_npy(data)
    elif member == MEMBER[ZSTD]:
        zstd = _zstandard()
        if zstd.frame_content_size(data) > _MAX_CLIP_BYTES:  # a forged size: not allocated
            raise ValueError("video.npy.zst says it holds more than a clip can")
        frames = decode_npy(zstd.ZstdDecompressor().decompress(data))
    else:
        raise ValueError(f"{member!r} is not a video member (one of {', '.join(VIDEO_MEMBERS)})")
    if frames.ndim != 4 or not 0 <= start <= (len(frames) if stop is None else stop) <= len(frames):
        raise ValueError(f"frames {start}..{stop} are not in a clip of shape {frames.shape}")
    frames = frames[start:stop]
    if out is not None:
        out[...] = frames
        return out
    return frames


__all__ = ["JPEG", "JPEG_LOWEST", "JPEG_PSNR", "MEMBER", "RAW", "VIDEO_MEMBERS", "ZSTD",
           "clip_psnr", "decode_sample_video", "decode_video", "encode_video", "video_member"]
