"""The tar layer's hand-written parts against the standard library: the header checksum
summed with Adler-32, the read-ahead (every byte tapped once, in order, at its offset;
fewer system calls), and npy headers parsed once per distinct header."""
from __future__ import annotations

import io
import os
import random
import tarfile

import numpy as np
import pytest

from shardkin.format.npy import encode_npy, parse_header
from shardkin.format.tar import _byte_sum, header_fields, member_header
from shardkin.format.tarread import TarReader


def test_header_sum_is_the_byte_sum():
    rng = random.Random(0)
    blocks = [bytes(512), bytes([255]) * 512, member_header("a" * 99, 10**9)[:512]]
    blocks += [bytes(rng.randrange(256) for _ in range(512)) for _ in range(300)]
    blocks += [bytes(rng.choice((0, 255)) for _ in range(512)) for _ in range(300)]
    for block in blocks:
        assert _byte_sum(block) == sum(block[:148]) + 8 * 32 + sum(block[156:])
    header = member_header("k.video.npy", 1234)
    assert header_fields(header) == (b"0", "k.video.npy", 1234)
    damaged = bytearray(header)
    damaged[200] ^= 1
    with pytest.raises(ValueError, match="bad header checksum"):
        header_fields(bytes(damaged))


def _shard() -> bytes:
    """Samples of a big member (skipped), a small one (read) and a tiny one (read)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for k in range(5):
            for ext, size in (("video.npy", 50_000 + 999 * k), ("cls", 2), ("json", 300 + k)):
                info = tarfile.TarInfo(f"{k:08d}_000000.{ext}")
                info.size = size
                tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


class Counting(io.RawIOBase):
    """A file counting its reads; seekable or not."""

    def __init__(self, data: bytes, seekable: bool) -> None:
        self._f, self._seekable, self.reads = io.BytesIO(data), seekable, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b) -> int:
        self.reads += 1
        return self._f.readinto(b)


@pytest.mark.parametrize("seekable", [True, False])
def test_read_ahead_taps_every_byte_once_in_order(seekable):
    data = _shard()
    f = Counting(data, seekable)
    reader = TarReader(f, "x.tar")
    tapped: list[tuple[int, bytes]] = []
    reader.tap = lambda offset, view: tapped.append((offset, bytes(view)))
    read = {}
    while (m := reader.next()) is not None:  # heads of the big members, the rest whole
        read[m.name] = reader.read_head(64) if m.name.endswith("video.npy") else reader.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(read) == list(members)
    for name, m in members.items():  # what was read is the file's bytes
        size = 64 if name.endswith("video.npy") else m.size
        assert bytes(read[name]) == data[m.offset_data : m.offset_data + size]
    # tapped: the file's bytes at their offsets, in order, none twice
    pos = 0
    for offset, piece in tapped:
        assert offset >= pos and piece == data[offset : offset + len(piece)]
        pos = offset + len(piece)
    covered = {i for offset, piece in tapped for i in range(offset, offset + len(piece))}
    for m in members.values():  # every header and every read member's bytes
        assert set(range(m.offset, m.offset + 512)) <= covered
        if not m.name.endswith("video.npy"):
            assert set(range(m.offset_data, m.offset_data + m.size)) <= covered
    if seekable:  # the skipped members are seeked over, not read
        big = members["00000002_000000.video.npy"]
        assert big.offset_data + 20_000 not in covered
        # a sample: its small members and the next header come with one read
        assert f.reads <= 2 * 5 + 2


def test_npy_headers_parsed_once_each_give_their_own_shapes():
    arrays = [np.zeros((2, 3, 4, 3), np.uint8), np.zeros((1, 5), np.float32),
              np.zeros((2, 3, 4, 3), np.uint8), np.zeros((7,), np.int64)]
    for _ in range(2):
        for a in arrays:
            offset, dtype, shape = parse_header(encode_npy(a))
            assert (dtype, shape) == (a.dtype, a.shape) and offset % 64 == 0
    with pytest.raises(ValueError, match="unsupported npy header"):
        parse_header(b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little")
                     + b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117)
                     + b"\n")
