"""What torchvision's video presets share in shardkin: the per-channel constants, the
float part, and the batched forms on uint8 ``[B, T, C, H, W]`` (CPU or CUDA, each clip its
own window): ``crop_batch`` (the uint8 part: crop and flip, for DataLoader workers),
``normalize_batch`` (the float part: convert and normalize, for the device; from
:class:`~.workers.Crops` the flips too), ``batch`` (both), ``in_workers`` (``make_loader``'s
``batch_transform``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import onepass, ops
from .windows import Window, crop_into, cut, empty_like_layout
from .workers import Crops, InWorkers


class BatchedPreset:
    """The base of the presets: constants, the float part, the batched forms."""

    crop: tuple[int, int]
    resize_size: Any

    def _constants(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self._mean = ops.channel_constants(mean, "mean")
        self._std = ops.channel_constants(std, "std")
        ops.check_std(self._std)
        # the one pass (:mod:`.onepass`) is for 3 channels: one mean or std is for all three;
        # made ready here, so that DataLoader workers forked after have it
        three = [t.expand(3) if len(t) == 1 else t for t in (self._mean, self._std)]
        self._pass = (onepass.constants(*three, self.crop[1])
                      if all(len(t) == 3 for t in three) else None)
        onepass.warm()

    def _at_size(self, video: torch.Tensor) -> bool:
        h, w = video.shape[-2:]
        return ops.resized_size(h, w, self.resize_size) == (h, w)

    def _normalized(self, crop: torch.Tensor) -> torch.Tensor:
        """A crop converted and normalized (a new tensor: the input is never written)."""
        if crop.dtype == torch.uint8 and crop.device.type == "cpu":
            return ops.normalize_(crop.to(torch.float32), self._mean, self._std,
                                  from_uint8=True)
        x = ops.to_float(crop)  # on CUDA as torchvision there: x / 255.0 is x * (1 / 255)
        if x.data_ptr() == crop.data_ptr():
            x = x.clone()
        return ops.normalize_(x, self._mean, self._std)

    def _cut_normalized(self, video: torch.Tensor, window: Window) -> torch.Tensor:
        """``video``'s (``[T, C, H, W]``) crop at ``window``, converted and normalized: a new
        float32 ``[T, C, h, w]``; in one pass where :mod:`.onepass` takes it."""
        if self._pass is not None and onepass.applies(video):
            return onepass.crop_normalize(video, window, self.crop, self._pass)
        return self._normalized(cut(video, window, self.crop))

    def _into(self, out: torch.Tensor, video: torch.Tensor, windows: Sequence[Window],
              crop: tuple[int, int]) -> torch.Tensor:
        """Each clip of uint8 ``video`` (``[B, T, C, H, W]``, on the CPU) cut at its window,
        converted and normalized into float32 ``out`` (``[B, C, T, h, w]``): clip by clip,
        so that the passes stay in the caches; in one pass where :mod:`.onepass` takes it."""
        if (self._pass is not None and crop == self.crop
                and onepass.applies(video[0], out[0].transpose(0, 1))):
            return onepass.crop_normalize_batch(video, windows, crop, self._pass, out)
        normalize = self._from_uint8(out[0])
        for o, clip, window in zip(out, video, windows):
            normalize(o.copy_(cut(clip, window, crop).transpose(0, 1)))
        return out

    def _center(self, height: int, width: int) -> Window:
        """``CenterCrop``'s window (where the crop fits)."""
        return Window(*ops.center_window(height, width, self.crop), False)

    def windows(self, video: torch.Tensor) -> list[Window]:
        """Each clip's window: the center (no draws) unless the preset draws."""
        return [self._center(*video.shape[-2:])] * video.shape[0]

    def sample_window(self, height: int, width: int, *, seed: int, epoch: int,
                      sample: object) -> Window:
        """The window of one sample of an epoch (:func:`~.windows.sample_window`)."""
        return self._center(height, width)

    def _windows(self, video: torch.Tensor, windows: Sequence[Window] | None) -> list[Window]:
        """``windows``, one a clip of ``video`` (default: :meth:`windows`)."""
        windows = list(windows) if windows is not None else self.windows(video)
        if len(windows) != video.shape[0]:
            raise ValueError(f"{len(windows)} windows for {video.shape[0]} clips")
        return windows

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
        windows = self._windows(video, windows)
        out = empty_like_layout((*video.shape[:3], *self.crop), video, torch.uint8, alloc)
        return crop_into(out, video, windows, self.crop)

    def normalize_batch(self, video: torch.Tensor | Crops, *, alloc: Any = None,
                        memory_format: torch.memory_format = torch.preserve_format
                        ) -> torch.Tensor:
        """The float part: uint8 ``[B, T, C, h, w]`` (on any device) -> float32
        ``[B, C, T, h, w]``, ``ConvertImageDtype`` then ``Normalize`` as the preset does
        them; :class:`~.workers.Crops` (``in_workers(flip_on_device=True)``) are mirrored
        where flagged first. The output keeps the input's memory layout (``[B, T, h, w,
        C]`` storage is ``torch.channels_last_3d``), or is contiguous with ``memory_format=
        torch.contiguous_format`` (the copy then transposes: cheap on a GPU, not on a CPU)."""
        if isinstance(video, Crops):
            video = video.flipped()
        if video.dtype != torch.uint8 or video.dim() != 5:
            raise ValueError(f"expected a uint8 [B, T, C, h, w] batch, got {video.dtype} "
                             f"{tuple(video.shape)}")
        out = self._float_batch(video.shape, video, alloc, memory_format)
        if video.device.type != "cpu":
            return self._whole(out, video)
        whole = Window(0, 0, False)
        return self._into(out, video, [whole] * len(video), tuple(video.shape[-2:]))

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

    def _whole(self, out: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """``normalize_batch`` on a device: the whole batch in a few kernels."""
        self._from_uint8(out, 1)(out.copy_(video.transpose(1, 2)))
        return out

    def _from_uint8(self, like: torch.Tensor, channel_dim: int = 0) -> ops.Normalizer:
        """Normalizes float32 tensors laid out as ``like`` holding uint8 values (copied
        from a crop), with the values of the CPU's operations on any device
        (:class:`~.ops.Normalizer`'s ``from_uint8``)."""
        return ops.Normalizer(like, self._mean, self._std, channel_dim, from_uint8=True)

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
        windows = self._windows(video, windows)
        out = self._float_batch((*video.shape[:3], *self.crop), video, alloc,
                                torch.preserve_format)
        return self._into(out, video, windows, self.crop)

    def _resized_batch(self, video: torch.Tensor, windows: Sequence[Window] | None,
                       alloc: Any) -> torch.Tensor:
        clips = [self(clip) for clip in video] if windows is None else [
            self._with_window(clip, w) for clip, w in zip(video, self._windows(video, windows))]
        out = empty_like_layout((video.shape[0], *clips[0].shape), clips[0], torch.float32,
                                alloc)
        for o, c in zip(out, clips):
            o.copy_(c)
        return out

    def _with_window(self, clip: torch.Tensor, window: Window) -> torch.Tensor:
        """The per-clip preset with ``window`` (the presets without draws ignore it)."""
        return self(clip)

    def in_workers(self, *, seed: int = 0, to_float: bool = False,
                   flip_on_device: bool = False) -> InWorkers:
        """``make_loader(..., batch_transform=preset.in_workers(seed=...))``: the workers
        crop and flip each uint8 batch (``to_float=False``: then ``normalize_batch`` on the
        device after a pinned, non-blocking copy) or do it all (``to_float=True``: float
        batches, for training on the CPU). ``flip_on_device``: the workers only crop and
        hand over :class:`~.workers.Crops` (the crops and their flips), which
        ``normalize_batch`` mirrors on the device (a mirrored copy of 3-byte pixels is
        most of a CPU's part). Windows are drawn per sample from ``seed``, the epoch and
        the sample (:meth:`sample_window`): the same in any worker, with any number of
        workers, after a resume; the same outputs either way."""
        return InWorkers(self, seed=seed, to_float=to_float, flip_on_device=flip_on_device)


