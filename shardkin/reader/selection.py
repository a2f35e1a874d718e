"""Which clips an epoch of ``ShardDataset`` reads with ``clips_per_video=k``, and where
clips cut at read time lie.

The clips of a video are its stored clips, or its windows (:mod:`.windows`) when the
reader cuts clips of another length or step from a contiguous build. Per video and
epoch: ``"random"`` takes ``min(k, n)`` distinct clips of its ``n``, drawn afresh from
``(seed, epoch, shard)``; ``"uniform"`` takes torchvision's ``UniformClipSampler``
picks, ``floor(linspace(s, s + n - 1, k))`` in float32 over the global clip numbers
(repeats when ``n < k``; videos without clips give none). Either way a shard's count of
picks is the same every epoch, so the epoch partition and ``len()`` stay exact; without
``k`` every clip is read. Picks are clip numbers within their shard (sample numbers for
stored clips), sorted (a repeated clip is read once and handed out again). Pure
functions of the index, counts, seed and epoch.
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from ..samplers.indices import uniform_picks
from ..store.split import Split
from .windows import Windows, windows_for

ClipSampler = Literal["random", "uniform"]
CLIP_SAMPLERS: tuple[ClipSampler, ...] = ("random", "uniform")


class WindowCut(NamedTuple):
    """Where windows of a shard lie (int64 arrays, one entry a window)."""

    first: np.ndarray  # the sample holding the window's first frame (number in the shard)
    offset: np.ndarray  # the window's first frame within that sample
    last: np.ndarray  # the sample holding its last frame
    number: np.ndarray  # the window's number in its video


class ClipSelection:
    """The picks of every shard of a split, per epoch.

    ``index``: ``index.npy`` (rows in video order: manifest shard number, offset,
    length, checksum); ``clips_per_video``: stored clips of each video in that order;
    ``shard_numbers``: the manifest number of each shard read (in reading order), of
    ``num_shards`` in the manifest;
    ``k`` None: every clip; ``windows``: the clips are these windows.
    """

    def __init__(self, index: np.ndarray, clips_per_video: np.ndarray,
                 shard_numbers: list[int], k: int | None, sampler: ClipSampler, seed: int,
                 num_shards: int, windows: Windows | None = None) -> None:
        if sampler not in CLIP_SAMPLERS:
            raise ValueError(f"clip_sampler must be 'random' or 'uniform', got {sampler!r}")
        if k is not None and k < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {k}")
        self.k, self.sampler, self.seed, self._numbers = k, sampler, seed, shard_numbers
        self.windows = windows
        stored = np.asarray(clips_per_video, np.int64)
        n = stored if windows is None else windows.counts  # clips of each video
        first_row = np.concatenate([[0], np.cumsum(stored)[:-1]]).astype(np.int64)
        has = stored > 0
        rows = first_row[has]
        reading = np.full(num_shards, -1, np.int64)
        reading[np.asarray(shard_numbers, np.int64)] = np.arange(len(shard_numbers))
        shard = np.full(len(n), -1, np.int64)
        shard[has] = reading[index[rows, 0]]
        offset = np.zeros(len(n), np.int64)
        offset[has] = index[rows, 1]
        # a shard's samples are its videos' clips, video after video, in byte order
        order = np.argsort(shard << 40 | offset)  # offsets < 1 TB: one key, faster than lexsort
        self._order = order[shard[order] >= 0]  # videos by shard, then stored order
        self._bounds = np.searchsorted(shard[self._order], np.arange(len(shard_numbers) + 1))
        self._n, self._stored = n, stored
        self._first_clip = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        take = (n if k is None else np.minimum(n, k) if sampler == "random"
                else np.where(n > 0, k, 0))
        self.counts = np.bincount(shard[self._order], weights=take[self._order],
                                  minlength=len(shard_numbers)).astype(np.int64).tolist()

    def picks(self, shard: int, epoch: int) -> np.ndarray:
        """Sorted sample numbers of shard number ``shard`` (reading order) read in ``epoch``."""
        videos = self._videos(shard)
        n = self._n[videos]
        if self.k is None:
            return np.arange(int(n.sum()), dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        if self.sampler == "uniform":  # global clip numbers, then numbers in the shard
            picks = uniform_picks(self._first_clip[videos], n, self.k).numpy()
            return picks + np.repeat((first - self._first_clip[videos])[n > 0], self.k)
        # random: per video the k smallest of random keys over its clips
        total = int(n.sum())
        rng = np.random.default_rng([self.seed, epoch, self._numbers[shard]])
        keys = rng.random(total)
        video_of = np.repeat(np.arange(len(videos)), n)
        order = np.lexsort((keys, video_of))  # clips grouped by video, shuffled within
        starts = np.concatenate([[0], np.cumsum(n)[:-1]])
        rank = np.arange(total) - np.repeat(starts, n)
        return np.sort(order[rank < self.k])

    def _videos(self, shard: int) -> np.ndarray:
        """The videos of shard number ``shard`` (reading order), in stored order."""
        return self._order[self._bounds[shard] : self._bounds[shard + 1]]

    def cut(self, shard: int, clips: np.ndarray) -> WindowCut:
        """Where windows ``clips`` (numbers within shard number ``shard``) lie."""
        videos = self._videos(shard)
        n, stored = self._n[videos], self._stored[videos]
        ends = np.cumsum(n)
        video = np.searchsorted(ends, clips, side="right")
        number = clips - (ends - n)[video]
        first, offset, last = self.windows.span(number, stored[video])
        row = (np.cumsum(stored) - stored)[video]  # the video's first sample in the shard
        return WindowCut(row + first, offset, row + last, number)


def select_clips(split: Split, k: int | None, sampler: ClipSampler, seed: int,
                 windows: Windows | None = None) -> ClipSelection:
    """The :class:`ClipSelection` of ``split``'s shards (index and clips per video read)."""
    if split.manifest.index is None:
        raise ValueError(f"{split.where} has no index.npy (built by an older shardkin), "
                         "which clips_per_video and windows need: rebuild with --overwrite")
    every = split.manifest.shards
    if split.shards is every:
        chosen = list(range(len(every)))
    else:
        numbers = {n: i for i, n in enumerate(every.names)}
        chosen = [numbers[n] for n in split.shards.names]
    return ClipSelection(split.index_rows(), split.clips_per_video(), chosen, k, sampler, seed,
                         len(every), windows)


def plan_clips(split: Split, frames_per_clip: int | None, step_between_clips: int | None,
               k: int | None, sampler: ClipSampler, seed: int) -> ClipSelection | None:
    """What an epoch of ``split`` reads: None for every stored clip, else the
    :class:`ClipSelection` of ``k`` clips a video, or of windows when the clip arguments
    (left out: the build's) are not the build's own."""
    windows = None if frames_per_clip is None and step_between_clips is None else windows_for(
        split.manifest.build_options.clips, split.video_counts, split.where, frames_per_clip,
        step_between_clips)
    return None if k is None and windows is None else select_clips(split, k, sampler, seed,
                                                                    windows)
