"""Reusable batch memory: batches are made in DataLoader workers into a small per-worker
ring of shared-memory blocks, reused once the loader has seen every tensor of a batch
dropped.

Memory reuse matters: new memory costs a page fault per 4 KiB page, and new shared
memory a file too, which together cost more than reading the clips.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import get_worker_info

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


def _tensors(batch: Any) -> list[torch.Tensor]:
    """The tensors in a batch: itself, or in its dict, list or tuple (named too), nested."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, dict):
        batch = list(batch.values())
    return [t for v in batch for t in _tensors(v)] if isinstance(batch, (list, tuple)) else []


def storages(batch: Any) -> list[torch.UntypedStorage]:
    """The distinct storages under the tensors of a batch."""
    return list({t.untyped_storage().data_ptr(): t.untyped_storage()
                 for t in _tensors(batch)}.values())


Held = list[tuple[list[StorageWeakRef], int, int]]


def hold(memory: BatchMemory, held: Held, worker: int, slot: int, batch: Any) -> Held:
    """Free the slots of batches no longer referenced; remember this batch's slot."""
    still = []
    for refs, w, s in held:
        if all(ref.expired() for ref in refs):
            memory.busy[w, s] = 0
        else:
            still.append((refs, w, s))
    if slot >= 0:  # pinned, these are the copies: later than needed, still safe
        still.append(([StorageWeakRef(s) for s in storages(batch)], worker, slot))
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

    def arena(self, worker: int, generation: int) -> Arena:
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

    def reset(self) -> None:
        """Carve from the start again: the tensors given out so far are dropped."""
        self._used = 0

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
