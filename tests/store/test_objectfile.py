"""ObjectFile: a seekable file over an object, read in shared blocks (moto on 127.0.0.1,
requests counted by a proxy)."""
from __future__ import annotations

import io
import random
from urllib.parse import urlparse

import pytest

from shardkin.store.folder import Folder
from shardkin.store.objectfile import Blocks, ObjectFile

DATA = random.Random(0).randbytes(100_000)


@pytest.fixture
def stored(bucket, s3_endpoint):
    from servers import cutting_proxy

    Folder(bucket).write_bytes("obj", DATA)
    with cutting_proxy(urlparse(s3_endpoint).port, cut_after=1 << 40, cuts=0) as proxy:
        yield Folder(bucket, {"endpoint_url": proxy.url}), proxy


def test_reads_and_seeks_like_a_file(stored):
    folder, _ = stored
    blocks = Blocks(folder, "obj", block=4096, keep=3, ahead=1)  # size asked of the store
    f, want = ObjectFile(blocks), io.BytesIO(DATA)
    rng = random.Random(1)
    for _ in range(300):
        if rng.random() < 0.3:
            offset, whence = rng.choice([(rng.randrange(120_000), 0), (rng.randrange(-500, 500), 1),
                                         (-rng.randrange(1, 5000), 2)])
            if whence == 1 and want.tell() + offset < 0:
                continue
            assert f.seek(offset, whence) == want.seek(offset, whence)
        n = rng.randrange(1, 9000)
        assert f.read(n) == want.read(n)
        assert len(blocks._blocks) <= 3  # memory bounded: the last blocks only
    f.seek(0)
    assert f.read() == DATA


def test_two_readers_in_step_fetch_each_block_once(stored):
    """A video's picture and sound demuxers: each block is one range request, the next one
    fetched ahead while the current one is read."""
    folder, proxy = stored
    blocks = Blocks(folder, "obj", len(DATA), block=8192, keep=4, ahead=1)
    a, b = ObjectFile(blocks), ObjectFile(blocks)
    before = proxy.requests
    got_a, got_b = bytearray(), bytearray()
    while chunk := a.read(3000):
        got_a += chunk
        got_b += b.read(max(0, len(got_a) - 5000 - len(got_b)))  # b 5000 bytes behind
    got_b += b.read()
    assert bytes(got_a) == bytes(got_b) == DATA
    assert proxy.requests - before == -(-len(DATA) // 8192)


def test_missing_object_is_file_not_found(stored):
    folder, _ = stored
    with pytest.raises(FileNotFoundError, match="obj2"):
        ObjectFile(Blocks(folder, "obj2")).read(10)
