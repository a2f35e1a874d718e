"""Streaming tar reading with hand-parsed 512-byte headers: members, not samples.

:class:`TarReader` walks the members of a tar in any binary file object and, for
each, reads its data (``readinto`` a fresh ``bytearray``), only its first bytes
(:meth:`~TarReader.read_head`; the data is read later straight to where it is
needed), or nothing, seeking past it. GNU long names (``L``) and PAX headers (``x``:
``path``, ``size``) are honoured, other non-file members skipped. Truncation and
corruption raise :class:`~shardkin.format.tar.ShardError` with the byte offset: a bad
header checksum, a member or header cut short by the end of the file, a missing
end-of-archive block. ``tap``, when set, is called with every byte read and its
offset (``tap(offset, data)``), in order, so a caller can hash them as they land;
bytes seeked over are not read (bytes read ahead are tapped as they are used).
:class:`BlobReader` reads the members of bytes already
in memory (one sample fetched by a range request) the same way, without copying.
Grouping members into samples is :mod:`shardkin.format.samples`' job.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from .tar import BLOCK, ShardError, header_fields, pax_records

_FILE_TYPES = (b"0", b"\0", b"7")
_SKIP_CHUNK = 1 << 20
_READ_THROUGH = 16 << 10  # skip less than this by reading it with the next header
# Bytes read past a header, kept for what follows: a sample's small members and the next
# header come in one system call instead of one each (a raw clip's walk: 2 reads, not 6).
_AHEAD = 8 << 10
_ZEROS = bytes(BLOCK)  # the end-of-archive block


class Member(NamedTuple):
    name: str
    size: int
    offset: int  # byte offset of the member's data


class TarReader:
    """Members of the tar in ``f`` from its current position; ``source`` names it in errors,
    ``base`` is where an unseekable stream starts in it and ``end`` where it ends.

    Call :meth:`next` for each member header, then :meth:`read` to get the data of
    the member, or nothing to have it skipped: seeked over when large, else read
    in one go with the next header (as is the padding after a read member). A
    seekable file's length is taken once, so a skipped member that runs past the
    end is caught without reading it. Each header is read with up to 8 KB after it,
    used for what follows (small members, the next headers): suits unbuffered files
    (one system call for a sample's small members, one a payload); wrap slow streams
    in a buffer.
    """

    def __init__(self, f: BinaryIO, source: str, base: int = 0, end: int | None = None) -> None:
        self._f = f
        self.source = source
        self._seekable = f.seekable()
        self._pos = base  # for an unseekable stream: where in the shard it starts
        self.size: int | None = None  # the file's length, when it can be known
        if self._seekable:
            self._pos = f.tell()
            self.size = f.seek(0, io.SEEK_END)
            f.seek(self._pos)
        self._end = self.size if end is None else end  # no member may run past it
        self._member: Member | None = None
        self._unread = 0  # bytes before the next header: the member's data and padding
        self._ahead = memoryview(b"")  # bytes read past _pos, used first
        self.tap: Callable[[int, memoryview], object] | None = None

    def error(self, what: str, offset: int | None = None) -> ShardError:
        """A :class:`ShardError` naming the shard and the byte offset."""
        at = f" at byte {self._pos if offset is None else offset}"
        return ShardError(f"{self.source}: {what}{at}")

    def _take(self, n: int) -> memoryview:
        """The next ``n`` bytes (fewer where the file ends), read with up to ``_AHEAD``
        bytes more, kept for the next reads; tapped."""
        view = self._ahead
        if len(view) < n:
            buf = bytearray(n + _AHEAD)
            buf[: len(view)] = view
            have = len(view)
            while have < n:
                got = self._f.readinto(memoryview(buf)[have:])
                if not got:
                    break
                have += got
            view = memoryview(buf)[:have]
        data, self._ahead = view[:n], view[n:]
        if self.tap is not None and data:
            self.tap(self._pos, data)
        self._pos += len(data)
        return data

    def _fill(self, buf: bytearray) -> int:
        """Read into all of ``buf`` unless the file ends first; returns the bytes read."""
        view, n = memoryview(buf), min(len(buf), len(self._ahead))
        if n:
            view[:n], self._ahead = self._ahead[:n], self._ahead[n:]
        while n < len(buf):
            got = self._f.readinto(view[n:])
            if not got:
                break
            n += got
        if self.tap is not None and n:
            self.tap(self._pos, view[:n])
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
            if n <= len(self._ahead):
                self._ahead = self._ahead[n:]
            else:
                self._f.seek(n - len(self._ahead), io.SEEK_CUR)
                self._ahead = memoryview(b"")
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
        if skip > _READ_THROUGH:  # seek over the data, read the padding with the header
            pad = min(skip, -self._member.size % BLOCK)
            self._skip(skip - pad)
            skip = pad
        data = self._take(skip + BLOCK)
        got = len(data)
        if got < skip:
            raise self._truncated_member()
        if got < skip + BLOCK:
            what = "no end-of-archive block" if got == skip else "header cut short"
            raise self.error(f"truncated: {what}", self._pos - got + skip)
        return bytes(data[skip:])

    def next(self) -> Member | None:
        """The next file member, or None at the end of the archive."""
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            block = self._header()
            start = self._pos - BLOCK
            if block == _ZEROS:
                self._member = None
                return None
            kind, name, size = self._parse(block, start, long_name, pax)
            self._member, self._unread = Member(name, size, self._pos), size + (-size % BLOCK)
            if self._end is not None and self._pos + size > self._end:
                raise self._truncated_member()  # before anything is allocated for it
            if kind in _FILE_TYPES:
                return self._member
            if kind in (b"L", b"x"):
                data = bytes(self.read())
                try:
                    if kind == b"L":
                        long_name = data.split(b"\0", 1)[0].decode("utf-8")
                    else:
                        pax = pax_records(data)
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
        size = self._member.size
        if size <= _AHEAD:  # a small member: with the bytes after it
            data = bytearray(self._take(size))
            got = len(data)
        else:
            data = bytearray(size)
            got = self._fill(data)
        if got != size:
            raise self._truncated_member()
        self._unread -= size  # the padding, read with the next header
        return data

    def read_head(self, n: int) -> bytes:
        """The first ``n`` bytes of the current member's data (fewer if it is shorter);
        the rest is skipped by :meth:`next`."""
        want = min(n, self._member.size)
        head = self._take(want)
        if len(head) != want:
            raise self._truncated_member()
        self._unread -= want
        return bytes(head)


class BlobReader:
    """The members of a byte range already in memory (no end-of-archive block needed);
    :meth:`read` returns views of it, not copies. ``base`` is the range's offset in
    ``source``: members' offsets and errors count from the shard's first byte."""

    def __init__(self, data: bytes | bytearray | memoryview, source: str, base: int = 0) -> None:
        self._view, self.source, self._base = memoryview(data), source, base
        self.size = None
        self.tap = None  # unused: every byte is in memory already
        self._pos = 0  # in the range
        self._member: Member | None = None

    def error(self, what: str, offset: int | None = None) -> ShardError:
        at = self._base + self._pos if offset is None else offset
        return ShardError(f"{self.source}: {what} at byte {at}")

    def next(self) -> Member | None:
        if self._member is not None:
            m = self._member
            self._pos = m.offset - self._base + m.size + (-m.size % BLOCK)
        if self._pos >= len(self._view) or not any(self._view[self._pos : self._pos + BLOCK]):
            self._member = None
            return None
        if self._pos + BLOCK > len(self._view):
            raise self.error("truncated: header cut short")
        try:
            kind, name, size = header_fields(bytes(self._view[self._pos : self._pos + BLOCK]))
        except ValueError as e:
            raise self.error(f"corrupt: {e}") from None
        if kind not in _FILE_TYPES:
            raise self.error(f"corrupt: member {name} is not a plain file")
        self._member = Member(name, size, self._base + self._pos + BLOCK)
        if self._pos + BLOCK + size > len(self._view):
            raise self.error(f"truncated: member {name} of {size} bytes runs past the end "
                             "of the sample", self._member.offset)
        return self._member

    def read(self) -> memoryview:
        m = self._member
        start = m.offset - self._base
        return self._view[start : start + m.size]

    def read_head(self, n: int) -> bytes:
        return bytes(self.read()[:n])
