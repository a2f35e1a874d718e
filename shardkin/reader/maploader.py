"""``make_loader`` for map-style datasets (``shardkin.Kinetics``): any sampler, batches
made in the workers into reused shared memory, as :class:`~shardkin.reader.loader.ShardLoader`
does for streaming. Fresh shared memory per batch (PyTorch's default) costs a file and a
page fault per 4 KiB, more than reading the clips."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from .collate import AudioBatching, collate
from .env import worker_id
from .memory import BatchMemory, Held, hold


class _PlannedBatches(IterableDataset):
    """Worker ``w`` of ``K`` makes batches ``w, w + K, ...`` of the epoch's plan: the
    DataLoader takes workers in turn, so batches arrive in the sampler's order."""

    def __init__(self, ds: Dataset, audio: AudioBatching, audio_lengths: bool,
                 memory: BatchMemory) -> None:
        self.ds, self.audio, self.audio_lengths, self.memory = ds, audio, audio_lengths, memory
        self.plan: list[Sequence[int]] = []

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        worker, num_workers = worker_id()
        generation = int(self.memory.generation)
        for n in range(worker, len(self.plan), num_workers):
            arena = self.memory.arena(worker, generation)
            items = [self.ds[i] for i in self.plan[n]]
            yield worker, arena.slot, collate(items, self.audio, self.audio_lengths, arena)


class MapLoader:
    """Batches of a map-style dataset in ``sampler`` order (default: shuffled when
    ``shuffle``, else in order); ``DistributedSampler`` and other samplers work as with a
    DataLoader. Workers are started each epoch, the epoch's batches planned first."""

    def __init__(self, dataset: Dataset, batch_size: int, *, sampler: Sampler | None = None,
                 shuffle: bool = False, num_workers: int = 0, drop_last: bool = False,
                 audio: AudioBatching = "pad", audio_lengths: bool = False, memory_slots: int = 5,
                 **dataloader_kwargs: Any) -> None:
        if sampler is None:
            sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        self.dataset, self.num_workers = dataset, num_workers
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self._memory = BatchMemory(max(1, num_workers), memory_slots)
        self._batches = _PlannedBatches(dataset, audio, audio_lengths, self._memory)
        self._kwargs = {k: v for k, v in dataloader_kwargs.items() if k != "persistent_workers"}
        self._held: Held = []

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Any]:
        self._batches.plan = [list(b) for b in self.batch_sampler]
        self._memory.new_generation({(w, s) for _, w, s in self._held})
        loader = DataLoader(self._batches, batch_size=None, num_workers=self.num_workers,
                            **self._kwargs)
        for worker, slot, batch in loader:
            self._held = hold(self._memory, self._held, worker, slot, batch)
            yield batch
