"""A video file's sound as float32 ``[C, S]``, cut by presentation time as clips stream in.

A second demuxer over the same file, advanced in lockstep with the video, so badly
interleaved files cost no extra memory. A sample belongs to the span whose start is at
or before its presentation time and whose end is after it: ``ceil((t - origin) * rate)``
is the first sample at or after time ``t`` (``origin``: the first audio frame's time).
"""
from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np


class AudioTrack:
    """Audio samples of a file as float32 [C, S], cut by presentation time."""

    def __init__(self, container: av.container.InputContainer, rate: int,
                 channels: int) -> None:
        self._container = container  # its own, closed by close()
        stream = self._container.streams.best("audio")  # TorchCodec's (torchvision's) choice
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
            self.done = True
            self.error = f"audio decode error after {self._count / self.rate:.2f} s: {e}"
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
