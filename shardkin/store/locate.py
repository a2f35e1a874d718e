"""Finding a built split: the manifest of a manifest file or URL, a split folder, a build
folder with ``split``, or shard paths of one split folder."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..format.manifest import MANIFEST, ShardTable
from .folder import Folder
from .fs import is_url


def splits_in(folder: Folder) -> list[str]:
    """Sub-folders of a local build folder holding a manifest: its splits."""
    if folder.remote or not os.path.isdir(folder.url):
        return []
    return sorted(d.name for d in os.scandir(folder.url)
                  if d.is_dir() and os.path.isfile(os.path.join(d.path, MANIFEST)))


def locate(source: Any, split: str | None = None, storage_options: dict | None = None,
           attempts: int = 5) -> tuple[Folder, str, list[str] | None]:
    """(folder, manifest name, shard names chosen or None for all) of a source: a manifest
    file or URL, a split folder, a build folder with ``split`` (which a local build of one
    split may leave out), or shard paths or URLs of one split folder (a list, or a brace
    pattern ``.../train-{000000..000009}.tar``)."""
    if isinstance(source, (list, tuple)) or os.fspath(source).endswith(".tar"):
        return _locate_shards(source, storage_options, attempts)
    text = os.fspath(source)
    if text.endswith(".json"):
        head, _, name = text.rstrip("/").rpartition("/") if is_url(text) else (
            os.path.dirname(text) or ".", "", os.path.basename(text))
        return Folder(head, storage_options, attempts), name, None
    folder = Folder(text, storage_options, attempts)
    if folder.exists(MANIFEST):
        return folder, MANIFEST, None
    found = splits_in(folder)
    if split is None and len(found) == 1:
        split = found[0]
    elif split is None and found:
        raise FileNotFoundError(f"{text} holds the splits {', '.join(found)}: choose one with "
                                f"--split NAME, or pass a split folder such as "
                                f"{folder.child(found[0]).url}")
    elif split is not None and found and split not in found:
        raise FileNotFoundError(f"{text} has no split {split!r}; its splits: {', '.join(found)}")
    if split is not None and folder.child(split).exists(MANIFEST):
        return folder.child(split), MANIFEST, None
    where = folder.child(split).path(MANIFEST) if split else folder.path(MANIFEST)
    raise FileNotFoundError(f"no shardkin manifest at {where}: build one with `shardkin build ROOT "
                            f"{text}{' --split ' + split if split else ''}`")


def _locate_shards(source: Any, storage_options: dict | None,
                   attempts: int) -> tuple[Folder, str, list[str]]:
    from braceexpand import braceexpand

    urls = ([os.fspath(u) for u in source] if isinstance(source, (list, tuple))
            else list(braceexpand(os.fspath(source))))
    heads = {u.rstrip("/").rpartition("/")[0] if is_url(u) else os.path.dirname(u) or "."
             for u in urls}
    if len(heads) != 1:
        raise ValueError(f"shards must all be in one split folder (with its manifest); "
                         f"these are in {', '.join(sorted(heads))}")
    folder = Folder(heads.pop(), storage_options, attempts)
    if not folder.exists(MANIFEST):
        raise FileNotFoundError(f"no shardkin manifest at {folder.path(MANIFEST)}: shards "
                                "are read with the manifest of their split folder")
    return folder, MANIFEST, [u.rstrip("/").rpartition("/")[2] for u in urls]


def choose(shards: ShardTable, chosen: Sequence[str] | None, where: str) -> ShardTable:
    """The shards ``chosen`` (all when None), in manifest order."""
    if chosen is None:
        return shards
    unknown = sorted(set(chosen) - set(shards.names))
    if unknown:
        raise ValueError(f"{where} lists no shard {', '.join(unknown)}")
    return shards.select(set(chosen))
