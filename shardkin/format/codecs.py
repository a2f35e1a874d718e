"""How a clip's frames are stored: the video member of a sample, one per codec.

| codec | member            | payload                                                       |
|-------|-------------------|---------------------------------------------------------------|
| raw   | ``video.npy``     | npy v1.0, uint8 ``[T, H, W, 3]`` (the default)                 |
| zstd  | ``video.npy.zst`` | a zstd frame whose content is exactly the raw ``video.npy``   |
| jpeg  | ``video.jpgs``    | a header, then T baseline JPEGs (4:4:4)                       |

The jpeg header is ``b"SKJ1"``, uint32 T, H, W, then T uint32 sizes (all little-endian).

zstd is lossless (bit-identical to raw after decoding); jpeg is lossy (its PSNR is
measured by ``tools/bench_codecs.py``). zstd needs ``zstandard`` and jpeg needs
``simplejpeg`` (libjpeg-turbo; it releases the GIL): ``pip install 'shardkin[codecs]'``.
"""
from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from .npy import decode_npy, encode_npy

RAW, ZSTD, JPEG = "raw", "zstd", "jpeg"
MEMBER = {RAW: "video.npy", ZSTD: "video.npy.zst", JPEG: "video.jpgs"}
VIDEO_MEMBERS = tuple(MEMBER.values())
_JPEG_MAGIC = b"SKJ1"
_HINT = "pip install 'shardkin[codecs]'"


def _zstandard():
    try:
        import zstandard
    except ImportError:
        raise ImportError(f"zstd shards need the zstandard package: {_HINT}") from None
    return zstandard


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        raise ImportError(f"jpeg shards need the simplejpeg package: {_HINT}") from None
    return simplejpeg


def encode_video(video: np.ndarray, codec: str = RAW, zstd_level: int = 3,
                 jpeg_quality: int = 88) -> tuple[str, bytes]:
    """(member extension, payload) of uint8 ``[T, H, W, 3]`` frames."""
    if codec == RAW:
        return MEMBER[RAW], encode_npy(video)
    if codec == ZSTD:
        compressor = _zstandard().ZstdCompressor(level=zstd_level, write_content_size=True)
        return MEMBER[ZSTD], compressor.compress(encode_npy(video))
    if codec == JPEG:
        encode = _simplejpeg().encode_jpeg
        frames = [encode(np.ascontiguousarray(f), quality=jpeg_quality, colorspace="RGB",
                         colorsubsampling="444") for f in video]
        t, h, w, _ = video.shape
        header = struct.pack(f"<4s3I{t}I", _JPEG_MAGIC, t, h, w, *map(len, frames))
        return MEMBER[JPEG], b"".join([header, *frames])
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


def decode_video(member: str, data: bytes | bytearray | memoryview) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames of a video member (raw: no copy)."""
    if member == MEMBER[RAW]:
        return decode_npy(data)
    if member == MEMBER[ZSTD]:
        return decode_npy(_zstandard().ZstdDecompressor().decompress(data))
    if member == MEMBER[JPEG]:
        return _decode_jpegs(memoryview(data))
    raise ValueError(f"{member!r} is not a video member (one of {', '.join(VIDEO_MEMBERS)})")


def _decode_jpegs(view: memoryview) -> np.ndarray:
    if bytes(view[:4]) != _JPEG_MAGIC:
        raise ValueError("not a shardkin video.jpgs payload")
    t, h, w = struct.unpack_from("<3I", view, 4)
    sizes = struct.unpack_from(f"<{t}I", view, 16)
    decode = _simplejpeg().decode_jpeg
    out = np.empty((t, h, w, 3), np.uint8)
    pos = 16 + 4 * t
    for i, size in enumerate(sizes):
        decode(view[pos : pos + size], colorspace="RGB", buffer=out[i])
        pos += size
    if pos != len(view):
        raise ValueError("video.jpgs payload has trailing or missing bytes")
    return out
