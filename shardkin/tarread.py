"""Streaming tar reading with hand-parsed 512-byte headers, over any binary file object.

:class:`TarReader` walks members and, for each, reads its data (``readinto`` a
fresh ``bytearray``), only its first bytes (a :class:`Deferred` member, its data
read later straight to where it is needed), or nothing, seeking past it: samples
are skipped without reading their data. GNU long names (``L``) and PAX headers
(``x``: ``path``, ``size``) are honoured, other non-file members skipped.
Truncation and corruption raise :class:`ShardError`: a bad header checksum, a
member or header cut short by the end of the file, a missing end-of-archive
block, or a sample without all its members (one video member, of any codec, then
``audio.npy``, ``cls`` and ``json``). :func:`open_shard` is the one place shards
are opened.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Collection, Iterator

from .codecs import VIDEO_MEMBERS
from .storage import is_url, local_path, open_read
from .sample import AUDIO, LABEL, META, split_member

BLOCK = 512
_FILE_TYPES = (b"0", b"\0", b"7")
_SKIP_CHUNK = 1 << 20
_READ_THROUGH = 16 << 10  # skip less than this by reading it with the next header


class ShardError(Exception):
    """A shard or sample that cannot be read: truncated, corrupt or incomplete."""


def open_shard(url: str | os.PathLike) -> BinaryIO:
    """Open a shard for reading (the hook for other stores, e.g. fsspec).

    Local files are unbuffered: :class:`TarReader` reads payloads straight into
    their final buffers and headers in single calls.
    """
    if is_url(url):
        return open_read(os.fspath(url))
    return open(local_path(url), "rb", buffering=0)


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    offset: int  # byte offset of the member's data


def _number(field: bytes) -> int:
    if field[:1] == b"\x80":  # GNU base-256
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def header_fields(block: bytes, long_name: str | None = None,
                  pax: dict[str, str] | None = None) -> tuple[bytes, str, int]:
    """(type flag, full name, data size) of a 512-byte header block; ValueError if corrupt."""
    if _number(block[148:156]) != sum(block[:148]) + 256 + sum(block[156:]):
        raise ValueError("bad header checksum")
    pax = pax or {}
    try:
        name = long_name or pax.get("path")
        if name is None:
            name = block[:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
            if prefix:
                name = f"{prefix.decode('utf-8')}/{name}"
        return block[156:157], name, int(pax.get("size", _number(block[124:136])))
    except ValueError as e:  # bad numbers or names
        raise ValueError(f"unreadable header ({e})") from None


def _pax_records(data: bytes) -> dict[str, str]:
    records, pos = {}, 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].decode("utf-8").partition("=")
        records[key] = value
        pos += length
    return records


class TarReader:
    """Members of the tar in ``f`` from its current position; ``source`` names it in errors.

    Call :meth:`next` for each member header, then :meth:`read` to get the data of
    the member, or nothing to have it skipped: seeked over when large, else read
    in one go with the next header (as is the padding after a read member). A
    seekable file's length is taken once, so a skipped member that runs past the
    end is caught without reading it. Suits unbuffered files (one system call a
    header or payload); wrap slow streams in a buffer.
    """

    def __init__(self, f: BinaryIO, source: str) -> None:
        self._f = f
        self.source = source
        self._seekable = f.seekable()
        self._pos = 0
        self.size: int | None = None  # the file's length, when it can be known
        if self._seekable:
            self._pos = f.tell()
            self.size = f.seek(0, io.SEEK_END)
            f.seek(self._pos)
        self._member: Member | None = None
        self._unread = 0  # bytes before the next header: the member's data and padding

    def error(self, what: str, offset: int | None = None) -> ShardError:
        """A :class:`ShardError` naming the shard and the byte offset."""
        at = f" at byte {self._pos if offset is None else offset}"
        return ShardError(f"{self.source}: {what}{at}")

    def _fill(self, buf: bytearray) -> int:
        """Read into all of ``buf`` unless the file ends first; returns the bytes read."""
        view, n = memoryview(buf), 0
        while n < len(buf):
            got = self._f.readinto(view[n:])
            if not got:
                break
            n += got
        self._pos += n
        return n

    def _truncated_member(self) -> ShardError:
        m = self._member
        return self.error(f"truncated: member {m.name} of {m.size} bytes runs past the end "
                          f"of the file", m.offset)

    def _skip(self, n: int) -> None:
        if self._seekable:
            if self._pos + n > self.size:
                raise self._truncated_member()
            self._f.seek(n, io.SEEK_CUR)
            self._pos += n
            return
        while n:
            got = self._fill(bytearray(min(n, _SKIP_CHUNK)))
            if not got:
                raise self._truncated_member()
            n -= got

    def _header(self) -> bytes:
        """The next 512-byte block, after what is left of the current member."""
        skip, self._unread = self._unread, 0
        if skip > _READ_THROUGH:
            self._skip(skip)
            skip = 0
        buf = bytearray(skip + BLOCK)
        got = self._fill(buf)
        if got < skip:
            raise self._truncated_member()
        if got < len(buf):
            what = "no end-of-archive block" if got == skip else "header cut short"
            raise self.error(f"truncated: {what}", self._pos - got + skip)
        return bytes(buf[skip:])

    def next(self) -> Member | None:
        """The next file member, or None at the end of the archive."""
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            block = self._header()
            start = self._pos - BLOCK
            if block.count(0) == BLOCK:
                self._member = None
                return None
            kind, name, size = self._parse(block, start, long_name, pax)
            self._member, self._unread = Member(name, size, self._pos), size + (-size % BLOCK)
            if kind in _FILE_TYPES:
                return self._member
            if kind in (b"L", b"x"):
                data = bytes(self.read())
                try:
                    if kind == b"L":
                        long_name = data.split(b"\0", 1)[0].decode("utf-8")
                    else:
                        pax = _pax_records(data)
                except ValueError as e:
                    raise self.error(f"corrupt: unreadable {kind.decode()} header ({e})",
                                     start) from None
            else:  # directories, links, global PAX headers, ...: skipped with their data
                long_name, pax = None, {}

    def _parse(self, block: bytes, start: int, long_name: str | None,
               pax: dict[str, str]) -> tuple[bytes, str, int]:
        try:
            return header_fields(block, long_name, pax)
        except ValueError as e:
            raise self.error(f"corrupt: {e}", start) from None

    def read(self) -> bytearray:
        """The data of the current member (a writable buffer, read once)."""
        data = bytearray(self._member.size)
        if self._fill(data) != len(data):
            raise self._truncated_member()
        self._unread -= len(data)  # the padding, read with the next header
        return data

    def read_head(self, n: int) -> bytes:
        """The first ``n`` bytes of the current member's data (fewer if it is shorter);
        the rest is skipped by :meth:`next`."""
        head = bytearray(min(n, self._member.size))
        if self._fill(head) != len(head):
            raise self._truncated_member()
        self._unread -= len(head)
        return bytes(head)


@dataclass(frozen=True)
class Deferred:
    """A member whose data stayed in the shard: where it is, and its first bytes."""

    offset: int
    size: int
    head: bytes


def iter_samples(
    reader: TarReader,
    start: int = 0,
    stop: int | None = None,
    load: Callable[[int], bool] = lambda i: True,
    wanted: Collection[str] = (*VIDEO_MEMBERS, AUDIO, LABEL, META),
    defer: Collection[str] = (),
    head: int = 1024,
) -> Iterator[tuple[int, str, dict[str, Any] | None]]:
    """``(index, key, payloads)`` for the samples ``start <= index < stop`` of a shard.

    Samples before ``start`` are walked over by their headers only. ``payloads``
    maps the ``wanted`` members to their data (a bytearray) or, for those in
    ``defer``, to a :class:`Deferred` holding their first ``head`` bytes; it is
    None when ``load(index)`` is false (then nothing is read). Every sample must
    have a video member and ``audio.npy``, ``cls`` and ``json``.
    """
    member = reader.next()
    index = 0
    while member is not None and (stop is None or index < stop):
        key = split_member(member.name)[0]
        take = index >= start and load(index)
        payloads: dict[str, Any] = {}
        seen: list[str] = []
        while member is not None and split_member(member.name)[0] == key:
            ext = split_member(member.name)[1]
            if ext in seen:
                raise reader.error(f"corrupt: sample {key} has two {ext} members", member.offset)
            seen.append(ext)
            if take and ext in wanted:
                payloads[ext] = (Deferred(member.offset, member.size, reader.read_head(head))
                                 if ext in defer else reader.read())
            member = reader.next()
        missing = [ext for ext in (AUDIO, LABEL, META) if ext not in seen]
        if not any(ext in seen for ext in VIDEO_MEMBERS):
            missing.insert(0, f"video ({' or '.join(VIDEO_MEMBERS)})")
        if missing:
            raise reader.error(f"incomplete: sample {key} has no {', '.join(missing)} member")
        if index >= start:
            yield index, key, payloads if take else None
        index += 1
    if stop is not None and index < stop:
        raise reader.error(f"truncated: {index} samples where at least {stop} were expected")
