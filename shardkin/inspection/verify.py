"""``shardkin verify``: every shard's bytes and every sample checked against the manifest.

:func:`verify_split` reads each shard once, front to back, through
:meth:`~shardkin.store.split.Split.open` (a local file, or retried range requests),
hashing the bytes as the tar reader walks them; members are grouped into samples by
:func:`~shardkin.format.samples.iter_samples`, which shows incomplete ones too. The
rules are :class:`~shardkin.inspection.check.SplitCheck`'s.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, BinaryIO

from tqdm import tqdm

from ..format.manifest import HEAD
from ..format.samples import iter_samples
from ..format.tar import ShardError, checksum
from ..format.tarread import TarReader
from ..store.split import Split
from .check import SplitCheck


class HashingFile:
    """A file read front to back through sha256; not seekable, so every byte passes here."""

    def __init__(self, f: BinaryIO, on_read: Callable[[int], Any] = lambda n: None) -> None:
        self._f, self._on_read = f, on_read
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._kept: bytearray | None = bytearray()  # bytes read from _kept_from on
        self._kept_from = 0

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._f.readinto(buffer) or 0
        self.sha256.update(memoryview(buffer)[:n])
        if self._kept is not None:
            self._kept += memoryview(buffer)[:n]
        self.size += n
        self._on_read(n)
        return n

    def sample_checksum(self, offset: int, length: int) -> int:
        """The checksum of the sample at bytes ``offset..offset+length`` (read already);
        the bytes before its end are then let go."""
        start = offset - self._kept_from
        with memoryview(self._kept) as view:
            value = checksum(view[start : start + length])
        del self._kept[: start + length]
        self._kept_from = offset + length
        return value

    def drain(self) -> None:
        """Read (and hash) the rest of the file, keeping none of it."""
        self._kept = None
        buffer = bytearray(1 << 20)
        while self.readinto(buffer):
            pass


def _read_shard(split: Split, n: int, check: SplitCheck, bar: tqdm) -> None:
    """Read shard number ``n`` of the manifest front to back, hashing it, into ``check``.

    The shard is opened at the size it has in the store, not the one the manifest
    records, so that a longer or shorter shard is hashed (and walked) as it is."""
    info = split.manifest.shards[n]
    size = split.folder.size(info.name)
    if size is None:
        check.shard_missing(n, split.path(info.name))
        return
    with split.open_file(info.name, size) as f:
        hashed = HashingFile(f, bar.update)
        samples, error = 0, None
        try:
            for sample in iter_samples(TarReader(hashed, split.path(info.name)),
                                       wanted=check.members, strict=False):
                check.sample(n, sample, hashed.sample_checksum(sample.offset, sample.length))
                samples += 1
        except ShardError as e:
            error = e
        hashed.drain()
    check.shard_read(n, samples, hashed.size, hashed.sha256.hexdigest(), error)


def verify_split(split: Split, progress: bool = True,
                 on_problem: Callable[[str], Any] = lambda line: None) -> list[str]:
    """Every problem found in ``split``, all the shards of its manifest read; the split
    must be opened with the whole manifest (``open_split(..., head=False)``)."""
    manifest = split.manifest
    check = SplitCheck(manifest, on_problem)
    bar = tqdm(total=sum(s.bytes for s in manifest.shards), desc="verify", unit="B",
               unit_scale=True, unit_divisor=1024, disable=not progress)
    for n in range(len(manifest.shards)):
        _read_shard(split, n, check, bar)
    bar.close()
    listed = {s.name for s in manifest.shards}
    for name in split.folder.names():
        if name.endswith(".tar") and name not in listed:
            check.shard_unlisted(name)
    if manifest.index is not None:
        name = manifest.index.name
        try:
            data = split.folder.read_bytes(name)
        except FileNotFoundError:
            data = None
        check.index(name, data, split.path(name))
    _check_reader_files(split, check)
    return check.finish()


def _check_reader_files(split: Split, check: SplitCheck) -> None:
    """``videos.npy``, ``paths.npy`` (their bytes) and ``head.json`` (the manifest's head)."""
    manifest = split.manifest
    for entry in (manifest.video_table, manifest.path_table):
        if entry is None:
            continue
        try:
            data = split.folder.read_bytes(entry.name)
        except FileNotFoundError:
            data = None
        check.file(entry, data, split.path(entry.name))
    if split.folder.exists(HEAD):
        try:
            head = json.loads(split.folder.read_bytes(HEAD))
        except ValueError as e:  # a damaged file is a finding, not a crash
            check.problem(HEAD, f"undecodable: {e}; re-run the build command to rewrite it")
            return
        if head != json.loads(json.dumps(manifest.head_json())):
            check.problem(HEAD, "differs from the manifest's head: readers would start from "
                                "other shards or options; re-run the build command to rewrite it")
