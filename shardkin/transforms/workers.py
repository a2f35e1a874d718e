"""A preset's batched form run in ``make_loader``'s DataLoader workers (its
``batch_transform``): each uint8 batch is cropped (and flipped) into the batch memory the
loader hands out, and with ``to_float`` converted and normalized there too; or, with
``flip_on_device``, cropped only, the flips handed over with the crops (:class:`Crops`)
and made on the device."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch


class Crops(NamedTuple):
    """A batch of uint8 crops ``[B, T, C, h, w]`` not yet mirrored, and which of its clips
    are to be (``flip``, bool ``[B]``): what the workers hand over with ``flip_on_device``.
    A named tuple of tensors, so DataLoader pins it and Lightning moves it as it does
    tensors; ``normalize_batch`` takes it (:meth:`flipped` first)."""

    video: torch.Tensor
    flip: torch.Tensor

    def to(self, *args: Any, **kwargs: Any) -> Crops:
        """``video.to(...)`` (``Tensor.to``'s arguments), the flips to the same device."""
        video = self.video.to(*args, **kwargs)
        return Crops(video, self.flip.to(video.device,
                                         non_blocking=kwargs.get("non_blocking", False)))

    def flipped(self) -> torch.Tensor:
        """The crops with the flagged clips mirrored left-right (a new tensor in the
        crops' memory layout, a few kernels on any device: no per-clip loop, no sync)."""
        out = torch.empty_like(self.video)
        mask = self.flip.view(-1, *(1,) * (self.video.dim() - 1))
        return torch.where(mask, self.video.flip(-1), self.video, out=out)


class InWorkers:
    """``batch_transform(video, samples, epoch, alloc)`` for ``make_loader``: ``video`` a
    uint8 ``[B, T, C, H, W]`` batch, ``samples`` the clips' identities (keys of a
    ``ShardDataset``, indices of a map-style dataset), ``epoch`` the loader's, ``alloc``
    the batch's memory. Each clip's window is drawn from ``(seed, epoch, sample)`` by the
    preset's ``sample_window``, so it does not depend on the worker, the number of workers,
    the batch or a resume. Picklable: it travels to the workers with the loader."""

    def __init__(self, preset: Any, *, seed: int = 0, to_float: bool = False,
                 flip_on_device: bool = False) -> None:
        if to_float and flip_on_device:
            raise ValueError("to_float=True makes the float batch in the workers: nothing "
                             "goes to a device to be flipped there (flip_on_device=False)")
        self.preset, self.seed, self.to_float = preset, int(seed), to_float
        self.flip_on_device = flip_on_device

    def windows(self, height: int, width: int, samples: Sequence[object], epoch: int) -> list:
        return [self.preset.sample_window(height, width, seed=self.seed, epoch=epoch,
                                          sample=s) for s in samples]

    def __call__(self, video: torch.Tensor, samples: Sequence[object], epoch: int,
                 alloc: Any = None) -> torch.Tensor | Crops:
        windows = self.windows(*video.shape[-2:], samples, epoch)
        if self.to_float:
            return self.preset.batch(video, windows, alloc=alloc)
        if not self.flip_on_device:
            return self.preset.crop_batch(video, windows, alloc=alloc)
        crops = self.preset.crop_batch(video, [w._replace(flip=False) for w in windows],
                                       alloc=alloc)
        flip = torch.tensor([w.flip for w in windows], dtype=torch.bool)
        return Crops(crops, flip if alloc is None else alloc(flip.shape, flip.dtype).copy_(flip))
