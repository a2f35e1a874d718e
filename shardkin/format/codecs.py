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

import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from . import jpeg
from .npy import decode_npy, encode_npy

RAW, ZSTD, JPEG = "raw", "zstd", "jpeg"
MEMBER = {RAW: "video.npy", ZSTD: "video.npy.zst", JPEG: "video.jpgs"}
VIDEO_MEMBERS = tuple(MEMBER.values())
# a clip's frames claiming more than this (64 GB) are damage, refused before allocating
_MAX_CLIP_BYTES = 1 << 36
JPEG_PSNR = 39.0  # every clip at least this (README: Codecs)
JPEG_LOWEST = 50  # the lowest quality a PSNR target picks
_JPEG_START = 90  # where the search for it starts
_DB_PER_QUALITY = 0.45  # how PSNR grows with the quality near 90, for a first guess
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
        padded = jpeg.pad(video)
        frames = (jpeg.encode_frames(padded, jpeg_quality) if jpeg_quality is not None
                  else _frames_for_psnr(video, padded, jpeg_psnr))
        return MEMBER[JPEG], jpeg.pack(frames, *video.shape[1:3])
    raise ValueError(f"unknown video codec {codec!r}: use raw, zstd or jpeg")


def clip_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 ``b`` against ``a`` over all their values (inf when equal).
    The squared error is exact, so the same on every machine: float32 sums of 256
    squares stay below 2**24, where every integer is exact, in any order."""
    diff = np.subtract(a, b, dtype=np.float32).reshape(-1)
    rows = diff[: diff.size - diff.size % 256].reshape(-1, 256)
    tail = diff[rows.size :].astype(np.float64)
    error = int(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64) + tail @ tail)
    return math.inf if error == 0 else 10 * math.log10(255**2 * a.size / error)


def _frames_for_psnr(video: np.ndarray, padded: np.ndarray, target: float) -> list[bytes]:
    """The frames (each its own JPEG, of ``padded``) at a quality whose PSNR over the clip
    reaches ``target``: the lowest on every 4th frame, checked on the whole clip and
    raised until the clip reaches it."""
    quality = _lowest_quality(video[::4], padded[::4], target)
    while True:
        frames = jpeg.encode_frames(padded, quality)
        if quality == 100 or _psnr(video, frames) >= target:
            return frames
        quality += 1


def _psnr(video: np.ndarray, frames: list[bytes]) -> float:
    return clip_psnr(video, jpeg.decode_frames(frames, video.shape[1]))


def _lowest_quality(video: np.ndarray, padded: np.ndarray, target: float) -> int:
    """The lowest quality whose PSNR over ``video`` reaches ``target``: one try at a start,
    a guess from its PSNR, then single steps to the boundary."""
    tried: dict[int, float] = {}

    def psnr_at(quality: int) -> float:
        if quality not in tried:
            tried[quality] = _psnr(video, jpeg.encode_frames(padded, quality))
        return tried[quality]

    step = (target - psnr_at(_JPEG_START)) / _DB_PER_QUALITY
    quality = min(100, max(JPEG_LOWEST, _JPEG_START + math.ceil(step) if math.isfinite(step)
                           else JPEG_LOWEST))
    if psnr_at(quality) >= target:
        while quality > JPEG_LOWEST and psnr_at(quality - 1) >= target:
            quality -= 1
    else:
        while quality < 100 and psnr_at(quality) < target:
            quality += 1
    return quality


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

