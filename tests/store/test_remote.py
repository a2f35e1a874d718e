"""Streaming from object storage: ShardDataset over s3:// (moto) and http:// (nginx) against
the same build read locally, connections cut mid-shard, retries, the local shard cache."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from shardkin import ShardDataset, ShardError, make_loader
from shardkin.builder import build
from shardkin.store.cache import ShardCache
from shardkin.store.folder import Folder
from shardkin.store.ranges import RangeStream

from servers import cutting_proxy, nginx_server, self_signed_cert

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

# 203 clips, a video a shard (5 shards): rank and worker slices start mid-shard
KW = dict(frames_per_clip=2, step_between_clips=1, clips_per_shard=7, workers=1, progress=False)


@pytest.fixture(scope="module")
def local_build(made_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("remote") / "k"
    build(made_root, out, "train", **KW)
    return out


@pytest.fixture(scope="module")
def http(local_build) -> str:
    """nginx serving the build folder; yields its base URL."""
    with nginx_server(local_build) as url:
        yield url


def epoch(source, *, epoch: int = 0, world_size: int = 1, workers: int = 2,
          **kw) -> list[tuple[int, int, torch.Tensor, torch.Tensor, int]]:
    """All ranks' clips of ``epoch`` in order: (video_index, clip_index, video, audio, label)."""
    out = []
    kw.setdefault("shuffle_buffer", 16)  # lanes of 2 clips or more: shards split into lanes
    for rank in range(world_size):
        ds = ShardDataset(source, "train", return_dict=True, rank=rank, world_size=world_size,
                          **kw)
        ds.set_epoch(epoch)
        for b in make_loader(ds, 5, num_workers=workers, persistent_workers=False):
            for i in range(len(b["label"])):
                n = int(b["audio_lengths"][i])
                out.append((int(b["video_index"][i]), int(b["clip_index"][i]),
                            b["video"][i].clone(), b["audio"][i, :n].clone(),
                            int(b["label"][i])))
    return out


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[:2] == y[:2] and x[4] == y[4] and torch.equal(x[2], y[2]) and torch.equal(x[3], y[3])
        for x, y in zip(a, b))


def keys(clips: list) -> list[tuple[int, int]]:
    return [c[:2] for c in clips]


def manifest_keys(local_build: Path) -> list[tuple[int, int]]:
    import json

    videos = json.loads((local_build / "train" / "manifest.json").read_text())["videos"]
    return sorted((v["video_index"], c) for v in videos for c in range(v["clips"]))


@pytest.fixture(scope="module")
def local_epochs(local_build) -> dict[int, list]:
    return {ws: epoch(local_build, world_size=ws) for ws in (1, 3)}


def test_s3_epochs_equal_local_reading(local_build, local_epochs, bucket):
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).put(
        str(local_build / "train"), f"{bucket.removeprefix('s3://')}/k/train", recursive=True)
    assert sorted(keys(local_epochs[1])) == manifest_keys(local_build)  # every clip once
    for ws in (1, 3):  # 3 ranks: slices start mid-shard (located through index.npy)
        assert same(epoch(f"{bucket}/k", world_size=ws), local_epochs[ws])
    with pytest.raises(FileNotFoundError, match="no shardkin manifest"):
        ShardDataset(f"{bucket}/nothing", "train")


def test_http_and_shard_urls(local_build, local_epochs, http):
    assert same(epoch(f"{http}/train/manifest.json", world_size=3), local_epochs[3])
    chosen = epoch(f"{http}/train/train-{{000002..000004}}.tar", workers=1, shuffle=False)
    import json

    names = {f"train-00000{i}.tar" for i in (2, 3, 4)}
    videos = json.loads((local_build / "train" / "manifest.json").read_text())["videos"]
    assert sorted(keys(chosen)) == sorted((v["video_index"], c) for v in videos
                                          if v["shard"] in names for c in range(v["clips"]))
    with pytest.raises(ValueError, match="lists no shard train-000099.tar"):
        ShardDataset([f"{http}/train/train-000000.tar", f"{http}/train/train-000099.tar"])


def test_https_with_a_verified_certificate(local_build, local_epochs, tmp_path):
    import ssl

    cert, key = self_signed_cert(tmp_path)
    with nginx_server(local_build, tls=(cert, key)) as url:
        assert url.startswith("https://")
        with pytest.raises(Exception, match="(?i)certificate verify failed"):
            ShardDataset(url, "train")  # not trusted by default
        trusted = {"ssl": ssl.create_default_context(cafile=str(cert))}  # aiohttp's request option
        assert same(epoch(url, world_size=3, storage_options=trusted), local_epochs[3])


def test_verify_and_info_over_http(local_build, tmp_path):
    import shutil
    import subprocess
    import sys

    served = tmp_path / "served"
    shutil.copytree(local_build, served)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "shardkin", *args, "--split", "train"],
                              capture_output=True, text=True, timeout=120)

    with nginx_server(served) as url:  # nginx lists no folders: no unlisted-shard check
        r = cli("verify", url, "--quiet")
        assert r.returncode == 0 and "checksums, samples and labels match" in r.stdout, r.stderr
        assert cli("info", url).returncode == 0
        shard = served / "train" / "train-000001.tar"
        data = bytearray(shard.read_bytes())
        data[5000] ^= 0xFF
        shard.write_bytes(data)
        r = cli("verify", url, "--quiet")
        assert r.returncode == 1 and "train-000001.tar" in r.stdout + r.stderr


def test_builds_without_index_walk_from_the_shard_start(local_build, local_epochs, tmp_path):
    copy = tmp_path / "copy" / "train"
    copy.mkdir(parents=True)
    for f in (local_build / "train").iterdir():
        if f.name != "index.npy":
            (copy / f.name).write_bytes(f.read_bytes())
    with nginx_server(copy.parent) as url:
        assert same(epoch(f"{url}/train", world_size=3), local_epochs[3])


@pytest.mark.parametrize("codec", ["zstd", "jpeg"])
def test_compressed_members_stream(codec, tmp_path):
    from reader_fixtures import make_split

    pytest.importorskip("zstandard" if codec == "zstd" else "simplejpeg")
    split = make_split(tmp_path / "served", [3 + v % 4 for v in range(12)], 3, codec=codec)
    with nginx_server(split.parent) as url:
        assert same(epoch(f"{url}/train", world_size=2), epoch(split, world_size=2))


def test_resume_mid_epoch_from_object_storage(local_build, http):
    """A state taken reading locally resumes reading over http: the same epoch, nothing
    repeated or lost."""
    import itertools

    def clips(source, state=None):
        ds = ShardDataset(source, "train", return_dict=True, seed=3, shuffle_buffer=16)
        if state is not None:
            ds.load_state_dict(state)
        return ds, ((int(d["video_index"]), int(d["clip_index"])) for d in ds)

    whole = list(clips(local_build)[1])
    ds, it = clips(local_build)
    head = list(itertools.islice(it, 50))
    tail = list(clips(f"{http}/train", ds.state_dict())[1])
    assert head + tail == whole


def test_cut_connections_lose_and_repeat_no_clip(local_build, local_epochs, http):
    port = int(http.rsplit(":", 1)[1])
    with cutting_proxy(port, cut_after=60_000, cuts=5) as proxy:
        got = epoch(f"{proxy.url}/train", world_size=3)
        assert proxy.cut == 5  # the cuts happened, mid-shard
    assert same(got, local_epochs[3])


def test_server_errors_are_retried(local_build, local_epochs, http):
    port = int(http.rsplit(":", 1)[1])
    with cutting_proxy(port, cut_after=10**12, cuts=0, errors=6) as proxy:  # 503s first
        got = epoch(f"{proxy.url}/train", world_size=3)
        assert proxy.errored == 6
    assert same(got, local_epochs[3])


def test_random_access_survives_cut_connections(local_build, http):
    from shardkin import Kinetics

    local = Kinetics(local_build, split="train")
    with cutting_proxy(int(http.rsplit(":", 1)[1]), cut_after=60_000, cuts=3) as proxy:
        remote = Kinetics(proxy.url, split="train")
        for i in range(0, len(local), 5):
            for a, b in zip(remote[i], local[i]):
                assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
        assert proxy.cut == 3


def test_a_connection_that_keeps_failing_is_a_clear_error(http):
    port = int(http.rsplit(":", 1)[1])
    with cutting_proxy(port, cut_after=60_000, cuts=10**6) as proxy:
        ds = ShardDataset(f"{proxy.url}/train", "train", attempts=2)
        with pytest.raises(ShardError, match=r"train-0000\d\d\.tar: bytes \d+-\d+ could not be "
                                             r"read in 2 attempts"):
            for _ in ds:
                pass


def test_a_silent_server_is_an_error_not_a_hang():
    import socket
    import time

    import aiohttp

    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/train"
        quick = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(sock_read=1)}}
        t = time.monotonic()
        with pytest.raises(OSError, match="could not be read in 2 attempts.*(?i:timeout)"):
            ShardDataset(url, storage_options=quick, attempts=2)
        assert time.monotonic() - t < 60  # about 2.5 s; aiohttp alone would wait 5 minutes


def test_a_missing_shard_object_fails_at_once(local_build, bucket):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = f"{bucket.removeprefix('s3://')}/m/train"
    fs.put(str(local_build / "train"), root, recursive=True)
    fs.rm(f"{root}/train-000002.tar")
    with pytest.raises(ShardError, match="train-000002.tar"):
        for _ in ShardDataset(f"{bucket}/m", "train", shuffle=False):
            pass
    ds = ShardDataset(f"{bucket}/m", "train", shuffle=False, on_error="skip")
    lost = next(s.clips for s in ds.split_source.shards if s.name == "train-000002.tar")
    with pytest.warns(UserWarning, match=f"skipping {lost} clip"):
        assert len(list(ds)) == len(ds)


def test_cache_fills_verified_then_serves_the_shards(local_build, tmp_path):
    import shutil

    served, cache = tmp_path / "served", tmp_path / "cache"
    shutil.copytree(local_build, served)
    shas = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in served.glob("train/*.tar"))
    with nginx_server(served) as url:
        # 3 ranks of 2 workers, shards split between lanes, workers and ranks: the first
        # reader of each shard streams all of it into the cache, the others their part
        first = epoch(f"{url}/train", world_size=3, cache_dir=cache)
        assert same(first, epoch(local_build, world_size=3))
        tables = {hashlib.sha256(p.read_bytes()).hexdigest() for p in served.glob("train/*.npy")}
        cached = {p.stem for p in cache.glob("*.tar")}  # the shards, and the tables read
        assert set(shas) <= cached and cached - set(shas) <= tables
        for p in cache.glob("*.tar"):
            assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
        assert not list(cache.glob(".*.tmp"))
        for p in served.glob("train/*.tar"):  # the server's shards are now garbage
            p.write_bytes(b"\xff" * p.stat().st_size)
        # so these epochs can only have come from the cache
        assert same(epoch(f"{url}/train", world_size=3, cache_dir=cache), first)
        assert same(epoch(f"{url}/train", epoch=1, cache_dir=cache, workers=0),
                    epoch(local_build, epoch=1, workers=0))


def test_cache_stays_within_its_bound_with_concurrent_workers(tmp_path):
    from reader_fixtures import make_split

    split = make_split(tmp_path / "served", [5 + v % 4 for v in range(40)], 3)  # 14 shards
    sizes = sorted(p.stat().st_size for p in split.glob("*.tar"))
    bound, cache = sum(sizes[-3:]), tmp_path / "cache"  # room for three shards
    with nginx_server(split.parent) as url:  # two workers fill and evict concurrently
        got = epoch(f"{url}/train", cache_dir=cache, cache_size=bound, shuffle_buffer=1024)
    assert same(got, epoch(split, shuffle_buffer=1024))
    kept = list(cache.glob("*.tar"))
    assert 1 <= len(kept) <= 3 and sum(p.stat().st_size for p in kept) <= bound
    for p in kept:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
    assert not list(cache.glob(".*.tmp"))


def test_a_forked_child_does_not_break_the_parents_connections(http):
    """A child dropping the filesystems it inherited must not close the parent's pooled
    connections (they share one epoll instance): the parent's next request would hang."""
    import gc
    import threading

    folder = Folder(f"{http}/train")
    assert folder.exists("manifest.json")  # a pooled keep-alive connection now
    pid = os.fork()
    if pid == 0:  # the child: drop every reference it can, collect, leave
        folder = None
        gc.collect()
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    answered = []
    request = threading.Thread(target=lambda: answered.append(folder.exists("manifest.json")),
                               daemon=True)
    request.start()
    request.join(20)
    assert answered == [True], "the parent's request on its pooled connection hung"


def test_a_cache_that_cannot_be_written_only_warns(local_build, local_epochs, http, tmp_path,
                                                   monkeypatch):
    import errno

    import shardkin.store.cache

    class FullDisk:  # the cache's temporary files: the disk fills at the first write
        def __init__(self, path, mode):
            self.path, self.closed = path, False
            open(path, mode).close()

        def write(self, chunk):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.closed = True

    def full_disk_open(path, mode="r", **kw):
        return FullDisk(path, "wb") if "x" in mode else open(path, mode, **kw)

    monkeypatch.setattr(shardkin.store.cache, "open", full_disk_open, raising=False)
    with pytest.warns(UserWarning, match="cannot write the shard cache .*No space left"):
        got = epoch(f"{http}/train", workers=0, cache_dir=tmp_path / "c", shuffle_buffer=1024)
    assert same(got, epoch(local_build, workers=0, shuffle_buffer=1024))
    assert os.listdir(tmp_path / "c") == []


def test_cache_publishes_only_verified_bytes(tmp_path):
    cache = ShardCache(tmp_path, 1000)
    good = b"x" * 100
    sha = hashlib.sha256(good).hexdigest()
    w = cache.writer(sha, 100)
    w(memoryview(b"y" * 100))  # wrong bytes of the right size
    assert not w.commit()
    assert cache.open(sha, 100) is None and os.listdir(tmp_path) == []
    w = cache.writer(sha, 100)
    w(memoryview(good[:60]))
    w(memoryview(good[60:]))
    assert w.commit()
    with cache.open(sha, 100) as f:
        assert f.read() == good
    assert cache.writer(sha, 1001) is None  # larger than the whole cache
    other = hashlib.sha256(b"z").hexdigest()
    claim = cache.writer(other, 1)
    assert claim is not None and cache.writer(other, 1) is None  # one process fills a shard
    hour_ago = os.stat(tmp_path / f".{other}.tmp").st_mtime - 3601
    os.utime(tmp_path / f".{other}.tmp", (hour_ago, hour_ago))  # its filler died long ago
    assert cache.writer(other, 1) is not None


def test_range_stream_chunks_and_drain(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "f").write_bytes(data)
    seen = bytearray()
    stream = RangeStream(Folder(tmp_path), "f", 13, 9000, chunk=1000, ahead=2, sink=seen.extend)
    head = bytearray(2500)
    n = 0
    while n < len(head):
        n += stream.readinto(memoryview(head)[n:])
    assert head == data[13:2513]
    stream.drain()
    assert bytes(seen) == data[13:9000]
    assert stream.read(10) == b""
    stream.close()


CHECKSUM = r"sample (\d{8}_\d{6}): damaged: .*does not match its checksum"


def _uploaded(local_build: Path, bucket: str, tmp_path: Path, damage) -> str:
    """The build copied, ``damage(shard bytes, tar members)`` done to train-000002.tar,
    uploaded; returns its URL."""
    import shutil
    import tarfile

    import s3fs

    copy = tmp_path / "k"
    shutil.copytree(local_build, copy)
    shard = copy / "train" / "train-000002.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    data = bytearray(shard.read_bytes())
    damage(data, members)
    shard.write_bytes(bytes(data))
    s3fs.S3FileSystem(skip_instance_cache=True).put(
        str(copy / "train"), f"{bucket.removeprefix('s3://')}/k/train", recursive=True)
    return f"{bucket}/k"


def test_a_flipped_pixel_byte_is_caught_over_object_storage(local_build, bucket, tmp_path):
    """Streamed (range requests, also filling the cache), fetched sample by sample (a few
    clips a video) and read by Kinetics: the clip's checksum catches it, by default."""
    from shardkin import Kinetics

    def flip(data, members):  # a pixel of clip 0 of the shard's video
        video = next(m for m in members if m.name.endswith("_000000.video.npy"))
        data[video.offset_data + 200] ^= 0x04

    url = _uploaded(local_build, bucket, tmp_path, flip)
    for kw in ({}, {"cache_dir": tmp_path / "cache"},
               {"clips_per_video": 1, "clip_sampler": "uniform"}):
        assert len(list(ShardDataset(url, "train", shuffle=False, verify=False, **kw)))
        with pytest.raises(ShardError, match=CHECKSUM) as e:
            for _ in ShardDataset(url, "train", shuffle=False, **kw):
                pass
        assert "train-000002.tar" in str(e.value)
    ds = Kinetics(url, split="train")
    with pytest.raises(ShardError, match=CHECKSUM):
        for i in range(len(ds)):
            ds[i]


def test_show_names_the_byte_of_damage_in_a_remote_range(local_build, bucket, tmp_path):
    """``shardkin show`` reads a remote shard from its first pick on: its errors count
    bytes from the shard's start, not the range's."""
    from shardkin.inspection.sheet import read_clips
    from shardkin.store.split import open_split

    at = {}

    def flip(data, members):  # a header of sample 4
        key = list(dict.fromkeys(m.name.partition(".")[0] for m in members))[4]
        header = next(m for m in members if m.name == f"{key}.cls").offset
        data[header + 10] ^= 0xFF
        at["header"] = header

    url = _uploaded(local_build, bucket, tmp_path, flip)
    split = open_split(url, "train")
    shard = split.shards.names.index("train-000002.tar")
    assert len(read_clips(split, [(shard, 2), (shard, 3)], 2)) == 2  # before the damage
    with pytest.raises(ShardError, match=f"bad header checksum at byte {at['header']}$"):
        read_clips(split, [(shard, 3), (shard, 5)], 2)


def test_sample_ranges_by_scan_and_by_sorted_table_agree(local_build, monkeypatch):
    """A shard's samples (byte ranges, in shard order) found from the video table: by a scan
    for the first lookups, then by the table sorted once: both are the index rows of that
    shard by offset."""
    import numpy as np

    from shardkin.store import split as split_module
    from shardkin.store.split import open_split

    def every(scans: int) -> list[np.ndarray]:
        monkeypatch.setattr(split_module, "SCANS", scans)
        split = open_split(local_build, "train")
        return [split.sample_ranges(n) for n in range(len(split.manifest.shards))]

    rows = np.load(local_build / "train" / "index.npy")
    scanned, searched = every(10**6), every(0)
    assert len(scanned) > 1
    for n, (a, b) in enumerate(zip(scanned, searched)):
        mine = rows[rows[:, 0] == n]
        assert np.array_equal(a, mine[np.argsort(mine[:, 1])][:, 1:]) and np.array_equal(a, b)
