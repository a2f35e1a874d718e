"""What a dataset hands out for one clip: torchvision's tuple or PyTorchVideo's dict."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import torch

from ..format.sample import parse_key

OutputFormat = Literal["TCHW", "THWC"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("TCHW", "THWC")
VIDEO_DTYPES = (torch.uint8, torch.float32)


def check_output_format(output_format: OutputFormat) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be 'TCHW' or 'THWC', got {output_format!r}")


def video_dtype_for(video_dtype: torch.dtype | None, return_dict: bool) -> torch.dtype:
    """The dtype of handed-out videos: ``video_dtype``, by default float32 for dicts (as
    PyTorchVideo's, values 0..255) and uint8 for tuples (as torchvision's)."""
    if video_dtype is None:
        return torch.float32 if return_dict else torch.uint8
    if video_dtype not in VIDEO_DTYPES:
        raise ValueError(f"video_dtype must be torch.uint8 or torch.float32, got {video_dtype}")
    return video_dtype


def make_item(video: torch.Tensor, audio: torch.Tensor, label: int, key: str, path: str | None,
              output_format: OutputFormat = "TCHW", transform: Callable[[Any], Any] | None = None,
              return_dict: bool = False, video_dtype: torch.dtype = torch.uint8) -> Any:
    """``(video, audio, label)`` like ``torchvision.datasets.Kinetics`` (``video``
    ``[T, C, H, W]`` for TCHW, a permuted view, or ``[T, H, W, C]``; ``audio`` ``[C, S]``;
    ``transform`` on the video), or with ``return_dict`` PyTorchVideo's dict (``video``
    ``[C, T, H, W]``, ``video_name``, ``video_index``, ``clip_index``, ``aug_index`` 0,
    ``label``, ``audio`` 1-D, channels averaged; ``transform`` on the dict). ``video``
    comes in uint8 ``[T, H, W, C]`` and goes out as ``video_dtype`` (values 0..255);
    ``path`` is the json's source path. A video left as JPEGs (``decode_device``) is
    handed out as it is (with no transform: the datasets refuse one).
    """
    encoded = not isinstance(video, torch.Tensor)
    if return_dict:
        video_index, clip_index = parse_key(key)
        item = {"video": video if encoded else video.permute(3, 0, 1, 2).to(video_dtype),
                "video_name": os.path.basename(path or ""), "video_index": video_index,
                "clip_index": clip_index, "aug_index": 0, "label": label,
                "audio": audio.mean(0)}
        return transform(item) if transform else item
    if encoded:
        return video, audio, label
    video = video.permute(0, 3, 1, 2) if output_format == "TCHW" else video
    video = video.to(video_dtype)
    return (transform(video) if transform else video), audio, label
