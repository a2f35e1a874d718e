"""Build options: one typed record, in groups, from ``shardkin build``'s flags (or the
arguments of :func:`shardkin.build`) to the manifest's ``options``, which readers check.

Each option is a field of a group, and the field's metadata is its command-line flag
(help text, and choices where it has some): ``shardkin build``'s flags are made from
these fields (:func:`~.flags.command_line`), so adding an option means adding its field here
and its argument to :func:`shardkin.build`. The clips, resize, audio, selection and
storage groups are recorded in the manifest (:meth:`BuildOptions.to_manifest`);
execution options change how a build runs, never its bytes, and are not. An option
added later says (``older``) what builds made before it, which lack it, did.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field, fields, replace
from typing import Any, ClassVar, get_type_hints

from .audio import AUDIO_CODECS, FLAC, NONE
from .audio import RAW as RAW_AUDIO
from .codecs import JPEG, JPEG_PSNR, MEMBER, RAW, ZSTD

DEFAULT_EXTENSIONS = ("mp4", "avi", "mkv", "webm", "mov")
EXECUTOR_NAMES = ("local", "ray")
# how a video's frames are counted (shardkin.builder.timeline): torchvision 0.28's TorchCodec
# scan, or its former PyAV backend's decoded pictures
TIMELINES = ("torchcodec", "pyav")
SHARDS_TITLE = "shards and execution"  # shard sizes are listed with the execution flags

# torchvision.datasets.Kinetics argument -> the build option it must equal
TORCHVISION_ARGS = {
    "frames_per_clip": "frames_per_clip", "step_between_clips": "step_between_clips",
    "frame_rate": "frame_rate", "_video_width": "width", "_video_height": "height",
    "_video_min_dimension": "min_dimension", "_video_max_dimension": "max_dimension",
    "_audio_samples": "audio_rate", "_audio_channels": "audio_channels",
}


def option(default: Any, help: str | None, *, flag: str | None = None,
           choices: tuple[str, ...] | None = None, title: str | None = None,
           older: Any = None) -> Any:
    """A field with its flag: ``help`` (None: no flag), ``flag`` (default ``--field-name``),
    ``choices``, ``title``, the flag's group in ``--help`` (default: its group's), and
    ``older``, the value of a manifest that lacks it (None: its default)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                            "title": title, "older": older})


@dataclass(frozen=True)
class ClipOptions:
    """How videos become clips: torchvision's ``VideoClips`` arguments."""

    TITLE: ClassVar[str] = "clips (torchvision's VideoClips)"
    frames_per_clip: int = option(16, "frames in a clip (default 16)")
    step_between_clips: int | None = option(
        None, "frames between clip starts, after resampling (default: --frames-per-clip: "
              "clips that do not overlap, from which the readers cut clips of any length and "
              "step, torchvision's default of 1 included)")
    frame_rate: float | None = option(
        None, "resample every video to this many frames per second first")
    timeline: str = option(
        "torchcodec", "how frames are counted and the fps taken: torchcodec (torchvision 0.28 "
        "and newer, through TorchCodec: one frame per packet, fps = frames / scanned "
        "duration; a frame with no picture of its own shows the previous one) or pyav "
        "(torchvision's former PyAV backend, with which its model zoo was trained: the "
        "decoded pictures at the stream's average rate)",
        choices=TIMELINES, older="pyav")


@dataclass(frozen=True)
class ResizeOptions:
    """The frame size: torchvision's ``_video_*`` arguments (0: not set)."""

    TITLE: ClassVar[str] = "resize at build time (torchvision's _video_* arguments)"
    width: int = option(0, "output width (alone: keeps aspect)")
    height: int = option(0, "output height (alone: keeps aspect)")
    min_dimension: int = option(0, "short side, keeps aspect")
    max_dimension: int = option(0, "long side, keeps aspect")


@dataclass(frozen=True)
class AudioOptions:
    """The audio: torchvision's ``_audio_*`` arguments (0: as in the video), and how it is
    stored (README: Codecs)."""

    TITLE: ClassVar[str] = "audio"
    audio_rate: int = option(0, "resample audio to this rate (Hz)")
    audio_channels: int = option(0, "mix audio to this many channels")
    audio_codec: str | None = option(
        None, "store audio as float32 npy (raw), 16-bit FLAC (flac: 5-10x smaller) or not "
              "at all (none: not even decoded; readers give empty [1, 0] audio) "
              "(default: flac with --video-codec jpeg, else raw)",
        choices=AUDIO_CODECS, older=RAW_AUDIO)


@dataclass(frozen=True)
class SelectionOptions:
    """Which videos are built, and with which labels."""

    TITLE: ClassVar[str] = "which videos"
    extensions: tuple[str, ...] = option(
        DEFAULT_EXTENSIONS, f"video file extensions (default {','.join(DEFAULT_EXTENSIONS)})")
    classes: tuple[str, ...] | None = option(
        None, "build only these classes (labels then index this sorted list)")
    classes_from: str | None = option(
        None, "reuse the class list of another build (its OUT, split folder or "
              "manifest.json) or of a text file with one class per line")
    annotations: str | None = option(
        None, "CSV of 'path,label' rows (paths relative to ROOT) instead of class folders, or "
              "the official Kinetics CSV (label,youtube_id,time_start,time_end,split[,is_cc]) "
              "of ROOT/SPLIT as downloaded: classes and labels as torchvision's; a file or URL")
    fraction: float | None = option(
        None, "keep this fraction of the videos of each class (seeded)")
    limit: int | None = option(None, "keep this many videos in all (seeded)")
    seed: int = option(0, "seed for subsets and shard order (default 0)")


@dataclass(frozen=True)
class StorageOptions:
    """How clips are stored: the video codec (README: Codecs) and the shard size."""

    TITLE: ClassVar[str] = "frame storage (README: Codecs)"
    video_codec: str = option(
        RAW, "raw npy frames (default), lossless zstd of them, or the clip as one JPEG",
        choices=tuple(MEMBER))
    zstd_level: int | None = option(3, "zstd level (default 3)")
    jpeg_psnr: float | None = option(
        JPEG_PSNR, "JPEG (4:4:4) at each clip's lowest quality whose PSNR over the "
                   f"clip reaches this many dB (default {JPEG_PSNR:g}: frames 7-9x smaller than "
                   "raw at short side 96-128, every clip of any video at least that)")
    jpeg_quality: int | None = option(
        None, "one JPEG quality (1-100) for every clip instead of the PSNR target "
              "(builds about 1.3x faster, no floor on a clip's PSNR)")
    shard_size: str = option(
        "256MB", "target shard size, e.g. 256MB, 1GiB (default 256MB)", title=SHARDS_TITLE)
    clips_per_shard: int | None = option(
        None, "target clips per shard instead of a size", title=SHARDS_TITLE)


@dataclass(frozen=True)
class ExecutionOptions:
    """How a build runs (not recorded: any of these gives the same bytes)."""

    TITLE: ClassVar[str] = SHARDS_TITLE
    workers: int | None = option(None, "worker processes (default: all cores)")
    decode_threads: int | None = option(
        None, "FFmpeg threads per worker (default: cores / workers)")
    executor: str = option(
        "local", "run shard tasks on local processes (default) or a Ray cluster",
        choices=EXECUTOR_NAMES)
    video_timeout: float | None = option(
        None, "seconds a worker may go without making a clip (or probing a video) before it "
              "is stopped (a decoder caught in a loop on a damaged file; a long video that "
              "keeps making clips is not stopped); a video stopped twice is skipped and "
              "recorded (default: no limit)")
    ray_address: str | None = option(
        None, "Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT "
              "(default: start a local Ray)")
    overwrite: bool = option(False, "replace a build made with other options")
    break_lock: bool = option(
        False, "remove the lease of a build that died on object storage (a live build renews "
               "its lease; local builds need no breaking: their lock ends with the process)")
    progress: bool = option(True, "no progress bars or summary", flag="--quiet")
    storage_options: dict[str, Any] | None = option(None, None)


RECORDED = ("clips", "resize", "audio", "selection", "storage")


@dataclass(frozen=True)
class BuildOptions:
    """Every option of a build, by group (in ``shardkin build --help``'s order)."""

    clips: ClipOptions = field(default_factory=ClipOptions)
    resize: ResizeOptions = field(default_factory=ResizeOptions)
    audio: AudioOptions = field(default_factory=AudioOptions)
    selection: SelectionOptions = field(default_factory=SelectionOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> BuildOptions:
        """The options of :func:`shardkin.build`'s keyword arguments (defaults for those
        left out), normalised as the manifest records them; TypeError for unknown names."""
        unknown = sorted(set(kwargs) - set(option_names()))
        if unknown:
            raise TypeError(f"unknown build options: {', '.join(unknown)}")
        given = cls(**{name: group(**{f.name: kwargs[f.name] for f in fields(group)
                                      if f.name in kwargs})
                       for name, group in option_groups().items()})
        return given._normalised()

    @classmethod
    def from_manifest(cls, options: Mapping[str, Any]) -> BuildOptions:
        """The options a manifest records; those it lacks (an older build) get their
        defaults, and so do the execution options."""
        recorded = {f.name for name in RECORDED for f in fields(option_groups()[name])}
        options = {**older_options(), **options}
        return cls.from_kwargs(**{k: v for k, v in options.items() if k in recorded})

    def value(self, name: str) -> Any:
        """The option ``name``, whichever group holds it."""
        for group in option_groups():
            if any(f.name == name for f in fields(getattr(self, group))):
                return getattr(getattr(self, group), name)
        raise KeyError(f"no build option {name!r}")

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``options``: the recorded options by name (lists for tuples)."""
        flat = {}
        for name in RECORDED:
            group = getattr(self, name)
            for f in fields(group):
                value = getattr(group, f.name)
                flat[f.name] = list(value) if isinstance(value, tuple) else value
        return flat

    def _normalised(self) -> BuildOptions:
        clips, sel, st, audio = self.clips, self.selection, self.storage, self.audio
        codec = audio.audio_codec or (FLAC if st.video_codec == JPEG else RAW_AUDIO)
        if codec not in AUDIO_CODECS:
            raise ValueError(f"unknown audio codec {codec!r}: use {', '.join(AUDIO_CODECS)}")
        kept = codec != NONE  # without audio there is nothing to resample
        quality = int(st.jpeg_quality) if st.jpeg_quality is not None else None
        jpeg = st.video_codec == JPEG
        return replace(
            self,
            clips=ClipOptions(int(clips.frames_per_clip),
                              int(clips.step_between_clips or clips.frames_per_clip),
                              float(clips.frame_rate) if clips.frame_rate else None,
                              _choice(clips.timeline, TIMELINES, "timeline")),
            resize=ResizeOptions(*(int(v) for v in astuple(self.resize))),
            audio=AudioOptions(int(audio.audio_rate) if kept else 0,
                               int(audio.audio_channels) if kept else 0, codec),
            selection=replace(
                sel, extensions=tuple(sorted(e.lower().lstrip(".") for e in sel.extensions)),
                classes=tuple(sorted(sel.classes)) if sel.classes else None,
                classes_from=os.fspath(sel.classes_from) if sel.classes_from else None,
                annotations=os.fspath(sel.annotations) if sel.annotations else None,
                seed=int(sel.seed)),
            storage=replace(
                st, shard_size=str(st.shard_size),
                zstd_level=int(st.zstd_level) if st.video_codec == ZSTD else None,
                jpeg_quality=quality if jpeg else None,
                jpeg_psnr=float(st.jpeg_psnr or JPEG_PSNR) if jpeg and quality is None else None),
        )


def _choice(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: use {' or '.join(choices)}")
    return value


def option_groups() -> dict[str, type]:
    """The option groups of :class:`BuildOptions`, by attribute name, in order."""
    hints = get_type_hints(BuildOptions)
    return {f.name: hints[f.name] for f in fields(BuildOptions)}


def older_options() -> dict[str, Any]:
    """What builds made before an option was added did, by option (see :func:`option`)."""
    return {f.name: f.metadata["older"] for group in option_groups().values()
            for f in fields(group) if f.metadata["older"] is not None}


def option_names() -> list[str]:
    """The name of every option (the keyword arguments of :func:`shardkin.build`)."""
    return [f.name for group in option_groups().values() for f in fields(group)]


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "t": 10**12, "tb": 10**12}


def parse_size(text: str | int) -> int:
    """``'256MB'`` -> 256000000; ``'1GiB'`` -> 1073741824; ints pass through."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read size {text!r}: use e.g. 512MB, 1GiB or a byte count")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
