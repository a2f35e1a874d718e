"""The one way to read a split's samples, with one set of checks: :func:`walk` walks a
shard by its tar headers (``ShardDataset``'s lanes, ``shardkin show``); :func:`fetch`
reads the samples of some index rows in one positioned read or range request
(``Kinetics``, and :func:`fetch_samples` for samples picked here and there from a remote
shard); :func:`fetch_local` reads their headers from a local shard and leaves their arrays
in it (``Kinetics`` batched by ``make_loader``). All raise
:class:`~shardkin.format.tar.ShardError` naming the shard and the byte offset for any
damage, and all give each sample its checksum check
(:class:`~shardkin.format.checks.SampleHash`, ``verify``) fed with the bytes as they are
read: done when the sample's members are all in memory, else once the members left in
the file are read (:mod:`shardkin.reader.records`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ..format.checks import KEEP, SampleHash
from ..format.manifest import INDEX
from ..format.npy import parse_header
from ..format.sample import parse_key
from ..format.samples import ALL_MEMBERS, TarSample, iter_samples
from ..format.tar import ShardError
from ..format.tarread import BlobReader, TarReader
from .split import LocalShard, Split, scratch

Check = Callable[[int, str], SampleHash]


def has_checksums(split: Split) -> bool:
    """Whether the build's index keeps each sample's checksum (builds since checksums);
    a remote index not yet read is not fetched for it, only its header."""
    info = split.manifest.index
    if info is None:
        return False
    if not split.folder.remote or split.loaded_index():
        rows = split.index_rows()
        return rows is not None and rows.shape[1] > 3
    try:
        shape = parse_header(split.folder.read_range(info.name, 0, min(4096, info.bytes)))[2]
    except (OSError, EOFError, ValueError):
        return False  # no index to check with: the reader says so when it needs one
    return len(shape) == 2 and shape[1] > 3


def _pread(fd: int, at: int, n: int) -> memoryview:
    """``n`` bytes of ``fd`` at ``at`` (fewer at its end) in this thread's scratch buffer:
    valid until it is used again."""
    view = scratch(n)
    return view[: os.preadv(fd, [view], at)]


def _checks_by_key(split: Split, shard: int, fill: Callable[[int, int], bytes],
                   keep: int) -> Check:
    """Each sample's check from its index row, found by its key (``first_rows`` of its
    video plus its clip number): the sample must be where the row says, with its bytes."""
    rows, first, counts = split.index_rows(), split.first_rows(), split.clips_per_video()
    path = split.path(split.shards[shard].name)

    def check(_: int, key: str) -> SampleHash:
        where = f"{path}: sample {key}"
        try:
            video, clip = parse_key(key)
        except ValueError as e:
            return SampleHash.failed(where, f"has no index row ({e})")
        if not (video < len(counts) and clip < counts.item(video)):
            return SampleHash.failed(where, "has no index row: the shard is not this build's")
        _, offset, length, want = rows[first.item(video) + clip].tolist()
        return SampleHash(offset, offset + length, want, where, fill, keep)

    return check


def walk(split: Split, shard: int, start: int = 0, stop: int | None = None,
         load: Callable[[int], bool] = lambda i: True, wanted: Collection[str] = ALL_MEMBERS,
         defer: Collection[str] = (), verify: bool = False
         ) -> Iterator[tuple[TarSample, LocalShard | None]]:
    """Samples ``start..stop-1`` of shard number ``shard`` walked by their headers, as
    ``(sample, local)``: ``sample.index`` numbers it in the shard, ``members`` is None
    unless ``load(index)`` (see :func:`~shardkin.format.samples.iter_samples`); members
    in ``defer`` stay in ``local``, the shard file, when there is one (a local or cached
    shard). ``verify`` (for a build keeping checksums: :func:`has_checksums`): each sample
    loaded has its ``check``. A shard streaming into the cache is completed once sample
    ``stop - 1`` is read; the shard is closed when the walk ends."""
    info = split.shards[shard]
    path = split.path(info.name)
    stop = info.clips if stop is None else stop
    opened = split.open(shard, start, stop)
    try:
        reader = TarReader(opened.file, path, opened.offset, info.bytes)
        if reader.size is not None and reader.size != info.bytes:
            raise reader.error(f"has {reader.size} bytes, the manifest says {info.bytes} "
                               "(truncated or replaced)", 0)
        first, local = opened.first, opened.local
        check = None
        if verify:
            # A local shard's headers and small members around the arrays left in it are
            # read again (a few KB a clip) with those arrays when they are read into
            # place (reader/loading.read_array), rather than kept meanwhile in the shuffle
            # buffer; a stream is hashed as it is read (it cannot be read again).
            fill = ((lambda at, n: _pread(local.file.fileno(), at, n)) if local is not None
                    else (lambda at, n: split.folder.read_range(info.name, at, n)))
            check = _checks_by_key(split, shard, fill, 0 if local is not None else KEEP)
        for sample in iter_samples(reader, start - first, stop - first,
                                   lambda i: load(i + first), wanted,
                                   defer=defer if local is not None else (), check=check):
            sample.index += first
            if sample.index == stop - 1:
                opened.finish()
            yield sample, local
    finally:
        opened.close()


class _Rows(NamedTuple):
    """Index rows of consecutive samples of one shard: where they are, for errors."""

    name: str  # the shard's
    path: str
    begin: int
    end: int
    where: str


def _rows(split: Split, rows: np.ndarray, what: str) -> _Rows:
    shard, begin = (int(x) for x in rows[0, :2])
    end = int(rows[-1, 1] + rows[-1, 2])
    name = split.manifest.shards[shard].name
    path = split.path(name)
    where = f"{path}: {what or 'samples'} (bytes {begin}-{end - 1})"
    if (rows[:, 0] != shard).any() or end <= begin:
        raise ShardError(f"{where}: the index places one video's clips apart: rebuild")
    return _Rows(name, path, begin, end, where)


def _checks_by_row(rows: np.ndarray, path: str, fill: Callable[[int, int], bytes],
                   keep: int) -> Check | None:
    """Sample ``i``'s check from row ``i`` (None for rows without checksums)."""
    if rows.shape[1] <= 3:
        return None
    table = rows[:, 1:].tolist()

    def check(i: int, key: str) -> SampleHash:
        offset, length, want = table[i]
        return SampleHash(offset, offset + length, want, f"{path}: sample {key}", fill, keep)

    return check


def _spanned(samples: list[TarSample], rows: np.ndarray, where: str) -> list[TarSample]:
    if [[s.offset, s.length] for s in samples] != rows[:, 1:3].tolist():
        raise ShardError(f"{where}: the index rows do not span exactly its samples")
    return samples


def fetch(split: Split, rows: np.ndarray, wanted: Collection[str], verify: bool = False,
          what: str = "") -> list[TarSample]:
    """The samples of index ``rows`` (int64 ``[n, 3 or 4]``: consecutive samples of one
    shard) with their ``wanted`` members, views of one positioned read or range request;
    ``what`` says what they are, in errors. ShardError for anything that does not read
    or does not fit the rows. ``verify`` (rows with checksums): each sample's ``check``
    is done (failed ones are raised by :func:`shardkin.reader.records.clip_ref`)."""
    at = _rows(split, rows, what)
    try:
        blob = split.folder.read_range(at.name, at.begin, at.end - at.begin)
    except (OSError, EOFError, ValueError) as e:  # EOFError: the shard is shorter
        raise ShardError(f"{at.where}: {type(e).__name__}: {e}") from None
    view = memoryview(blob)
    check = _checks_by_row(rows, at.path, lambda o, n: view[o - at.begin : o - at.begin + n],
                           KEEP) if verify else None
    return _spanned(list(iter_samples(BlobReader(blob, at.path, at.begin), stop=len(rows),
                                      wanted=wanted, check=check)), rows, at.where)


def fetch_local(split: Split, rows: np.ndarray, wanted: Collection[str],
                defer: Collection[str], verify: bool = False, what: str = ""
                ) -> tuple[list[TarSample], LocalShard]:
    """:func:`fetch` for a local shard, with the members in ``defer`` left in the file
    (``local``): each sample's headers and small members read as :func:`walk` reads them
    (one read a sample, from its first header), its arrays read later straight to where
    they go (:func:`~shardkin.reader.loading.read_array`), its check fed as they land."""
    at = _rows(split, rows, what)
    try:
        local = LocalShard(at.path)
        local.file.seek(at.begin)
    except OSError as e:
        raise ShardError(f"{at.where}: {type(e).__name__}: {e}") from None
    fd = local.file.fileno()
    check = _checks_by_row(rows, at.path, lambda o, n: _pread(fd, o, n), 0) if verify else None
    samples = iter_samples(TarReader(local.file, at.path), stop=len(rows), wanted=wanted,
                           defer=defer, check=check)
    return _spanned(list(samples), rows, at.where), local


def fetch_samples(split: Split, shard: int, numbers: Sequence[int], wanted: Collection[str],
                  verify: bool = False) -> Iterator[TarSample]:
    """Samples ``numbers`` (sorted, distinct) of shard number ``shard`` with their
    ``wanted`` members in memory, each run of consecutive samples in one :func:`fetch`:
    only their bytes are read."""
    number = split.number(shard)
    ranges = split.sample_ranges(number)
    if ranges is None:
        raise FileNotFoundError(f"{split.path(INDEX)} is missing: it locates samples")
    runs = np.split(np.asarray(numbers), np.flatnonzero(np.diff(numbers) != 1) + 1)
    for run in runs:
        a, b = int(run[0]), int(run[-1])
        rows = np.column_stack([np.full(b - a + 1, number), ranges[a : b + 1]])
        for sample in fetch(split, rows, wanted, verify, f"samples {a}-{b}"):
            sample.index += a
            yield sample
