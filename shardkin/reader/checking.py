"""Clips checked as they are read: what a reader does with a clip found damaged once
read (its bytes do not match their checksum, :class:`~.records.Damaged`): raise, or with
``on_error="skip"`` warn and read a readable clip in its place, so that every rank keeps
its count. Damage found before a clip is read is handled by the lanes (:mod:`.lanes`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ..format.checks import SampleHash
from ..format.tar import ShardError
from ..store.fetch import has_checksums
from ..store.split import Split
from .loading import load_clip
from .records import ClipRef, Damaged, LoadedClip, OnError

T = TypeVar("T")


def checked_build(split: Split) -> bool:
    """Whether the clips of ``split`` can be checked (its index keeps checksums); warns
    that they are read unchecked if not."""
    if has_checksums(split):
        return True
    warnings.warn(f"shardkin: {split.where}: this build's index keeps no checksums (built "
                  "by an older shardkin), so its clips are read unchecked: rebuild it to check "
                  "them, or pass verify=False", stacklevel=3)
    return False


def load_checked(refs: Iterable[ClipRef], on_error: OnError,
                 load: Callable[[ClipRef], LoadedClip] = load_clip) -> Iterator[LoadedClip]:
    """``load`` (:func:`load_clip`) of each of ``refs``; a damaged clip (:class:`Damaged`)
    raises, or with ``on_error="skip"`` warns and the latest readable clip (else the next)
    is read in its place, so the count stays the same."""
    last: ClipRef | None = None
    waiting = 0
    for ref in refs:
        try:
            clip = load(ref)
        except Damaged as e:
            if on_error == "raise":
                raise
            warnings.warn(f"shardkin: skipping a clip: {e}", stacklevel=2)
            if last is None:
                waiting += 1
            else:
                yield load(last)
            continue
        for _ in range(waiting):
            yield load(ref)
        last, waiting = ref, 0
        yield clip
    if waiting:
        raise ShardError(f"none of this worker's {waiting} clip(s) could be read, so none can "
                         "stand in for them; see the warnings above and rebuild the shards")


T = TypeVar("T")


def read_with_stand_ins(read: Callable[[list[ClipRef]], T], refs: list[ClipRef],
                        on_error: OnError, spare: ClipRef | None = None
                        ) -> tuple[T, int, list[ClipRef]]:
    """``read(refs)`` (clips read and checked in order, e.g. into a batch); a damaged clip
    raises, or with ``on_error="skip"`` warns and all is read again with a readable
    clip in its place: the nearest earlier one, else ``spare`` (read before), else the
    next. Returns what ``read`` made, how many clips stood in, and the clips read."""
    bad: list[SampleHash] = []
    stood = 0
    while True:
        try:
            return read(refs), stood, refs
        except Damaged as e:
            if on_error == "raise":
                raise
            warnings.warn(f"shardkin: skipping a clip: {e}", stacklevel=3)
            bad.append(e.check)
            damaged = [e.check in r.checks for r in refs]
            first = damaged.index(True)
            ok = [r for r in (*reversed(refs[:first]), spare, *refs[first:])
                  if r is not None and not any(c in r.checks for c in bad)]
            if not ok:
                raise ShardError(f"none of the {len(refs)} clip(s) of this batch could be read, "
                                 "so none can stand in for them; see the warnings above and "
                                 "rebuild the shards") from None
            stood += sum(damaged)
            refs = [ok[0] if d else r for r, d in zip(refs, damaged)]
