"""Clips cut at read time from a contiguous build: pure window arithmetic.

A contiguous build (``step_between_clips == frames_per_clip == F0``, the default) stores
each video's resampled frames once, in order: video ``v``'s ``n_v`` stored clips hold
its first ``n_v * F0`` frames and the last one keeps the ``t_v`` frames after them (its
tail, fewer than ``F0``: :mod:`shardkin.builder.decode`), so all ``N_v = n_v * F0 + t_v``
resampled frames are there. Window ``k`` of ``frames_per_clip=F``,
``step_between_clips=s`` is frames ``[k*s, k*s + F)``, torchvision's clip ``k``: a video
has ``(N_v - F) // s + 1`` windows (0 when ``N_v < F``), torchvision's clips exactly,
numbered in torchvision's order: video, then ``k``.

Two cases differ from torchvision: a video shorter than ``F0`` frames has no stored
clip, so none of its frames are kept (it has no windows; torchvision has some when
``F`` is smaller); and builds made before tails were kept have ``t_v = 0``, so the
windows reaching into the tail are absent.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..format.options import ClipOptions
from ..samplers.video_clips import locate_clip


class Span(NamedTuple):
    """Where window(s) lie among a video's stored clips (ints or int64 arrays)."""

    first: Any  # the stored clip holding the window's first frame (within the video)
    offset: Any  # the window's first frame within that clip
    last: Any  # the stored clip holding its last frame


class Windows:
    """The windows of a contiguous build's videos.

    ``stored``: stored clips of each video in ``video_index`` order (0 for videos too
    short for one); ``stored_frames``: the build's ``frames_per_clip``; ``tails``: the
    frames each video keeps after its last clip (None: none); ``first_row``: each video's
    first row in ``index.npy`` (default: the videos are all the build's, in order).
    """

    def __init__(self, stored: Any, stored_frames: int, frames_per_clip: int,
                 step_between_clips: int, tails: Any = None, first_row: Any = None) -> None:
        if frames_per_clip < 1 or step_between_clips < 1:
            raise ValueError("frames_per_clip and step_between_clips must be >= 1")
        self.stored = np.asarray(stored, np.int64)
        self.stored_frames, self.frames, self.step = (stored_frames, frames_per_clip,
                                                      step_between_clips)
        frames = self.stored * stored_frames
        if tails is not None:
            frames = frames + np.where(self.stored > 0, np.asarray(tails, np.int64), 0)
        self.counts = np.where(frames >= frames_per_clip,
                               (frames - frames_per_clip) // step_between_clips + 1, 0)
        self.first_row = (np.cumsum(self.stored) - self.stored if first_row is None
                          else np.asarray(first_row, np.int64))
        self._ends = np.cumsum(self.counts)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, i: int) -> tuple[int, int]:
        """(video, window number in the video) of window ``i`` of the split."""
        return locate_clip(self._ends, self.counts, i)

    def span(self, k: Any, stored: Any) -> Span:
        """Where window(s) ``k`` of a video with ``stored`` clips lie among them (the
        frames past the last clip are its tail, kept with it)."""
        begin = np.asarray(k, np.int64) * self.step
        end = begin + self.frames - 1
        first = np.minimum(begin // self.stored_frames, np.asarray(stored) - 1)
        last = np.minimum(end // self.stored_frames, np.asarray(stored) - 1)
        span = Span(first, begin - first * self.stored_frames, last)
        return Span(*(int(x) for x in span)) if np.ndim(k) == 0 else span


def windows_for(clips: ClipOptions, counts: Callable[[], tuple[Any, ...]], where: str,
                frames_per_clip: int | None, step_between_clips: int | None) -> Windows | None:
    """The :class:`Windows` asked for of a build with these ``clips`` options, or None when
    they are the build's own clips. An argument left out is the build's. ``counts`` gives
    the stored clips and tails of the videos, and optionally their first rows (read only
    when needed)."""
    f0, s0 = clips.frames_per_clip, clips.step_between_clips
    f = f0 if frames_per_clip is None else int(frames_per_clip)
    s = s0 if step_between_clips is None else int(step_between_clips)
    if (f, s) == (f0, s0):
        return None
    if s0 != f0:
        raise ValueError(
            f"{where} was built with frames_per_clip={f0}, step_between_clips={s0}: clips of "
            f"other lengths and steps (frames_per_clip={f}, step_between_clips={s}) are cut "
            "at read time only from a contiguous build (step equal to frames_per_clip, the "
            "default). Rebuild it so, or leave out these arguments")
    if f < 1 or s < 1:
        raise ValueError(f"frames_per_clip and step_between_clips must be >= 1, got {f}, {s}")
    stored, *more = counts()  # tails, and maybe first rows
    return Windows(stored, f0, f, s, *more)
