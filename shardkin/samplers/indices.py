"""Clip indices of torchvision's clip samplers, as pure functions over per-video clip counts.

Clip ``j`` of video ``v`` is dataset index ``offsets[v] + j``, where ``offsets`` are the
cumulative clip counts in the dataset's video order, videos with no clip included. The torch
calls that decide the result (``randperm``, ``linspace``) are torchvision's, one a video in
the same order; offsets, flooring and gathering are done once for all videos (``torch.cat``
of a Kinetics-size list of small tensors alone costs seconds).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Counts = Sequence[int] | np.ndarray


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def random_clip_indices(*, clips_per_video: Counts, max_clips_per_video: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``RandomClipSampler``'s indices: up to ``max_clips_per_video`` clips of each video
    drawn without replacement, then all of them shuffled. The draws are torchvision's, one
    ``randperm`` a video (videos with 0 clips too) and one for the whole list, from
    ``generator`` (torch's global generator when None, as torchvision draws)."""
    counts = np.asarray(clips_per_video, dtype=np.int64)
    take = np.minimum(counts, max_clips_per_video)
    chosen = np.empty(int(take.sum()), np.int64)
    end = 0
    for n, m in zip(counts.tolist(), take.tolist()):
        chosen[end : end + m] = torch.randperm(n, generator=generator).numpy()[:m]
        end += m
    indices = torch.from_numpy(chosen + np.repeat(_offsets(counts), take))
    return indices[torch.randperm(len(indices), generator=generator)]


def uniform_picks(starts: Counts, counts: Counts, k: int) -> torch.Tensor:
    """torchvision's ``UniformClipSampler`` rule, the one home of it: for each video whose
    clips are the numbers ``start .. start + n - 1`` (``n > 0``), ``k`` evenly spaced ones
    (repeated when it has fewer), ``linspace(start, start + n - 1, steps=k).floor()`` in
    the default float dtype (float32: past 2**24 clips its rounding is kept, so the
    numbers stay torchvision's), concatenated in order; videos without clips give none."""
    spaced = [torch.linspace(s, s + n - 1, steps=k)
              for s, n in zip(np.asarray(starts).tolist(), np.asarray(counts).tolist()) if n]
    if not spaced:
        return torch.empty(0, dtype=torch.int64)
    return torch.cat(spaced).floor().to(torch.int64)


def uniform_clip_indices(*, clips_per_video: Counts, num_clips_per_video: int) -> torch.Tensor:
    """``UniformClipSampler``'s indices: ``num_clips_per_video`` evenly spaced clips of each
    video with clips (repeated when it has fewer), in video order (:func:`uniform_picks`)."""
    counts = np.asarray(clips_per_video, dtype=np.int64)
    return uniform_picks(_offsets(counts), counts, num_clips_per_video)
