"""Reading a worker's lanes: shard spans walked by tar headers, clips handed out as refs.

A lane is a list of :class:`~.partition.Span` read in order. Local (and cached) shards
are walked by headers, reading only each payload's npy header: the clip's arrays stay
in the file until it leaves the shuffle buffer. Remote shards stream their byte range
(:meth:`shardkin.store.split.Split.open`) and the members wait in memory. Damage
raises :class:`~shardkin.format.tar.ShardError`, or with ``on_error="skip"`` warns and
leaves a :data:`BAD` marker, which :func:`substitute` replaces with a readable clip.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Collection, Iterator
from typing import Any

from ..format.sample import AUDIO, VIDEO
from ..format.samples import iter_samples
from ..format.tar import ShardError
from ..format.tarread import TarReader
from ..store.split import Opened, Split
from .partition import Span
from .records import HINT, ClipRef, clip_ref

DELIVERED = object()  # a resumed epoch's clip handed out before the restart
BAD = object()  # an unreadable clip (on_error="skip")


def read_lane(split: Split, lane: int, lane_spans: list[Span], done: set[tuple[int, int]],
              wanted: Collection[str], on_error: str) -> Iterator[Any]:
    """:class:`ClipRef` (or :data:`DELIVERED` / :data:`BAD`) of one lane's positions, in
    order; ``done`` holds the (lane, position) pairs a resumed epoch already handed out."""
    k = 0
    for span in lane_spans:
        n = span.stop - span.start
        base = k - span.start
        if done and all((lane, base + i) in done for i in range(span.start, span.stop)):
            yield from itertools.repeat(DELIVERED, n)
            k += n
            continue
        info = split.shards[span.shard]
        path = split.path(info.name)
        got, opened = 0, None
        try:
            opened = split.open(span.shard, span.start, span.stop)
            reader = TarReader(opened.file, path, opened.offset)
            if reader.size is not None and reader.size != info.bytes:
                raise reader.error(f"has {reader.size} bytes, the manifest says {info.bytes} "
                                   "(truncated or replaced)", 0)
            first = opened.first
            for sample in iter_samples(reader, span.start - first, span.stop - first,
                                       lambda i, at=base + first: (lane, at + i) not in done,
                                       wanted,
                                       defer=(VIDEO, AUDIO) if opened.local else ()):
                got += 1
                item = DELIVERED if sample.members is None else _ref(
                    sample.members, sample.key, path, sample.offset, opened, on_error)
                if got == n:  # mix() draws no further from this span
                    opened.finish()
                yield item
        except (ShardError, OSError) as e:
            error = str(e) if path in str(e) else f"{path}: {type(e).__name__}: {e}"
            if on_error == "raise":
                raise ShardError(f"{error}: {HINT}") from e
            warnings.warn(f"shardkin: skipping {n - got} clip(s): {error}", stacklevel=2)
            yield from itertools.repeat(BAD, n - got)
        finally:
            if opened is not None:
                opened.close()
        k += n


def _ref(members: dict[str, Any], key: str, path: str, offset: int, opened: Opened,
         on_error: str) -> Any:
    """The sample's :class:`ClipRef`; with ``on_error="skip"`` a damaged one is :data:`BAD`
    and the shard reads on."""
    try:
        return clip_ref(members, key, path, offset, opened.local)
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
