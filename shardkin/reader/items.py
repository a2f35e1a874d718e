"""What a dataset hands out for one clip: torchvision's tuple or PyTorchVideo's dict."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from ..format.sample import parse_key

OUTPUT_FORMATS = ("TCHW", "THWC")


def check_output_format(output_format: str) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be 'TCHW' or 'THWC', got {output_format!r}")


def make_item(video: torch.Tensor, audio: torch.Tensor, label: int, key: str, path: str | None,
              output_format: str = "TCHW", transform: Callable[[Any], Any] | None = None,
              return_dict: bool = False) -> Any:
    """``(video, audio, label)`` like ``torchvision.datasets.Kinetics`` (``video`` uint8
    ``[T, C, H, W]`` for TCHW, a permuted view, or ``[T, H, W, C]``; ``transform`` on the
    video), or with ``return_dict`` PyTorchVideo's dict (``video`` ``[C, T, H, W]``,
    ``audio``, ``label``, ``video_name``, ``video_index``, ``clip_index``; ``transform``
    on the dict). ``video`` comes in as ``[T, H, W, C]``; ``path`` is the json's source path.
    """
    if return_dict:
        video_index, clip_index = parse_key(key)
        item = {"video": video.permute(3, 0, 1, 2), "audio": audio, "label": label,
                "video_name": os.path.basename(path or ""), "video_index": video_index,
                "clip_index": clip_index}
        return transform(item) if transform else item
    video = video.permute(0, 3, 1, 2) if output_format == "TCHW" else video
    return (transform(video) if transform else video), audio, label
