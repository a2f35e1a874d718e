"""Decode one video front to back with PyAV and cut it into clips as frames stream in.

Memory is bounded by one clip span: a frame is converted to RGB only when some clip
uses it and is dropped once no later clip can. Audio is read by a second demuxer over
the same file, advanced in lockstep, so badly interleaved files cost no extra memory;
with ``audio_codec="none"`` it is not opened at all.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..format.audio import NONE
from ..format.options import BuildOptions
from .clips import ClipRule, output_size


class DecodeError(Exception):
    """The video cannot be opened or has no decodable video stream."""


@dataclass
class CutClip:
    """A clip cut from a video, ready to be encoded as a sample."""

    index: int
    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray  # float32 [C, S]
    source_frames: list[int]
    start: Fraction  # video start + first source frame / fps, seconds
    end: Fraction  # video start + (last source frame + 1) / fps
    audio_marks: dict | None = None  # where each frame's sound lies (format.sample.AUDIO_MARKS)


@dataclass
class VideoStats:
    fps: float
    width: int
    height: int
    out_width: int
    out_height: int
    audio_rate: int
    audio_channels: int
    rotation: int = 0
    frames: int = 0
    clips: int = 0
    error: str | None = None  # set when decoding stopped early


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DecodeError(f"cannot open: {e}") from None


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and rate > 0:
            return Fraction(rate)
    raise DecodeError("video stream has no frame rate")


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise DecodeError(f"no video stream (contains {', '.join(kinds)})")
    return container.streams.video[0]


def probe(path: str) -> dict:
    """Cheap look at a video (no decoding): fps, size, estimated frame count."""
    with _open(path) as container:
        stream = _video_stream(container)
        fps = _frame_rate(stream)
        frames = stream.frames
        if not frames:
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
            frames = int(seconds * fps)
        return {
            "fps": float(fps),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "frames": int(frames),
            "has_audio": bool(container.streams.audio),
        }


class _AudioTrack:
    """Audio samples of a file as float32 [C, S], cut by presentation time."""

    def __init__(self, path: str, rate: int, channels: int) -> None:
        self._container = _open(path)
        stream = self._container.streams.audio[0]
        self.rate = rate or stream.codec_context.sample_rate
        self.channels = channels or stream.codec_context.channels
        self._resampler = av.AudioResampler(
            format="fltp", layout=av.AudioLayout(f"{self.channels}c"), rate=self.rate
        )
        self._frames = self._container.decode(stream)
        self._origin: Fraction | None = None
        self._chunks: list[np.ndarray] = []
        self._base = 0  # sample index of the first kept sample
        self._count = 0  # sample index one past the last decoded sample
        self.done = False
        self.error: str | None = None

    def _pull(self) -> None:
        try:
            frame = next(self._frames)
            if self._origin is None:
                self._origin = (
                    Fraction(frame.pts) * frame.time_base if frame.pts is not None else Fraction(0)
                )
            out = self._resampler.resample(frame)
        except StopIteration:
            self.done = True
            out = self._resampler.resample(None)
        except av.FFmpegError as e:
            self.done, self.error = True, f"audio decode error: {e}"
            return
        for f in out:
            arr = f.to_ndarray().reshape(self.channels, -1)
            self._chunks.append(arr)
            self._count += arr.shape[1]

    def _index(self, t: Fraction) -> int:
        """First sample whose presentation time is at or after ``t``."""
        return max(0, math.ceil((t - self._origin) * self.rate))

    def cut(self, start: Fraction, end: Fraction) -> tuple[int, np.ndarray]:
        """(index of the first sample returned, the samples in [start, end))."""
        while self._origin is None and not self.done:
            self._pull()
        if self._origin is None:
            return 0, np.zeros((self.channels, 0), np.float32)
        i0, i1 = self._index(start), self._index(end)
        while self._count < i1 and not self.done:
            self._pull()
        buf = (np.concatenate(self._chunks, axis=1) if self._chunks
               else np.zeros((self.channels, 0), np.float32))
        lo = min(max(i0, self._base), self._count)  # the decoded samples in [i0, i1)
        hi = max(lo, min(i1, self._count))
        clip = np.ascontiguousarray(buf[:, lo - self._base : hi - self._base], dtype=np.float32)
        self._chunks = [buf[:, lo - self._base :]]  # later clips start later
        self._base = lo
        return lo, clip

    def marks(self, times: list[Fraction]) -> list[int]:
        """The index of the first sample at or after each time (0 before any audio)."""
        return [self._index(t) for t in times] if self._origin is not None else [0] * len(times)

    def close(self) -> None:
        self._container.close()


def _set_threads(stream, threads: int) -> None:
    stream.codec_context.thread_count = max(1, threads)
    if threads > 1:
        stream.codec_context.thread_type = "AUTO"


class VideoCutter:
    """Iterate the clips of one video, cut and resized as the build's clip, resize and
    audio ``options`` say; ``stats`` is complete once iteration ends.

    Clip times are ``start + frame_index / fps`` with ``start`` the first frame's
    presentation time: torchvision's rule, corrected for a video stream that does
    not start at 0 (per-frame pts are unreliable in AVI files).

    A decode error part-way stops the video there: the clips that were complete
    before it are kept (they are exactly the clips of the frames that decoded)
    and ``stats.error`` says what happened.
    """

    def __init__(self, path: str, options: BuildOptions, decode_threads: int = 1) -> None:
        self.path = path
        self._container = _open(path)
        try:
            self._stream = _video_stream(self._container)
        except DecodeError:
            self._container.close()
            raise
        _set_threads(self._stream, decode_threads)
        self._fps = _frame_rate(self._stream)
        cc = self._stream.codec_context
        r, a, c = options.resize, options.audio, options.clips
        out_w, out_h = output_size(
            cc.width, cc.height, r.width, r.height, r.min_dimension, r.max_dimension
        )
        self._resize = (out_w, out_h) != (cc.width, cc.height)
        self._audio = (
            _AudioTrack(path, a.audio_rate, a.audio_channels)
            if self._container.streams.audio and a.audio_codec != NONE
            else None
        )
        self.stats = VideoStats(
            fps=float(self._fps),
            width=cc.width,
            height=cc.height,
            out_width=out_w,
            out_height=out_h,
            audio_rate=self._audio.rate if self._audio else 0,
            audio_channels=self._audio.channels if self._audio else max(1, a.audio_channels),
        )
        self._start = Fraction(0)  # presentation time of the first frame
        self.rule = ClipRule(
            c.frames_per_clip, c.step_between_clips, float(self._fps), c.frame_rate
        )

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        w, h = self.stats.out_width, self.stats.out_height
        if not self._resize and (frame.width, frame.height) == (w, h):
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")

    def _make_clip(self, k: int, frames: dict[int, np.ndarray]) -> CutClip:
        sources = self.rule.clip_sources(k)
        start = self._start + sources[0] / self._fps
        end = self._start + (sources[-1] + 1) / self._fps
        marks = None
        if self._audio is not None:
            first, audio = self._audio.cut(start, end)
            # each frame's sound by the same rule, so that read-time windows cut it exactly
            marks = {"first": first,
                     "starts": self._audio.marks([self._start + j / self._fps for j in sources]),
                     "ends": self._audio.marks([self._start + (j + 1) / self._fps
                                                for j in sources])}
        else:
            audio = np.zeros((self.stats.audio_channels, 0), np.float32)
        video = np.stack([frames[j] for j in sources])
        return CutClip(k, video, audio, sources, start, end, marks)

    def __iter__(self) -> Iterator[CutClip]:
        rule, stats = self.rule, self.stats
        frames: dict[int, np.ndarray] = {}
        position = 0  # first resampled position whose source frame is not yet seen
        next_clip = 0
        try:
            try:
                for frame in self._container.decode(self._stream):
                    j = stats.frames
                    stats.frames += 1
                    if j == 0:
                        stats.rotation = int(getattr(frame, "rotation", 0) or 0)
                        if frame.pts is not None and frame.time_base is not None:
                            self._start = Fraction(frame.pts) * frame.time_base
                    needed = False
                    while rule.source_index(position) <= j:
                        needed |= rule.source_index(position) == j and rule.in_some_clip(position)
                        position += 1
                    if needed:
                        frames[j] = self._rgb(frame)
                    while True:
                        last = rule.clip_positions(next_clip)[-1]
                        if (rule.num_positions(stats.frames) <= last
                                or rule.source_index(last) >= stats.frames):
                            break
                        yield self._make_clip(next_clip, frames)
                        next_clip += 1
                        stats.clips = next_clip
                        keep_from = rule.source_index(rule.clip_positions(next_clip)[0])
                        for old in [i for i in frames if i < keep_from]:
                            del frames[old]
            except av.FFmpegError as e:
                stats.error = f"decode error after {stats.frames} frames: {e}"
        finally:
            self.close()

    def close(self) -> None:
        self._container.close()
        if self._audio is not None:
            self._audio.close()


def probe_or_reason(path: str) -> dict:
    """:func:`probe`, with a failure given as ``{"error": reason}`` instead of raised."""
    try:
        return probe(path)
    except DecodeError as e:
        return {"error": str(e)}
    except (av.FFmpegError, OSError, ValueError) as e:
        return {"error": f"cannot read: {e}"}
