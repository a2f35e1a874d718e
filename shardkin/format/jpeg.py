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
on a real clip), so stacked frames would not decode as they do alone.

Format versions 1 and 2 (``b"SKJ1"``, still read): T, H, W, T sizes, then T JPEGs of one
frame each. Which quality a clip gets is :mod:`.codecs`' choice.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

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


def pad(video: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames, each padded at the bottom to whole blocks by
    repeating its last row (``video`` itself when they are whole)."""
    rows = padded_rows(video.shape[1])
    if rows == video.shape[1]:
        return video
    return np.concatenate([video, np.repeat(video[:, -1:], rows - video.shape[1], axis=1)],
                          axis=1)


def encode_frames(padded: np.ndarray, quality: int) -> list[bytes]:
    """Each padded frame as a JPEG of its own (4:4:4), what :func:`pack` joins."""
    encode = simplejpeg().encode_jpeg
    return [encode(np.ascontiguousarray(f), quality=quality, colorspace="RGB",
                   colorsubsampling="444") for f in padded]


def decode_frames(frames: list[bytes], height: int) -> np.ndarray:
    """uint8 ``[T, height, W, 3]``: JPEGs of :func:`encode_frames`, their padding cut off."""
    codec = simplejpeg()
    rows, width = codec.decode_jpeg_header(frames[0])[:2]
    out = np.empty((len(frames), rows, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        codec.decode_jpeg(frame, colorspace="RGB", buffer=out[i])
    return out[:, :height]


def pack(frames: list[bytes], height: int, width: int) -> bytes:
    """The member of a clip's frames encoded by :func:`encode_frames` (see the module)."""
    t, rows = len(frames), padded_rows(height)
    mcus = -(-width // BLOCK) * (rows // BLOCK)
    per = 1 if mcus > _MAX_INTERVAL else max(1, MAX_ROWS // rows)
    parts = [_join(frames[i : i + per], rows, mcus) for i in range(0, t, per)]
    sizes = [n for i, (data, _) in enumerate(parts) for n in (min(per, t - i * per), len(data))]
    starts = [s for _, offsets in parts for s in offsets]
    head = struct.pack(f"<4s4I{len(sizes)}I{t}I", STACK, t, height, width, len(parts), *sizes,
                       *starts)
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
