"""``ShardDataModule``: a build's train and val splits for a Lightning ``Trainer``.

Needs ``pip install shardkin[lightning]`` (the ``lightning`` package); ``import shardkin``
does not import it. Loaders are :func:`shardkin.make_loader`'s, made once and kept, so each
epoch is a new order (passes advance the epoch by themselves) and Lightning checkpoints
their exact position (``state_dict``). Under DDP each rank reads its own part of every
epoch, the same number of batches on every rank.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

try:
    from lightning.pytorch import LightningDataModule
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("shardkin.lightning needs Lightning: pip install 'shardkin[lightning]'"
                      ) from e

from .reader.dataset import ShardDataset
from .reader.loader import ShardLoader, make_loader

VAL_DEFAULTS = {"shuffle": False}


class ShardDataModule(LightningDataModule):
    """Train (and val) :class:`~shardkin.ShardDataset` of ``source`` batched by
    :func:`~shardkin.make_loader`.

    ``source``: a build folder or URL holding ``train_split`` and ``val_split``
    (``None``: no validation). ``dataset_kwargs`` go to both datasets (e.g.
    ``return_dict=True``, ``seed``, ``cache_dir``); ``train_kwargs`` and ``val_kwargs``
    to one of them (e.g. each its ``transform``); val reads in order unless
    ``val_kwargs`` says ``shuffle=True``. ``loader_kwargs`` go to ``make_loader``
    (``audio``, ``pin_memory``, ``prefetch_factor``, ...). Rank and world size are the
    trainer's when it runs distributed.
    """

    def __init__(self, source: str | os.PathLike | Sequence[str], *, batch_size: int = 8,
                 num_workers: int = 0, train_split: str = "train", val_split: str | None = "val",
                 drop_last: bool = False, train_kwargs: dict[str, Any] | None = None,
                 val_kwargs: dict[str, Any] | None = None,
                 loader_kwargs: dict[str, Any] | None = None, **dataset_kwargs: Any) -> None:
        super().__init__()
        self.source, self.batch_size, self.num_workers = source, batch_size, num_workers
        self.train_split, self.val_split, self.drop_last = train_split, val_split, drop_last
        self.train_kwargs = {**dataset_kwargs, **(train_kwargs or {})}
        self.val_kwargs = {**VAL_DEFAULTS, **dataset_kwargs, **(val_kwargs or {})}
        self.loader_kwargs = loader_kwargs or {}
        self._loaders: dict[str, ShardLoader] = {}

    def _placement(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return {"rank": 0, "world_size": 1}
        return {"rank": trainer.global_rank, "world_size": trainer.world_size}

    def dataset(self, split: str, **kwargs: Any) -> ShardDataset:
        """The dataset of ``split`` on this rank."""
        return ShardDataset(self.source, split, **{**self._placement(), **kwargs})

    def _loader(self, split: str, kwargs: dict[str, Any]) -> ShardLoader:
        if split not in self._loaders:
            self._loaders[split] = make_loader(
                self.dataset(split, **kwargs), self.batch_size, num_workers=self.num_workers,
                drop_last=self.drop_last, **self.loader_kwargs)
        return self._loaders[split]

    def train_dataloader(self) -> ShardLoader:
        return self._loader(self.train_split, self.train_kwargs)

    def val_dataloader(self) -> ShardLoader | list:
        if self.val_split is None:
            return []
        return self._loader(self.val_split, self.val_kwargs)
