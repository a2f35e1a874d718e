"""``ShardDataset``: clips of a shardkin build as an iterable PyTorch dataset.

Each epoch is cut across ranks, DataLoader workers and lanes by :mod:`.partition`
(pure functions of the manifest's counts, ``seed`` and ``epoch``); lanes are read by
:mod:`.lanes` and mixed through a shuffle buffer; clips are decoded by :mod:`.records`.

Reading: lanes walk their shards by tar headers, reading only each payload's npy
header, so the shuffle buffer holds clip locations (a few hundred bytes each), not
pixels; a clip's arrays are read when it leaves the buffer, with one positioned read
straight into their destination (the batch, with :func:`shardkin.make_loader`).
Compressed video members (``zstd``, ``jpeg`` codecs) wait in the buffer compressed
and are decoded when read.

Memory: the buffer is nearly free, so the default 1024 costs about 1 MB a worker;
clips are read only into the batches (see :mod:`.loader`). Each worker keeps open the
shards its buffered clips lie in (``interleave`` at a time, a few more briefly). At
the defaults, on Kinetics-like data (18 clips a video stored together), about 1% of
consecutive clips come from the same video and runs are at most 3 long.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import IterableDataset

from ..store.cache import open_cache
from ..store.split import open_split
from .checking import checked_build, load_checked
from .device import check_decode_device, check_no_transform, read_clip
from .env import dist_rank, worker_id
from .items import OutputFormat, check_output_format, make_item, video_dtype_for
from .lanes import DELIVERED, read_lane, substitute
from .partition import Spans, mix, per_rank, worker_lanes
from .records import ClipRef, LoadedClip, OnError, check_on_error, wanted_members
from .resume import STATE_VERSION, Progress
from .selection import ClipSampler, plan_clips


class ShardDataset(IterableDataset):
    """Shuffled clips of a shardkin build, split exactly across ranks and workers.

    ``source``: a build folder (with ``split``), a split folder, or a
    ``manifest.json``; local, or a URL on object storage (``s3://``, ``gs://``,
    ``https://``, any fsspec URL; ``storage_options`` go to fsspec); or shard
    paths or URLs (a list, or a brace pattern ``.../train-{000000..000009}.tar``)
    of one split folder, whose manifest gives their clip counts. Items are like
    ``torchvision.datasets.Kinetics``: ``(video, audio, label)`` with ``video`` a
    uint8 tensor ``[T, C, H, W]`` (``output_format="TCHW"``, a permuted view) or
    ``[T, H, W, C]`` (``"THWC"``), ``audio`` float32 ``[C, S]``, ``label`` an int;
    ``transform`` is applied to ``video``. ``return_dict=True`` gives PyTorchVideo's
    dict instead (``video`` float32 ``[C, T, H, W]`` with values 0..255, ``video_name``,
    ``video_index``, ``clip_index``, ``aug_index``, ``label``, ``audio`` 1-D, channels
    averaged), ``transform`` applied to the dict. ``video_dtype`` (``torch.uint8`` or
    ``torch.float32``) overrides the video's dtype: uint8 dicts are 4x smaller and faster.
    ``decode_audio=False`` (PyTorchVideo's name), for models that drop the sound (as
    torchvision's reference recipe does): it is neither decoded nor batched (with
    ``verify`` its bytes are still read to be checked); every clip's audio is the empty
    float32 ``[1, 0]`` of a video without sound.

    ``frames_per_clip``/``step_between_clips`` (torchvision's; left out, the build's):
    on a contiguous build, clips of any length and step cut at read time
    (:mod:`.windows`), combined with ``clips_per_video`` and ``clip_sampler`` as stored
    clips are; each window's frames are read straight into its batch.

    ``rank``/``world_size`` default to ``torch.distributed``'s when it is
    initialised, else 0 and 1. ``len(ds)`` is the exact number of clips this rank
    yields an epoch, whatever the number of DataLoader workers (module docstring:
    and :mod:`.partition`: how the epoch is cut, what is dropped or repeated, memory).
    :func:`shardkin.make_loader`'s loader starts the next epoch at each new pass by
    itself; iterating the dataset (or a plain DataLoader over it) repeats the epoch set
    last: call :meth:`set_epoch` before each (it reaches persistent workers too).

    ``on_error="raise"`` (default) stops at a truncated or corrupt shard or
    sample with :class:`ShardError`; ``"skip"`` warns and hands out, in place of
    each unreadable clip, a repeat of a readable one from the same worker, so
    every rank keeps the same count (no DDP hang). ``verify`` (default) checks every
    clip's bytes against the checksum the index keeps, hashing them as they are read
    (into the batch), so damage inside pixel data is caught too: a damaged clip is a
    ``ShardError``, or with ``"skip"`` warns and a readable clip stands in for it; the
    cost is measured in the README. A build whose index keeps no checksums (an older
    shardkin's) is read unchecked, with a warning; ``verify=False`` turns checking off.
    Other damage found only when a clip is read (a compressed member that does not
    decode, a shard changed during the epoch) raises in both modes.

    Object storage: each lane streams its shard range in range requests of up to
    8 MiB, one ahead in flight; a failed read (connection reset, 5xx, timeout) is
    retried from its first byte with exponential backoff, ``attempts`` times, then
    raises :class:`ShardError` naming the shard and range. Streamed clips wait in the
    shuffle buffer with their bytes (about ``shuffle_buffer`` clips' worth a
    worker). ``cache_dir`` keeps the shards read on local disk (by sha256, verified,
    at most ``cache_size`` bytes, least recently used removed first, shared by all
    processes of the machine); later epochs read them like local files.

    ``decode_device`` (``"cuda"``, ``"cpu"``): a jpeg build's videos are not decoded
    when read but handed out as their JPEGs (:class:`~shardkin.reader.device.JpegBatch`),
    which ``collate`` joins and :func:`~shardkin.reader.device.decode_batch` decodes a
    whole batch at once on that device (``make_loader(..., decode_device=...)`` does it).
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str],
        split: str | None = "train",
        *,
        shuffle: bool = True,
        seed: int = 0,
        output_format: OutputFormat = "TCHW",
        transform: Callable[[Any], Any] | None = None,
        return_dict: bool = False,
        video_dtype: torch.dtype | None = None,
        decode_audio: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        drop_remainder: bool = True,
        frames_per_clip: int | None = None,
        step_between_clips: int | None = None,
        clips_per_video: int | None = None,
        clip_sampler: ClipSampler = "random",
        shuffle_buffer: int = 1024,
        interleave: int = 32,
        on_error: OnError = "raise",
        verify: bool = True,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_size: str | int = "100GB",
        attempts: int = 5,
        decode_device: str | torch.device | None = None,
    ) -> None:
        check_output_format(output_format)
        self.decode_device = check_decode_device(decode_device)
        check_no_transform(transform, self.decode_device)
        check_on_error(on_error)
        if shuffle_buffer < 1 or interleave < 1:
            raise ValueError("shuffle_buffer and interleave must be >= 1")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (torch.distributed's)")
        rank, world_size = (rank, world_size) if rank is not None else dist_rank()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range(world_size={world_size})")
        self.split_source = open_split(source, split, storage_options=storage_options,
                                       attempts=attempts)
        where = self.split_source.where
        remote = self.split_source.folder.remote
        if cache_dir is not None and remote:
            self.split_source.cache = open_cache(cache_dir, cache_size)
        elif cache_dir is not None:
            warnings.warn(f"shardkin: {where} is local: its shards are read in place, "
                          "cache_dir is not used", stacklevel=2)
        self.cache = self.split_source.cache
        self.split = self.split_source.manifest.split
        self.classes: list[str] = self.split_source.manifest.classes
        self.clips_per_video, self.clip_sampler = clips_per_video, clip_sampler
        self._selection = plan_clips(self.split_source, frames_per_clip, step_between_clips,
                                     clips_per_video, clip_sampler, seed)
        self.windows = self._selection and self._selection.windows
        self._counts = (self.split_source.shards.clips if self._selection is None
                        else self._selection.counts)  # clips read from each shard an epoch
        self.total_clips = sum(self._counts)
        if per_rank(self.total_clips, world_size, drop_remainder) == 0:
            raise ValueError(f"{where} holds {self.total_clips} clips, fewer than world_size="
                             f"{world_size}: use fewer ranks or a larger dataset")
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.output_format, self.transform, self.return_dict = output_format, transform, return_dict
        self.video_dtype = video_dtype_for(video_dtype, return_dict)
        self.drop_remainder, self.on_error = drop_remainder, on_error
        self.verify = verify and checked_build(self.split_source)
        self.shuffle_buffer = shuffle_buffer if shuffle else 1
        self.interleave = interleave if shuffle else 1
        self._wanted = wanted_members(return_dict, self.windows is not None, decode_audio)
        self._progress = Progress(self._identity)

    # -- epochs and resume ---------------------------------------------------------

    def __len__(self) -> int:
        return per_rank(self.total_clips, self.world_size, self.drop_remainder)

    @property
    def epoch(self) -> int:
        return self._progress.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order (seen by persistent workers too); drops a resume for another."""
        self._progress.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch being iterated in this process (or num_workers=0).

        With DataLoader workers, take the state from :func:`shardkin.make_loader`'s
        loader instead: this process does not see what workers hand out.
        """
        return self._progress.state_here()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue ``state``'s epoch where it stopped (same world size and workers)."""
        self._progress.load(state)

    def _identity(self) -> dict[str, Any]:
        """The settings that decide an epoch's order, which a state must match."""
        shards = json.dumps([[s.name, s.clips] for s in self.split_source.shards])
        identity = {"version": STATE_VERSION,
                    "shards": hashlib.sha256(shards.encode()).hexdigest(), "seed": self.seed,
                    "shuffle": self.shuffle, "world_size": self.world_size,
                    "drop_remainder": self.drop_remainder,
                    "shuffle_buffer": self.shuffle_buffer, "interleave": self.interleave}
        if self.clips_per_video is not None:  # states of older versions resume as before
            identity.update(clips_per_video=self.clips_per_video, clip_sampler=self.clip_sampler)
        if self.windows is not None:
            identity.update(frames_per_clip=self.windows.frames, step=self.windows.step)
        return identity

    # -- reading -------------------------------------------------------------------

    def _lanes(self, epoch: int, worker: int, num_workers: int) -> list[Spans]:
        return worker_lanes(self._counts, seed=self.seed, epoch=epoch, rank=self.rank,
                            world_size=self.world_size, worker=worker, num_workers=num_workers,
                            interleave=self.interleave, shuffle=self.shuffle,
                            drop_remainder=self.drop_remainder,
                            min_lane=max(1, self.shuffle_buffer // 8))

    def _stream(self, worker: int, num_workers: int) -> Iterator[tuple[ClipRef, bool]]:
        """This worker's clips for the current epoch, as ``(ref, is_substitute)``; read
        them with :func:`~shardkin.reader.loading.load_clip`."""
        epoch = self.epoch
        skip = self._progress.take(epoch, worker, num_workers)
        lanes = self._lanes(epoch, worker, num_workers)
        lengths = [lane.clips() for lane in lanes]
        seed = f"shardkin/{self.seed}/{epoch}/{self.rank}/{worker}/{num_workers}"
        done: set[tuple[int, int]] = set()
        if skip:  # replay the draws over positions only
            positions = [zip(itertools.repeat(lane), range(n)) for lane, n in enumerate(lengths)]
            done = set(itertools.islice(
                mix(positions, lengths, random.Random(seed), self.shuffle_buffer), skip))
        picks = None if self._selection is None else (
            lambda span: self._selection.picks(span.shard, epoch)[span.start : span.stop])
        readers = [read_lane(self.split_source, lane, spans, done, self._wanted, self.on_error,
                             picks, self.verify, self._selection if self.windows else None)
                   for lane, spans in enumerate(lanes)]
        items = mix(readers, lengths, random.Random(seed), self.shuffle_buffer)
        for _ in range(skip):
            if next(items) is not DELIVERED:
                raise RuntimeError("shardkin: resume replay diverged")  # a bug, not bad data
        yield from substitute(items)

    def sample(self, clip: LoadedClip) -> Any:
        """The user-facing item for ``clip`` (tuple or dict), transform applied."""
        return make_item(clip.video, clip.audio, clip.label, clip.key,
                         clip.meta["path"] if clip.meta else None, self.output_format,
                         self.transform, self.return_dict, self.video_dtype)

    def __iter__(self) -> Iterator[Any]:
        worker, num_workers = worker_id()
        epoch = self.epoch
        delivered = self._progress.delivered(num_workers)
        refs = (ref for ref, _ in self._stream(worker, num_workers))
        for clip in load_checked(refs, self.on_error, lambda ref: read_clip(ref, self)):
            delivered[worker] += 1
            self._progress.handed_out(epoch, num_workers, delivered)
            yield self.sample(clip)
