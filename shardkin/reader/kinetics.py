"""``shardkin.Kinetics``: a map-style dataset over a build, indexed like torchvision's.

Index ``i`` is the clip torchvision's ``Kinetics`` gives at ``i`` on the same tree and
options (class order, video order within a class, clip order within a video). Start-up
reads the manifest's head and ``index.npy`` only; each item is one positioned read
(``preadv``, safe in forked DataLoader workers) or one range request on object storage,
retried with backoff when it fails (:func:`shardkin.store.fs.retried`). Its members
are grouped and decoded by the same code as ``ShardDataset``'s
(:mod:`shardkin.format.samples`, :mod:`.records`), with the same checks and errors.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from ..format.options import TORCHVISION_ARGS
from ..format.tar import ShardError
from ..samplers.video_clips import ClipCounts
from ..store.fetch import fetch
from ..store.split import open_split
from .checking import checked_build
from .cutting import window_ref
from .items import OutputFormat, check_output_format, make_item, video_dtype_for
from .records import ClipRef, OnError, check_on_error, clip_ref, load_clip, wanted_members
from .windows import windows_for


class Kinetics(Dataset):
    """Clip ``i`` of a build, as ``torchvision.datasets.Kinetics(...)[i]`` returns it.

    ``source``: a build folder or URL with ``split``, a split folder, or a manifest.
    Clip arguments given (``frame_rate``, torchvision's ``_video_*``/``_audio_*``) must
    equal the build's options, or a ``ValueError`` says which differ; left out, the
    build's are used. ``frames_per_clip`` and ``step_between_clips`` may be any on a
    contiguous build (the default, step equal to frames_per_clip): clips are then cut at
    read time (:mod:`.windows`: which windows a video has, and their sound), each in one
    positioned read or range request.
    ``output_format``, ``transform``, ``return_dict`` and ``video_dtype`` are as in
    ``ShardDataset``.
    A damaged clip raises :class:`~shardkin.format.tar.ShardError` naming the shard and
    byte range; ``on_error="skip"`` warns and returns the next readable clip instead.
    ``verify`` (default) checks each clip's bytes against its checksum in the index as
    they are read (a flipped pixel byte is caught), as ``ShardDataset`` does;
    ``verify=False`` turns it off.
    """

    def __init__(self, source: str | os.PathLike, split: str | None = "train", *,
                 output_format: OutputFormat = "TCHW",
                 transform: Callable[[Any], Any] | None = None,
                 return_dict: bool = False, video_dtype: torch.dtype | None = None,
                 on_error: OnError = "raise", verify: bool = True,
                 storage_options: dict | None = None, **clip_args: Any) -> None:
        check_output_format(output_format)
        check_on_error(on_error)
        unknown = sorted(set(clip_args) - set(TORCHVISION_ARGS))
        if unknown:
            raise TypeError(f"unexpected arguments {', '.join(unknown)}")
        self._split = open_split(source, split, storage_options=storage_options)
        manifest, where = self._split.manifest, self._split.folder.url
        if manifest.index is None:
            raise ValueError(f"{where} has no index.npy (built by an older shardkin): "
                             "re-run the build with --overwrite to add it")
        options = manifest.options
        self.windows = None
        if clip_args.get("frames_per_clip") or clip_args.get("step_between_clips"):
            self.windows = windows_for(options, self._split.video_counts, where,
                                       clip_args.pop("frames_per_clip", None),
                                       clip_args.pop("step_between_clips", None))
        differ = [f"{arg}={value!r} (built with {options.get(TORCHVISION_ARGS[arg])!r})"
                  for arg, value in clip_args.items()
                  if value is not None and value != (options.get(TORCHVISION_ARGS[arg]) or
                                                     (None if arg == "frame_rate" else 0))]
        if differ:
            raise ValueError(f"{where} was built with other options: {'; '.join(differ)}. "
                             "Rebuild with those options (shardkin build) or drop the arguments")
        self.index = self._split.read_index()
        self.classes: list[str] = manifest.classes
        self.split = manifest.split
        self.output_format, self.transform, self.return_dict = output_format, transform, return_dict
        self.video_dtype = video_dtype_for(video_dtype, return_dict)
        self.on_error = on_error
        self.verify = verify and checked_build(self._split)
        self._wanted = wanted_members(return_dict, self.windows is not None)

    def __len__(self) -> int:
        return len(self.windows) if self.windows else len(self.index)

    @functools.cached_property
    def video_clips(self) -> ClipCounts:
        """Clips per video, what torchvision's clip samplers read from ``video_clips``:
        ``clips`` (one ``range`` per video in torchvision's order, too-short videos with
        none), ``num_clips()``, ``num_videos()``. Read from the manifest on first use."""
        video_clips = ClipCounts(self.windows.counts if self.windows
                                 else self._split.clips_per_video())
        if video_clips.num_clips() != len(self):
            raise ValueError(f"{self._split.where} lists {video_clips.num_clips()} clips in its "
                             f"videos but index.npy has {len(self)}: rebuild the split")
        return video_clips

    def __getitem__(self, i: int) -> Any:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        for j in range(i % len(self), len(self)):
            try:
                clip = self._load(j)
                break
            except ShardError as e:
                if self.on_error == "raise":
                    raise
                warnings.warn(f"shardkin: clip {j} is unreadable, handing out the next "
                              f"readable one: {e}", stacklevel=2)
        else:
            raise ShardError(f"clip {i} and every clip after it are unreadable: run "
                             "`shardkin verify` on the build")
        return make_item(clip.video, clip.audio, clip.label, clip.key,
                         clip.meta and clip.meta["path"], self.output_format, self.transform,
                         self.return_dict, self.video_dtype)

    def _load(self, i: int) -> Any:
        """Clip ``i`` read and decoded; ShardError for any damage."""
        if self.windows is None:
            return load_clip(self._refs(i, i, f"clip {i}")[0])
        w = self.windows
        video, k = w.locate(i)
        span = w.span(k, w.stored[video])
        row = int(w.first_row[video])
        refs = self._refs(row + span.first, row + span.last, f"clip {i} (video {video})")
        return load_clip(window_ref(refs, span.offset, w.frames, w.stored_frames, k))

    def _refs(self, first: int, last: int, what: str) -> list[ClipRef]:
        """The stored clips of index rows ``first..last`` (consecutive samples of one
        shard), read in one range and checked."""
        samples = fetch(self._split, self.index[first : last + 1], self._wanted, self.verify,
                        what)
        path = self._split.path(self._split.manifest.shards[int(self.index[first, 0])].name)
        return [clip_ref(s.members, s.key, path, s.offset, check=s.check) for s in samples]
