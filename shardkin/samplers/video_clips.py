"""``ClipCounts``: the part of torchvision's ``VideoClips`` that clip samplers use."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np


def locate_clip(ends: np.ndarray, counts: np.ndarray, idx: int) -> tuple[int, int]:
    """(video, clip number in it) of clip ``idx`` of a dataset whose videos have ``counts``
    clips (``ends``: their cumulative sum): the one index -> video rule, ``Kinetics``'
    windows' too."""
    video = int(np.searchsorted(ends, idx, side="right"))
    return video, idx - int(ends[video] - counts[video])


class ClipCounts:
    """Clips per video in the dataset's video order (videos with none included).

    ``clips`` has one entry per video whose ``len()`` is its clip count (a ``range``), as
    torchvision's samplers walk ``video_clips.clips``; ``counts`` is the same as int64.
    """

    def __init__(self, counts: Any) -> None:
        self.counts = np.asarray(counts, dtype=np.int64)
        self._ends = np.cumsum(self.counts)

    @functools.cached_property
    def clips(self) -> list[range]:
        return [range(n) for n in self.counts.tolist()]

    def num_videos(self) -> int:
        return len(self.counts)

    def num_clips(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def get_clip_location(self, idx: int) -> tuple[int, int]:
        """(video index, clip index in that video) of dataset index ``idx``, as torchvision's."""
        if not 0 <= idx < self.num_clips():
            raise IndexError(f"clip {idx} out of range for {self.num_clips()} clips")
        return locate_clip(self._ends, self.counts, idx)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "clips"}  # rebuilt on use
