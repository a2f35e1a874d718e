"""``make_loader``: a DataLoader over a :class:`ShardDataset` that batches inside workers.

Each worker reads each clip's video straight into its batch (one read, no copy;
with a transform, one read and the stacking copy). Batches are tagged with the
worker's id and a memory slot (:mod:`.memory`), so the loader knows exactly which
clips were consumed (:meth:`ShardLoader.state_dict` resumes an epoch exactly) and
when a batch's memory may be reused. Map-style datasets go to :mod:`.maploader`.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from .checking import read_with_stand_ins
from .collate import AudioBatching, ClipBuffers, collate_refs
from .dataset import ShardDataset
from .device import decode_batch, loader_decode_device
from .env import worker_id
from .maploader import BatchTransform, MapLoader, check_batch_transform
from .memory import BatchMemory, Held, hold
from .partition import split_sizes
from .records import ClipRef


class _Batches(IterableDataset):
    """A worker's clips as ``(worker, clips, substitutes, slot, batch)`` tuples."""

    def __init__(self, ds: ShardDataset, batch_size: int, drop_last: bool, num_workers: int,
                 audio: AudioBatching, audio_lengths: bool, memory: BatchMemory,
                 batch_transform: BatchTransform | None = None, encoded: bool = False) -> None:
        self.ds, self.batch_size, self.drop_last = ds, batch_size, drop_last
        self.num_workers, self.audio, self.audio_lengths = num_workers, audio, audio_lengths
        self.memory, self.batch_transform, self.encoded = memory, batch_transform, encoded
        self._buffers: ClipBuffers | None = None
        self._spare: ClipRef | None = None  # a clip read before, to stand in for a damaged one

    def __len__(self) -> int:
        b = self.batch_size
        return sum(n // b if self.drop_last else -(-n // b)
                   for n in split_sizes(len(self.ds), self.num_workers))

    def _batch(self, worker: int, generation: int, refs: list[ClipRef], subs: int,
               epoch: int) -> tuple:
        arena = self.memory.arena(worker, generation)
        self._buffers = self._buffers or ClipBuffers()  # kept across epochs

        def read(clips: list[ClipRef]) -> Any:
            arena.reset()
            self._buffers.give_back()
            return collate_refs(self.ds, clips, self.audio, self.audio_lengths, arena,
                                self._buffers, self.batch_transform, epoch, self.encoded)

        batch, stood, refs = read_with_stand_ins(read, refs, self.ds.on_error, self._spare)
        self._buffers.give_back()
        self._spare = refs[-1]
        return worker, len(refs), subs + stood, arena.slot, batch

    def __iter__(self) -> Iterator[tuple]:
        worker, num_workers = worker_id()
        generation, epoch = int(self.memory.generation), self.ds.epoch
        refs: list[ClipRef] = []
        subs = 0
        for ref, substitute in self.ds._stream(worker, num_workers):
            refs.append(ref)
            subs += substitute
            if len(refs) == self.batch_size:
                yield self._batch(worker, generation, refs, subs, epoch)
                refs, subs = [], 0
        if refs and not self.drop_last:
            yield self._batch(worker, generation, refs, subs, epoch)


class ShardLoader:
    """Iterate batches of a :class:`ShardDataset`; ``state_dict`` resumes mid-epoch.

    Each new pass starts the next epoch (as LitData's ``StreamingDataLoader`` does),
    unless ``dataset.set_epoch`` was called since the previous pass or a state was
    loaded (the pass then continues that state's epoch). The first pass runs the
    dataset's epoch (0 unless set). ``len(loader)`` is the exact number of batches
    each rank yields an epoch (the same on every rank). ``substitutes`` counts clips
    handed out this epoch in place of unreadable ones (``on_error="skip"``).
    ``decode_device``/``device_transform``: see :func:`make_loader`.
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, *, num_workers: int = 0,
                 drop_last: bool = False, audio: AudioBatching = "pad", audio_lengths: bool = False,
                 memory_slots: int = 5, batch_transform: BatchTransform | None = None,
                 decode_device: str | torch.device | None = None,
                 device_transform: Callable[[torch.Tensor], Any] | None = None,
                 **dataloader_kwargs: Any) -> None:
        if audio not in ("pad", "list"):
            raise ValueError(f"audio must be 'pad' or 'list', got {audio!r}")
        if batch_transform is not None:
            check_batch_transform(dataset)
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.decode_device = loader_decode_device(dataset, decode_device, device_transform,
                                                  batch_transform)
        self.device_transform = device_transform
        self._memory = BatchMemory(max(1, num_workers), memory_slots)
        self._batches = _Batches(dataset, batch_size, drop_last, max(1, num_workers), audio,
                                 audio_lengths, self._memory, batch_transform,
                                 self.decode_device is not None)
        self._kwargs = dataloader_kwargs
        self._held: Held = []
        self._loader = self._make()
        self._last: int | None = None  # the epoch of the latest pass
        self._sets = 0  # the dataset's set_epoch calls when it started
        self._delivered: list[int] = []  # clips each worker has handed out in it
        self._finished = False
        self.substitutes = 0

    def _make(self) -> DataLoader:
        self._memory.reset()
        self._held = []
        return DataLoader(self._batches, batch_size=None, num_workers=self.num_workers,
                          **self._kwargs)

    def __len__(self) -> int:
        return len(self._batches)

    def _hold(self, worker: int, slot: int, batch: Any) -> None:
        self._held = hold(self._memory, self._held, worker, slot, batch)

    def _advances(self) -> bool:
        """Whether the next pass starts the epoch after the latest pass's."""
        progress = self.dataset._progress
        return (self._last is not None and progress.sets == self._sets
                and progress.loaded() is None)

    def __iter__(self) -> Iterator[Any]:
        progress = self.dataset._progress  # the dataset's: its workers take it pickled
        if self._advances():
            progress.set_epoch(self._last + 1)
        epoch, workers = progress.epoch, max(1, self.num_workers)
        delivered = progress.delivered(workers)
        self._last, self._sets, self._delivered = epoch, progress.sets, delivered
        self._finished = False
        self.substitutes = 0
        self._memory.new_generation({(w, s) for _, w, s in self._held})
        batches = iter(self._loader)
        if self.num_workers:
            progress.drop_loaded()  # the workers took their copy
        try:
            for worker, n, subs, slot, batch in batches:
                self._hold(worker, slot, batch)
                delivered[worker] += n
                self.substitutes += subs
                yield batch if self.decode_device is None else decode_batch(
                    batch, self.decode_device, self.device_transform)
        except Exception:
            # Stop the workers now: torch takes 5 s a worker when a failed
            # iterator is only collected later (the traceback keeps it alive).
            getattr(batches, "_shutdown_workers", lambda: None)()
            self._loader = self._make()
            raise
        self._finished = True

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: the latest pass's epoch and the clips each worker has
        handed out, or, once a pass has ended, the next epoch from its start. Restore with
        :meth:`load_state_dict` after a restart. Ranks stepping in lockstep (DDP) have
        equal states, so saving rank 0's is enough.
        """
        progress, workers = self.dataset._progress, max(1, self.num_workers)
        if self._advances():
            if self._finished:
                return progress.state(self._last + 1, workers, [0] * workers)
            return progress.state(self._last, workers, self._delivered)
        loaded = progress.loaded()
        delivered = loaded.delivered if loaded is not None else [0] * workers
        return progress.state(progress.epoch, workers, delivered)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass continue ``state``'s epoch (same world size and workers)."""
        workers = max(1, self.num_workers)
        if int(state.get("num_workers", -1)) != workers:
            raise ValueError(f"cannot resume: the state was taken with {state.get('num_workers')} "
                             f"worker(s), this loader has {workers}; use the same num_workers")
        self.dataset.load_state_dict(state)
        self._loader = self._make()  # persistent workers must see the new state


def make_loader(dataset: ShardDataset, batch_size: int, *, num_workers: int = 0,
                drop_last: bool = False, audio: AudioBatching = "pad", audio_lengths: bool = False,
                pin_memory: bool | None = None, persistent_workers: bool | None = None,
                prefetch_factor: int | None = None, batch_transform: BatchTransform | None = None,
                decode_device: str | torch.device | None = None,
                device_transform: Callable[[torch.Tensor], Any] | None = None,
                **dataloader_kwargs: Any) -> ShardLoader | MapLoader:
    """A loader of ``(video [B,T,C,H,W], audio [B,C,S], label [B])`` batches (or dicts).

    Batches are made in the workers. Over a :class:`ShardDataset`, each new pass is the
    next epoch unless ``set_epoch`` chose one (:class:`ShardLoader`). ``drop_last`` drops
    each worker's last partial batch (at most ``num_workers * (batch_size - 1)`` clips an
    epoch). Audio: see :func:`collate`. ``persistent_workers`` defaults to True with workers.

    Memory: each worker keeps up to ``prefetch_factor + 3`` batches' worth of memory
    for reuse (:class:`BatchMemory`), allocated as needed: about as many as are in
    flight (queued, being made, held by the loop), which a DataLoader needs anyway,
    plus one or two. E.g. 32 clips of 16x128x171 RGB are 34 MB a batch. Other
    keyword arguments go to ``torch.utils.data.DataLoader``.

    ``batch_transform(video, samples, epoch, alloc)`` runs in the workers on each batch's
    uint8 video ``[B, T, C, H, W]`` (tuple items, ``output_format="TCHW"``, no
    ``transform``) and returns the batch's video, a new tensor from ``alloc(shape,
    dtype)`` (the batch memory), or a tuple of such tensors (a named one too);
    ``samples`` are the clips' keys (``ShardDataset``) or indices (map-style), ``epoch``
    the dataset's epoch (map-style: the loader's passes), so random draws can follow the
    sample alone, whatever the worker, and resume with the loader. E.g.
    ``shardkin.transforms.VideoClassificationPresetTrain(...).in_workers()``: crop and
    flip in the workers, convert and normalize on the device.

    ``decode_device`` (``"cuda"``, ``"cuda:1"``, ``"cpu"``; default: the dataset's, else
    None): the workers do not decode a jpeg build's clips but hand on their JPEGs, one
    byte buffer a batch (:mod:`.device`), and the batch's video is decoded here at once
    on that device (CUDA: nvJPEG through torchvision, ``[B, T, C, H, W]`` uint8
    contiguous; ``"cpu"``: libjpeg-turbo in this process, to check a pipeline without a
    GPU); then ``device_transform`` is applied to it (a batched preset). Clips of raw and
    zstd builds are read in the workers and moved there. Audio and labels stay on the
    CPU. ``pin_memory`` defaults to True with a CUDA ``decode_device``, else False.
    """
    device = loader_decode_device(dataset, decode_device, device_transform, batch_transform)
    if pin_memory is None:
        pin_memory = device is not None and device.type == "cuda"
    kw = dict(decode_device=device, device_transform=device_transform)
    if not isinstance(dataset, ShardDataset):
        if persistent_workers:
            warnings.warn("make_loader over a map-style dataset starts its workers each epoch "
                          "(the epoch's batches are planned first): persistent_workers is not "
                          "used", stacklevel=2)
        if prefetch_factor is not None and num_workers:
            dataloader_kwargs["prefetch_factor"] = prefetch_factor
        return MapLoader(dataset, batch_size, num_workers=num_workers, drop_last=drop_last,
                         audio=audio, audio_lengths=audio_lengths, pin_memory=pin_memory,
                         memory_slots=(prefetch_factor or 2) + 3, batch_transform=batch_transform,
                         **kw, **dataloader_kwargs)
    if num_workers:
        dataloader_kwargs["persistent_workers"] = (True if persistent_workers is None
                                                   else persistent_workers)
        if prefetch_factor is not None:
            dataloader_kwargs["prefetch_factor"] = prefetch_factor
    return ShardLoader(dataset, batch_size, num_workers=num_workers, drop_last=drop_last,
                       audio=audio, audio_lengths=audio_lengths, pin_memory=pin_memory,
                       memory_slots=(prefetch_factor or 2) + 3, batch_transform=batch_transform,
                       **kw, **dataloader_kwargs)
