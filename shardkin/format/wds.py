"""shardkin shards in a webdataset pipeline: ``WebDataset(urls).decode(decoder)``.

:func:`decoder` is a webdataset decode handler: webdataset calls it as
``handler(key, data)`` for each member of a sample (``key`` is ``"." + extension``)
and it returns the decoded value, or None for a member it does not handle, so
webdataset's own handlers (``.decode("torchrgb", decoder)``) still see those::

    import webdataset as wds
    import shardkin

    ds = (wds.WebDataset(urls, shardshuffle=False).decode(shardkin.wds_decoder)
          .to_tuple("video.npy;video.npy.zst;video.jpgs", "audio.npy;audio.flac", "cls"))

It decodes every codec to the tensors shardkin's readers give with
``output_format="THWC"``: the video member (``video.npy``, ``video.npy.zst`` or
``video.jpgs``, either layout: one JPEG a clip or, format versions 1-2, a frame) as uint8
``[T, H, W, 3]`` (as stored; ``.permute(0, 3, 1, 2)`` gives the readers' default
``[T, C, H, W]``), the audio member (``audio.npy`` or
``audio.flac``; ``"audio.npy;audio.flac"`` in ``to_tuple``) as float32 ``[C, S]``,
``cls`` as an int and ``json`` as a dict; ``rest.video.*`` and ``rest.audio.*`` (what
a contiguous build keeps after a clip) like the video and audio members. A build with
``audio_codec="none"`` has no audio member (the readers give an empty ``[1, 0]``).
npy payloads are parsed by :mod:`.npy`, never unpickled. torch is imported on the
first decoded array, not with this module.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .audio import AUDIO_MEMBERS, decode_audio
from .checks import audio_problem, require, video_problem
from .codecs import VIDEO_MEMBERS, decode_video
from .sample import LABEL, META, REST, decode_label, decode_meta


def decoder(key: str, data: bytes) -> Any:
    """webdataset handler for shardkin's members (see the module); None for others."""
    ext = key.lower().removeprefix(".").removeprefix(f"{REST}.")
    if ext in VIDEO_MEMBERS:
        video = decode_video(ext, data)
        require(video_problem(video.dtype, video.shape))
        return _tensor(video)
    if ext in AUDIO_MEMBERS:
        audio = decode_audio(ext, data)
        require(audio_problem(audio.dtype, audio.shape))
        return _tensor(audio)
    if ext == LABEL:
        return decode_label(data)
    if ext == META:
        return decode_meta(data)
    return None


def _tensor(array: np.ndarray) -> Any:
    """A torch tensor owning writable memory (arrays over ``bytes`` are read-only)."""
    import torch

    return torch.from_numpy(array if array.flags.writeable else array.copy())
