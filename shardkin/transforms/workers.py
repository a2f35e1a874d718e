"""A preset's batched form run in ``make_loader``'s DataLoader workers (its
``batch_transform``): each uint8 batch is cropped (and flipped) into the batch memory the
loader hands out, and with ``to_float`` converted and normalized there too."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class InWorkers:
    """``batch_transform(video, samples, epoch, alloc)`` for ``make_loader``: ``video`` a
    uint8 ``[B, T, C, H, W]`` batch, ``samples`` the clips' identities (keys of a
    ``ShardDataset``, indices of a map-style dataset), ``epoch`` the loader's, ``alloc``
    the batch's memory. Each clip's window is drawn from ``(seed, epoch, sample)`` by the
    preset's ``sample_window``, so it does not depend on the worker, the number of workers,
    the batch or a resume. Picklable: it travels to the workers with the loader."""

    def __init__(self, preset: Any, *, seed: int = 0, to_float: bool = False) -> None:
        self.preset, self.seed, self.to_float = preset, int(seed), to_float

    def windows(self, height: int, width: int, samples: Sequence[object], epoch: int) -> list:
        return [self.preset.sample_window(height, width, seed=self.seed, epoch=epoch,
                                          sample=s) for s in samples]

    def __call__(self, video: torch.Tensor, samples: Sequence[object], epoch: int,
                 alloc: Any = None) -> torch.Tensor:
        windows = self.windows(*video.shape[-2:], samples, epoch)
        if self.to_float:
            return self.preset.batch(video, windows, alloc=alloc)
        return self.preset.crop_batch(video, windows, alloc=alloc)
