"""How a clip's sound is stored: the audio member of a sample, one per audio codec.

| codec | member         | payload                                                       |
|-------|----------------|---------------------------------------------------------------|
| raw   | ``audio.npy``  | npy v1.0, float32 ``[C, S]`` as decoded                       |
| flac  | ``audio.flac`` | a plain FLAC stream of the samples in 16 bits, with a gain    |
| none  | (none)         | nothing: readers give an empty float32 ``[1, 0]``             |

flac scales each clip to full scale: it stores ``rint(x / gain)`` in int16, where ``gain``
is the clip's peak ``max|x|`` over 32767 rounded up to 9 significant bits (at most 0.4%
more), and reads back ``int16 * gain`` in float32. Every sample comes back within
``gain / 2`` of ``x``: half a quantisation step of the clip's own peak,
``peak / 32767 / 2`` (at most 0.4% more), whatever its level; nothing is clipped (the
peak maps to 32639-32767 in magnitude, samples beyond 1.0 included). Why 9 bits: 15 bits
of sample times 9 of gain fit a float32 mantissa, so the product is exact (numpy, torch
and float64 readers agree to the bit) and the bound holds exactly, where a power-of-two
gain would cost up to 6 dB and an unrounded one an extra float32 rounding. A silent or
empty clip has the gain 2**-15; the gain is at least 2**-126 (the step of peaks below
2**-111); samples must be finite and below 2**120. The gain is a FLAC VORBIS_COMMENT tag,
``SHARDKIN_GAIN=<repr of the float>``, the one block after STREAMINFO (ffprobe or
metaflac show it; a plain FLAC player plays the scaled samples). Members written before
gains (STREAMINFO the last block, no tag) read as ``int16 / 32768``, as they always did.

The stream is ``fLaC``, STREAMINFO (rate, channels 1-8, 16 bits, the exact sample
count, the MD5 of the stored int16 samples as the FLAC format defines it: interleaved
little-endian), the gain tag, then the FLAC frames of FFmpeg's encoder (through PyAV):
any FLAC tool reads it. Frames are decoded with their CRCs checked, and the tag must be
exactly as written, a canonical float of 9 significant bits (a damaged one is an error,
not a silent change of scale); ``check_md5`` also checks the MD5 (``shardkin verify``
does).
"""
from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Collection

import numpy as np

from .npy import decode_npy, encode_npy

RAW, FLAC, NONE = "raw", "flac", "none"
AUDIO_CODECS = (RAW, FLAC, NONE)
AUDIO_MEMBER = {RAW: "audio.npy", FLAC: "audio.flac"}
AUDIO_MEMBERS = tuple(AUDIO_MEMBER.values())
SCALE = 32768  # the fixed float32 full scale -> int16 of members written before gains
FULL = 32767  # a clip's peak is stored as +-FULL
GAIN_TAG = "SHARDKIN_GAIN"
_GAIN_BITS = 9  # significant bits of a gain: 15 + 9 <= 24, so int16 * gain is exact
_TINY, _HUGE = 2.0**-126, 2.0**120  # smallest gain (a normal float32); largest peak
_MAGIC = b"fLaC"
_INFO_LAST = b"\x80\x00\x00\x22"  # STREAMINFO, 34 bytes, the last block (before gains)
_INFO = b"\x00\x00\x00\x22"  # STREAMINFO, 34 bytes, the gain block follows
FLAC_HEAD = len(_MAGIC) + len(_INFO) + 34  # bytes flac_layout reads: magic, STREAMINFO
_VENDOR = b"shardkin"


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
    if (len(head) < FLAC_HEAD or bytes(head[:4]) != _MAGIC
            or bytes(head[4:8]) not in (_INFO, _INFO_LAST)):
        raise ValueError("not a shardkin audio.flac payload (fLaC, STREAMINFO first)")
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
        return from_pcm16(*_decode_flac(memoryview(data), check_md5))
    raise ValueError(f"{member!r} is not an audio member (one of {', '.join(AUDIO_MEMBERS)})")


def flac_gain(audio: np.ndarray) -> float:
    """The gain flac stores float32 ``audio`` with: its peak over 32767, rounded up to 9
    significant bits (2**-15 for silence, at least 2**-126)."""
    peak = float(np.max(np.abs(audio), initial=0))
    if not peak < _HUGE:  # also NaN
        raise ValueError(f"audio samples must be finite and below 2**120, not {peak}")
    if peak == 0:
        return 1 / SCALE
    mantissa, exponent = math.frexp(peak / FULL)
    gain = math.ldexp(math.ceil(math.ldexp(mantissa, _GAIN_BITS)), exponent - _GAIN_BITS)
    return max(gain, _TINY)


def to_pcm16(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """(int16 samples, gain) flac stores for float32 ``audio``: ``rint(audio / gain)``,
    rounded half to even (in float64, where the division leaves no rounding to cross a
    half), within +-32767."""
    gain = flac_gain(audio)
    scaled = np.rint(np.asarray(audio, np.float64) / gain)
    return np.clip(scaled, -FULL, FULL).astype(np.int16), gain


def from_pcm16(pcm: np.ndarray, gain: float) -> np.ndarray:
    """float32 samples of stored int16 ``pcm`` and its ``gain`` (exact products)."""
    return pcm.astype(np.float32) * np.float32(gain)


def _gain_block(gain: float) -> bytes:
    """The VORBIS_COMMENT block (the last metadata block) that holds ``gain``."""
    comment = f"{GAIN_TAG}={gain!r}".encode("ascii")
    body = (struct.pack("<I", len(_VENDOR)) + _VENDOR
            + struct.pack("<II", 1, len(comment)) + comment)
    return bytes([0x80 | 4]) + len(body).to_bytes(3, "big") + body


def _read_gain(view: memoryview) -> tuple[float, int]:
    """(gain, offset of the first frame) of an ``audio.flac`` payload."""
    if bytes(view[4:8]) == _INFO_LAST:  # written before gains
        return 1 / SCALE, FLAC_HEAD
    size = int.from_bytes(view[FLAC_HEAD + 1:FLAC_HEAD + 4], "big")
    block = bytes(view[FLAC_HEAD:FLAC_HEAD + 4 + size])
    _, sep, text = block.partition(f"{GAIN_TAG}=".encode("ascii"))
    try:
        gain = float(text.decode("ascii")) if sep and text.isascii() else math.nan
    except ValueError:
        gain = math.nan
    if not (_TINY <= gain < _HUGE and math.ldexp(math.frexp(gain)[0], _GAIN_BITS).is_integer()
            and block == _gain_block(gain)):  # as written: 9 significant bits, canonical
        raise ValueError(f"audio.flac has no valid {GAIN_TAG} block after its STREAMINFO")
    return gain, FLAC_HEAD + len(block)


def _encode_flac(audio: np.ndarray, rate: int) -> bytes:
    import av

    channels, samples = audio.shape
    if not 1 <= channels <= 8:
        raise ValueError(f"FLAC holds 1 to 8 channels, not {channels}: use --audio-channels")
    pcm, gain = to_pcm16(audio)
    head = _MAGIC + _INFO
    if samples == 0:  # nothing for the encoder: STREAMINFO (block sizes 16) and the gain
        packed = rate << 44 | (channels - 1) << 41 | 15 << 36
        info = struct.pack(">HH6xQ", 16, 16, packed) + hashlib.md5().digest()
        return head + info + _gain_block(gain)
    encoder = av.CodecContext.create("flac", "w")
    encoder.sample_rate, encoder.format = rate, "s16"
    encoder.layout = av.AudioLayout(f"{channels}c")
    interleaved = np.ascontiguousarray(pcm.T)
    frame = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="s16",
                                       layout=encoder.layout)
    frame.sample_rate, frame.pts = rate, 0
    frames = [bytes(p) for f in (frame, None) for p in encoder.encode(f)]
    info = bytes(encoder.extradata)[:18] + _md5(interleaved)  # STREAMINFO final once flushed
    data = head + info + _gain_block(gain) + b"".join(frames)
    if flac_layout(data)[:2] != (channels, samples):
        raise ValueError(f"the FLAC encoder recorded {flac_layout(data)[:2]} for "
                         f"{channels} channels of {samples} samples")
    return data


def _decode_flac(view: memoryview, check_md5: bool) -> tuple[np.ndarray, float]:
    """(int16 ``[C, S]`` samples, gain) of an ``audio.flac`` payload, checked against
    STREAMINFO."""
    channels, samples, _ = flac_layout(view[:FLAC_HEAD])
    gain, start = _read_gain(view)
    if samples == 0:
        if len(view) != start:
            raise ValueError("audio.flac of no samples has frames")
        return np.zeros((channels, 0), np.int16), gain
    import av

    decoder = av.CodecContext.create("flac", "r")
    decoder.extradata = bytes(view[len(_MAGIC) + len(_INFO):FLAC_HEAD])
    decoder.options = {"err_detect": "crccheck+explode"}  # a damaged frame is an error
    packet = av.Packet(view[start:])  # the decoder takes its frames one after another
    parts = [f.to_ndarray() for p in (packet, None) for f in decoder.decode(p)]
    pcm = np.concatenate(parts, axis=1) if parts else np.zeros((1, 0), np.int16)
    if pcm.dtype != np.int16 or pcm.size != channels * samples:
        raise ValueError(f"audio.flac decoded to {pcm.size} {pcm.dtype} values, its "
                         f"STREAMINFO says {channels} channels of {samples} samples")
    pcm = pcm.reshape(samples, channels).T if pcm.shape[0] == 1 else pcm  # interleaved
    if check_md5 and _md5(pcm.T) != bytes(view[26:42]):
        raise ValueError("audio.flac samples do not match the MD5 in its STREAMINFO")
    return pcm, gain


def _md5(interleaved: np.ndarray) -> bytes:
    """The MD5 a FLAC STREAMINFO holds: of the samples, interleaved, as little-endian int16."""
    return hashlib.md5(np.ascontiguousarray(interleaved, "<i2").tobytes()).digest()
