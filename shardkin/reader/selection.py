"""Which stored clips an epoch of ``ShardDataset`` reads with ``clips_per_video=k``.

Per video and epoch: ``"random"`` takes ``min(k, n)`` distinct clips of its ``n``, drawn
afresh from ``(seed, epoch, shard)``; ``"uniform"`` takes torchvision's
``UniformClipSampler`` picks, ``floor(linspace(s, s + n - 1, k))`` in float32 over the
global clip numbers (repeats when ``n < k``; videos without clips give none). Either way
a shard's count of picks is the same every epoch, so the epoch partition and ``len()``
stay exact. Picks are sample numbers within their shard, sorted (a repeated clip is
read once and handed out again). Pure functions of the index, counts, seed and epoch.
"""
from __future__ import annotations

import numpy as np
import torch

from ..store.split import Split

CLIP_SAMPLERS = ("random", "uniform")


class ClipSelection:
    """The picks of every shard of a split, per epoch.

    ``index``: ``index.npy`` (rows in video order: manifest shard number, offset,
    length); ``clips_per_video``: stored clips of each video in that order;
    ``shard_numbers``: the manifest number of each shard read (in reading order).
    """

    def __init__(self, index: np.ndarray, clips_per_video: np.ndarray,
                 shard_numbers: list[int], k: int, sampler: str, seed: int) -> None:
        if sampler not in CLIP_SAMPLERS:
            raise ValueError(f"clip_sampler must be 'random' or 'uniform', got {sampler!r}")
        if k < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {k}")
        self.k, self.sampler, self.seed, self._numbers = k, sampler, seed, shard_numbers
        n = np.asarray(clips_per_video, np.int64)
        first_row = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        has = n > 0
        rows = first_row[has]
        reading = np.full(int(index[:, 0].max(initial=-1)) + 1, -1, np.int64)
        known = [m for m in shard_numbers if m < len(reading)]
        reading[known] = [i for i, m in enumerate(shard_numbers) if m < len(reading)]
        shard = np.full(len(n), -1, np.int64)
        shard[has] = reading[index[rows, 0]]
        offset = np.zeros(len(n), np.int64)
        offset[has] = index[rows, 1]
        # a shard's samples are its videos' clips, video after video, in byte order
        order = np.lexsort((offset, shard))
        self._order = order[shard[order] >= 0]  # videos by shard, then stored order
        self._bounds = np.searchsorted(shard[self._order], np.arange(len(shard_numbers) + 1))
        self._n, self._first_row = n, first_row
        take = np.minimum(n, k) if sampler == "random" else np.where(n > 0, k, 0)
        self.counts = np.bincount(shard[self._order], weights=take[self._order],
                                  minlength=len(shard_numbers)).astype(np.int64).tolist()

    def picks(self, shard: int, epoch: int) -> np.ndarray:
        """Sorted sample numbers of shard number ``shard`` (reading order) read in ``epoch``."""
        videos = self._order[self._bounds[shard] : self._bounds[shard + 1]]
        n = self._n[videos]
        first = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        if self.sampler == "uniform":
            out = [first[i] + _uniform(int(self._first_row[v]), int(n[i]), self.k)
                   for i, v in enumerate(videos) if n[i]]
            return np.concatenate(out) if out else np.zeros(0, np.int64)
        # random: per video the k smallest of random keys over its clips
        total = int(n.sum())
        rng = np.random.default_rng([self.seed, epoch, self._numbers[shard]])
        keys = rng.random(total)
        video_of = np.repeat(np.arange(len(videos)), n)
        order = np.lexsort((keys, video_of))  # clips grouped by video, shuffled within
        starts = np.concatenate([[0], np.cumsum(n)[:-1]])
        rank = np.arange(total) - np.repeat(starts, n)
        return np.sort(order[rank < self.k])


def _uniform(start: int, n: int, k: int) -> np.ndarray:
    """torchvision's ``UniformClipSampler`` picks of a video whose clips are the global
    numbers ``start .. start + n - 1``, as clip numbers within the video."""
    picks = torch.linspace(start, start + n - 1, steps=k).floor().to(torch.int64)
    return picks.numpy() - start


def select_clips(split: Split, k: int, sampler: str, seed: int) -> ClipSelection:
    """The :class:`ClipSelection` of ``split``'s shards (index and clips per video read)."""
    if split.manifest.index is None:
        raise ValueError(f"{split.where} has no index.npy (built by an older shardkin), "
                         "which clips_per_video needs: rebuild with --overwrite")
    every = split.manifest.shards
    numbers = {n: i for i, n in enumerate(every.names)}
    chosen = (list(range(len(every))) if split.shards is every
              else [numbers[n] for n in split.shards.names])
    return ClipSelection(split.read_index(), split.clips_per_video(), chosen, k, sampler, seed)
