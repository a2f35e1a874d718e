"""``shardkin.Kinetics``: a map-style dataset over a build, indexed like torchvision's.

Index ``i`` is the clip torchvision's ``Kinetics`` gives at ``i`` on the same tree and
options (class order, video order within a class, clip order within a video). Start-up
reads the manifest and ``index.npy`` only; each item is one positioned read (``pread``,
safe in forked DataLoader workers) or one range request on object storage, retried
with backoff when it fails (:func:`shardkin.storage.retried`).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from .codecs import decode_sample_video
from .items import check_output_format, make_item
from .manifest import READER_KEYS, locate_manifest, manifest_head
from .npy import decode_npy
from .sample import AUDIO, LABEL, META, decode_label, decode_meta, split_member
from .tarread import BLOCK, header_fields

# torchvision's argument name -> the build option it must equal
_CHECKED = {"frames_per_clip": "frames_per_clip", "step_between_clips": "step_between_clips",
            "frame_rate": "frame_rate", "_video_width": "width", "_video_height": "height",
            "_video_min_dimension": "min_dimension", "_video_max_dimension": "max_dimension",
            "_audio_samples": "audio_rate", "_audio_channels": "audio_channels"}


def tar_members(blob: bytearray) -> tuple[str, dict[str, memoryview]]:
    """(key, members by extension) of the tar entries of one sample in ``blob``, without
    copying; headers are checked as :class:`~shardkin.tarread.TarReader` checks them."""
    view, pos, key, out = memoryview(blob), 0, "", {}
    while pos + BLOCK <= len(view):
        _, name, size = header_fields(bytes(view[pos : pos + BLOCK]))
        start = pos + BLOCK
        if start + size > len(view):
            raise ValueError(f"sample bytes end inside member {name!r}")
        key, ext = split_member(name)
        out[ext] = view[start : start + size]
        pos = start + size + (-size % BLOCK)
    return key, out


class Kinetics(Dataset):
    """Clip ``i`` of a build, as ``torchvision.datasets.Kinetics(...)[i]`` returns it.

    ``source``: a build folder or URL with ``split``, a split folder, or a manifest.
    Clip arguments given (``frames_per_clip``, ``step_between_clips``, ``frame_rate``,
    torchvision's ``_video_*``/``_audio_*``) must equal the build's options, or a
    ``ValueError`` says which differ; left out, the build's are used.
    ``output_format``, ``transform`` and ``return_dict`` are as in ``ShardDataset``.
    """

    def __init__(self, source: str | os.PathLike, split: str | None = "train", *,
                 output_format: str = "TCHW", transform: Callable[[Any], Any] | None = None,
                 return_dict: bool = False, storage_options: dict | None = None,
                 **clip_args: Any) -> None:
        check_output_format(output_format)
        unknown = sorted(set(clip_args) - set(_CHECKED))
        if unknown:
            raise TypeError(f"unexpected arguments {', '.join(unknown)}")
        self._folder, name = locate_manifest(source, split, storage_options)
        text = self._folder.read_bytes(name).decode("utf-8")
        try:
            manifest = manifest_head(text, self._folder.path(name), READER_KEYS + ("index", "options"))
        except ValueError as e:
            if "no index" not in str(e):
                raise
            raise ValueError(f"{self._folder.url} has no index.npy (built by an older shardkin): "
                             "re-run the build with --overwrite to add it") from None
        options = manifest["options"]
        differ = [f"{arg}={value!r} (built with {options.get(_CHECKED[arg])!r})"
                  for arg, value in clip_args.items()
                  if value is not None and value != (options.get(_CHECKED[arg]) or
                                                     (None if arg == "frame_rate" else 0))]
        if differ:
            raise ValueError(f"{self._folder.url} was built with other options: {'; '.join(differ)}. "
                             "Rebuild with those options (shardkin build) or drop the arguments")
        self.index = decode_npy(self._folder.read_bytes(manifest["index"]["name"]))
        self.classes: list[str] = manifest["classes"]
        self.split = manifest["split"]
        self._shards = [s["name"] for s in manifest["shards"]]
        self.output_format, self.transform, self.return_dict = output_format, transform, return_dict

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Any:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        shard, offset, length = (int(x) for x in self.index[i])
        blob = self._folder.read_range(self._shards[shard], offset, length)
        try:
            key, members = tar_members(blob)
            video = torch.from_numpy(decode_sample_video(members))
            audio = torch.from_numpy(decode_npy(members[AUDIO]))
            label = decode_label(members[LABEL])
            meta = decode_meta(members[META]) if self.return_dict else None
        except (ValueError, KeyError) as e:
            raise ValueError(f"{self._folder.path(self._shards[shard])}: clip {i} at byte "
                             f"{offset} is unreadable ({type(e).__name__}: {e}): run "
                             "`shardkin verify` on the build") from None
        return make_item(video, audio, label, key, meta and meta["path"], self.output_format,
                         self.transform, self.return_dict)

