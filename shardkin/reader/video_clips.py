"""``Kinetics.video_clips``: what torchvision's code expects of ``VideoClips``, over a build
(and ``Kinetics.samples``: :class:`Samples`).

torchvision's clip samplers check ``isinstance(video_clips, VideoClips)`` and walk
``video_clips.clips``; its reference recipe calls ``video_clips.get_clip(idx)``. So when
torchvision can be imported, the object is an instance of a subclass of its ``VideoClips``
(made on first use; its ``__init__``, which scans every video, is never called), else of
:class:`~shardkin.samplers.ClipCounts` alone. torchvision stays optional.

What it holds, per video of the dataset's ``samples`` (videos without clips included):
``clips`` (one ``range`` of clip numbers a video, where torchvision keeps a tensor of frame
timestamps: the samplers need only their lengths), ``video_paths`` (relative to the build's
ROOT), ``video_fps``; and ``num_clips()``, ``num_videos()``, ``get_clip_location(i)``,
``get_clip(i)`` -> ``(video, audio, info, video_idx)`` as torchvision's (the dataset's
``output_format``, no transform; ``info["video_fps"]`` the video's fps, or ``frame_rate``
when the build resampled).
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..samplers.video_clips import ClipCounts


class _Clips(ClipCounts):
    """The shardkin side of ``video_clips``: counts per video, and the dataset that reads."""

    def __init__(self, dataset: Any, counts: Any) -> None:  # no super(): nothing to scan
        ClipCounts.__init__(self, counts)
        self._dataset = dataset
        self.num_frames = dataset.frames_per_clip
        self.step = dataset.step_between_clips
        self.frame_rate = dataset.frame_rate
        self.output_format = dataset.output_format

    @property
    def video_paths(self) -> Sequence[str]:
        return _Column(self._dataset.samples, 0)

    @property
    def video_fps(self) -> list[float]:
        return self._dataset.video_fps().tolist()

    @property
    def cumulative_sizes(self) -> list[int]:
        return self._ends.tolist()

    def __len__(self) -> int:
        return self.num_clips()

    def get_clip(self, idx: int) -> tuple[Any, Any, dict[str, Any], int]:
        """``(video, audio, info, video_idx)`` of clip ``idx``, as torchvision's."""
        if not 0 <= idx < self.num_clips():
            raise IndexError(f"Index {idx} out of range ({self.num_clips()} number of clips)")
        return self._dataset.get_clip(idx)

    def compute_clips(self, num_frames: int, step: int, frame_rate: float | None = None) -> None:
        raise NotImplementedError(
            "a build's clips are read through shardkin.Kinetics: pass frames_per_clip="
            f"{num_frames}, step_between_clips={step} to it instead (clips of any length and "
            "step are cut at read time from a contiguous build)")

    def subset(self, indices: list[int]) -> Any:
        raise NotImplementedError("take a subset of the dataset instead "
                                  "(torch.utils.data.Subset, or a sampler over its indices)")

    def __reduce__(self) -> Any:
        return operator.attrgetter("video_clips"), (self._dataset,)  # rebuilt from the dataset


class _Column(Sequence):
    """One field of a sequence of tuples, read on access."""

    def __init__(self, rows: Sequence[tuple], field: int) -> None:
        self._rows, self._field = rows, field

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._rows[i][self._field]


_CLASS: type | None = None


def video_clips_class() -> type:
    """The class of ``video_clips``: a subclass of torchvision's ``VideoClips`` too when
    torchvision can be imported."""
    global _CLASS
    if _CLASS is None:
        try:
            from torchvision.datasets.video_utils import VideoClips  # optional
        except Exception:  # noqa: BLE001 - absent, or failing to import: go without
            _CLASS = _Clips
        else:
            _CLASS = type("VideoClips", (_Clips, VideoClips),
                          {"__module__": __name__, "__doc__": _Clips.__doc__})
    return _CLASS


def make_video_clips(dataset: Any, counts: np.ndarray) -> _Clips:
    return video_clips_class()(dataset, counts)


class Samples(Sequence):
    """``(path, label)`` of each video of the dataset, as torchvision's ``samples``: paths
    relative to the build's ROOT, read when asked for."""

    def __init__(self, table: Any, rows: np.ndarray) -> None:
        self._table, self._rows = table, rows
        self._labels = table.column("label")[rows]

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._table.path(int(self._rows[i])), int(self._labels[i])
