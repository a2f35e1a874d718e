"""format/checks.py: the array rules and SampleHash, the checksum of a sample's bytes taken
in order from wherever they land."""
from __future__ import annotations

import random

import numpy as np
import pytest
import xxhash

from shardkin.format.checks import (
    KEEP,
    SampleHash,
    audio_problem,
    mismatch,
    video_problem,
)
from shardkin.format.tar import ShardError, checksum


def test_array_rules():
    assert video_problem(np.uint8, (4, 8, 6, 3)) is None
    assert (video_problem(np.float32, (4, 8, 6, 3))
            == "video is float32 [4, 8, 6, 3], not uint8 [T,H,W,3]")
    assert "not uint8" in video_problem(np.uint8, (4, 8, 6))
    assert "not uint8" in video_problem(np.uint8, (4, 8, 6, 4))
    assert audio_problem(np.float32, (2, 100)) is None
    assert audio_problem(np.int64, (2, 100)) == "audio is int64 [2, 100], not float32 [C,S]"
    assert "not float32" in audio_problem(np.float32, (100,))


def _pieces(data: bytes, start: int, rng: random.Random) -> list[tuple[int, bytes]]:
    """``data`` (at ``start``) cut at random places, some pieces overlapping the next."""
    cuts = sorted(rng.sample(range(1, len(data)), 12))
    out, at = [], 0
    for cut in [*cuts, len(data)]:
        out.append((start + at, data[at : min(len(data), cut + rng.choice([0, 0, 7]))]))
        at = cut
    return out


@pytest.mark.parametrize("seed", range(20))
def test_pieces_in_any_order_hash_as_the_whole(seed):
    """Kept and fed pieces in any order, with holes read through fill: the bytes of the
    sample hashed once each, in order, whatever came first."""
    rng = random.Random(seed)
    shard = rng.randbytes(5000)
    start, end = 700, 4300
    want = checksum(shard[start:end])
    reads = []

    def fill(at: int, n: int) -> bytes:
        reads.append((at, n))
        return shard[at : at + n]

    pieces = _pieces(shard[start - 100 : end + 100], start - 100, rng)
    rng.shuffle(pieces)
    check = SampleHash(start, end, want, "x.tar: sample k", fill)
    for offset, data in pieces[: len(pieces) // 2]:
        (check.keep if rng.random() < 0.5 else check.feed)(offset, data)
    assert check.complete() is None and check.done
    assert sum(n for _, n in reads) <= end - start  # holes only, each byte once


def test_in_order_pieces_are_hashed_at_once_and_kept_ones_are_copies():
    data = bytes(range(256)) * 8
    check = SampleHash(0, len(data), checksum(data), "x")
    buf = bytearray(data[:512])
    check.keep(0, memoryview(buf))
    assert check.pos == 512  # hashed as it landed
    tail = bytearray(data[1024:])
    check.keep(1024, memoryview(tail))  # after a hole: kept, copied (the buffer may change)
    tail[:] = bytes(len(tail))
    check.feed(512, data[512:1024])  # the hole lands: the kept bytes follow at once
    assert check.done and check.error is None


def test_a_flipped_byte_anywhere_is_a_mismatch():
    data = random.Random(1).randbytes(3000)
    for at in (0, 1500, 2999):
        bad = bytearray(data)
        bad[at] ^= 1
        check = SampleHash(1000, 4000, checksum(data), "x.tar: sample 00000001_000002",
                           lambda a, n, bad=bad: bad[a - 1000 : a - 1000 + n])
        error = check.complete()
        assert error == f"x.tar: sample 00000001_000002: {mismatch(1000, 4000)}"
        assert "does not match its checksum" in error and "bytes 1000-3999" in error
        with pytest.raises(ShardError, match="damaged"):
            check.raise_error()


def test_a_sample_elsewhere_or_cut_short_fails():
    data = bytes(1024)
    check = SampleHash(0, 1024, checksum(data), "x")
    check.span(512, 1536)
    assert "index row says 0-1023" in check.error and check.done
    short = SampleHash(0, 1024, checksum(data), "x", lambda a, n: data[a : a + n // 2])
    assert "truncated" in short.complete()
    assert "no row" in SampleHash.failed("x", "has no row").error


def test_kept_bytes_are_bounded():
    """A check waiting in the shuffle buffer keeps at most KEEP bytes; the rest is read
    again (fill) when its turn comes."""
    data = random.Random(2).randbytes(4 * KEEP)
    reads = []

    def fill(at: int, n: int) -> bytes:
        reads.append(n)
        return data[at : at + n]

    check = SampleHash(0, len(data), checksum(data), "x", fill)
    for at in range(512, len(data), 512):
        check.keep(at, data[at : at + 512])
    assert sum(len(d) for _, d in check._kept) <= KEEP
    assert check.complete() is None
    assert sum(reads) == len(data) - KEEP


def test_streaming_equals_xxh3_of_the_bytes():
    data = random.Random(3).randbytes(10_000)
    check = SampleHash(0, len(data), checksum(data), "x")
    for at in range(0, len(data), 999):
        check.feed(at, data[at : at + 999])
    assert check.done and check.error is None
    assert checksum(data) == xxhash.xxh3_64_intdigest(data) - (1 << 64) * (
        xxhash.xxh3_64_intdigest(data) >= 1 << 63)
