"""Reading a :class:`~.records.ClipRef`'s arrays into tensors: one read an array, straight
into its destination (a slot of a batch) when one is given, each array hashed as it lands
(its check then completed by :func:`~.records.finish_checks`); compressed members decoded,
a window's pieces read or decoded frame range by frame range."""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..format.audio import decode_audio
from ..format.checks import video_problem
from ..format.codecs import decode_video
from ..format.sample import REST
from ..format.tar import ShardError
from ..store.split import LocalShard, scratch
from .records import (
    HINT,
    Array,
    ClipRef,
    Encoded,
    LoadedClip,
    Pieces,
    complete_check,
    finish_checks,
)

AROUND = 64 << 10  # bytes after an array read with it for its check (more: read apart)


def read_array(array: Array, out: torch.Tensor | None = None) -> torch.Tensor:
    """``array`` read into ``out`` (contiguous, of its shape) or a new tensor: one read.
    Bytes already in memory are used in place when there is no ``out``."""
    if isinstance(array.source, Encoded):
        samples = torch.from_numpy(decoded(array.source, decode_audio))
        return samples if out is None else out.copy_(samples)
    if not isinstance(array.source, LocalShard):
        count = math.prod(array.shape)
        data = torch.frombuffer(array.source, dtype=array.dtype, count=count,
                                offset=array.offset) if count else torch.empty(0, dtype=array.dtype)
        data = data.view(array.shape)
        return data if out is None else out.copy_(data)
    out = torch.empty(array.shape, dtype=array.dtype) if out is None else out
    if not out.is_contiguous():
        raise ValueError("read_array needs a contiguous destination")
    view = memoryview(out.numpy().reshape(-1).view(np.uint8))
    fd, check = array.source.file.fileno(), array.check
    if check is None or check.done:
        _preadv(fd, [view], array.offset, array.source.path)
        return out
    # One positioned read with the bytes of the sample its check still needs around the
    # array (tar headers, the npy header, the small members after it): all hashed at
    # once, in order, the array where it landed (no second system call, no copy).
    end = array.offset + len(view)
    before = max(array.offset - check.pos, 0)
    after = check.end - end if 0 < check.end - end <= AROUND else 0
    around = scratch(before + after)
    _preadv(fd, [around[:before], view, around[before:]], array.offset - before,
            array.source.path)
    if before:
        check.feed(array.offset - before, around[:before])
    check.feed(array.offset, view)
    if after:
        check.feed(end, around[before:])
    return out


def _preadv(fd: int, buffers: list[memoryview], at: int, path: str) -> None:
    """Fill ``buffers`` from ``fd`` at ``at`` (the page cache hands a file's bytes over in
    one call; a short read continues)."""
    buffers = [b for b in buffers if len(b)]
    while buffers:
        got = os.preadv(fd, buffers, at)
        if not got:
            raise ShardError(f"{path}: truncated at byte {at} while reading a clip: the shard "
                             "changed during the epoch")
        at += got
        while buffers and got >= len(buffers[0]):
            got -= len(buffers.pop(0))
        if got:
            buffers[0] = buffers[0][got:]


def read_video(video: Array | Encoded | Pieces, out: torch.Tensor | None = None
               ) -> torch.Tensor:
    """A clip's frames, uint8 ``[T, H, W, 3]``, read (or decoded) into ``out`` if given:
    a window's stored frames with one read per stored clip, copied once."""
    if isinstance(video, Pieces):
        if out is None and video.shape is None:
            return torch.cat([_decode_video(p.array, p.start, p.stop) if isinstance(
                p.array, Encoded) else read_video(p.array)[p.start : p.stop] for p in video.parts])
        out = torch.empty(video.shape, dtype=torch.uint8) if out is None else out
        t = 0
        for array, start, stop in video.parts:
            part = out[t : t + stop - start]
            if isinstance(array, Array):  # only the window's frames are read
                frame = math.prod(array.shape[1:])
                read_array(array._replace(offset=array.offset + start * frame,
                                          shape=(stop - start, *array.shape[1:])), part)
            else:  # only the window's frames are decoded (jpeg: only their rows)
                _decode_video(array, start, stop, part)
            t += stop - start
        return out
    if isinstance(video, Array):
        return read_array(video, out)
    return _decode_video(video, 0, None, out)


def _decode_video(video: Encoded, start: int, stop: int | None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Frames ``start..stop`` of a compressed video member, decoded into ``out`` when
    given (straight into it when it is contiguous)."""
    into = out.numpy() if out is not None and out.is_contiguous() else None
    array = decoded(video, lambda m, d: decode_video(m, d, start, stop, into))
    problem = video_problem(array.dtype, array.shape)
    if problem is not None:
        raise ShardError(f"{video.where}: corrupt {video.member} member ({problem}) at byte "
                         f"{video.offset}: {HINT}")
    frames = torch.from_numpy(array if array.flags.writeable else array.copy())
    return out if into is not None else frames if out is None else out.copy_(frames)


def decoded(encoded: Encoded, decode: Callable[[str, Any], Any]) -> Any:
    """``decode(member, data)`` of a compressed member; ShardError if it does not decode
    (after its checksum, so that damage is ``Damaged``, which ``on_error="skip"`` skips)."""
    try:
        return decode(encoded.member.removeprefix(f"{REST}."), encoded.data)
    except Exception as e:  # any decoder failure on a damaged member
        if encoded.check is not None:  # its checksum first: if it fails, say so (skippable)
            complete_check(encoded.check)
        raise ShardError(f"{encoded.where}: corrupt {encoded.member} member "
                         f"({type(e).__name__}: {e}) at byte {encoded.offset}: {HINT}") from None


def read_audio(audio: Array | Pieces, out: torch.Tensor | None = None) -> torch.Tensor:
    """A clip's sound, float32 ``[C, S]``, read into ``out`` if given (straight in when
    it is one run, as a batch row of the longest clip's length is)."""
    if isinstance(audio, Array):
        if out is None or out.is_contiguous():
            return read_array(audio, out)
        return out.copy_(read_array(audio))
    out = torch.empty(audio.shape, dtype=torch.float32) if out is None else out
    t = 0
    for array, start, stop in audio.parts:
        out[:, t : t + stop - start] = read_array(array)[:, start:stop]
        t += stop - start
    return out


def load_clip(ref: ClipRef, video: torch.Tensor | None = None) -> LoadedClip:
    """The clip of ``ref``, its video read into ``video`` when given, checked
    (:func:`finish_checks`)."""
    clip = LoadedClip(read_video(ref.video, video), read_audio(ref.audio), ref.label, ref.key,
                      ref.meta)
    finish_checks(ref)
    return clip

