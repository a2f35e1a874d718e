"""Decode one video front to back with PyAV and cut it into clips as frames stream in.

Memory is bounded by two clip spans: a frame is converted to RGB only when some clip
uses it and is dropped once no later clip can; a clip is handed out once what follows
it is known. Audio is read by :class:`.audiotrack.AudioTrack`; with
``audio_codec="none"`` it is not opened at all.

A contiguous build (step equal to frames_per_clip) also keeps what lies between and
after its clips, so that clips of any length and step can be cut from it at read time
exactly as torchvision cuts them (``shardkin.reader.windows``): each clip's ``rest``
is the sound from its end to the next clip's start (a gap only with ``frame_rate``
below the source's), and for a video's last clip the frames after it (the tail,
fewer than frames_per_clip) with their sound.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..format.audio import NONE
from ..format.options import BuildOptions
from .audiotrack import AudioTrack
from .clips import ClipRule, output_size
from .timeline import TORCHCODEC, place, scan

_SWS_THREADS = int(av.__version__.split(".")[0]) >= 17  # reformat(threads=...)

# a file path, or a callable giving a new file object on each call (a video in a store)
VideoPath = str | Callable[[], BinaryIO]


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
    rest_video: np.ndarray | None = None  # a last clip's tail frames, uint8 [t, H, W, 3]
    rest_audio: np.ndarray | None = None  # the sound from the clip's end to what follows
    rest_marks: dict | None = None  # rest_audio's first sample; the tail frames' marks


@dataclass
class VideoStats:
    fps: float
    width: int
    height: int
    out_width: int
    out_height: int
    audio_rate: int
    audio_channels: int
    frames: int = 0  # slots of the timeline placed (torchvision's frame count)
    clips: int = 0
    tail: int = 0  # frames kept with the last clip, once it is taken (contiguous builds)
    held: list[int] = field(default_factory=list)  # slots showing the previous picture
    error: str | None = None  # set when decoding stopped early


def _open(path: VideoPath) -> av.container.InputContainer:
    """Open a video: a file path, or a callable giving a new file object on each call (a
    video in a store, :class:`.source.RemoteVideo`: it raises DecodeError itself)."""
    try:
        return av.open(path() if callable(path) else path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DecodeError(f"cannot open: {e}") from None


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and rate > 0:
            return Fraction(rate)
    raise DecodeError("video stream has no frame rate")


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video stream FFmpeg calls best (TorchCodec's default, so torchvision's)."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise DecodeError(f"no video stream (contains {', '.join(kinds)})")
    return container.streams.best("video")


def probe(path: VideoPath) -> dict:
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
        }


def _set_threads(stream, threads: int) -> None:
    stream.codec_context.thread_count = max(1, threads)
    if threads > 1:
        stream.codec_context.thread_type = "AUTO"


class VideoCutter:
    """Iterate the clips of one video, cut and resized as the build's clip, resize and
    audio ``options`` say; ``stats`` is complete once iteration ends.

    Frames and fps follow the build's timeline (:mod:`.timeline`: torchvision 0.28's
    scan by default, where a slot without a picture of its own holds the previous one).
    Clip times are ``start + frame_index / fps`` with ``start`` the first frame's
    presentation time (the scan's first timestamp, or with the ``"pyav"`` timeline the
    first decoded frame's): torchvision's rule, corrected for a video stream that does
    not start at 0.

    A decode error part-way stops the video there: the clips that were complete
    before it are kept (they are exactly the clips of the frames that decoded)
    and ``stats.error`` says what happened.
    """

    def __init__(self, path: VideoPath, options: BuildOptions, decode_threads: int = 1) -> None:
        self.path = path
        self._container = _open(path)
        try:
            self._stream = _video_stream(self._container)
        except DecodeError:
            self._container.close()
            raise
        _set_threads(self._stream, decode_threads)
        r, a, c = options.resize, options.audio, options.clips
        self._start = Fraction(0)  # presentation time of the first frame
        self._slots = None  # the scan's slots (None: the "pyav" timeline)
        found = None
        if c.timeline == TORCHCODEC:
            try:
                with _open(path) as other:  # a demuxer of its own: the scan reads to the end
                    found = scan(other, other.streams[self._stream.index])
            except BaseException:
                self._container.close()
                raise
            if found.error is None:  # else every decoded picture is a frame, as with "pyav"
                self._start, self._slots = found.begin, found.slots
        self._fps = (Fraction(found.fps) if found is not None and found.error is None
                     and found.fps else _frame_rate(self._stream))
        cc = self._stream.codec_context
        out_w, out_h = output_size(
            cc.width, cc.height, r.width, r.height, r.min_dimension, r.max_dimension
        )
        self._resize = (out_w, out_h) != (cc.width, cc.height)
        self._reformatter = VideoReformatter()
        # swscale's threads as FFmpeg's decoding threads (PyAV 17+ runs it on one a core)
        self._sws = {"threads": max(1, decode_threads)} if _SWS_THREADS else {}
        self._audio = (
            AudioTrack(_open(path), a.audio_rate, a.audio_channels)
            if self._container.streams.audio and a.audio_codec != NONE
            else None
        )
        self.stats = VideoStats(
            fps=float(self._fps),  # the timeline's: a float as torchvision's, exactly
            width=cc.width,
            height=cc.height,
            out_width=out_w,
            out_height=out_h,
            audio_rate=self._audio.rate if self._audio else 0,
            audio_channels=self._audio.channels if self._audio else max(1, a.audio_channels),
        )
        self.rule = ClipRule(
            c.frames_per_clip, c.step_between_clips, float(self._fps), c.frame_rate
        )
        self._contiguous = self.rule.step_between_clips == self.rule.frames_per_clip

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        # ``frame.to_ndarray(format=...)`` would set up a new swscale context for every
        # frame, at a cost above decoding it (about 1 ms of CPU a frame at 340x256 ->
        # 170x128); one context a video converts the same pixels in a quarter of that
        w, h = self.stats.out_width, self.stats.out_height
        size = {} if not self._resize and (frame.width, frame.height) == (w, h) else dict(
            width=w, height=h, interpolation="AREA")
        return self._reformatter.reformat(frame, format="rgb24", **self._sws,
                                          **size).to_ndarray()

    def _time(self, source: int) -> Fraction:
        return self._start + Fraction(source) / self._fps

    def _marks(self, sources: list[int]) -> dict[str, list[int]]:
        """Where each frame's sound starts and ends (sample indices), by the same rule as
        the clips' sound, so that windows cut at read time take exactly theirs."""
        return {"starts": self._audio.marks([self._time(j) for j in sources]),
                "ends": self._audio.marks([self._time(j + 1) for j in sources])}

    def _add_rest(self, clip: CutClip, until: Fraction, tail: list[int] | None = None,
                  frames: dict[int, np.ndarray] | None = None) -> None:
        """Keep with ``clip`` the sound from its end until ``until`` and the ``tail`` frames."""
        marks: dict = {}
        if tail:
            clip.rest_video = np.stack([frames[j] for j in tail])
        if self._audio is not None:
            first, sound = self._audio.cut(clip.end, until)
            marks = {"first": first, **(self._marks(tail) if tail else {})}
            clip.rest_audio = sound if sound.shape[1] else None
        if tail or clip.rest_audio is not None:
            clip.rest_marks = {"frames": len(tail or ()), **marks}

    def _make_clip(self, k: int, frames: dict[int, np.ndarray],
                   previous: CutClip | None) -> CutClip:
        sources = self.rule.clip_sources(k)
        start, end = self._time(sources[0]), self._time(sources[-1] + 1)
        if previous is not None and self._contiguous:
            self._add_rest(previous, start)  # first: the track drops what is before a cut
        marks = None
        if self._audio is not None:
            first, audio = self._audio.cut(start, end)
            marks = {"first": first, **self._marks(sources)}
        else:
            audio = np.zeros((self.stats.audio_channels, 0), np.float32)
        video = np.stack([frames[j] for j in sources])
        return CutClip(k, video, audio, sources, start, end, marks)

    def __iter__(self) -> Iterator[CutClip]:
        rule, stats = self.rule, self.stats
        frames: dict[int, np.ndarray] = {}
        position = 0  # first resampled position whose source frame is not yet seen
        next_clip = 0
        waiting: CutClip | None = None  # the last clip made, handed out once its rest is known
        shown: tuple[av.VideoFrame | None, np.ndarray | None] = (None, None)  # converted last
        try:
            try:
                for placed in place(self._container.decode(self._stream), self._slots):
                    j, frame = placed.slot, placed.frame
                    stats.frames += 1
                    if placed.held:
                        stats.held.append(j)
                    if (j == 0 and self._slots is None and frame.pts is not None
                            and frame.time_base is not None):
                        self._start = Fraction(frame.pts) * frame.time_base
                    needed = False
                    while rule.source_index(position) <= j:
                        needed |= rule.source_index(position) == j and rule.in_some_clip(position)
                        position += 1
                    if needed:  # a held slot shows the picture converted for the slot before
                        if shown[0] is not frame:
                            shown = (frame, self._rgb(frame))
                        frames[j] = shown[1]
                    while True:
                        last = rule.clip_positions(next_clip)[-1]
                        if (rule.num_positions(stats.frames) <= last
                                or rule.source_index(last) >= stats.frames):
                            break
                        clip = self._make_clip(next_clip, frames, waiting)
                        if waiting is not None:
                            yield waiting
                            stats.clips += 1
                        waiting = clip
                        next_clip += 1
                        keep_from = rule.source_index(rule.clip_positions(next_clip)[0])
                        for old in [i for i in frames if i < keep_from]:
                            del frames[old]
            except av.FFmpegError as e:
                stats.error = f"decode error after {stats.frames} frames: {e}"
            except Exception:
                if waiting is not None:  # the clips made before an odd failure are kept
                    yield waiting
                    stats.clips += 1
                raise
            if waiting is not None:
                if stats.error is None and self._contiguous:
                    tail = [rule.source_index(p)
                            for p in range(next_clip * rule.frames_per_clip,
                                           rule.num_positions(stats.frames))]
                    self._add_rest(waiting, self._time(tail[-1] + 1) if tail else waiting.end,
                                   tail, frames)
                yield waiting
                stats.clips += 1  # counted, with its tail, once taken (written)
                stats.tail = 0 if waiting.rest_video is None else len(waiting.rest_video)
        finally:
            self.close()

    @property
    def audio_error(self) -> str | None:
        """Why the sound stopped decoding before the video's end (None if it did not): the
        clips from there on hold only the sound decoded before it."""
        return self._audio.error if self._audio is not None else None

    def close(self) -> None:
        self._container.close()
        if self._audio is not None:
            self._audio.close()


def probe_or_reason(path: VideoPath) -> dict:
    """:func:`probe`, with a failure given as ``{"error": reason}`` instead of raised."""
    try:
        return probe(path)
    except DecodeError as e:
        return {"error": str(e)}
    except (av.FFmpegError, OSError, ValueError) as e:
        return {"error": f"cannot read: {e}"}
