"""``shardkin.Kinetics``: a map-style dataset over a build, a drop-in for torchvision's.

It takes ``torchvision.datasets.Kinetics``' arguments in their order, and index ``i`` is
the clip torchvision's gives at ``i`` on the same tree and options (class order, video
order within a class, clip order within a video). ``samples``, ``classes`` and
``video_clips`` (:mod:`.video_clips`) are what torchvision's reference recipe uses, so its
samplers, its ``KineticsWithVideoId`` and its video-level evaluation run unchanged.

Start-up reads the manifest's head and memory-maps ``index.npy``; the per-video table
(:mod:`shardkin.format.videos`) is read when ``samples``, ``video_clips`` or clips cut at
read time need it. Each item is one positioned read (``preadv``, safe in forked DataLoader
workers) or one range request on object storage, retried with backoff. Its members are
grouped and decoded by the same code as ``ShardDataset``'s (:mod:`shardkin.format.samples`,
:mod:`.records`), with the same checks and errors. A pickled dataset (``torch.save``, a
spawned worker) holds its arguments only and opens the build again when loaded.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..format.options import TORCHVISION_ARGS, BuildOptions
from ..format.tar import ShardError
from ..samplers.video_clips import ClipCounts
from ..store.cache import open_cache
from ..store.fetch import fetch, fetch_local
from ..store.split import open_split
from .checking import checked_build
from .cutting import window_ref
from .device import check_decode_device, check_no_transform, read_clip
from .items import OutputFormat, check_output_format, make_item, video_dtype_for
from .records import (
    DEFER,
    ClipRef,
    LoadedClip,
    OnError,
    check_on_error,
    clip_ref,
    wanted_members,
)
from .video_clips import Samples, make_video_clips
from .windows import windows_for

NUM_CLASSES = ("400", "600", "700")


class Kinetics(Dataset):
    """Clip ``i`` of a build, as ``torchvision.datasets.Kinetics(...)[i]`` returns it.

    ``root``: a build folder or URL (with ``split``), a split folder, or a manifest.
    torchvision's arguments, in its order:

    - ``frames_per_clip``, ``step_between_clips``: any on a contiguous build (the default
      build: step equal to frames_per_clip), whose clips are then cut at read time
      (:mod:`.windows`); on another build only its own. Left out (None): the build's.
    - ``frame_rate``, ``_video_width``, ``_video_height``, ``_video_min_dimension``,
      ``_video_max_dimension``, ``_audio_samples``, ``_audio_channels``: done at build
      time; given, they must equal the build's (a ``ValueError`` says which differ).
    - ``extensions``: keep the videos whose file name ends with one of them, as
      torchvision lists files (a warning counts the videos of the build left out); None
      (the default): every video of the build.
    - ``split``; ``_legacy=True``: ``root`` is the split folder (torchvision's old layout),
      and ``output_format`` is ``"THWC"``, as torchvision does.
    - ``num_classes``: checked ("400", "600" or "700") as torchvision does, which uses it
      only to download. ``download=True`` is an error: build the downloaded videos with
      ``shardkin build``. ``num_download_workers``, ``num_workers`` (torchvision's scan of
      every video) and ``_precomputed_metadata`` (that scan's result) have nothing to do
      here: the build did it; the last one warns when given.
    - ``transform`` on the video; ``output_format`` ``"TCHW"`` (default) or ``"THWC"``.

    shardkin's own (keyword-only): ``return_dict``, ``video_dtype`` and ``decode_audio``
    (as in ``ShardDataset``), ``on_error`` (``"skip"``: warn and return the next readable clip
    instead of raising :class:`~shardkin.format.tar.ShardError`), ``verify`` (default: check
    each clip's bytes against its checksum in the index as they are read, so a flipped
    pixel byte is caught; ``verify=False`` turns it off), ``storage_options`` (fsspec),
    ``cache_dir``/``cache_size``: on object storage, ``index.npy`` and the video table are
    fetched once a machine into this cache and memory-mapped from there (else every process
    fetches them); ``decode_device``: a jpeg build's videos handed out undecoded, as in
    ``ShardDataset`` (:func:`shardkin.make_loader` decodes whole batches there).
    """

    def __init__(self, root: str | os.PathLike, frames_per_clip: int | None = None,
                 num_classes: str = "400", split: str | None = "train",
                 frame_rate: float | None = None, step_between_clips: int | None = None,
                 transform: Callable[[Any], Any] | None = None,
                 extensions: Sequence[str] | None = None, download: bool = False,
                 num_download_workers: int = 1, num_workers: int = 1,
                 _precomputed_metadata: dict[str, Any] | None = None,
                 _video_width: int = 0, _video_height: int = 0, _video_min_dimension: int = 0,
                 _audio_samples: int = 0, _audio_channels: int = 0, _legacy: bool = False,
                 output_format: OutputFormat = "TCHW", *, _video_max_dimension: int = 0,
                 return_dict: bool = False, video_dtype: torch.dtype | None = None,
                 decode_audio: bool = True, on_error: OnError = "raise", verify: bool = True,
                 storage_options: dict | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 cache_size: str | int = "100GB",
                 decode_device: str | torch.device | None = None) -> None:
        self._args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if isinstance(frames_per_clip, str):
            raise TypeError(f"frames_per_clip={frames_per_clip!r}: torchvision's second "
                            f"argument is frames_per_clip; pass the split as split=...")
        if str(num_classes) not in NUM_CLASSES:
            raise ValueError(f"num_classes must be one of {', '.join(NUM_CLASSES)} (as "
                             f"torchvision's), got {num_classes!r}")
        if download:
            raise ValueError("shardkin.Kinetics reads a build and downloads nothing: download "
                             "Kinetics with torchvision or the official scripts, then "
                             "`shardkin build ROOT OUT` the videos")
        if _precomputed_metadata is not None:
            warnings.warn("shardkin.Kinetics ignores _precomputed_metadata: the build already "
                          "holds every video's frames and clips", stacklevel=2)
        if _legacy:
            split, output_format = None, "THWC"
        check_output_format(output_format)
        self.decode_device = check_decode_device(decode_device)
        check_no_transform(transform, self.decode_device)
        check_on_error(on_error)
        self.root, self.num_classes, self.extensions = root, str(num_classes), extensions
        self.num_download_workers, self._legacy = num_download_workers, _legacy
        self._split = open_split(root, split, storage_options=storage_options,
                                 cache=open_cache(cache_dir, cache_size))
        manifest, where = self._split.manifest, self._split.folder.url
        if manifest.index is None:
            raise ValueError(f"{where} has no index.npy (built by an older shardkin): "
                             "re-run the build with --overwrite to add it")
        options = manifest.build_options
        self._check_built_with(options, where, frame_rate=frame_rate,
                               _video_width=_video_width, _video_height=_video_height,
                               _video_min_dimension=_video_min_dimension,
                               _video_max_dimension=_video_max_dimension,
                               _audio_samples=_audio_samples, _audio_channels=_audio_channels)
        self._rows = None if extensions is None else self._with_extensions(extensions)
        self.windows = windows_for(options.clips, self._counts, where, frames_per_clip,
                                   step_between_clips)
        # the stored clips of a subset of the videos (extensions), not every index row
        self._subset = self._rows is not None and self.windows is None
        self.frames_per_clip = int(frames_per_clip or options.clips.frames_per_clip)
        self.step_between_clips = int(step_between_clips or options.clips.step_between_clips)
        self.frame_rate = options.clips.frame_rate
        self.index = self._split.index_rows()
        self.classes: list[str] = manifest.classes
        self.split = manifest.split if not _legacy else "unknown"
        self.output_format, self.transform, self.return_dict = output_format, transform, return_dict
        self.video_dtype = video_dtype_for(video_dtype, return_dict)
        self.on_error = on_error
        self.verify = verify and checked_build(self._split)
        self._wanted = wanted_members(return_dict, self.windows is not None, decode_audio)

    @staticmethod
    def _check_built_with(options: BuildOptions, where: str, **given: Any) -> None:
        differ = [f"{arg}={value!r} (built with {options.value(TORCHVISION_ARGS[arg])!r})"
                  for arg, value in given.items()
                  if value and value != options.value(TORCHVISION_ARGS[arg])]
        if differ:
            raise ValueError(f"{where} was built with other options: {'; '.join(differ)}. "
                             "Rebuild with those options (shardkin build) or drop the arguments")

    def _with_extensions(self, extensions: Sequence[str]) -> np.ndarray | None:
        """The table rows of the videos named with one of ``extensions`` (None: all)."""
        table = self._split.video_table()
        keep = table.ends_with(tuple(extensions))
        if keep.all():
            return None
        dropped = int(len(keep) - keep.sum())
        warnings.warn(f"extensions={tuple(extensions)!r} leaves out {dropped} of the "
                      f"{len(keep)} videos of {self._split.where}, as torchvision would not "
                      "list them; pass extensions=None to read every video of the build",
                      stacklevel=3)
        return np.flatnonzero(keep)

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored clips, tails and first index rows of the dataset's videos."""
        return self._video_facts

    @functools.cached_property
    def _video_facts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table = self._split.video_table()
        rows = slice(None) if self._rows is None else self._rows
        return (table.column("clips")[rows], table.column("tail")[rows],
                table.first_rows()[rows])

    @functools.cached_property
    def _per_video(self) -> ClipCounts:
        """Stored clips of each of the dataset's videos: clip -> (video, clip in it)."""
        return ClipCounts(self._counts()[0])

    def __len__(self) -> int:
        if self.windows is not None:
            return len(self.windows)
        return self._per_video.num_clips() if self._subset else len(self.index)

    @functools.cached_property
    def samples(self) -> Samples:
        """``(path, label)`` of every video, in torchvision's order: videos without clips
        (too short, unreadable) included, so that ``video_idx`` indexes it."""
        table = self._split.video_table()
        rows = np.arange(len(table)) if self._rows is None else self._rows
        return Samples(table, rows)

    @functools.cached_property
    def video_clips(self) -> Any:
        """torchvision's ``VideoClips`` for its samplers and recipe (:mod:`.video_clips`):
        ``clips`` (one per video of ``samples``), ``num_clips()``, ``get_clip(i)``, ..."""
        counts = self.windows.counts if self.windows is not None else self._counts()[0]
        clips = make_video_clips(self, counts)
        if clips.num_clips() != len(self):
            raise ValueError(f"{self._split.where} lists {clips.num_clips()} clips in its "
                             f"videos but index.npy has {len(self)}: rebuild the split")
        return clips

    def video_fps(self) -> np.ndarray:
        """float64 fps of each video of ``samples`` (the build's timeline)."""
        fps = self._split.video_table().column("fps")
        return fps if self._rows is None else fps[self._rows]

    def get_clip(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], int]:
        """torchvision's ``video_clips.get_clip(idx)``: ``(video, audio, info, video_idx)``,
        video uint8 in ``output_format``, untransformed."""
        clip, video = self._read(idx)
        if video is None:  # every stored clip, row for row
            video = self._per_video.get_clip_location(idx)[0]
        frames = clip.video
        if isinstance(frames, torch.Tensor) and self.output_format == "TCHW":
            frames = frames.permute(0, 3, 1, 2)  # (left as JPEGs with decode_device)
        row = video if self._rows is None else int(self._rows[video])  # one value, no copy
        fps = self.frame_rate or float(self._split.video_table().column("fps")[row])
        return frames, clip.audio, {"video_fps": fps}, video

    def __getitem__(self, i: int) -> Any:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        return self.sample(self._read(i % len(self))[0])

    def sample(self, clip: LoadedClip) -> Any:
        """The item for ``clip`` (tuple or dict), transform applied."""
        return make_item(clip.video, clip.audio, clip.label, clip.key,
                         clip.meta and clip.meta["path"], self.output_format, self.transform,
                         self.return_dict, self.video_dtype)

    def _read(self, i: int) -> tuple[LoadedClip, int | None]:
        """Clip ``i`` (or the next readable one, with ``on_error="skip"``) and its video's
        number in ``samples`` (None where that takes a search: every stored clip)."""
        for j in range(i, len(self)):
            try:
                return self._load(j)
            except ShardError as e:
                if self.on_error == "raise":
                    raise
                warnings.warn(f"shardkin: clip {j} is unreadable, handing out the next "
                              f"readable one: {e}", stacklevel=3)
        raise ShardError(f"clip {i} and every clip after it are unreadable: run "
                         "`shardkin verify` on the build")

    def _load(self, i: int) -> tuple[LoadedClip, int | None]:
        """Clip ``i`` read and decoded, and its video (see :meth:`_read`); ShardError for
        any damage."""
        ref, video = self._ref(i)
        return read_clip(ref, self), video

    def clip_refs(self, indices: Sequence[int]) -> list[ClipRef] | None:
        """Clips ``indices`` not read yet, their arrays left in their local shard files,
        for ``make_loader`` to read straight into its batch (or, for a ``transform``, into
        reused memory: a transform must not keep its input); None where clips are read
        whole (a remote build, ``decode_device``, a subclass making its own items, such as
        the recipe's ``KineticsWithVideoId``). ShardError for damage in their headers (the
        loader then reads them one by one, as ``on_error`` says)."""
        if (self._split.folder.remote or self.decode_device is not None
                or type(self).__getitem__ is not Kinetics.__getitem__
                or type(self).sample is not Kinetics.sample):
            return None
        return [self._ref(i, local=True)[0] for i in indices]

    def _ref(self, i: int, local: bool = False) -> tuple[ClipRef, int | None]:
        """Clip ``i`` not read yet, and its video (see :meth:`_read`); ``local``: see
        :meth:`_refs`."""
        if self.windows is None:
            if not self._subset:
                return self._refs(i, i, f"clip {i}", local)[0], None
            video, k = self._per_video.get_clip_location(i)
            row = int(self._counts()[2][video]) + k
            return self._refs(row, row, f"clip {i}", local)[0], video
        w = self.windows
        video, k = w.locate(i)
        span = w.span(k, w.stored[video])
        row = int(w.first_row[video])
        refs = self._refs(row + span.first, row + span.last, f"clip {i} (video {video})", local)
        return window_ref(refs, span.offset, w.frames, w.stored_frames, k), video

    def _refs(self, first: int, last: int, what: str, local: bool = False) -> list[ClipRef]:
        """The stored clips of index rows ``first..last`` (consecutive samples of one
        shard), read in one range and checked; ``local``: their arrays left in the local
        shard file, read (and checked) later."""
        rows = self.index[first : last + 1]
        path = self._split.path(self._split.manifest.shards[int(rows[0, 0])].name)
        if local:
            samples, shard = fetch_local(self._split, rows, self._wanted, DEFER, self.verify,
                                         what)
        else:
            samples, shard = fetch(self._split, rows, self._wanted, self.verify, what), None
        return [clip_ref(s.members, s.key, path, s.offset, shard, s.check) for s in samples]

    def __getstate__(self) -> dict[str, Any]:
        """The arguments, and what was set since (``transform``, ``decode_device``, which
        ``make_loader`` sets on its copy): the build is opened again when loaded, so a pickle
        stays small at any size (torchvision's recipe saves its datasets with ``torch.save``;
        spawned DataLoader workers get them this way)."""
        return {"args": {**self._args, "decode_device": self.decode_device},
                "transform": self.transform}

    def __setstate__(self, state: dict[str, Any]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said when it was made
            self.__init__(**state["args"])
        self.transform = state["transform"]
