"""torchvision's video classification presets, bit-identical and cheaper: crop first.

- :class:`VideoClassificationPresetTrain` / :class:`VideoClassificationPresetEval`: the
  reference recipe's (``references/video_classification/presets.py``): ``ConvertImageDtype
  (float32)``, ``Resize(resize_size, antialias=False)``, [train: ``RandomHorizontalFlip
  (hflip_prob)``], ``Normalize(mean, std)``, ``RandomCrop(crop_size)`` / ``CenterCrop
  (crop_size)``, then ``[T, C, H, W] -> [C, T, H, W]``.
- :class:`VideoClassification`: the models' ``weights.transforms()``
  (``torchvision.transforms._presets.VideoClassification``): uint8 ``Resize`` (bilinear,
  antialias=False, rounded back to uint8), ``CenterCrop``, convert, normalize, to
  ``[..., C, T, H, W]``.

Flip, crop and the per-pixel normalization commute, and a resize to the size a clip
already has returns it unchanged (torchvision's ``F.resize`` returns its input), so each
preset crops first, on uint8 where the input is at ``resize_size``, and converts and
normalizes only the crop with the same float32 operations (``/ 255``, ``- mean``,
``/ std``; on the CPU in one compiled pass where numba is installed, :mod:`.onepass`):
the same values bit for bit, from the same random draws (the flip's ``torch.rand(1)``,
then the crop's two ``torch.randint``; a crop drawn on the flipped image has its column
offset mirrored). Elsewhere the input is resized exactly as the original does first.

Batched forms: :mod:`.batched` (``crop_batch``, ``normalize_batch``, ``batch``,
``in_workers``).

Outputs keep the input's memory layout, as the originals' do (clips from shardkin's readers
are ``[T, C, H, W]`` views of ``[T, H, W, C]`` memory: their outputs are views of
``[T, h, w, C]`` float memory); ``normalize_batch(..., memory_format=torch.contiguous_format)``
gives contiguous ``[B, C, T, h, w]``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import ops
from .batched import BatchedPreset
from .windows import Window, draw_window, empty_like_layout, sample_window

MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


class VideoClassificationPresetTrain(BatchedPreset):
    """``references/video_classification/presets.py``'s train preset on a ``[T, C, H, W]``
    clip (uint8 or float in [0, 1]) -> float32 ``[C, T, h, w]``, bit-identical to it under
    the same torch random state. Same arguments."""

    def __init__(self, *, crop_size: int | Sequence[int], resize_size: int | Sequence[int],
                 mean: Sequence[float] = MEAN, std: Sequence[float] = STD,
                 hflip_prob: float = 0.5) -> None:
        self.crop = ops.pair(crop_size, "crop_size")
        self.resize_size, self.hflip_prob = resize_size, hflip_prob
        ops.resized_size(1, 1, resize_size)  # checks its form
        self._constants(mean, std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._at_size(x):
            h, w = x.shape[-2:]
            window = draw_window(h, w, self.crop, self.hflip_prob)
            return self._cut_normalized(x, window).permute(1, 0, 2, 3)
        return self._float_path(x, None)

    def _float_path(self, x: torch.Tensor, window: Window | None) -> torch.Tensor:
        """Off ``resize_size``: converted and resized in float first, as the original."""
        x = ops.resize(ops.to_float(x), self.resize_size, "bilinear", antialias=False)
        h, w = x.shape[-2:]
        window = window or draw_window(h, w, self.crop, self.hflip_prob)
        return self._cut_normalized(x, window).permute(1, 0, 2, 3)

    def _with_window(self, clip: torch.Tensor, window: Window) -> torch.Tensor:
        return self._float_path(clip, window)

    def windows(self, video: torch.Tensor) -> list[Window]:
        h, w = video.shape[-2:]
        return [draw_window(h, w, self.crop, self.hflip_prob) for _ in range(video.shape[0])]

    def sample_window(self, height: int, width: int, *, seed: int, epoch: int,
                      sample: object) -> Window:
        return sample_window(height, width, self.crop, self.hflip_prob, seed=seed,
                             epoch=epoch, sample=sample)


class VideoClassificationPresetEval(BatchedPreset):
    """The reference recipe's eval preset on a ``[T, C, H, W]`` clip -> float32
    ``[C, T, h, w]``, bit-identical to it. Same arguments."""

    def __init__(self, *, crop_size: int | Sequence[int], resize_size: int | Sequence[int],
                 mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> None:
        self.crop = ops.pair(crop_size, "crop_size")
        self.resize_size = resize_size
        ops.resized_size(1, 1, resize_size)
        self._constants(mean, std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self._at_size(x):
            x = ops.resize(ops.to_float(x), self.resize_size, "bilinear", antialias=False)
        h, w = x.shape[-2:]
        if not ops.fits(h, w, self.crop):  # padded: zeros after normalizing
            x = ops.normalize_(ops.to_float(x).clone(), self._mean, self._std)
            return ops.center_crop(x, self.crop).permute(1, 0, 2, 3)
        return self._cut_normalized(x, self._center(h, w)).permute(1, 0, 2, 3)


class VideoClassification(BatchedPreset, nn.Module):
    """``torchvision.transforms._presets.VideoClassification`` (the video models'
    ``weights.transforms()``) on ``[T, C, H, W]`` or ``[B, T, C, H, W]`` -> float32
    ``[C, T, h, w]`` or ``[B, C, T, h, w]``, bit-identical to it. Same arguments
    (``interpolation``: torchvision's ``InterpolationMode`` or its value, e.g.
    ``"bilinear"``)."""

    def __init__(self, *, crop_size: Sequence[int], resize_size: Sequence[int],
                 mean: Sequence[float] = MEAN, std: Sequence[float] = STD,
                 interpolation: Any = "bilinear") -> None:
        super().__init__()
        self.crop_size, self.resize_size = list(crop_size), list(resize_size)
        self.crop = ops.pair(self.crop_size, "crop_size")
        self.mean, self.std, self.interpolation = list(mean), list(std), interpolation
        self.mode = ops.mode_of(interpolation)
        ops.resized_size(1, 1, self.resize_size)
        self._constants(mean, std)

    def _cropped(self, vid: torch.Tensor) -> torch.Tensor:
        """Resized (uint8 stays uint8, rounded) and center-cropped, frames flattened."""
        n, t, c, h, w = vid.shape
        vid = ops.resize(vid.reshape(-1, c, h, w), self.resize_size, self.mode,
                         antialias=False)
        return ops.center_crop(vid, self.crop)

    def forward(self, vid: torch.Tensor) -> torch.Tensor:
        squeeze = vid.dim() < 5
        if squeeze:
            vid = vid.unsqueeze(0)
        n, t, c, h, w = vid.shape
        frames = vid.reshape(-1, c, h, w)
        if self._at_size(frames) and ops.fits(h, w, self.crop):  # the resize is the identity
            x = self._cut_normalized(frames, self._center(h, w))
        else:
            x = self._normalized(self._cropped(vid))
        x = x.view(n, t, c, *x.shape[-2:]).permute(0, 2, 1, 3, 4)
        return x.squeeze(0) if squeeze else x

    def _uint8_input(self, video: torch.Tensor) -> torch.Tensor:
        if video.dtype != torch.uint8 or video.dim() != 5:
            raise ValueError(f"expected a uint8 [B, T, C, H, W] batch, got {video.dtype} "
                             f"{tuple(video.shape)}")
        return video

    def crop_batch(self, video: torch.Tensor, windows: Sequence[Window] | None = None, *,
                   alloc: Any = None) -> torch.Tensor:
        """The uint8 part: resized in uint8 as the original (when not at ``resize_size``)
        and center-cropped, as ``[B, T, C, h, w]`` (``windows`` are not used)."""
        video = self._uint8_input(video)
        if self._at_size(video) and ops.fits(*video.shape[-2:], self.crop):
            return super().crop_batch(video, None, alloc=alloc)
        x = self._cropped(video)
        out = empty_like_layout((*video.shape[:3], *x.shape[-2:]), video, torch.uint8, alloc)
        return out.copy_(x.view(out.shape))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(crop_size={self.crop_size}, resize_size="
                f"{self.resize_size}, mean={self.mean}, std={self.std}, "
                f"interpolation={self.interpolation})")
