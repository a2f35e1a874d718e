"""Finding a built split and its shards, for ``info``, ``verify`` and ``show``.

Manifests are read through :mod:`shardkin.manifest` and shards are opened by the
callers through :func:`shardkin.tarread.open_shard` alone, the hook for other stores.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .manifest import MANIFEST, load_manifest, locate_manifest, manifest_path
from .storage import is_url


def splits_in(folder: Path) -> list[str]:
    """Sub-folders of ``folder`` holding a manifest: the splits of a build folder."""
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if (d / MANIFEST).is_file())


def locate(source: str | os.PathLike, split: str | None = None) -> Path:
    """The manifest of ``OUT[/split]``: a manifest file, a split folder, or a build
    folder with ``split`` (which may be left out when the build has one split)."""
    p = Path(source)
    if not (p.is_file() or (p / MANIFEST).is_file()):
        found = splits_in(p)
        if split is None and len(found) == 1:
            split = found[0]
        elif split is None and found:
            raise FileNotFoundError(f"{p} holds the splits {', '.join(found)}: choose one with "
                                    f"--split NAME, or pass a split folder such as {p / found[0]}")
        elif split is not None and found and split not in found:
            raise FileNotFoundError(f"{p} has no split {split!r}; its splits: {', '.join(found)}")
    return manifest_path(p, split)


def open_split(source: str | os.PathLike, split: str | None = None) -> tuple[dict[str, Any], str]:
    """(manifest, folder its shard names are relative to) of ``OUT[/split]``, local or a URL."""
    if is_url(source):
        folder, name = locate_manifest(source, split)
        return folder.read_json(name), folder.url
    path = locate(source, split)
    manifest = load_manifest(path)
    if split is not None and manifest.get("split") != split:
        raise FileNotFoundError(f"{path} is the manifest of split {manifest.get('split')!r}, "
                                f"not {split!r}: leave out --split or pass the build folder")
    return manifest, os.fspath(path.parent)


def shard_url(folder: str, name: str) -> str:
    """Where shard (or sidecar) ``name`` of the split in ``folder`` lives."""
    return f"{folder}/{name}" if is_url(folder) else os.path.join(folder, name)
