"""How a clip's sound is stored: the audio member of a sample, one per audio codec.

| codec | member         | payload                                                       |
|-------|----------------|---------------------------------------------------------------|
| raw   | ``audio.npy``  | npy v1.0, float32 ``[C, S]`` as decoded                       |
| flac  | ``audio.flac`` | a plain FLAC stream of the samples in 16 bits                 |
| none  | (none)         | nothing: readers give an empty float32 ``[1, 0]``             |

flac stores a sample ``x`` as ``rint(x * 32768)`` clipped to int16 and reads it back as
that over 32768: within ``2**-16`` of ``x`` in ``[-1, 1 - 2**-15]``, clipped to that range
outside it. The stream is ``fLaC``, one STREAMINFO block (rate, channels 1-8, 16 bits, the
exact sample count, the MD5 of the samples as the FLAC format defines it: interleaved
little-endian int16), then the FLAC frames of FFmpeg's encoder (through PyAV): any FLAC
tool reads it. Frames are decoded with their CRCs checked;
``check_md5`` also checks the MD5 (``shardkin verify`` does).
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection

import numpy as np

from .npy import decode_npy, encode_npy

RAW, FLAC, NONE = "raw", "flac", "none"
AUDIO_CODECS = (RAW, FLAC, NONE)
AUDIO_MEMBER = {RAW: "audio.npy", FLAC: "audio.flac"}
AUDIO_MEMBERS = tuple(AUDIO_MEMBER.values())
SCALE = 32768  # float32 full scale -> int16
_HEAD = b"fLaC\x80\x00\x00\x22"  # magic, then the last metadata block: STREAMINFO, 34 bytes
FLAC_HEAD = len(_HEAD) + 34  # bytes before the first frame


def encode_audio(audio: np.ndarray, codec: str = RAW, rate: int = 0) -> tuple[str, bytes] | None:
    """(member extension, payload) of float32 ``[C, S]`` samples at ``rate`` Hz; None
    for ``none`` (no member)."""
    if codec == RAW:
        return AUDIO_MEMBER[RAW], encode_npy(audio)
    if codec == FLAC:
        return AUDIO_MEMBER[FLAC], _encode_flac(audio, rate)
    if codec == NONE:
        return None
    raise ValueError(f"unknown audio codec {codec!r}: use {', '.join(AUDIO_CODECS)}")


def audio_member(members: Collection[str]) -> str | None:
    """Which of a sample's members holds its sound (None: an ``audio_codec=none`` sample)."""
    return next((m for m in AUDIO_MEMBERS if m in members), None)


def flac_layout(head: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(channels, samples, rate) of an ``audio.flac`` payload from its first bytes."""
    if bytes(head[: len(_HEAD)]) != _HEAD or len(head) < FLAC_HEAD:
        raise ValueError("not a shardkin audio.flac payload (fLaC with one STREAMINFO block)")
    packed = int.from_bytes(head[18:26], "big")  # rate:20 channels-1:3 bits-1:5 samples:36
    if (packed >> 36) & 31 != 15:
        raise ValueError(f"audio.flac holds {((packed >> 36) & 31) + 1}-bit samples, not 16")
    return ((packed >> 41) & 7) + 1, packed & ((1 << 36) - 1), packed >> 44


def decode_audio(member: str, data: bytes | bytearray | memoryview,
                 check_md5: bool = False) -> np.ndarray:
    """float32 ``[C, S]`` samples of an audio member (raw: no copy)."""
    if member == AUDIO_MEMBER[RAW]:
        return decode_npy(data)
    if member == AUDIO_MEMBER[FLAC]:
        return _decode_flac(memoryview(data), check_md5).astype(np.float32) / SCALE
    raise ValueError(f"{member!r} is not an audio member (one of {', '.join(AUDIO_MEMBERS)})")


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """The int16 samples flac stores for float32 ``audio`` (rounded half to even, clipped)."""
    return np.clip(np.rint(audio * np.float32(SCALE)), -SCALE, SCALE - 1).astype(np.int16)


def _encode_flac(audio: np.ndarray, rate: int) -> bytes:
    import av

    channels, samples = audio.shape
    if not 1 <= channels <= 8:
        raise ValueError(f"FLAC holds 1 to 8 channels, not {channels}: use --audio-channels")
    if samples == 0:  # nothing for the encoder: STREAMINFO alone (block sizes 16)
        packed = rate << 44 | (channels - 1) << 41 | 15 << 36
        return _HEAD + struct.pack(">HH6xQ", 16, 16, packed) + hashlib.md5().digest()
    encoder = av.CodecContext.create("flac", "w")
    encoder.sample_rate, encoder.format = rate, "s16"
    encoder.layout = av.AudioLayout(f"{channels}c")
    interleaved = np.ascontiguousarray(to_pcm16(audio).T)
    frame = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="s16",
                                       layout=encoder.layout)
    frame.sample_rate, frame.pts = rate, 0
    frames = [bytes(p) for f in (frame, None) for p in encoder.encode(f)]
    info = bytes(encoder.extradata)[:18] + _md5(interleaved)  # STREAMINFO final once flushed
    data = _HEAD + info + b"".join(frames)
    if flac_layout(data)[:2] != (channels, samples):
        raise ValueError(f"the FLAC encoder recorded {flac_layout(data)[:2]} for "
                         f"{channels} channels of {samples} samples")
    return data


def _decode_flac(view: memoryview, check_md5: bool) -> np.ndarray:
    """int16 ``[C, S]`` samples of an ``audio.flac`` payload, checked against STREAMINFO."""
    channels, samples, _ = flac_layout(view[:FLAC_HEAD])
    if samples == 0:
        if len(view) != FLAC_HEAD:
            raise ValueError("audio.flac of no samples has frames")
        return np.zeros((channels, 0), np.int16)
    import av

    decoder = av.CodecContext.create("flac", "r")
    decoder.extradata = bytes(view[len(_HEAD):FLAC_HEAD])
    decoder.options = {"err_detect": "crccheck+explode"}  # a damaged frame is an error
    packet = av.Packet(view[FLAC_HEAD:])  # the decoder takes its frames one after another
    parts = [f.to_ndarray() for p in (packet, None) for f in decoder.decode(p)]
    pcm = np.concatenate(parts, axis=1) if parts else np.zeros((1, 0), np.int16)
    if pcm.dtype != np.int16 or pcm.size != channels * samples:
        raise ValueError(f"audio.flac decoded to {pcm.size} {pcm.dtype} values, its "
                         f"STREAMINFO says {channels} channels of {samples} samples")
    pcm = pcm.reshape(samples, channels).T if pcm.shape[0] == 1 else pcm  # interleaved
    if check_md5 and _md5(pcm.T) != bytes(view[26:42]):
        raise ValueError("audio.flac samples do not match the MD5 in its STREAMINFO")
    return pcm


def _md5(interleaved: np.ndarray) -> bytes:
    """The MD5 a FLAC STREAMINFO holds: of the samples, interleaved, as little-endian int16."""
    return hashlib.md5(np.ascontiguousarray(interleaved, "<i2").tobytes()).digest()
