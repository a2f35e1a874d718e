"""From a sample's members to tensors: the one decoding path of both readers.

:func:`clip_ref` checks a sample's members (npy and FLAC headers, dtypes, shapes, label,
json) and returns a :class:`ClipRef`: where the clip's arrays are (left in a local shard
file, or in bytes already fetched, compressed or not) and its small members.
:func:`~.loading.load_clip` then reads the arrays, straight into a destination when one
is given (a slot of a batch).
Every kind of damage raises :class:`~shardkin.format.tar.ShardError` naming the shard
and the byte offset; ``on_error`` decides what the reader does with it.

Checksums: a sample's :class:`~shardkin.format.checks.SampleHash` travels with its
arrays; each array left in a local shard file is hashed as it lands in its destination
(:func:`~.loading.read_array`), and :func:`finish_checks` completes the check once the clip is
read (the bytes no one read, such as a tail a stored clip does not load, are read for
it), raising :class:`Damaged` for a clip whose bytes do not match. A clip whose bytes
were all in memory was checked before: :func:`clip_ref` raises for it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from ..format.audio import AUDIO_MEMBERS, FLAC_HEAD, audio_member, flac_layout
from ..format.checks import SampleHash, audio_problem, require, video_problem
from ..format.codecs import video_member
from ..format.npy import parse_header
from ..format.sample import (
    AUDIO,
    LABEL,
    META,
    REST,
    VIDEO,
    decode_label,
    decode_meta,
    parse_key,
)
from ..format.samples import (
    ALL_MEMBERS,
    REST_AUDIO_MEMBERS,
    REST_MEMBERS,
    REST_VIDEO_MEMBERS,
    Deferred,
)
from ..format.tar import ShardError
from ..store.split import LocalShard

HINT = ("rebuild it (re-run the same `shardkin build`, which rewrites missing or changed "
        "shards) or pass on_error='skip' to skip unreadable clips")
OnError = Literal["raise", "skip"]
ON_ERROR: tuple[OnError, ...] = ("raise", "skip")
_AUDIO = frozenset((*AUDIO_MEMBERS, *REST_AUDIO_MEMBERS))
DEFER = (VIDEO, AUDIO, f"{REST}.{VIDEO}", f"{REST}.{AUDIO}")  # npy arrays left in local files
_TORCH = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32}


def wanted_members(return_dict: bool, windows: bool = False, audio: bool = True
                   ) -> tuple[str, ...]:
    """The members a reader loads: the json only for dicts (their ``video_name``) and
    windows (their marks), which also load what is kept after each clip; no audio member
    without ``audio`` (the clips then have the empty sound of a build without audio)."""
    wanted = (*ALL_MEMBERS, *REST_MEMBERS) if windows else (
        ALL_MEMBERS if return_dict else tuple(m for m in ALL_MEMBERS if m != META))
    return wanted if audio else tuple(m for m in wanted if m not in _AUDIO)


def check_on_error(on_error: OnError) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


class Encoded(NamedTuple):
    """A compressed member (video: zstd, jpeg; audio: flac), decoded when its clip is read."""

    member: str
    data: bytearray | memoryview
    where: str  # shard and sample, for errors
    offset: int  # of the sample in the shard
    check: SampleHash | None = None  # its sample's, when not complete yet


class Array(NamedTuple):
    """An npy array left in its shard file, or in the member's bytes when they were
    fetched, to be read straight into its destination; or the samples of a FLAC member
    (``source`` is then :class:`Encoded`), decoded when read."""

    source: LocalShard | bytearray | memoryview | Encoded
    offset: int  # of the array data in the file (or the bytes)
    dtype: torch.dtype
    shape: tuple[int, ...]
    check: SampleHash | None = None  # fed as it is read (an array left in a local file)


class Piece(NamedTuple):
    """Frames (or audio samples) ``start..stop`` of a stored clip's array."""

    array: Array | Encoded
    start: int
    stop: int


class Pieces(NamedTuple):
    """A window's frames or sound: pieces of consecutive stored clips, in order; ``shape``
    is None for frames still compressed."""

    parts: tuple[Piece, ...]
    shape: tuple[int, ...] | None


class Rest(NamedTuple):
    """What a contiguous build keeps after a clip (``rest.*`` members, when loaded): the
    video's tail frames (its last clip only) and the sound up to what follows."""

    video: Array | Encoded | None
    audio: Array | None


class ClipRef(NamedTuple):
    """A clip (or a window, in :class:`Pieces`) not yet read: where its arrays are, and
    its small members."""

    video: Array | Encoded | Pieces  # uint8 [T, H, W, 3] once read
    audio: Array | Pieces  # float32 [C, S]; [1, 0] for a build without audio
    label: int
    key: str
    meta: dict[str, Any] | None
    rest: Rest | None = None
    checks: tuple[SampleHash, ...] = ()  # of its samples, completed once it is read


class Damaged(ShardError):
    """A clip whose bytes do not match their checksum (``check``), found once it was read."""

    def __init__(self, message: str, check: SampleHash | None = None) -> None:
        super().__init__(message)  # one argument, as DataLoader workers re-raise it
        self.check = check


class LoadedClip(NamedTuple):
    """One clip, read."""

    video: torch.Tensor  # uint8 [T, H, W, 3]
    audio: torch.Tensor  # float32 [C, S]
    label: int
    key: str
    meta: dict[str, Any] | None


def npy_layout(head: bytes, size: int,
               problem: Callable[[Any, tuple[int, ...]], str | None] | None = None
               ) -> tuple[int, torch.dtype, tuple[int, ...]]:
    """(data offset, dtype, shape) of an npy payload of ``size`` bytes from its first
    bytes; ValueError unless it holds what ``problem`` (a :mod:`~shardkin.format.checks`
    rule) accepts, or without one an array a reader reads (uint8 or float32)."""
    offset, dtype, shape = parse_header(head)
    if problem is not None:
        require(problem(dtype, shape))
    elif dtype not in _TORCH:
        raise ValueError(f"unsupported npy dtype {dtype}")
    if offset + math.prod(shape) * dtype.itemsize != size:
        raise ValueError(f"npy payload of {size} bytes does not hold {shape} {dtype}")
    return offset, _TORCH[dtype], shape


class _Sample(NamedTuple):
    """What :func:`clip_ref` knows of the sample it reads."""

    members: Mapping[str, Any]
    local: LocalShard | None
    where: str
    offset: int
    check: SampleHash | None


def _array(s: _Sample, member: str, problem: Callable[[Any, tuple[int, ...]], str | None]
           ) -> Array:
    part = s.members[member]
    if isinstance(part, Deferred):  # left in the shard file
        offset, dtype, shape = npy_layout(part.head, part.size, problem)
        return Array(s.local, part.offset + offset, dtype, shape, s.check)
    offset, dtype, shape = npy_layout(part[:4096], len(part), problem)
    return Array(part, offset, dtype, shape)


def _video(s: _Sample, member: str) -> Array | Encoded:
    if not member.endswith(VIDEO):  # compressed
        return Encoded(member, s.members[member], s.where, s.offset, s.check)
    return _array(s, member, video_problem)


def _audio(s: _Sample, member: str) -> Array:
    if member.endswith(AUDIO):
        return _array(s, member, audio_problem)
    channels, samples, _ = flac_layout(s.members[member][:FLAC_HEAD])
    return Array(Encoded(member, s.members[member], s.where, s.offset, s.check), 0, torch.float32,
                 (channels, samples))


def clip_ref(members: Mapping[str, Any], key: str, shard: str, offset: int,
             local: LocalShard | None = None, check: SampleHash | None = None) -> ClipRef:
    """The checked clip of a sample's members (data, or :class:`Deferred` in ``local``)
    at byte ``offset`` of ``shard`` (named in errors); ``check``: its checksum check, which
    must not have failed (ShardError), and is completed when the clip is read."""
    if check is not None:
        check.raise_error()
    try:
        s = _Sample(members, local, f"{shard}: sample {key}", offset, check)
        video = _video(s, video_member(members))
        sound = audio_member(members)
        audio = (Array(bytearray(), 0, torch.float32, (1, 0)) if sound is None  # no audio
                 else _audio(s, sound))
        rest = None
        tail = next((m for m in REST_VIDEO_MEMBERS if m in members), None)
        after = next((m for m in REST_AUDIO_MEMBERS if m in members), None)
        if tail or after:
            rest = Rest(tail and _video(s, tail), after and _audio(s, after))
        meta = decode_meta(members[META]) if META in members else None
        parse_key(key)
        checks = (check,) if check is not None and not check.done else ()
        return ClipRef(video, audio, decode_label(members[LABEL]), key, meta, rest, checks)
    except ValueError as e:  # also bad UTF-8 and JSON
        raise ShardError(f"{shard}: corrupt sample {key}: {e} at byte {offset}") from None


def finish_checks(ref: ClipRef) -> None:
    """Complete the checksum checks of a clip just read; :class:`Damaged` if one fails."""
    for check in ref.checks:
        complete_check(check)


def complete_check(check: SampleHash) -> None:
    error = check.complete()
    if error is not None:
        raise Damaged(f"{error}: {HINT}", check)
