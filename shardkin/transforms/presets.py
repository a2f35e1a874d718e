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
``/ std``): the same values bit for bit, from the same random draws (the flip's
``torch.rand(1)``, then the crop's two ``torch.randint``; a crop drawn on the flipped
image has its column offset mirrored). Elsewhere the input is resized exactly as the
original does first.

Batched forms (``[B, T, C, H, W]`` uint8, CPU or CUDA, each clip its own window):
``crop_batch`` (the uint8 part: crop and flip, for DataLoader workers), ``normalize_batch``
(the float part: convert and normalize, for the device), ``batch`` (both). ``in_workers``
gives ``make_loader``'s ``batch_transform``.

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
from .windows import Window, crop_into, cut, draw_window, empty_like_layout, sample_window
from .workers import InWorkers

MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


class _Preset:
    """What the three presets share: constants, the float part, the batched forms."""

    crop: tuple[int, int]
    resize_size: Any
    mode: str = "bilinear"

    def _constants(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self._mean = ops.channel_constants(mean, "mean")
        self._std = ops.channel_constants(std, "std")
        ops.check_std(self._std)

    def _at_size(self, video: torch.Tensor) -> bool:
        h, w = video.shape[-2:]
        return ops.resized_size(h, w, self.resize_size) == (h, w)

    def _normalized(self, crop: torch.Tensor) -> torch.Tensor:
        """A crop converted and normalized (a new tensor: the input is never written)."""
        x = ops.to_float(crop)
        if x.data_ptr() == crop.data_ptr():
            x = x.clone()
        return ops.normalize_(x, self._mean, self._std)

    def windows(self, video: torch.Tensor) -> list[Window]:
        """Each clip's window: the center (no draws) unless the preset draws."""
        h, w = video.shape[-2:]
        top, left = ops.center_window(h, w, self.crop)
        return [Window(top, left, False)] * video.shape[0]

    def sample_window(self, height: int, width: int, *, seed: int, epoch: int,
                      sample: object) -> Window:
        """The window of one sample of an epoch (:func:`~.windows.sample_window`)."""
        top, left = ops.center_window(height, width, self.crop)
        return Window(top, left, False)

    def _uint8_input(self, video: torch.Tensor) -> torch.Tensor:
        """``video`` ready for the uint8 crop: at the size the crop is taken at."""
        if video.dtype != torch.uint8 or video.dim() != 5:
            raise ValueError(f"expected a uint8 [B, T, C, H, W] batch, got {video.dtype} "
                             f"{tuple(video.shape)}")
        if not self._at_size(video):
            raise ValueError(
                f"clips of {tuple(video.shape[-2:])} are not at resize_size={self.resize_size}: "
                "the resize is done in float before the crop, so the uint8 part cannot "
                "take it; build the shards at that size (--height/--width) or use batch()")
        if not ops.fits(*video.shape[-2:], self.crop):
            raise ValueError(f"crop_size {self.crop} is larger than the clips "
                             f"{tuple(video.shape[-2:])}")
        return video

    def crop_batch(self, video: torch.Tensor, windows: Sequence[Window] | None = None, *,
                   alloc: Any = None) -> torch.Tensor:
        """The uint8 part: each clip's crop (mirrored when drawn so) of a uint8
        ``[B, T, C, H, W]`` batch at ``resize_size``, as ``[B, T, C, h, w]`` in the input's
        memory layout. ``windows``: one a clip (default: drawn from torch's global
        generator clip by clip, as the per-clip preset draws; the eval presets take the
        center). ``alloc(shape, dtype)`` gives the output memory (a loader's batch)."""
        video = self._uint8_input(video)
        windows = list(windows) if windows is not None else self.windows(video)
        if len(windows) != video.shape[0]:
            raise ValueError(f"{len(windows)} windows for {video.shape[0]} clips")
        out = empty_like_layout((*video.shape[:3], *self.crop), video, torch.uint8, alloc)
        return crop_into(out, video, windows, self.crop)

    def normalize_batch(self, video: torch.Tensor, *, alloc: Any = None,
                        memory_format: torch.memory_format = torch.preserve_format
                        ) -> torch.Tensor:
        """The float part: uint8 ``[B, T, C, h, w]`` (on any device) -> float32
        ``[B, C, T, h, w]``, ``ConvertImageDtype`` then ``Normalize`` as the preset does
        them. The output keeps the input's memory layout (``[B, T, h, w, C]`` storage is
        ``torch.channels_last_3d``), or is contiguous with ``memory_format=
        torch.contiguous_format`` (the copy then transposes: cheap on a GPU, not on a CPU)."""
        if video.dtype != torch.uint8 or video.dim() != 5:
            raise ValueError(f"expected a uint8 [B, T, C, h, w] batch, got {video.dtype} "
                             f"{tuple(video.shape)}")
        out = self._float_batch(video.shape, video, alloc, memory_format)
        if video.device.type != "cpu":  # a few kernels over the whole batch
            self._into(out, video.transpose(1, 2), channel_dim=1)
            return out
        for o, clip in zip(out, video):  # clip by clip: the passes stay in the caches
            self._into(o, clip.transpose(0, 1))
        return out

    @staticmethod
    def _float_batch(shape: torch.Size, like: torch.Tensor, alloc: Any,
                     memory_format: torch.memory_format) -> torch.Tensor:
        """Float32 ``[B, C, T, h, w]`` for uint8 ``[B, T, C, h, w]`` ``like``."""
        shape = (shape[0], shape[2], shape[1], *shape[3:])
        if memory_format == torch.contiguous_format:
            return (alloc(shape, torch.float32) if alloc is not None
                    else torch.empty(shape, dtype=torch.float32, device=like.device))
        if memory_format != torch.preserve_format:
            raise ValueError("memory_format must be torch.preserve_format or "
                             "torch.contiguous_format")
        return empty_like_layout(shape, like.transpose(1, 2), torch.float32, alloc)

    def _into(self, out: torch.Tensor, crop: torch.Tensor, channel_dim: int = 0) -> None:
        """``out`` (float32) = the uint8 ``crop`` (same shape) converted and normalized."""
        out.copy_(crop)
        out.div_(255.0)
        ops.normalize_(out, self._mean, self._std, channel_dim)

    def batch(self, video: torch.Tensor, windows: Sequence[Window] | None = None, *,
              alloc: Any = None) -> torch.Tensor:
        """The preset on a uint8 ``[B, T, C, H, W]`` batch -> float32 ``[B, C, T, h, w]``
        (in the input's memory layout), each clip's output bit-identical to the per-clip
        preset's with the same window (by default drawn clip by clip from torch's global
        generator, as calling the preset on each clip in turn draws). Clips not at
        ``resize_size`` are resized as the original does first. ``alloc(shape, dtype)``
        gives the output memory."""
        if video.dim() != 5:
            raise ValueError(f"expected a [B, T, C, H, W] batch, got {tuple(video.shape)}")
        if (video.dtype != torch.uint8 or not self._at_size(video)
                or not ops.fits(*video.shape[-2:], self.crop)):
            return self._resized_batch(video, windows, alloc)
        if video.device.type != "cpu":
            return self.normalize_batch(self.crop_batch(video, windows), alloc=alloc)
        video = self._uint8_input(video)
        windows = list(windows) if windows is not None else self.windows(video)
        out = self._float_batch((*video.shape[:3], *self.crop), video, alloc,
                                torch.preserve_format)
        for o, clip, window in zip(out, video, windows):  # crop, convert: clip by clip
            self._into(o, cut(clip, window, self.crop).transpose(0, 1))
        return out

    def _resized_batch(self, video: torch.Tensor, windows: Sequence[Window] | None,
                       alloc: Any) -> torch.Tensor:
        clips = [self(clip) for clip in video] if windows is None else [
            self._with_window(clip, w) for clip, w in zip(video, windows)]
        out = empty_like_layout((video.shape[0], *clips[0].shape), clips[0], torch.float32,
                                alloc)
        for o, c in zip(out, clips):
            o.copy_(c)
        return out

    def _with_window(self, clip: torch.Tensor, window: Window) -> torch.Tensor:
        raise NotImplementedError

    def in_workers(self, *, seed: int = 0, to_float: bool = False) -> InWorkers:
        """``make_loader(..., batch_transform=preset.in_workers(seed=...))``: the workers
        crop and flip each uint8 batch (``to_float=False``: then ``normalize_batch`` on the
        device after a pinned, non-blocking copy) or do it all (``to_float=True``: float
        batches, for training on the CPU). Windows are drawn per sample from ``seed``, the
        epoch and the sample (:meth:`sample_window`): the same in any worker, with any
        number of workers, after a resume."""
        return InWorkers(self, seed=seed, to_float=to_float)


class VideoClassificationPresetTrain(_Preset):
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
            return self._normalized(cut(x, window, self.crop)).permute(1, 0, 2, 3)
        return self._float_path(x, None)

    def _float_path(self, x: torch.Tensor, window: Window | None) -> torch.Tensor:
        """Off ``resize_size``: converted and resized in float first, as the original."""
        x = ops.resize(ops.to_float(x), self.resize_size, "bilinear", antialias=False)
        h, w = x.shape[-2:]
        window = window or draw_window(h, w, self.crop, self.hflip_prob)
        return self._normalized(cut(x, window, self.crop)).permute(1, 0, 2, 3)

    def _with_window(self, clip: torch.Tensor, window: Window) -> torch.Tensor:
        return self._float_path(clip, window)

    def windows(self, video: torch.Tensor) -> list[Window]:
        h, w = video.shape[-2:]
        return [draw_window(h, w, self.crop, self.hflip_prob) for _ in range(video.shape[0])]

    def sample_window(self, height: int, width: int, *, seed: int, epoch: int,
                      sample: object) -> Window:
        return sample_window(height, width, self.crop, self.hflip_prob, seed=seed,
                             epoch=epoch, sample=sample)


class VideoClassificationPresetEval(_Preset):
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
        if not ops.fits(*x.shape[-2:], self.crop):  # padded: zeros after normalizing
            x = ops.normalize_(ops.to_float(x).clone(), self._mean, self._std)
            return ops.center_crop(x, self.crop).permute(1, 0, 2, 3)
        return self._normalized(ops.center_crop(x, self.crop)).permute(1, 0, 2, 3)

    def _with_window(self, clip: torch.Tensor, window: Window) -> torch.Tensor:
        return self(clip)


class VideoClassification(_Preset, nn.Module):
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
        n, t, c = vid.shape[:3]
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

    def _with_window(self, clip: torch.Tensor, window: Window) -> torch.Tensor:
        return self(clip)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(crop_size={self.crop_size}, resize_size="
                f"{self.resize_size}, mean={self.mean}, std={self.std}, "
                f"interpolation={self.interpolation})")
