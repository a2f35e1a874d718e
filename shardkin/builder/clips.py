"""torchvision ``VideoClips`` clip rules as pure functions.

A video of ``N`` decoded frames at ``fps`` is first resampled to ``frame_rate``
(when given): position ``p`` of the resampled video is source frame
``floor(float32(p) * float32(fps / frame_rate))``, for ``p < floor(N * frame_rate / fps)``;
when ``fps / frame_rate`` is a whole number ``r`` the resampled video is
``range(0, N, r)`` over all ``N`` frames, exactly as torchvision does. Clip ``k``
is the window of ``frames_per_clip`` positions starting at ``k * step_between_clips``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipRule:
    """How one video is cut into clips (torchvision's arguments)."""

    frames_per_clip: int
    step_between_clips: int
    fps: float
    frame_rate: float | None = None

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1 or self.step_between_clips < 1:
            raise ValueError("frames_per_clip and step_between_clips must be >= 1")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.frame_rate is not None and not self.frame_rate > 0:
            raise ValueError(f"frame_rate must be > 0, got {self.frame_rate}")

    @property
    def _ratio(self) -> float:
        return self.fps / self.frame_rate if self.frame_rate is not None else 1.0

    @property
    def _integer_ratio(self) -> int | None:
        ratio = self._ratio
        return int(ratio) if float(ratio).is_integer() else None

    def num_positions(self, num_frames: int) -> int:
        """Length of the resampled video for ``num_frames`` source frames."""
        if self.frame_rate is None:
            return num_frames
        r = self._integer_ratio
        if r is not None:
            return -(-num_frames // r)  # len(range(0, N, r))
        return int(math.floor(num_frames * float(self.frame_rate) / self.fps))  # in its order

    def source_index(self, position: int) -> int:
        """Source frame shown at ``position`` of the resampled video."""
        r = self._integer_ratio
        if r is not None:
            return position * r
        return int(np.floor(np.float32(position) * np.float32(self._ratio)))

    def num_clips(self, num_frames: int) -> int:
        """Clips of a video with ``num_frames`` frames (0 when too short)."""
        n = self.num_positions(num_frames)
        if n < self.frames_per_clip:
            return 0
        return (n - self.frames_per_clip) // self.step_between_clips + 1

    def clip_positions(self, clip: int) -> range:
        start = clip * self.step_between_clips
        return range(start, start + self.frames_per_clip)

    def clip_sources(self, clip: int) -> list[int]:
        """Source frame indices of clip ``clip`` (repeats when upsampling)."""
        return [self.source_index(p) for p in self.clip_positions(clip)]

    def in_some_clip(self, position: int) -> bool:
        """Whether resampled ``position`` belongs to any clip window."""
        return self.frames_per_clip >= self.step_between_clips or (
            position % self.step_between_clips < self.frames_per_clip
        )

    @property
    def output_fps(self) -> float:
        return float(self.frame_rate) if self.frame_rate is not None else self.fps


def output_size(
    src_width: int,
    src_height: int,
    width: int = 0,
    height: int = 0,
    min_dimension: int = 0,
    max_dimension: int = 0,
) -> tuple[int, int]:
    """Output (width, height) by torchvision's video_reader rules.

    ``_video_width``/``_video_height`` given alone keep the aspect ratio;
    ``min_dimension`` sets the short side, ``max_dimension`` the long side
    (both: stretch to them). Rounding is half away from zero, as in C's round().
    """

    def rnd(x: float) -> int:
        return int(math.floor(x + 0.5))

    if width == 0 and height == 0:
        landscape = src_width > src_height
        if min_dimension > 0 and max_dimension == 0:
            if landscape:
                w, h = rnd(src_width * min_dimension / src_height), min_dimension
            else:
                w, h = min_dimension, rnd(src_height * min_dimension / src_width)
        elif min_dimension == 0 and max_dimension > 0:
            if landscape:
                w, h = max_dimension, rnd(src_height * max_dimension / src_width)
            else:
                w, h = rnd(src_width * max_dimension / src_height), max_dimension
        elif min_dimension > 0 and max_dimension > 0:
            w, h = (max_dimension, min_dimension) if landscape else (min_dimension, max_dimension)
        else:
            w, h = src_width, src_height
    elif height == 0:
        w, h = width, rnd(src_height * width / src_width)
    elif width == 0:
        w, h = rnd(src_width * height / src_height), height
    else:
        w, h = width, height
    return max(w, 1), max(h, 1)
