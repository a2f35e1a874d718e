"""Reading a worker's lanes: shard spans walked by tar headers, clips handed out as refs.

A lane is a list of :class:`~.partition.Span` read in order. Local (and cached) shards
are walked by headers (:func:`shardkin.store.fetch.walk`), reading only each payload's
npy header: the clip's arrays stay in the file until it leaves the shuffle buffer.
Remote shards stream their byte range and the members wait in memory; samples picked
here and there from a remote shard without a cache are fetched by their index rows
(:func:`shardkin.store.fetch.fetch_samples`). Damage raises
:class:`~shardkin.format.tar.ShardError`, or with ``on_error="skip"`` warns and leaves a
:data:`BAD` marker, which :func:`substitute` replaces with a readable clip. ``verify``:
each sample carries its checksum check (:mod:`.records`).
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import numpy as np

from ..format.checks import SampleHash
from ..format.tar import ShardError
from ..store.fetch import fetch_samples, walk
from ..store.split import LocalShard, Split
from .cutting import window_ref
from .partition import Span
from .records import DEFER, HINT, ClipRef, clip_ref
from .selection import ClipSelection

DELIVERED = object()  # a resumed epoch's clip handed out before the restart
BAD = object()  # an unreadable clip (on_error="skip")


def read_lane(split: Split, lane: int, lane_spans: Sequence[Span], done: set[tuple[int, int]],
              wanted: Collection[str], on_error: str,
              picks: Callable[[Span], Sequence[int]] | None = None,
              verify: bool = False, windows: ClipSelection | None = None) -> Iterator[Any]:
    """:class:`ClipRef` (or :data:`DELIVERED` / :data:`BAD`) of one lane's positions, in
    order; ``done`` holds the (lane, position) pairs a resumed epoch already handed out.

    A span's positions are its samples ``start..stop``, or with ``picks`` the sorted
    sample numbers it gives for the span (a sample picked twice is read once); with
    ``windows``, the picks are windows, cut from the samples they span. ``verify``:
    each sample is checked against its checksum in the index (:mod:`.records`)."""
    k = 0
    for span in lane_spans:
        chosen = range(span.start, span.stop) if picks is None else picks(span)
        n = len(chosen)
        pending = [(lane, k + j) not in done for j in range(n)]
        k += n
        if not any(pending):
            yield from itertools.repeat(DELIVERED, n)
            continue
        path = split.path(split.shards[span.shard].name)
        got = 0
        try:
            items = (_read_windows(split, span.shard, windows, chosen, pending, wanted,
                                   on_error, verify) if windows is not None else
                     _read_span(split, span.shard, chosen, pending, wanted, on_error,
                                sparse=picks is not None, verify=verify))
            for item in items:
                got += 1
                yield item
        except (ShardError, OSError) as e:
            error = str(e) if path in str(e) else f"{path}: {type(e).__name__}: {e}"
            if on_error == "raise":
                raise ShardError(f"{error}: {HINT}") from e
            warnings.warn(f"shardkin: skipping {n - got} clip(s): {error}", stacklevel=2)
            yield from itertools.repeat(BAD, n - got)


def _read_span(split: Split, shard: int, chosen: Sequence[int], pending: list[bool],
               wanted: Collection[str], on_error: str, sparse: bool,
               verify: bool) -> Iterator[Any]:
    """The items of one span's positions (``chosen`` samples of ``shard``, sorted)."""
    path = split.path(split.shards[shard].name)
    load = {i for i, p in zip(chosen, pending) if p}
    if sparse and split.folder.remote and split.cache is None:
        samples = ((s, None) for s in fetch_samples(split, shard, sorted(load), wanted, verify))
    else:
        samples = walk(split, shard, chosen[0], chosen[-1] + 1, load.__contains__, wanted,
                       DEFER, verify)
    sample, local, item = None, None, DELIVERED
    try:
        for j, i in enumerate(chosen):
            if j == 0 or i != chosen[j - 1]:  # the next sample picked
                item = DELIVERED
                if i in load:
                    while sample is None or sample.index < i:
                        sample, local = next(samples, (None, None))
                        if sample is None:
                            raise ShardError(f"{path}: sample {i} is missing")
                    item = _ref(sample.members, sample.key, path, sample.offset, local,
                                on_error, sample.check)
            if j == len(chosen) - 1:
                for _ in samples:  # to the span's end: a shard streaming into the cache is kept
                    pass
            yield item if pending[j] else DELIVERED
    finally:
        samples.close()


def _read_windows(split: Split, shard: int, windows: ClipSelection, chosen: Sequence[int],
                  pending: list[bool], wanted: Collection[str], on_error: str,
                  verify: bool) -> Iterator[Any]:
    """The items of one span's windows (``chosen``, sorted): each cut from the samples it
    spans, every sample walked once."""
    cut = windows.cut(shard, np.asarray(chosen, np.int64))
    need = sorted({i for f, last, p in zip(cut.first.tolist(), cut.last.tolist(), pending)
                   if p for i in range(f, last + 1)})
    samples = _read_span(split, shard, need, [True] * len(need), wanted, on_error,
                         sparse=True, verify=verify)
    got: dict[int, Any] = {}
    read = 0  # samples of need read so far
    w = windows.windows
    for j, (first, offset, last, number) in enumerate(zip(*(a.tolist() for a in cut))):
        if not pending[j]:
            yield DELIVERED
            continue
        for i in [i for i in got if i < first]:
            del got[i]  # later windows start later
        while last not in got:
            got[need[read]] = next(samples)
            read += 1
        refs = [got[i] for i in range(first, last + 1)]
        yield BAD if any(r is BAD for r in refs) else window_ref(
            refs, offset, w.frames, w.stored_frames, number)


def _ref(members: dict[str, Any], key: str, path: str, offset: int, local: LocalShard | None,
         on_error: str, check: SampleHash | None = None) -> Any:
    """The sample's :class:`ClipRef`; with ``on_error="skip"`` a damaged one is :data:`BAD`
    and the shard reads on."""
    try:
        return clip_ref(members, key, path, offset, local, check)
    except ShardError as e:
        if on_error == "raise":
            raise
        warnings.warn(f"shardkin: skipping a clip: {e}", stacklevel=3)
        return BAD


def substitute(items: Iterator[Any]) -> Iterator[tuple[ClipRef, bool]]:
    """``(ref, is_substitute)``: each :data:`BAD` replaced with the nearest earlier (else
    later) readable clip, so every rank keeps its count."""
    last: ClipRef | None = None
    pending = 0
    for item in items:
        if item is BAD:
            if last is None:
                pending += 1
            else:
                yield last, True
            continue
        last = item
        yield from itertools.repeat((item, True), pending)
        pending = 0
        yield item, False
    if pending:
        raise ShardError(f"none of this worker's {pending} clip(s) could be read, so none can "
                         "stand in for them; see the warnings above and rebuild the shards")
