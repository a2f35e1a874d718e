"""``make_loader``: a DataLoader over a :class:`ShardDataset` that batches inside workers.

Each worker reads each clip's video straight into its batch (one read, no copy;
with a transform, one read and the stacking copy). Batches are tagged with the
worker's id and a memory slot, so the loader knows exactly which clips were
consumed (:meth:`ShardLoader.state_dict` resumes an epoch exactly) and when a
batch's memory may be reused.

Memory reuse matters: new memory costs a page fault per 4 KiB page, and new
shared memory a file too, which together cost more than the reading. All the
tensors of a batch are carved from one block of a small per-worker ring
(:class:`BatchMemory`), reused once the loader has seen every tensor on it dropped.
"""
from __future__ import annotations

import math
import os
from numbers import Number
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .dataset import (Array, Record, ShardDataset, read_array, read_clip, read_video,
                      split_sizes, worker_id)

Alloc = Callable[[Sequence[int], torch.dtype], torch.Tensor]
_ALIGN = 64


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A new tensor, in shared memory when made in a worker (then sent without a copy)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if get_worker_info() is None or nbytes == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    return _on(torch.UntypedStorage._new_shared(nbytes), 0, shape, dtype)


def _on(storage: torch.UntypedStorage, start: int, shape: Sequence[int],
        dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(0, dtype=dtype).set_(storage, start // dtype.itemsize, tuple(shape))


def _same_shapes(shapes: set[tuple[int, ...]]) -> None:
    if len(shapes) > 1:
        raise ValueError(f"cannot batch clips of different shapes {sorted(shapes)}: build the "
                         "shards at one size (width and height) or crop in a transform")


def _memory_order(t: torch.Tensor) -> tuple[int, ...]:
    """The dimensions of ``t`` from the largest stride to the smallest."""
    return tuple(sorted(range(t.dim()), key=lambda d: -t.stride(d)))


def stack(tensors: Sequence[torch.Tensor], alloc: Alloc = empty) -> torch.Tensor:
    """``torch.stack`` into memory from ``alloc`` (by default shared, in a worker).

    Views laid out alike (e.g. crops of ``[T, C, H, W]`` views of ``[T, H, W, C]``
    clips) are stacked in their memory order, a copy of contiguous runs instead of
    a gather, and the batch is returned as the same view of that memory.
    """
    _same_shapes({tuple(t.shape) for t in tensors})
    order = _memory_order(tensors[0])
    if any(_memory_order(t) != order for t in tensors):
        order = tuple(range(tensors[0].dim()))
    inner = [t.permute(order) for t in tensors]
    out = alloc((len(inner), *inner[0].shape), inner[0].dtype)
    torch.stack(inner, out=out)
    back = sorted(range(len(order)), key=lambda d: order[d])
    return out.permute(0, *(d + 1 for d in back))


def pad_audio(audios: Sequence[torch.Tensor], alloc: Alloc = empty
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, C, S]`` zero-padded to the most channels and samples, and each clip's ``S``."""
    channels = max(a.shape[0] for a in audios)
    samples = max(a.shape[1] for a in audios)
    out = alloc((len(audios), channels, samples), torch.float32)
    out.zero_()
    for i, a in enumerate(audios):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out, _tensor([a.shape[1] for a in audios], alloc)


def _tensor(values: Sequence[Any], alloc: Alloc) -> torch.Tensor:
    """``torch.tensor(values)`` in memory from ``alloc``."""
    t = torch.tensor(values)
    return alloc(t.shape, t.dtype).copy_(t)


def _audio(audios: Sequence[torch.Tensor], audio: str,
           alloc: Alloc) -> tuple[Any, torch.Tensor | None]:
    return (list(audios), None) if audio == "list" else pad_audio(audios, alloc)


def collate(samples: Sequence[Any], audio: str = "pad", audio_lengths: bool = False,
            alloc: Alloc = empty) -> Any:
    """Batch :class:`ShardDataset` items (tuples or dicts), e.g. as a DataLoader ``collate_fn``.

    Videos (and any other tensors) are stacked; labels and numbers become int64 or
    float tensors; strings stay lists. Audio of unequal length: ``audio="pad"``
    zero-pads to ``[B, C_max, S_max]`` (dicts also get ``audio_lengths``, tuples
    get it appended as a fourth element when ``audio_lengths=True``);
    ``audio="list"`` keeps a list of ``[C, S]`` tensors.
    """
    if isinstance(samples[0], dict):
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key == "audio":
                batch["audio"], lengths = _audio(values, audio, alloc)
                if lengths is not None:
                    batch["audio_lengths"] = lengths
            elif isinstance(values[0], torch.Tensor):
                batch[key] = stack(values, alloc)
            elif isinstance(values[0], Number) and not isinstance(values[0], bool):
                batch[key] = _tensor(values, alloc)
            else:
                batch[key] = values
        return batch
    videos, audios, labels = zip(*samples)
    video = stack(videos, alloc)
    sound, lengths = _audio(audios, audio, alloc)
    out = (video, sound, _tensor(labels, alloc))
    return out + (lengths,) if audio_lengths and lengths is not None else out


class ClipBuffers:
    """Per-clip video tensors reused from batch to batch (for transforms)."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._lent: list[torch.Tensor] = []

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        free = self._free.setdefault(shape, [])
        tensor = free.pop() if free else torch.empty(shape, dtype=torch.uint8)
        self._lent.append(tensor)
        return tensor

    def give_back(self) -> None:
        """All tensors taken are free again: their batch has been collated (copied)."""
        for tensor in self._lent:
            self._free[tuple(tensor.shape)].append(tensor)
        self._lent = []


def collate_records(ds: ShardDataset, records: Sequence[Record], audio: str = "pad",
                    audio_lengths: bool = False, alloc: Alloc = empty,
                    buffers: ClipBuffers | None = None) -> Any:
    """Read and batch clips as :func:`collate` batches ``ds`` items.

    Without a transform each video is read straight into its place in the batch
    (stored ``[T, H, W, C]`` layout; the batch is then a permuted view). With one,
    videos are read into ``buffers`` (reused once the batch is made: transforms
    must not keep references to their input), transformed, then stacked.
    """
    if ds.transform is not None:
        def take(r: Record) -> torch.Tensor | None:
            raw = buffers is not None and isinstance(r.video, Array)
            return buffers.take(r.video.shape) if raw else None

        items = [ds.sample(read_clip(r, take(r))) for r in records]
        return collate(items, audio, audio_lengths, alloc)
    if all(isinstance(r.video, Array) for r in records):
        _same_shapes({r.video.shape for r in records})
        video = alloc((len(records), *records[0].video.shape), torch.uint8)  # [B, T, H, W, C]
        for i, r in enumerate(records):
            read_array(r.video, video[i])
    else:  # compressed: decoded, then stacked
        video = stack([read_video(r.video) for r in records], alloc)
    sound, lengths = _audio([read_array(r.audio) for r in records], audio, alloc)
    labels = _tensor([r.label for r in records], alloc)
    if ds.return_dict:
        indices = [[int(x) for x in r.key.split("_")] for r in records]
        batch = {"video": video.permute(0, 4, 1, 2, 3), "audio": sound}
        if lengths is not None:
            batch["audio_lengths"] = lengths
        batch.update(label=labels,
                     video_name=[os.path.basename(r.meta["path"]) for r in records],
                     video_index=_tensor([v for v, _ in indices], alloc),
                     clip_index=_tensor([k for _, k in indices], alloc))
        return batch
    if ds.output_format == "TCHW":
        video = video.permute(0, 1, 4, 2, 3)
    out = (video, sound, labels)
    return out + (lengths,) if audio_lengths and lengths is not None else out


def _storages(batch: Any) -> list[torch.UntypedStorage]:
    """The distinct storages under the tensors of a batch."""
    values = batch.values() if isinstance(batch, dict) else batch
    tensors = [t for v in values for t in (v if isinstance(v, list) else [v])
               if isinstance(t, torch.Tensor)]
    return list({t.untyped_storage().data_ptr(): t.untyped_storage() for t in tensors}.values())


Held = list[tuple[list[StorageWeakRef], int, int]]


def hold(memory: "BatchMemory", held: Held, worker: int, slot: int, batch: Any) -> Held:
    """Free the slots of batches no longer referenced; remember this batch's slot."""
    still = []
    for refs, w, s in held:
        if all(ref.expired() for ref in refs):
            memory.busy[w, s] = 0
        else:
            still.append((refs, w, s))
    if slot >= 0:  # pinned, these are the copies: later than needed, still safe
        still.append(([StorageWeakRef(s) for s in _storages(batch)], worker, slot))
    return still


class BatchMemory:
    """Rings of reusable batch memory, one ring of ``slots`` blocks per worker.

    Shared ``busy[worker, slot]`` says which blocks hold a batch the loader may
    still hand out or has handed out: the worker stamps the slot with the current
    ``generation`` (one per iteration over the loader) when it fills it; the
    loader zeroes it once every tensor of that batch has been dropped (storage
    weak references expire) and, at each new iteration, re-stamps the slots of
    batches the user still holds. A slot stamped by an earlier iteration and not
    re-stamped held a batch that was never handed out (an epoch left unfinished):
    it is free. Memory a user holds is thus never overwritten; with every slot
    busy a batch simply gets fresh memory. A block is shared memory in a worker;
    in the main process a NumPy array, each tensor on it with a storage of its
    own, so the ring does not keep them alive.
    """

    def __init__(self, num_workers: int, slots: int) -> None:
        self.busy = torch.zeros(num_workers, slots, dtype=torch.int64).share_memory_()
        self.generation = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._slots = slots
        self.reset()

    def reset(self) -> None:
        """Forget every block (for new workers, or after a failure in this process)."""
        self.busy.zero_()
        self._blocks: list[Any] = [None] * self._slots  # this process's own
        self._need = [0] * self._slots  # bytes the slot's batches have needed

    def new_generation(self, held: set[tuple[int, int]]) -> None:
        """Start an iteration; ``held`` are the (worker, slot) pairs still in use."""
        self.generation += 1
        for worker, slot in held:
            self.busy[worker, slot] = int(self.generation)

    def arena(self, worker: int, generation: int) -> "Arena":
        """An allocator for one batch, on a free slot of ``worker`` if there is one."""
        busy = self.busy[worker].tolist()
        for slot, stamp in enumerate(busy):
            if stamp < generation:
                self.busy[worker, slot] = generation
                return Arena(self, slot)
        return Arena(self, -1)


class Arena:
    """Tensors of one batch, carved one after another from one slot's block.

    A block is sized by what the slot's batches needed before; a tensor that does
    not fit gets fresh memory and the block grows at the slot's next batch.
    """

    def __init__(self, memory: BatchMemory, slot: int) -> None:
        self.memory, self.slot, self._used = memory, slot, 0

    def __call__(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        if self.slot < 0:
            return empty(shape, dtype)
        m, slot = self.memory, self.slot
        start = -(-self._used // _ALIGN) * _ALIGN
        end = start + math.prod(shape) * dtype.itemsize
        self._used = end
        m._need[slot] = max(m._need[slot], end)
        block = m._blocks[slot]
        if start == 0 and (block is None or _block_bytes(block) < m._need[slot]):
            block = m._blocks[slot] = _new_block(m._need[slot])
        if end > _block_bytes(block):
            return empty(shape, dtype)
        if isinstance(block, np.ndarray):
            return torch.from_numpy(block[start:end]).view(dtype).view(tuple(shape))
        return _on(block, start, shape, dtype)


def _new_block(nbytes: int) -> Any:
    if get_worker_info() is None:
        return np.empty(nbytes, np.uint8)
    return torch.UntypedStorage._new_shared(nbytes)


def _block_bytes(block: Any) -> int:
    return block.nbytes if isinstance(block, np.ndarray) else block.nbytes()


class _Batches(IterableDataset):
    """A worker's clips as ``(worker, clips, substitutes, slot, batch)`` tuples."""

    def __init__(self, ds: ShardDataset, batch_size: int, drop_last: bool, num_workers: int,
                 audio: str, audio_lengths: bool, memory: BatchMemory) -> None:
        self.ds, self.batch_size, self.drop_last = ds, batch_size, drop_last
        self.num_workers, self.audio, self.audio_lengths = num_workers, audio, audio_lengths
        self.memory = memory
        self._buffers: ClipBuffers | None = None

    def __len__(self) -> int:
        b = self.batch_size
        return sum(n // b if self.drop_last else -(-n // b)
                   for n in split_sizes(len(self.ds), self.num_workers))

    def _batch(self, worker: int, generation: int, records: list[Record], subs: int) -> tuple:
        arena = self.memory.arena(worker, generation)
        self._buffers = self._buffers or ClipBuffers()  # kept across epochs
        batch = collate_records(self.ds, records, self.audio, self.audio_lengths, arena,
                                self._buffers)
        self._buffers.give_back()
        return worker, len(records), subs, arena.slot, batch

    def __iter__(self) -> Iterator[tuple]:
        worker, num_workers = worker_id()
        generation = int(self.memory.generation)
        records: list[Record] = []
        subs = 0
        for record, substitute in self.ds.stream(worker, num_workers):
            records.append(record)
            subs += substitute
            if len(records) == self.batch_size:
                yield self._batch(worker, generation, records, subs)
                records, subs = [], 0
        if records and not self.drop_last:
            yield self._batch(worker, generation, records, subs)


class ShardLoader:
    """Iterate batches of a :class:`ShardDataset`; ``state_dict`` resumes mid-epoch.

    ``len(loader)`` is the exact number of batches each rank yields an epoch
    (the same on every rank). ``substitutes`` counts clips handed out this epoch
    in place of unreadable ones (``on_error="skip"``).
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, *, num_workers: int = 0,
                 drop_last: bool = False, audio: str = "pad", audio_lengths: bool = False,
                 memory_slots: int = 5, **dataloader_kwargs: Any) -> None:
        if audio not in ("pad", "list"):
            raise ValueError(f"audio must be 'pad' or 'list', got {audio!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._memory = BatchMemory(max(1, num_workers), memory_slots)
        self._batches = _Batches(dataset, batch_size, drop_last, max(1, num_workers), audio,
                                 audio_lengths, self._memory)
        self._kwargs = dataloader_kwargs
        self._held: list[tuple[list[StorageWeakRef], int, int]] = []
        self._loader = self._make()
        self._progress: tuple[int, list[int]] | None = None
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

    def __iter__(self) -> Iterator[Any]:
        ds = self.dataset
        epoch, workers = ds.epoch, max(1, self.num_workers)
        delivered = [0] * workers
        resume = ds._resume
        if resume is not None and resume.epoch == epoch and resume.num_workers == workers:
            delivered = list(resume.delivered)
        self._progress = (epoch, delivered)
        self.substitutes = 0
        self._memory.new_generation({(w, s) for _, w, s in self._held})
        batches = iter(self._loader)
        if self.num_workers:
            ds._resume = None  # the workers took their copy
        try:
            for worker, n, subs, slot, batch in batches:
                self._hold(worker, slot, batch)
                delivered[worker] += n
                self.substitutes += subs
                yield batch
        except Exception:
            # Stop the workers now: torch takes 5 s a worker when a failed
            # iterator is only collected later (the traceback keeps it alive).
            getattr(batches, "_shutdown_workers", lambda: None)()
            self._loader = self._make()
            raise

    def state_dict(self) -> dict[str, Any]:
        """Where this epoch stands: restore with :meth:`load_state_dict` after a restart.

        Ranks stepping in lockstep (DDP) have equal states, so saving rank 0's is enough.
        """
        ds, workers = self.dataset, max(1, self.num_workers)
        if self._progress is not None and self._progress[0] == ds.epoch:
            return ds.make_state(ds.epoch, workers, self._progress[1])
        if ds._resume is not None and ds._resume.epoch == ds.epoch:
            return ds.make_state(ds.epoch, workers, ds._resume.delivered)
        return ds.make_state(ds.epoch, workers, [0] * workers)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue ``state``'s epoch (same world size and workers)."""
        workers = max(1, self.num_workers)
        if int(state.get("num_workers", -1)) != workers:
            raise ValueError(f"cannot resume: the state was taken with {state.get('num_workers')} "
                             f"worker(s), this loader has {workers}; use the same num_workers")
        self.dataset.load_state_dict(state)
        self._loader = self._make()  # persistent workers must see the new state
        self._progress = None


def make_loader(dataset: ShardDataset, batch_size: int, *, num_workers: int = 0,
                drop_last: bool = False, audio: str = "pad", audio_lengths: bool = False,
                pin_memory: bool = False, persistent_workers: bool | None = None,
                prefetch_factor: int | None = None, **dataloader_kwargs: Any) -> ShardLoader:
    """A loader of ``(video [B,T,C,H,W], audio [B,C,S], label [B])`` batches (or dicts).

    Batches are made in the workers. ``drop_last`` drops each worker's last partial
    batch (at most ``num_workers * (batch_size - 1)`` clips an epoch). Audio: see
    :func:`collate`. ``persistent_workers`` defaults to True with workers.

    Memory: each worker keeps up to ``prefetch_factor + 3`` batches' worth of memory
    for reuse (:class:`BatchMemory`), allocated as needed: about as many as are in
    flight (queued, being made, held by the loop), which a DataLoader needs anyway,
    plus one or two. E.g. 32 clips of 16x128x171 RGB are 34 MB a batch. Other
    keyword arguments go to ``torch.utils.data.DataLoader``.
    """
    if not isinstance(dataset, ShardDataset):
        from .maploader import MapLoader

        if prefetch_factor is not None and num_workers:
            dataloader_kwargs["prefetch_factor"] = prefetch_factor
        return MapLoader(dataset, batch_size, num_workers=num_workers, drop_last=drop_last,
                         audio=audio, audio_lengths=audio_lengths, pin_memory=pin_memory,
                         memory_slots=(prefetch_factor or 2) + 3, **dataloader_kwargs)
    if num_workers:
        dataloader_kwargs["persistent_workers"] = (True if persistent_workers is None
                                                   else persistent_workers)
        if prefetch_factor is not None:
            dataloader_kwargs["prefetch_factor"] = prefetch_factor
    return ShardLoader(dataset, batch_size, num_workers=num_workers, drop_last=drop_last,
                       audio=audio, audio_lengths=audio_lengths, pin_memory=pin_memory,
                       memory_slots=(prefetch_factor or 2) + 3, **dataloader_kwargs)
