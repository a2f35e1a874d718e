"""The presets' CPU float part in one pass, compiled with numba: a uint8 crop converted and
normalized as it is cut (``pip install "shardkin[fast]"``; without numba, or with
``SHARDKIN_JIT=0``, the presets take torch's passes, the same values).

Why by hand: torch needs three passes over the float crop (a cast, ``addcdiv``, ``div``:
2.4 MB each for 16x112x112, out of the L2 cache); one pass computes each value where it is
written: ``(v / 255 - mean) / std`` in float32, the operations torchvision makes, in its
order, each rounded as IEEE rounds it (vectorized divisions, nothing fused into an FMA), so
the values are torchvision's bit for bit. A mirrored crop is torch's flip first (3-byte
pixels do not vectorize reversed), then the pass.

Only for uint8 ``[T, 3, H, W]`` CPU clips stored as ``[T, H, W, 3]`` (shardkin's clips), into
``[T, h, w, 3]`` memory, as torch's passes lay their output out.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch

from .windows import Window, cut


class Constants(NamedTuple):
    """``Normalize``'s float32 mean and std along a row of a crop (a value a channel, the
    three repeated across the crop's width)."""

    mean: np.ndarray
    std: np.ndarray


def constants(mean: torch.Tensor, std: torch.Tensor, width: int) -> Constants:
    """:class:`Constants` of float32 ``mean`` and ``std`` (3 values) for crops ``width`` wide."""
    return Constants(mean.repeat(width).numpy(), std.repeat(width).numpy())


@functools.cache
def _kernel() -> Any:
    """The compiled pass, or None without numba (imported on first use: 0.3 s)."""
    if os.environ.get("SHARDKIN_JIT", "1") == "0":
        return None
    try:
        import numba
    except ModuleNotFoundError:  # not installed: torch's passes, as documented
        return None
    except Exception as e:  # installed but broken (e.g. built for another numpy)
        return _off(e)

    def crop_normalize(src, top, left, mean, std, out):
        frames, height, width = out.shape[:3]
        scale = np.float32(255.0)
        for t in range(frames):
            for y in range(height):
                row = src[t, top + y, left : left + width].reshape(-1)
                into = out[t, y].reshape(-1)
                for i in range(into.size):
                    into[i] = (np.float32(row[i]) / scale - mean[i]) / std[i]

    try:  # cache=True: compiled once a machine (about 1 s), loaded from disk after (0.2 s);
        # error_model="numpy": no zero check on each division, so that the rows vectorize
        return numba.njit(cache=True, nogil=True, boundscheck=False,
                          error_model="numpy")(crop_normalize)
    except Exception as e:  # e.g. no writable cache directory
        return _off(e)


def _off(why: Exception) -> None:
    """Says once (``_kernel`` is cached) why numba is there but not used."""
    warnings.warn(f"shardkin.transforms: numba's one pass is off ({why}); the presets run "
                  "torch's passes (the same values)", RuntimeWarning, stacklevel=3)


def enabled() -> bool:
    """Whether the one pass is there (numba installed, ``SHARDKIN_JIT`` not ``0``)."""
    return _kernel() is not None


def warm() -> None:
    """Has the pass compiled (or loaded from numba's cache) now, if it is there, so that
    DataLoader workers forked from this process have it (later calls: a few µs)."""
    if enabled():
        one = torch.zeros((1, 1, 1, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
        crop_normalize(one, Window(0, 0, False), (1, 1), constants(*torch.ones(2, 3), 1))


def _stored_thwc(x: torch.Tensor) -> bool:
    """``[T, 3, H, W]`` stored as contiguous ``[T, H, W, 3]``."""
    return x.dim() == 4 and x.shape[1] == 3 and x.permute(0, 2, 3, 1).is_contiguous()


def applies(video: torch.Tensor, out: torch.Tensor | None = None) -> bool:
    """Whether ``video`` (and ``out``, when given) can take the one pass: a uint8 CPU
    ``[T, 3, H, W]`` clip stored as ``[T, H, W, 3]``, a float32 output stored so too."""
    return (video.dtype == torch.uint8 and video.device.type == "cpu" and _stored_thwc(video)
            and (out is None or (out.dtype == torch.float32 and out.device.type == "cpu"
                                 and _stored_thwc(out)))
            and enabled())


def crop_normalize(video: torch.Tensor, window: Window, crop: tuple[int, int],
                   consts: Constants, out: torch.Tensor | None = None) -> torch.Tensor:
    """``video``'s crop at ``window`` (mirrored when it says so), converted and normalized:
    float32 ``[T, 3, h, w]`` stored as ``[T, h, w, 3]`` (``out`` when given), where
    :func:`applies`; ``consts`` from :func:`constants` for width ``w``."""
    frames, th, tw = video.shape[0], *crop
    _check(video, out, (frames, 3, th, tw))
    if out is None:
        out = torch.empty((frames, th, tw, 3), dtype=torch.float32).permute(0, 3, 1, 2)
    return _run(video, window, crop, consts, out)


def crop_normalize_batch(video: torch.Tensor, windows: list[Window], crop: tuple[int, int],
                         consts: Constants, out: torch.Tensor) -> torch.Tensor:
    """:func:`crop_normalize` of each clip of ``video`` (``[B, T, 3, H, W]``) at its window
    into ``out`` (``[B, 3, T, h, w]``), the layouts checked once for the batch."""
    if len(windows) != len(video) or len(out) != len(video) or not len(video):
        raise ValueError(f"{len(windows)} windows and {len(out)} outputs for {len(video)} clips")
    _check(video[0], out[0].transpose(0, 1), (video.shape[1], 3, *crop))
    for clip, window, o in zip(video, windows, out):
        _run(clip, window, crop, consts, o.transpose(0, 1))
    return out


def _check(video: torch.Tensor, out: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    if out is not None and tuple(out.shape) != shape:
        raise ValueError(f"out is {tuple(out.shape)}, the crop {shape}")
    if not applies(video, out):  # numba would compile for other layouts, slowly, or fail
        raise ValueError("the one pass takes uint8 [T, 3, H, W] stored as [T, H, W, 3] into "
                         "float32 stored so (applies() says whether)")


def _run(video: torch.Tensor, window: Window, crop: tuple[int, int], consts: Constants,
         out: torch.Tensor) -> torch.Tensor:
    """The pass on checked layouts: the window is checked here (the kernel has no bounds
    checks), mirrored crops are torch's flip first."""
    height, width = video.shape[-2:]
    th, tw = crop
    if not (0 <= window.top <= height - th and 0 <= window.left <= width - tw
            and consts.mean.size == 3 * tw):
        raise ValueError(f"window {window} of {crop} does not fit {height}x{width}")
    if window.flip:  # torch's mirrored copy of the crop ([T, h, w, 3] memory), whole
        video = cut(video, window, crop).contiguous(memory_format=torch.channels_last)
        window = Window(0, 0, False)
    _kernel()(video.permute(0, 2, 3, 1).numpy(), window.top, window.left, consts.mean,
              consts.std, out.permute(0, 2, 3, 1).numpy())
    return out
