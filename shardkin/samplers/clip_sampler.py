"""torchvision's ``RandomClipSampler``, ``UniformClipSampler`` and ``DistributedSampler``
(``torchvision.datasets.samplers``): the same signatures, lengths and indices."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .indices import random_clip_indices, uniform_clip_indices


def clip_counts(dataset_or_video_clips: Any) -> np.ndarray:
    """int64 clips per video of a dataset with ``video_clips`` (``shardkin.Kinetics``,
    torchvision's) or of a ``video_clips`` itself (anything with ``clips``)."""
    video_clips = getattr(dataset_or_video_clips, "video_clips", dataset_or_video_clips)
    counts = getattr(video_clips, "counts", None)
    if counts is None:
        if not hasattr(video_clips, "clips"):
            raise TypeError("expected shardkin.Kinetics or its video_clips, got "
                            f"{type(dataset_or_video_clips).__name__}")
        counts = [len(c) for c in video_clips.clips]
    return np.asarray(counts, dtype=np.int64)


class RandomClipSampler(Sampler[int]):
    """Up to ``max_clips_per_video`` random clips of each video, all shuffled; drawn afresh
    each ``iter()`` from torch's global generator (or ``generator``), as torchvision does."""

    def __init__(self, dataset_or_video_clips: Any, max_clips_per_video: int, *,
                 generator: torch.Generator | None = None) -> None:
        self.counts = clip_counts(dataset_or_video_clips)
        self.max_clips_per_video = max_clips_per_video
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        return iter(random_clip_indices(clips_per_video=self.counts,
                                        max_clips_per_video=self.max_clips_per_video,
                                        generator=self.generator).tolist())

    def __len__(self) -> int:
        return int(np.minimum(self.counts, self.max_clips_per_video).sum())


class UniformClipSampler(Sampler[int]):
    """``num_clips_per_video`` evenly spaced clips of each video with clips (repeated when
    it has fewer), in video order."""

    def __init__(self, dataset_or_video_clips: Any, num_clips_per_video: int) -> None:
        self.counts = clip_counts(dataset_or_video_clips)
        self.num_clips_per_video = num_clips_per_video

    def __iter__(self) -> Iterator[int]:
        return iter(uniform_clip_indices(clips_per_video=self.counts,
                                         num_clips_per_video=self.num_clips_per_video).tolist())

    def __len__(self) -> int:
        return self.num_clips_per_video * int(np.count_nonzero(self.counts))


class DistributedSampler(Sampler[int]):
    """torchvision's ``DistributedSampler``: this rank's share of a dataset's or a sampler's
    positions. The list is padded by repeating its head to a multiple of
    ``num_replicas * group_size``, cut into groups of ``group_size`` consecutive positions,
    and rank ``r`` takes groups ``r, r + num_replicas, ...``; a wrapped sampler's positions
    map through ``list(iter(sampler))`` (drawn afresh each epoch). ``shuffle`` permutes the
    positions first, seeded by :meth:`set_epoch` only."""

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = False, group_size: int = 1) -> None:
        if num_replicas is None or rank is None:
            if not dist.is_available():
                raise RuntimeError("Requires distributed package to be available")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if len(dataset) % group_size:
            raise ValueError(f"dataset length must be a multiple of group size: dataset "
                             f"length {len(dataset)}, group size {group_size}")
        self.dataset, self.group_size = dataset, group_size
        self.num_replicas, self.rank, self.shuffle, self.epoch = num_replicas, rank, shuffle, 0
        self.num_group_samples = math.ceil(len(dataset) // group_size / num_replicas)
        self.num_samples = self.num_group_samples * group_size
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.epoch)
            positions = torch.randperm(n, generator=g).tolist()
        else:
            positions = list(range(n))
        positions += positions[: self.total_size - n]
        groups = torch.tensor(positions, dtype=torch.int64).reshape(-1, self.group_size)
        positions = groups[self.rank :: self.num_replicas].reshape(-1).tolist()
        if isinstance(self.dataset, Sampler):
            drawn = list(iter(self.dataset))
            positions = [drawn[i] for i in positions]
        return iter(positions)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
