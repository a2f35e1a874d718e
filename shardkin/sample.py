"""The sample format shared by the writer and the reader (format version 1).

One clip is one WebDataset sample, four tar members sharing a key:

- ``KEY.video.npy``  uint8 ``[T, H, W, 3]`` RGB frames (npy v1.0, C order)
- ``KEY.audio.npy``  float32 ``[C, S]`` audio that plays during the clip
- ``KEY.cls``        the label as an ASCII decimal integer
- ``KEY.json``       UTF-8 metadata (see :func:`clip_metadata`)

``KEY`` is ``{video_index:08d}_{clip_index:06d}``: unique, ASCII, no dot.
npy payloads are parsed here without ``numpy.load`` and only for the dtypes
above, so nothing in a shard can ever be unpickled.
"""
from __future__ import annotations

import ast
import io
import json
from typing import Any

import numpy as np

FORMAT_VERSION = 1
VIDEO = "video.npy"
AUDIO = "audio.npy"
LABEL = "cls"
META = "json"
MEMBERS = (VIDEO, AUDIO, LABEL, META)
_DTYPES = {"|u1": np.uint8, "<f4": np.float32, "<i8": np.int64}


def sample_key(video_index: int, clip_index: int) -> str:
    return f"{video_index:08d}_{clip_index:06d}"


def split_member(name: str) -> tuple[str, str]:
    """``'KEY.video.npy'`` -> ``('KEY', 'video.npy')`` (split at the first dot)."""
    key, _, ext = name.partition(".")
    return key, ext


def encode_npy(array: np.ndarray) -> bytes:
    """npy v1.0 bytes of a uint8, float32 or int64 array."""
    array = np.ascontiguousarray(array)
    if array.dtype.str not in _DTYPES:
        raise TypeError(f"unsupported dtype {array.dtype}")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return b"".join([header.getvalue(), array.reshape(-1).view(np.uint8).data])


def decode_npy(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Array over ``data`` without copying; only uint8/float32/int64, never pickle."""
    view = memoryview(data)
    if bytes(view[:8]) != b"\x93NUMPY\x01\x00":
        raise ValueError("not an npy v1.0 payload")
    header_len = int.from_bytes(view[8:10], "little")
    header = ast.literal_eval(bytes(view[10 : 10 + header_len]).decode("latin1"))
    dtype = _DTYPES.get(header.get("descr"))
    if dtype is None or header.get("fortran_order"):
        raise ValueError(f"unsupported npy header {header!r}")
    shape = tuple(int(d) for d in header["shape"])
    count = int(np.prod(shape)) if shape else 1
    array = np.frombuffer(view, dtype=dtype, count=count, offset=10 + header_len)
    return array.reshape(shape)


def clip_metadata(
    *,
    path: str,
    class_name: str,
    label: int,
    video_index: int,
    clip_index: int,
    source_frames: list[int],
    start_sec: float,
    end_sec: float,
    fps: float,
    source_fps: float,
    audio_rate: int,
) -> dict[str, Any]:
    """The ``json`` member: where a clip came from."""
    return {
        "format_version": FORMAT_VERSION,
        "path": path,
        "class": class_name,
        "label": label,
        "video_index": video_index,
        "clip_index": clip_index,
        "source_frames": source_frames,
        "start_sec": start_sec,
        "end_sec": end_sec,
        "fps": fps,
        "source_fps": source_fps,
        "audio_rate": audio_rate,
    }


def encode_sample(
    video: np.ndarray, audio: np.ndarray, label: int, meta: dict[str, Any]
) -> list[tuple[str, bytes]]:
    """(member extension, payload) pairs, in the order they are written."""
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 [T,H,W,3], got {video.dtype} {video.shape}")
    if audio.dtype != np.float32 or audio.ndim != 2:
        raise ValueError(f"audio must be float32 [C,S], got {audio.dtype} {audio.shape}")
    return [
        (VIDEO, encode_npy(video)),
        (AUDIO, encode_npy(audio)),
        (LABEL, str(int(label)).encode("ascii")),
        (META, json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")),
    ]


def decode_label(data: bytes) -> int:
    return int(bytes(data).decode("ascii"))


def decode_meta(data: bytes) -> dict[str, Any]:
    return json.loads(bytes(data).decode("utf-8"))
