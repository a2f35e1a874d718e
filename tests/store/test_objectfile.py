"""ObjectFile: a seekable file over an object, read in shared blocks (moto on 127.0.0.1,
requests counted by a proxy); SharedFile: readers of their own over one local copy."""
from __future__ import annotations

import io
import os
import random
import tempfile
from urllib.parse import urlparse

import pytest

from shardkin.store.folder import Folder
from shardkin.store.objectfile import Blocks, ObjectFile, SharedFile

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


def test_shared_files_keep_their_own_places(tmp_path):
    """Readers over one open local file each read from their own position."""
    data = os.urandom(10_000)
    with tempfile.TemporaryFile(dir=tmp_path) as f:
        f.write(data)
        f.flush()
        a, b = SharedFile(f), SharedFile(f)
        assert a.read(100) == data[:100]
        assert b.seek(-50, 2) == 9_950 and b.read() == data[-50:]
        assert a.read(100) == data[100:200] and a.tell() == 200
        assert a.seek(5, 1) == 205 and a.read(3) == data[205:208]
        assert b.read(10) == b"" and a.size == b.size == 10_000
