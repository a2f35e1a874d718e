"""A window (:mod:`.windows`) assembled from the stored clips it spans, not yet read.

Each stored clip of a contiguous build holds ``F0`` frames, and the last one of a video
also its tail (``rest.video``). A window's frames are pieces of these, read later
straight into their destination (:func:`.loading.read_video`). Its sound is the samples
from its first frame's start to its last frame's end, by the marks the build recorded
for every frame (``audio_marks``, ``rest``: :func:`shardkin.format.sample.clip_metadata`),
taken from each stored clip's sound and the sound kept after it (``rest.audio``), in
order: sample for sample what a full decode gives between those times.

Checksums cover whole samples, so a window is checked by the whole of each stored clip
it spans: the frames and sound it reads are hashed as they land, the rest of those
samples is read for the check (:func:`.records.finish_checks`) the first time one of
the window's stored clips is read in a lane's span; later windows over the same
stored clip in that span read only their own frames (``tools/bench_read.py --verify``
measures the cost).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..format.sample import AUDIO_MARKS, REST, parse_key, sample_key
from .records import Array, ClipRef, Piece, Pieces


def window_ref(refs: Sequence[ClipRef], offset: int, frames: int, stored_frames: int,
               number: int) -> ClipRef:
    """Window ``number`` of its video: ``frames`` frames from frame ``offset`` of the first
    of ``refs``, consecutive stored clips of ``stored_frames`` frames each (the last with
    its tail when the window reaches into it)."""
    segments = []  # (frames array, frame count) in order
    for ref in refs:
        segments.append((ref.video, stored_frames))
        if ref.rest is not None and ref.rest.video is not None:
            segments.append((ref.rest.video, (ref.meta or {})[REST]["frames"]))
    video, at, end = [], 0, offset + frames
    for array, n in segments:
        lo, hi = max(offset, at), min(end, at + n)
        if hi > lo:
            video.append(Piece(array, lo - at, hi - at))
        at += n
    if sum(p.stop - p.start for p in video) != frames:
        raise ValueError(f"sample {refs[-1].key} ends before window {number}'s last frame")
    first = refs[0].video
    shape = (frames, *first.shape[1:]) if isinstance(first, Array) else None
    v, _ = parse_key(refs[0].key)
    checks = tuple(dict.fromkeys(c for ref in refs for c in ref.checks))  # each sample's once
    return ClipRef(Pieces(tuple(video), shape), _sound(refs, offset, frames), refs[0].label,
                   sample_key(v, number), refs[0].meta, checks=checks)


def _sound(refs: Sequence[ClipRef], offset: int, frames: int) -> Array | Pieces:
    """The window's sound (see the module)."""
    metas = [ref.meta or {} for ref in refs]
    if not any(AUDIO_MARKS in m for m in metas):
        if all(ref.audio.shape[1] == 0 for ref in refs):
            return refs[0].audio  # a build or a video without sound
        raise ValueError(f"sample {refs[0].key} keeps no audio marks (built by an older "
                         "shardkin): rebuild to cut clips at read time with their sound")
    starts: list[int] = []
    ends: list[int] = []
    spans: list[tuple[Any, int]] = []  # (samples, index of the first) in order
    for ref, meta in zip(refs, metas):
        marks, rest = meta[AUDIO_MARKS], meta.get(REST) or {}
        starts += marks["starts"] + rest.get("starts", [])
        ends += marks["ends"] + rest.get("ends", [])
        spans.append((ref.audio, marks["first"]))
        if ref.rest is not None and ref.rest.audio is not None:
            spans.append((ref.rest.audio, rest["first"]))
    begin = starts[offset]
    stop = max(begin, ends[offset + frames - 1])
    parts, at = [], begin
    for audio, first in spans:
        lo, hi = max(at, first), min(stop, first + audio.shape[1])
        if hi > lo:
            parts.append(Piece(audio, lo - first, hi - first))
            at = hi
    return Pieces(tuple(parts), (refs[0].audio.shape[0], sum(p.stop - p.start for p in parts)))
