"""The tensor operations of torchvision's video presets, each as torchvision 0.28 performs it
on a tensor (same torch calls, same dtypes, same order), so that results are bit-identical:
``ConvertImageDtype(float32)``, ``Resize`` (with its size rule and its uint8 round trip),
``Normalize``, ``CenterCrop`` (padding included). Written here only because torchvision
may not be installed; each names the function of torchvision it follows.

Also :func:`normalize_` in place on any memory layout: clips from shardkin's readers are
``[T, C, H, W]`` views of ``[T, H, W, C]`` memory, on which the plain ``x - mean[:, None,
None]`` runs an inner loop of 3 elements (10-30x slower); the same values are subtracted
along the memory's own order instead.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")


def mode_of(interpolation: Any) -> str:
    """The ``F.interpolate`` mode of a torchvision ``InterpolationMode`` (or its value)."""
    mode = str(getattr(interpolation, "value", interpolation))
    if mode not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS} on tensors "
                         f"(or torchvision's InterpolationMode of one), got {interpolation!r}")
    return mode


def pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    """``(h, w)`` from an int or a sequence of 1 or 2 (torchvision's ``_setup_size``)."""
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"{what} must be an int or a sequence of 1 or 2 ints, got {size}")
    return size


def resized_size(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """The output size of torchvision's ``Resize(size)`` on a ``height x width`` image:
    ``(h, w)`` as given, or one number for the short side, the long side scaled and
    truncated (``_compute_resized_output_size`` without ``max_size``)."""
    sizes = [size] if isinstance(size, int) else list(size)
    if len(sizes) == 2:
        return int(sizes[0]), int(sizes[1])
    if len(sizes) != 1:
        raise ValueError(f"resize_size must be an int or a sequence of 1 or 2 ints, got {size}")
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(sizes[0]), int(int(sizes[0]) * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize(video: torch.Tensor, size: int | Sequence[int], mode: str = "bilinear",
           antialias: bool = False) -> torch.Tensor:
    """torchvision's ``F.resize`` on a ``[..., C, H, W]`` tensor: the input itself when
    already at the output size; else ``F.interpolate`` in float32 (other dtypes cast
    there and back, integers rounded first, bicubic uint8 clamped), as its tensor backend
    (``_functional_tensor.resize``) does."""
    h, w = video.shape[-2:]
    out = resized_size(h, w, size)
    if (h, w) == out:
        return video
    x, squeeze = (video.unsqueeze(0), True) if video.dim() < 4 else (video, False)
    cast = x.dtype not in (torch.float32, torch.float64)
    if cast:
        x = x.to(torch.float32)
    x = F.interpolate(x, size=list(out), mode=mode,
                      align_corners=False if mode in ("bilinear", "bicubic") else None,
                      antialias=antialias and mode in ("bilinear", "bicubic"))
    if mode == "bicubic" and video.dtype == torch.uint8:
        x = x.clamp(min=0, max=255)
    if squeeze:
        x = x.squeeze(0)
    if cast:
        if not video.dtype.is_floating_point:
            x = torch.round(x)
        x = x.to(video.dtype)
    return x


def to_float(video: torch.Tensor) -> torch.Tensor:
    """``ConvertImageDtype(torch.float32)``: uint8 to float32 divided by 255 (a new tensor);
    floating input cast to float32 (itself when float32, as torchvision returns it)."""
    if video.dtype == torch.uint8:
        return video.to(torch.float32).div_(255.0)
    if video.is_floating_point():
        return video.to(torch.float32)
    raise TypeError(f"expected a uint8 or floating video, got {video.dtype}")


def channel_constants(values: Sequence[float], what: str) -> torch.Tensor:
    """``Normalize``'s mean or std as float32 (``torch.as_tensor(values, dtype=float32)``)."""
    t = torch.as_tensor(list(values), dtype=torch.float32)
    if t.dim() != 1:
        raise ValueError(f"{what} must be a sequence of floats, one a channel")
    return t


def check_std(std: torch.Tensor) -> None:
    if bool((std == 0).any()):
        raise ValueError("std evaluated to zero after conversion to torch.float32, leading to "
                         "division by zero.")


@functools.lru_cache(maxsize=64)
def _constants(values: tuple[float, ...], shape: tuple[int, ...], device: str,
               rows: int = 0) -> torch.Tensor:
    """Per-channel float32 constants viewed as ``shape``, repeated ``rows`` times first
    when given (cached: tiny tensors made anew for every clip cost more than one might
    think next to the arithmetic on a crop)."""
    t = torch.tensor(values, dtype=torch.float32, device=device)
    return (t.repeat(rows) if rows else t).view(shape)


def scalar(value: float, device: torch.device) -> torch.Tensor:
    """A float32 0-dim tensor on ``device`` (cached)."""
    return _constants((value,), (), str(device))


def normalize_(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
               channel_dim: int = -3, *, from_uint8: bool = False) -> torch.Tensor:
    """``Normalize(mean, std)`` in place on float32 ``x`` (channels at ``channel_dim``):
    ``x.sub_(mean).div_(std)`` with each channel's float32 constants, the values
    torchvision's ``F.normalize`` computes (:class:`Normalizer`, made for ``x``)."""
    return Normalizer(x, mean, std, channel_dim, from_uint8=from_uint8)(x)


class Normalizer:
    """:func:`normalize_` for every tensor laid out as ``like`` (same shape, strides and
    device): the layout worked out once, so a batch's clips pay only the arithmetic (the
    per-call bookkeeping costs ~15 us, more than a small crop's passes).

    When the channels are innermost in memory (``[..., H, W, C]`` storage) the constants
    are tiled along the next dimension so the inner loop runs over whole rows.

    ``from_uint8``: ``x`` holds uint8 values not yet divided by 255 (``ConvertImageDtype``'s
    second half): on a CPU the division and the subtraction are one pass, ``addcdiv(-mean,
    x, 255)``, whose kernel computes ``-mean + x / 255`` in float32, each step rounded as
    ``x.div_(255).sub_(mean)`` rounds it (the same bits, a pass over the float crop fewer:
    its passes cost more than its arithmetic); elsewhere divided by 255 held in a device
    tensor (a true division, as the CPU's: CUDA computes ``x / 255.0`` as ``x * (1 / 255)``)."""

    def __init__(self, like: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 channel_dim: int = -3, *, from_uint8: bool = False) -> None:
        c = channel_dim % like.dim()
        self.moved: tuple[tuple[int, int], tuple[int, int]] | None = None
        if like.stride(c) == 1 and like.shape[c] > 1 and c < like.dim() - 1:
            inner = min((d for d in range(like.dim()) if d != c), key=lambda d: like.stride(d))
            self.moved = (c, inner), (-1, -2)  # [..., inner, C]: rows contiguous in memory
            rows, shape = like.shape[inner], (like.shape[inner], like.shape[c])
        else:
            rows, shape = 0, tuple(-1 if d == c else 1 for d in range(like.dim()))
        device, values = str(like.device), (tuple(mean.tolist()), tuple(std.tolist()))
        channels = like.shape[c]  # one value for all channels is broadcast, as by Normalize
        values = tuple(v * channels if len(v) == 1 else v for v in values)
        if any(len(v) != channels for v in values):
            raise ValueError(f"mean and std need a value for each of the {channels} channels "
                             f"or one for all, got {len(mean)} and {len(std)}")
        self.fused = from_uint8 and like.device.type == "cpu"
        self.divide = from_uint8 and not self.fused
        negated = tuple(-m for m in values[0])  # exact: a float32 negated
        self.mean = _constants(negated if self.fused else values[0], shape, device, rows)
        self.std = _constants(values[1], shape, device, rows)
        self.scale = scalar(255.0, like.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (laid out as ``like``) normalized in place; returns ``x``."""
        v = x if self.moved is None else x.movedim(*self.moved)
        if self.fused:
            torch.addcdiv(self.mean, v, self.scale, out=v)
        else:
            if self.divide:
                v.div_(self.scale)
            v.sub_(self.mean)
        v.div_(self.std)
        return x


def center_window(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
    """Top and left of ``CenterCrop(crop)`` when it fits (``int(round((H - h) / 2.0))``)."""
    return int(round((height - crop[0]) / 2.0)), int(round((width - crop[1]) / 2.0))


def fits(height: int, width: int, crop: tuple[int, int]) -> bool:
    return crop[0] <= height and crop[1] <= width


def center_crop(x: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """torchvision's ``F.center_crop`` on a tensor: zero-padded first (left/top half the
    shortfall, rounded down) where the image is smaller than ``crop``, then cut."""
    h, w = x.shape[-2:]
    th, tw = crop
    if not fits(h, w, crop):
        pad = [(tw - w) // 2 if tw > w else 0, (tw - w + 1) // 2 if tw > w else 0,
               (th - h) // 2 if th > h else 0, (th - h + 1) // 2 if th > h else 0]
        x = F.pad(x, pad, mode="constant", value=0.0)
        h, w = x.shape[-2:]
        if (h, w) == (th, tw):
            return x
    top, left = center_window(h, w, crop)
    return x[..., top : top + th, left : left + tw]
