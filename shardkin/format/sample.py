"""The sample format shared by the writer and the reader (format versions 1 to 3).

One clip is one WebDataset sample, tar members sharing a key:

- ``KEY.video.npy``  uint8 ``[T, H, W, 3]`` RGB frames (npy v1.0, C order), or
  ``KEY.video.npy.zst`` / ``KEY.video.jpgs`` for the other codecs (see :mod:`.codecs`)
- ``KEY.audio.npy``  float32 ``[C, S]`` audio that plays during the clip, or
  ``KEY.audio.flac``, or no audio member at all (audio codecs: see :mod:`.audio`)
- ``KEY.cls``        the label as an ASCII decimal integer
- ``KEY.json``       UTF-8 metadata (see :func:`clip_metadata`)

A build with raw audio is format version 1, as every build was before audio codecs;
flac or no audio make it version 2, so that older readers refuse it by its version
instead of taking every sample for incomplete; the jpeg codec makes it version 3 (a
clip is one JPEG, :mod:`.jpeg`, where versions 1 and 2 stored one JPEG a frame), which
readers of versions 1-2 would call corrupt.

``KEY`` is ``{video_index:08d}_{clip_index:06d}``: unique, ASCII, no dot.
npy payloads are parsed (:mod:`shardkin.npy`) without ``numpy.load`` and only for
the dtypes above, so nothing in a shard can ever be unpickled. Tar members are grouped
into samples by :mod:`shardkin.format.samples`.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from . import audio as audio_codecs
from .checks import audio_problem, require, video_problem
from .codecs import JPEG, JPEG_PSNR, MEMBER, RAW, encode_video

FORMAT_VERSION = 3  # the newest; readers read every one of FORMAT_VERSIONS
FORMAT_VERSIONS = (1, 2, 3)
VIDEO = MEMBER[RAW]
AUDIO = audio_codecs.AUDIO_MEMBER[audio_codecs.RAW]
LABEL = "cls"
META = "json"
AUDIO_MARKS = "audio_marks"
REST = "rest"  # json key and member prefix of what follows a clip (see encode_sample)


def sample_key(video_index: int, clip_index: int) -> str:
    return f"{video_index:08d}_{clip_index:06d}"


def parse_key(key: str) -> tuple[int, int]:
    """``'00000012_000003'`` -> ``(12, 3)``; ValueError for a key shardkin did not make."""
    video, sep, clip = key.partition("_")
    if not (sep and video.isdigit() and clip.isdigit()):
        raise ValueError(f"sample key {key!r} is not VIDEO_CLIP")
    return int(video), int(clip)


def format_version(audio_codec: str, video_codec: str = RAW) -> int:
    """The format version of a build with these codecs (see the module): the lowest whose
    readers read it, so that older readers keep reading what they can."""
    if video_codec == JPEG:
        return 3
    return 1 if audio_codec == audio_codecs.RAW else 2


def split_member(name: str) -> tuple[str, str]:
    """``'KEY.video.npy'`` -> ``('KEY', 'video.npy')`` (split at the first dot)."""
    key, _, ext = name.partition(".")
    return key, ext


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
    audio_codec: str = audio_codecs.RAW,
    video_codec: str = RAW,
    audio_marks: dict[str, Any] | None = None,
    rest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``json`` member: where a clip came from (and, from format version 2, how its
    sound is stored; ``format_version`` follows both codecs). ``audio_marks`` (clips with
    sound; older builds lack it): ``first``, the index in the video's decoded audio of the
    clip's first sample, and per frame the index of the first sample at or after its start
    (``starts``) and its end (``ends``),
    so that windows cut at read time take exactly the samples a build of theirs would.
    ``rest``: what the sample's ``rest.*`` members hold (:func:`encode_sample`): ``frames``
    in ``rest.video``, and with sound ``first``, the index of ``rest.audio``'s first
    sample, and the marks of those frames."""
    version = format_version(audio_codec, video_codec)
    return {
        "format_version": version,
        **({"audio_codec": audio_codec} if version > 1 else {}),
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
        **({AUDIO_MARKS: audio_marks} if audio_marks is not None else {}),
        **({REST: rest} if rest is not None else {}),
    }


def encode_sample(
    video: np.ndarray, audio: np.ndarray, label: int, meta: dict[str, Any],
    codec: str = RAW, zstd_level: int = 3, jpeg_quality: int | None = None,
    jpeg_psnr: float = JPEG_PSNR, audio_codec: str = audio_codecs.RAW,
    rest_video: np.ndarray | None = None, rest_audio: np.ndarray | None = None,
) -> list[tuple[str, bytes]]:
    """(member extension, payload) pairs, in the order they are written; the audio is
    at ``meta["audio_rate"]`` Hz (no member for ``audio_codec="none"``).

    A contiguous build keeps what follows a clip in ``rest.``-prefixed members, which
    only readers cutting clips at read time load: ``rest.video.*`` (a video's tail, the
    frames after its last clip, on that clip's sample) and ``rest.audio.*`` (the sound
    from the clip's end to the next clip's start, or to the tail's end), in the
    sample's codecs."""
    require(video_problem(video.dtype, video.shape))
    require(audio_problem(audio.dtype, audio.shape))
    rate = meta.get("audio_rate") or 0
    sound = audio_codecs.encode_audio(audio, audio_codec, rate)
    rest = []
    if rest_video is not None:
        ext, data = encode_video(rest_video, codec, zstd_level, jpeg_quality, jpeg_psnr)
        rest.append((f"{REST}.{ext}", data))
    if rest_audio is not None and audio_codec != audio_codecs.NONE:
        ext, data = audio_codecs.encode_audio(rest_audio, audio_codec, rate)
        rest.append((f"{REST}.{ext}", data))
    return [
        encode_video(video, codec, zstd_level, jpeg_quality, jpeg_psnr),
        *([sound] if sound else []),
        *rest,
        (LABEL, str(int(label)).encode("ascii")),
        (META, json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")),
    ]


def decode_label(data: bytes) -> int:
    return int(bytes(data).decode("ascii"))


def decode_meta(data: bytes) -> dict[str, Any]:
    return json.loads(bytes(data).decode("utf-8"))
