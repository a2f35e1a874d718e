"""Where a clip's crop lies and whether it is mirrored: drawn as torchvision draws it, or
from a seed, the epoch and the sample (per-sample draws that any worker repeats); and the
uint8 crop itself, written into a batch."""
from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import torch


class Window(NamedTuple):
    """A crop of the input (before any flip: ``top``/``left`` in the input's own rows and
    columns), mirrored left-right afterwards when ``flip``."""

    top: int
    left: int
    flip: bool


def check_crop(height: int, width: int, crop: tuple[int, int]) -> None:
    if crop[0] > height or crop[1] > width:
        raise ValueError(f"Required crop size {crop} is larger than input image size "
                         f"{(height, width)}")


def draw_window(height: int, width: int, crop: tuple[int, int], hflip_prob: float,
                generator: torch.Generator | None = None) -> Window:
    """The draws of ``RandomHorizontalFlip(hflip_prob)`` then ``RandomCrop(crop)``, in that
    order from ``generator`` (torch's global one by default), exactly as torchvision makes
    them: ``torch.rand(1) < p`` (no draw when ``hflip_prob`` is 0, as the preset then has no
    flip), then ``torch.randint(0, H - h + 1)`` and ``torch.randint(0, W - w + 1)`` (none
    when the crop is the whole image). The crop was drawn on the flipped image: its column
    offset is mirrored back into the input's columns."""
    flip = hflip_prob > 0 and bool(torch.rand(1, generator=generator) < hflip_prob)
    check_crop(height, width, crop)
    th, tw = crop
    if (height, width) == (th, tw):
        return Window(0, 0, flip)
    top = int(torch.randint(0, height - th + 1, size=(1,), generator=generator).item())
    left = int(torch.randint(0, width - tw + 1, size=(1,), generator=generator).item())
    return Window(top, width - tw - left if flip else left, flip)


def sample_window(height: int, width: int, crop: tuple[int, int], hflip_prob: float, *,
                  seed: int, epoch: int, sample: object) -> Window:
    """A window drawn from ``(seed, epoch, sample)`` alone: the same in any worker, after a
    resume, for any batch the sample lands in. Flip with probability ``hflip_prob``, top
    and left uniform, as :func:`draw_window`'s, but from a hash of the three
    (blake2b: 2 us where seeding a torch generator and drawing costs 20-40 us a clip)."""
    check_crop(height, width, crop)
    digest = hashlib.blake2b(f"shardkin/{seed}/{epoch}/{sample}".encode(), digest_size=24).digest()
    u, a, b = (int.from_bytes(digest[i : i + 8], "little") for i in (0, 8, 16))
    flip = hflip_prob > 0 and (u >> 11) * 2.0**-53 < hflip_prob
    # multiply-shift maps 64 random bits onto range(n) (bias below n / 2**64)
    top = (a * (height - crop[0] + 1)) >> 64
    left = (b * (width - crop[1] + 1)) >> 64
    return Window(top, left, flip)


def cut(video: torch.Tensor, window: Window, crop: tuple[int, int]) -> torch.Tensor:
    """``video[..., top:top+h, left:left+w]``, mirrored when ``window.flip`` (a view when not)."""
    th, tw = crop
    x = video[..., window.top : window.top + th, window.left : window.left + tw]
    return x.flip(-1) if window.flip else x


def empty_like_layout(shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype,
                      alloc: Any = None) -> torch.Tensor:
    """A new tensor of ``shape`` laid out in memory as ``like`` is (e.g. ``[B, T, C, h, w]``
    stored as ``[B, T, h, w, C]`` when ``like`` is), from ``alloc(shape, dtype)`` when
    given. ``shape`` may have leading dimensions more than ``like``: they are outermost."""
    lead = len(shape) - like.dim()
    inner = sorted(range(like.dim()), key=lambda d: (-like.stride(d), d))
    order = [*range(lead), *(d + lead for d in inner)]
    stored = tuple(shape[d] for d in order)
    t = (alloc(stored, dtype) if alloc is not None
         else torch.empty(stored, dtype=dtype, device=like.device))
    return t.permute(sorted(range(len(order)), key=lambda d: order[d]))


def crop_into(out: torch.Tensor, video: torch.Tensor, windows: list[Window],
              crop: tuple[int, int]) -> torch.Tensor:
    """Each clip's window of ``video`` ``[B, ..., H, W]`` into ``out[b]`` ``[B, ..., h, w]``."""
    for b, window in enumerate(windows):
        out[b].copy_(cut(video[b], window, crop))
    return out
