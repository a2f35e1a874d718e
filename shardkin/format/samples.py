"""Tar members grouped into samples: the one grouping every reader and ``verify`` use.

Consecutive members sharing a key (the name up to its first dot) form a sample. A
shardkin sample has one video member (any codec), at most one audio member (any
codec; none when the build stores no audio), ``cls`` and ``json``. Readers iterate
with ``strict=True``: an incomplete sample or a repeated member raises
:class:`~shardkin.format.tar.ShardError`. ``verify`` iterates with ``strict=False`` to be
shown such samples and report them, and checks the members against the build's codecs.

With ``check``, each sample loaded gets a :class:`~shardkin.format.checks.SampleHash`,
fed every byte the reader reads of it as it is read (the reader's ``tap``): a sample
whose members are all in memory is checked when it ends; one with members left in the
file (``defer``) is checked once they are read (see :mod:`shardkin.reader.records`),
and its bytes after such a member are not handed over (they are read again with it).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .audio import AUDIO_MEMBERS
from .checks import SampleHash
from .codecs import VIDEO_MEMBERS
from .sample import LABEL, META, REST, split_member
from .tar import BLOCK, ShardError

ALL_MEMBERS = (*VIDEO_MEMBERS, *AUDIO_MEMBERS, LABEL, META)
# optional: what a contiguous build keeps after a clip (format.sample.encode_sample)
REST_VIDEO_MEMBERS = tuple(f"{REST}.{m}" for m in VIDEO_MEMBERS)
REST_AUDIO_MEMBERS = tuple(f"{REST}.{m}" for m in AUDIO_MEMBERS)
REST_MEMBERS = (*REST_VIDEO_MEMBERS, *REST_AUDIO_MEMBERS)
_VIDEO = frozenset(VIDEO_MEMBERS)


class MemberReader(Protocol):
    """What :func:`iter_samples` reads: :class:`~shardkin.format.tarread.TarReader` or
    :class:`~shardkin.format.tarread.BlobReader`."""

    source: str
    tap: Callable[[int, memoryview], object] | None

    def next(self) -> Any: ...
    def read(self) -> Any: ...
    def read_head(self, n: int) -> bytes: ...
    def error(self, what: str, offset: int | None = None) -> ShardError: ...


class Deferred(NamedTuple):
    """A member whose data stayed in the shard: where it is, and its first bytes."""

    offset: int
    size: int
    head: bytes


@dataclass
class TarSample:
    """One sample of a shard: its number, key, byte range (first header to the end of
    its last member's padding) and the members read (None when it was not loaded)."""

    index: int
    key: str
    offset: int
    length: int = 0
    members: dict[str, Any] | None = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)  # every member's, in order
    check: SampleHash | None = None  # its checksum check, when asked for


class _Owners:
    """Hands each byte a reader reads to the check of the sample it belongs to: bytes
    before ``until`` (the current member's data and padding) to ``owner`` (dropped when
    None: a sample not loaded), later ones (the next header) held until their member is
    known."""

    __slots__ = ("owner", "until", "pending")

    def __init__(self) -> None:
        self.owner: SampleHash | None = None
        self.until = 0
        self.pending: list[tuple[int, memoryview]] = []

    def tap(self, offset: int, data: memoryview) -> None:
        cut = self.until - offset
        if cut >= len(data):  # the usual case: all the current member's
            if self.owner is not None:
                self.owner.keep(offset, data)
            return
        if cut > 0 and self.owner is not None:
            self.owner.keep(offset, data[:cut])
        self.pending.append((offset + max(cut, 0), data[max(cut, 0):]))

    def own(self, owner: SampleHash | None, until: int) -> None:
        """The member read next (its header held) belongs to ``owner``, up to ``until``."""
        self.owner, self.until = owner, until
        pending, self.pending = self.pending, []
        for offset, data in pending:
            self.tap(offset, data)


def missing_members(extensions: Collection[str]) -> list[str]:
    """The members a sample with these extensions lacks (empty when complete). Its audio
    member may be absent (a build without audio: ``verify`` checks which builds)."""
    missing = [ext for ext in (LABEL, META) if ext not in extensions]
    if _VIDEO.isdisjoint(extensions):
        missing.insert(0, f"video ({' or '.join(VIDEO_MEMBERS)})")
    return missing


def iter_samples(
    reader: MemberReader,
    start: int = 0,
    stop: int | None = None,
    load: Callable[[int], bool] = lambda i: True,
    wanted: Collection[str] = ALL_MEMBERS,
    defer: Collection[str] = (),
    head: int = 1024,
    strict: bool = True,
    check: Callable[[int, str], SampleHash] | None = None,
) -> Iterator[TarSample]:
    """The samples ``start <= index < stop`` of a shard, in order.

    Samples before ``start`` are walked over by their headers only. ``members`` maps
    the ``wanted`` members to their data or, for those in ``defer``, to a
    :class:`Deferred` holding their first ``head`` bytes; it is None when
    ``load(index)`` is false (then nothing is read). ``strict``: every sample must be
    complete, with no member twice, and at least ``stop`` samples must be there.
    ``check(index, key)``: the checksum check of each sample loaded (see the module).
    """
    owners = None
    wanted, defer = frozenset(wanted), frozenset(defer)
    if check is not None:
        owners = _Owners()
        reader.tap = owners.tap
    member = reader.next()
    index = 0
    end = 0 if member is None else member.offset - BLOCK  # where the next sample starts
    while member is not None and (stop is None or index < stop):
        key, ext = split_member(member.name)
        take = index >= start and load(index)
        sample = TarSample(index, key, end, members={} if take else None)
        deferred = False
        if owners is not None:
            sample.check = check(index, key) if take else None
            reader.tap = owners.tap
        while True:
            if owners is not None and reader.tap is not None:
                owners.own(sample.check, member.offset + member.size + (-member.size % BLOCK))
            if strict and ext in sample.extensions:
                raise reader.error(f"corrupt: sample {key} has two {ext} members", member.offset)
            sample.extensions.append(ext)
            if take and ext in wanted:
                if ext in defer:
                    sample.members[ext] = Deferred(member.offset, member.size,
                                                   reader.read_head(head))
                    reader.tap, deferred = None, True  # the rest: read again with it
                else:
                    sample.members[ext] = reader.read()
            end = member.offset + member.size + (-member.size % BLOCK)
            member = reader.next()
            if member is None:
                break
            next_key, ext = split_member(member.name)
            if next_key != key:
                break
        sample.length = end - sample.offset
        missing = strict and missing_members(sample.extensions)
        if missing:
            raise reader.error(f"incomplete: sample {key} has no {', '.join(missing)} member")
        if sample.check is not None:
            sample.check.span(sample.offset, end)
            if not deferred:
                sample.check.complete()  # all in memory: checked now
        if index >= start:
            yield sample
        index += 1
    if strict and stop is not None and index < stop:
        raise reader.error(f"truncated: {index} samples where at least {stop} were expected")
