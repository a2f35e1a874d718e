"""The jpeg codec's video member: a clip's frames as one baseline JPEG (4:4:4).

Layout from format version 3 (all integers uint32, little-endian)::

    b"SKJ2", T, H, W, P
    P x (frames, bytes)       the parts, in frame order
    T x offset                where each frame's scan data starts in its part
    P JPEGs                   each one image: its frames stacked vertically

A part is one image of its frames stacked top to bottom, each padded at the bottom to
``R = ceil(H / 8) * 8`` rows (whole 8-row blocks of 4:4:4) by repeating its last row, as
libjpeg pads a frame encoded alone, so that no block spans two frames. Usually the whole
clip is one part; a part holds at most 65500 rows (libjpeg-turbo's largest image), and
frames of more than 65535 blocks (over 4 megapixels) are a part each.

Each frame is encoded alone (libjpeg-turbo through ``simplejpeg``, standard Huffman
tables: every frame of a clip has the same header), and a part is the first frame's
header with the part's height and a restart interval of one frame (DRI), then the
frames' scan data, each closed by a restart marker (RSTn), then EOI. A restart resets
the decoder's DC prediction as a new image does, so the pixels are exactly those of the
frames' own JPEGs (the layout below), and any run of frames is itself a JPEG cut from the
bytes, decoded without its neighbours (:func:`runs`). 4:2:0 would not do: libjpeg-turbo's
smooth chroma upsampling blends the chroma rows of neighbouring frames (up to 11 levels
on real clips), which this layout never has to avoid.

Format versions 1 and 2 (``b"SKJ1"``, still read): T, H, W, T sizes, then T JPEGs of one
frame each.

Encoding: at ``quality``, or at the lowest quality (:data:`JPEG_LOWEST` to 100) whose PSNR
over the clip reaches a target: found on every 4th frame, then checked on the whole clip
and raised until it passes.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

JPEG_PSNR = 39.0  # every clip at least this (README: Codecs)
JPEG_LOWEST = 50  # the lowest quality a PSNR target picks
_JPEG_START = 90  # where the search for it starts
_DB_PER_QUALITY = 0.45  # how PSNR grows with the quality near 90, for a first guess
STACK, FRAMES = b"SKJ2", b"SKJ1"  # this layout; one JPEG a frame (format versions 1-2)
BLOCK = 8  # rows and columns of a 4:4:4 block
MAX_ROWS = 65500  # libjpeg-turbo's largest image
_MAX_INTERVAL = 0xFFFF  # the most blocks a restart interval counts
_EOI = b"\xff\xd9"
_HINT = "pip install 'shardkin[codecs]'"


def simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        raise ImportError(f"jpeg shards need the simplejpeg package: {_HINT}") from None
    return simplejpeg


class Run(NamedTuple):
    """One JPEG of ``frames`` consecutive frames stacked, ``rows`` rows each (the frame
    height, padded to whole blocks in this layout), from frame ``first`` of what was asked."""

    data: Any  # bytes-like
    first: int
    frames: int
    rows: int


class _Part(NamedTuple):
    run: Run
    sof: int  # where its SOF segment starts
    starts: Sequence[int]  # where each frame's scan data starts (the first: after SOS)


# -- encoding ----------------------------------------------------------------------


def padded_rows(height: int) -> int:
    return -(-height // BLOCK) * BLOCK


def encode(video: np.ndarray, quality: int | None = None, psnr: float = JPEG_PSNR) -> bytes:
    """The member of uint8 ``[T, H, W, 3]`` frames at ``quality``, or at the lowest quality
    whose PSNR over the clip reaches ``psnr`` (see the module)."""
    t, h, w, _ = video.shape
    rows = padded_rows(h)
    padded = video if rows == h else np.concatenate(
        [video, np.repeat(video[:, -1:], rows - h, axis=1)], axis=1)
    frames = (_encode_frames(padded, quality) if quality is not None
              else _frames_for_psnr(video, padded, psnr))
    mcus = -(-w // BLOCK) * (rows // BLOCK)
    per = 1 if mcus > _MAX_INTERVAL else max(1, MAX_ROWS // rows)
    parts = [_join(frames[i : i + per], rows, mcus) for i in range(0, t, per)]
    sizes = [n for i, (data, _) in enumerate(parts) for n in (min(per, t - i * per), len(data))]
    starts = [s for _, offsets in parts for s in offsets]
    head = struct.pack(f"<4s4I{len(sizes)}I{t}I", STACK, t, h, w, len(parts), *sizes, *starts)
    return b"".join([head, *(data for data, _ in parts)])


def _join(frames: list[bytes], rows: int, mcus: int) -> tuple[bytes, list[int]]:
    """One part: the first frame's header for them all, their scan data between restart
    markers; and where each frame's scan data starts."""
    sof, sos, scan, _ = _layout(frames[0])
    head = bytearray(frames[0][:sos])
    struct.pack_into(">H", head, sof + 5, len(frames) * rows)
    if mcus <= _MAX_INTERVAL:
        head += struct.pack(">HHH", 0xFFDD, 4, mcus)
    head += frames[0][sos:scan]
    chunks, starts, pos = [bytes(head)], [], len(head)
    for i, frame in enumerate(frames):
        if frame[:scan] != frames[0][:scan] or frame[-2:] != _EOI:
            raise ValueError("a clip's frames encoded with different JPEG headers")
        if i:
            chunks.append(_restart(i - 1))
            pos += 2
        starts.append(pos)
        chunks.append(frame[scan:-2])
        pos += len(frame) - scan - 2
    return b"".join([*chunks, _EOI]), starts


def _restart(n: int) -> bytes:
    return bytes((0xFF, 0xD0 + n % 8))


def _encode_frames(padded: np.ndarray, quality: int) -> list[bytes]:
    encode = simplejpeg().encode_jpeg
    return [encode(np.ascontiguousarray(f), quality=quality, colorspace="RGB",
                   colorsubsampling="444") for f in padded]


def clip_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 ``b`` against ``a`` over all their values (inf when equal).
    The squared error is exact, so the same on every machine: float32 sums of 256
    squares stay below 2**24, where every integer is exact, in any order."""
    diff = np.subtract(a, b, dtype=np.float32).reshape(-1)
    rows = diff[: diff.size - diff.size % 256].reshape(-1, 256)
    tail = diff[rows.size :].astype(np.float64)
    error = int(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64) + tail @ tail)
    return math.inf if error == 0 else 10 * math.log10(255**2 * a.size / error)


def _psnr(video: np.ndarray, frames: list[bytes]) -> float:
    decoded = np.empty((len(frames), padded_rows(video.shape[1]), *video.shape[2:]), np.uint8)
    decode = simplejpeg().decode_jpeg
    for i, frame in enumerate(frames):
        decode(frame, colorspace="RGB", buffer=decoded[i])
    return clip_psnr(video, decoded[:, : video.shape[1]])


def _frames_for_psnr(video: np.ndarray, padded: np.ndarray, target: float) -> list[bytes]:
    quality = _lowest_quality(video[::4], padded[::4], target)
    while True:
        frames = _encode_frames(padded, quality)
        if quality == 100 or _psnr(video, frames) >= target:
            return frames
        quality += 1


def _lowest_quality(video: np.ndarray, padded: np.ndarray, target: float) -> int:
    """The lowest quality whose PSNR over ``video`` reaches ``target``: one try at a start,
    a guess from its PSNR, then single steps to the boundary."""
    tried: dict[int, float] = {}

    def psnr_at(quality: int) -> float:
        if quality not in tried:
            tried[quality] = _psnr(video, _encode_frames(padded, quality))
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


# -- reading -----------------------------------------------------------------------


def _layout(data: Any) -> tuple[int, int, int, int | None]:
    """(SOF offset, SOS offset, scan data offset, restart interval or None) of a
    baseline JPEG's header; ValueError for anything else."""
    if bytes(data[:2]) != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos, sof, interval = 2, -1, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG header damaged at byte {pos}")
        marker, size = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if size < 2 or pos + 2 + size > len(data):
            raise ValueError(f"JPEG segment at byte {pos} overruns the image")
        if marker == 0xC0:
            sof = pos
        elif 0xC1 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise ValueError("not a baseline JPEG")
        elif marker == 0xDD and size == 4:
            interval = int.from_bytes(data[pos + 4 : pos + 6], "big")
        elif marker == 0xDA:
            if sof < 0:
                raise ValueError("JPEG without a frame header")
            return sof, pos, pos + 2 + size, interval
        pos += 2 + size
    raise ValueError("JPEG header without a scan")


def _check(data: Any, frames: int, rows: int, width: int) -> tuple[int, int, int | None]:
    """(SOF offset, scan data offset, restart interval) of a run's JPEG, after checking
    that it is ``frames * rows`` x ``width`` RGB 4:4:4: forged sizes are refused before
    anything is allocated for them."""
    sof, _, scan, interval = _layout(data)
    precision, height, wide, components = struct.unpack_from(">BHHB", data, sof + 4)
    sampling = bytes(data[sof + 11 : sof + 10 + 3 * components : 3])
    if (precision, components, sampling) != (8, 3, b"\x11\x11\x11"):
        raise ValueError("JPEG is not 8-bit 4:4:4 colour")
    if (height, wide) != (frames * rows, width):
        raise ValueError(f"JPEG is {wide}x{height}, its frames say {width}x{frames * rows}")
    if bytes(data[-2:]) != _EOI:
        raise ValueError("JPEG does not end with EOI")
    return sof, scan, interval


def _parse(view: memoryview) -> tuple[tuple[int, int, int], list[_Part]]:
    """The clip's (T, H, W) and its parts, every offset checked."""
    magic = bytes(view[:4])
    if magic not in (STACK, FRAMES) or len(view) < 16:
        raise ValueError("not a shardkin video.jpgs payload")
    t, h, w = struct.unpack_from("<3I", view, 4)
    if magic == FRAMES:
        if 16 + 4 * t > len(view):
            raise ValueError(f"video.jpgs header lists {t} frames, more than its bytes hold")
        sizes, pos, rows = [(1, n) for n in struct.unpack_from(f"<{t}I", view, 16)], 16 + 4 * t, h
        starts: Sequence[int] = [0] * t  # unused: a part is one frame
    else:
        p = struct.unpack_from("<I", view, 16)[0] if len(view) >= 20 else 0
        pos = 20 + 8 * p + 4 * t
        if pos > len(view):
            raise ValueError(f"video.jpgs header lists {t} frames, more than its bytes hold")
        flat = struct.unpack_from(f"<{2 * p}I", view, 20)
        sizes, rows = list(zip(flat[::2], flat[1::2])), padded_rows(h)
        starts = struct.unpack_from(f"<{t}I", view, 20 + 8 * p)
    parts, first = [], 0
    for frames, size in sizes:
        data = view[pos : pos + size]
        if not frames or first + frames > t or len(data) < size:
            raise ValueError("video.jpgs parts do not hold the clip's frames")
        sof, scan, interval = _check(data, frames, rows, w)
        own = starts[first : first + frames]
        if magic == STACK:
            _check_restarts(data, own, scan, interval, -(-w // BLOCK) * (rows // BLOCK))
        parts.append(_Part(Run(data, first, frames, rows), sof, own))
        pos += size
        first += frames
    if first != t or pos != len(view):
        raise ValueError("video.jpgs payload has trailing or missing bytes")
    return (t, h, w), parts


def _check_restarts(data: Any, starts: Sequence[int], scan: int, interval: int | None,
                    mcus: int) -> None:
    if len(starts) > 1 and interval != mcus:
        raise ValueError("video.jpgs part has no restart marker between its frames")
    if starts[0] != scan or any(
            not (starts[i - 1] < starts[i] <= len(data) - 2)
            or bytes(data[starts[i] - 2 : starts[i]]) != _restart(i - 1)
            for i in range(1, len(starts))):
        raise ValueError("video.jpgs frame offsets do not fall on restart markers")


def _cut(part: _Part, a: int, b: int, first: int) -> Run:
    """Frames ``a..b`` of a part (relative to it) as one JPEG, numbered from ``first``."""
    run = part.run
    if (a, b) == (0, run.frames):
        return run._replace(first=first)
    head = bytearray(run.data[: part.starts[0]])
    struct.pack_into(">H", head, part.sof + 5, (b - a) * run.rows)
    chunks: list[Any] = [head]
    for i in range(a, b):
        if i > a:
            chunks.append(_restart(i - a - 1))
        end = part.starts[i + 1] - 2 if i + 1 < run.frames else len(run.data) - 2
        chunks.append(run.data[part.starts[i] : end])
    return Run(b"".join([*chunks, _EOI]), first, b - a, run.rows)


def runs(data: Any, start: int = 0, stop: int | None = None
         ) -> tuple[tuple[int, int, int], list[Run]]:
    """The clip's ``(T, H, W)`` and JPEGs holding exactly its frames ``start..stop`` (all
    by default), numbered from 0 at ``start``: cut from the member's bytes (restart
    markers renumbered), nothing decoded. ValueError for a damaged member."""
    (t, h, w), parts = _parse(memoryview(data))
    stop = t if stop is None else stop
    if not 0 <= start <= stop <= t:
        raise ValueError(f"frames {start}..{stop} are not in a clip of {t}")
    out = []
    for part in parts:
        lo, hi = max(start, part.run.first), min(stop, part.run.first + part.run.frames)
        if lo < hi:
            out.append(_cut(part, lo - part.run.first, hi - part.run.first, lo - start))
    return (t, h, w), out


def decode_run(run: Run, height: int, width: int, out: np.ndarray) -> None:
    """Decode ``run`` into ``out``, uint8 ``[run.frames, height, width, 3]``."""
    decode = simplejpeg().decode_jpeg
    if run.rows == height and out.flags.c_contiguous:
        decode(run.data, colorspace="RGB", buffer=out)
    else:
        image = decode(run.data, colorspace="RGB")
        out[...] = image.reshape(run.frames, run.rows, width, 3)[:, :height]


def decode(data: Any, start: int = 0, stop: int | None = None,
           out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[stop - start, H, W, 3]``: frames ``start..stop`` of the member (all by
    default), decoded into ``out`` when given; only their rows are decoded."""
    (t, h, w), parts = runs(data, start, stop)
    shape = ((t if stop is None else stop) - start, h, w, 3)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape:
        raise ValueError(f"cannot decode frames of shape {shape} into {out.shape}")
    for run in parts:
        decode_run(run, h, w, out[run.first : run.first + run.frames])
    return out
