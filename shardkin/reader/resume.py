"""Where a stream stands in its epochs: the one owner of epoch and resume state.

A :class:`~.dataset.ShardDataset` holds one :class:`Progress`; its public surface is the
dataset's ``set_epoch``, ``state_dict`` and ``load_state_dict`` (and the loader's, which
know what its workers handed out). A state is a plain dict: the settings that decide the
epoch's order (``identity``: a state only resumes a stream cut the same way), the epoch,
the number of DataLoader workers and the clips each had handed out. Workers get the
state by pickling, before they start; the epoch lives in shared memory so that
persistent workers see ``set_epoch`` too.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

STATE_VERSION = 2  # 2: shard order by partition.shard_order's hash (1: random.shuffle)


class ResumePoint(NamedTuple):
    """Clips each of ``num_workers`` workers had handed out of ``epoch``."""

    epoch: int
    num_workers: int
    delivered: tuple[int, ...]


class Progress:
    """The epoch, the state loaded to resume it, and what this process has handed out.

    ``identity`` gives the settings a state must match (called when a state is taken
    or loaded, so nothing is computed before it is needed)."""

    def __init__(self, identity: Callable[[], dict[str, Any]]) -> None:
        self._identity = identity
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.sets = 0  # set_epoch calls: a loader advances epochs by itself without them
        self._loaded: ResumePoint | None = None  # until the workers take it
        self._here: ResumePoint | None = None  # iteration in this process

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)
        self.sets += 1
        if self._loaded is not None and self._loaded.epoch != epoch:
            self._loaded = None

    def state(self, epoch: int, num_workers: int, delivered: Sequence[int]) -> dict[str, Any]:
        """A resumable state: clips of ``epoch`` each worker has handed out."""
        return {**self._identity(), "epoch": epoch, "num_workers": num_workers,
                "delivered": list(delivered)}

    def state_here(self) -> dict[str, Any]:
        """The state of iteration in this process (or of the state loaded, not yet taken)."""
        for p in (self._loaded, self._here):
            if p is not None and p.epoch == self.epoch:
                return self.state(p.epoch, p.num_workers, p.delivered)
        return self.state(self.epoch, 1, [0])

    def load(self, state: dict[str, Any]) -> None:
        """Resume ``state``'s epoch at the next iteration; it must match ``identity``."""
        mine = self._identity()
        diff = sorted(k for k in mine if state.get(k) != mine[k])
        if diff:
            shown = ", ".join(f"{k}: saved {state.get(k)!r}, now {mine[k]!r}" for k in diff)
            raise ValueError(f"cannot resume: the state was taken with other settings ({shown}); "
                             "resume with the same dataset, options and world size")
        self._loaded = ResumePoint(int(state["epoch"]), int(state["num_workers"]),
                                   tuple(int(d) for d in state["delivered"]))
        self._epoch[0] = self._loaded.epoch

    def loaded(self) -> ResumePoint | None:
        """The state loaded for the current epoch, until an iteration takes it."""
        p = self._loaded
        return p if p is not None and p.epoch == self.epoch else None

    def drop_loaded(self) -> None:
        """Forget the loaded state: the workers that resume from it have their copy."""
        self._loaded = None

    def delivered(self, num_workers: int) -> list[int]:
        """Clips each worker has handed out of the current epoch by the loaded state."""
        p = self.loaded()
        if p is not None and p.num_workers == num_workers:
            return list(p.delivered)
        return [0] * num_workers

    def take(self, epoch: int, worker: int, num_workers: int) -> int:
        """Clips this worker already handed out of ``epoch``; consumes the loaded state."""
        p, self._loaded = self._loaded, None
        if p is None or p.epoch != epoch:
            return 0
        if p.num_workers != num_workers:
            raise ValueError(f"cannot resume: the state was taken with {p.num_workers} "
                             f"worker(s), this loader has {num_workers}; use the same num_workers")
        return p.delivered[worker]

    def handed_out(self, epoch: int, num_workers: int, delivered: Sequence[int]) -> None:
        """Record iteration in this process (for ``state_here``)."""
        self._here = ResumePoint(epoch, num_workers, tuple(delivered))
