"""``make_loader`` for map-style datasets (``shardkin.Kinetics``): any sampler, batches
made in the workers into reused shared memory, as :class:`~shardkin.reader.loader.ShardLoader`
does for streaming. Fresh shared memory per batch (PyTorch's default) costs a file and a
page fault per 4 KiB, more than reading the clips."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from ..format.tar import ShardError
from .collate import AudioBatching, ClipBuffers, collate, collate_refs
from .device import decode_batch, loader_decode_device
from .env import worker_id
from .memory import Alloc, BatchMemory, Held, hold

# make_loader's batch_transform: (uint8 video [B, T, C, H, W], samples, epoch, alloc) -> video
# (a tensor, or a tuple of tensors such as shardkin.transforms.Crops)
BatchTransform = Callable[[torch.Tensor, Sequence[Any], int, Alloc], Any]


def check_batch_transform(ds: Any) -> None:
    """A ``batch_transform`` takes uint8 ``[B, T, C, H, W]`` videos of tuple items."""
    if (getattr(ds, "transform", None) is not None or getattr(ds, "return_dict", False)
            or getattr(ds, "output_format", "TCHW") != "TCHW"
            or getattr(ds, "video_dtype", torch.uint8) != torch.uint8):
        raise ValueError("batch_transform needs the dataset's plain items: uint8 videos "
                         "(video_dtype), output_format='TCHW', no transform, no return_dict")


class _PlannedBatches(IterableDataset):
    """Worker ``w`` of ``K`` makes batches ``w, w + K, ...`` of the epoch's plan: the
    DataLoader takes workers in turn, so batches arrive in the sampler's order."""

    def __init__(self, ds: Dataset, audio: AudioBatching, audio_lengths: bool,
                 memory: BatchMemory, batch_transform: BatchTransform | None = None) -> None:
        self.ds, self.audio, self.audio_lengths, self.memory = ds, audio, audio_lengths, memory
        self.batch_transform = batch_transform
        self.plan: list[Sequence[int]] = []
        self.epoch = 0  # the loader's passes: batch_transform's epoch

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        worker, num_workers = worker_id()
        generation = int(self.memory.generation)
        buffers = ClipBuffers()  # a batch_transform's input: the clips stacked, reused

        def scratch(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
            return buffers.take(tuple(shape))

        for n in range(worker, len(self.plan), num_workers):
            arena = self.memory.arena(worker, generation)
            batch = self._direct(self.plan[n], arena, buffers)
            if batch is not None:
                yield worker, arena.slot, batch
                continue
            items = [self.ds[i] for i in self.plan[n]]
            if self.batch_transform is None:
                yield worker, arena.slot, collate(items, self.audio, self.audio_lengths, arena)
                continue
            batch = collate(items, self.audio, self.audio_lengths, arena, video_alloc=scratch)
            video = self.batch_transform(batch[0], list(self.plan[n]), self.epoch, arena)
            buffers.give_back()
            yield worker, arena.slot, (video, *batch[1:])

    def _direct(self, indices: Sequence[int], arena: Any, buffers: ClipBuffers) -> Any:
        """The batch of ``indices`` read straight into ``arena`` (each clip one positioned
        read from its shard file into its place: no clip in memory first, no stacking copy),
        where the dataset hands out such clips (``Kinetics.clip_refs``); None where it does
        not, or where a clip is damaged (the items' path then does what ``on_error`` says)."""
        refs_of = getattr(self.ds, "clip_refs", None)
        try:
            refs = refs_of(indices) if refs_of is not None else None
            if refs is None:
                return None
            return collate_refs(self.ds, refs, self.audio, self.audio_lengths, arena,
                                buffers, self.batch_transform, self.epoch, samples=indices)
        except ShardError:
            arena.reset()
            return None
        finally:
            buffers.give_back()


class MapLoader:
    """Batches of a map-style dataset in ``sampler`` order (default: shuffled when
    ``shuffle``, else in order); ``DistributedSampler`` and other samplers work as with a
    DataLoader. Workers are started each epoch, the epoch's batches planned first.
    ``decode_device``/``device_transform``: see :func:`~shardkin.reader.loader.make_loader`."""

    def __init__(self, dataset: Dataset, batch_size: int, *, sampler: Sampler | None = None,
                 shuffle: bool = False, num_workers: int = 0, drop_last: bool = False,
                 audio: AudioBatching = "pad", audio_lengths: bool = False, memory_slots: int = 5,
                 batch_transform: BatchTransform | None = None,
                 decode_device: str | torch.device | None = None,
                 device_transform: Callable[[torch.Tensor], Any] | None = None,
                 **dataloader_kwargs: Any) -> None:
        if batch_transform is not None:
            check_batch_transform(dataset)
        decode_device = loader_decode_device(dataset, decode_device, device_transform,
                                             batch_transform)
        self.decode_device, self.device_transform = decode_device, device_transform
        if decode_device is not None and getattr(dataset, "decode_device", 0) is None:
            dataset = copy.copy(dataset)  # a Kinetics handing out JPEGs; the user's unchanged
            dataset.decode_device = decode_device
        if sampler is None:
            sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        self.dataset, self.num_workers = dataset, num_workers
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self._memory = BatchMemory(max(1, num_workers), memory_slots)
        self._batches = _PlannedBatches(dataset, audio, audio_lengths, self._memory,
                                        batch_transform)
        self._passes = 0
        self._kwargs = {k: v for k, v in dataloader_kwargs.items() if k != "persistent_workers"}
        self._held: Held = []

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Any]:
        self._batches.plan = [list(b) for b in self.batch_sampler]
        self._batches.epoch, self._passes = self._passes, self._passes + 1
        self._memory.new_generation({(w, s) for _, w, s in self._held})
        loader = DataLoader(self._batches, batch_size=None, num_workers=self.num_workers,
                            **self._kwargs)
        for worker, slot, batch in loader:
            self._held = hold(self._memory, self._held, worker, slot, batch)
            yield batch if self.decode_device is None else decode_batch(
                batch, self.decode_device, self.device_transform)
