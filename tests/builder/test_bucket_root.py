"""Building from videos in a bucket (ROOT an s3:// URL on moto on 127.0.0.1)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from shardkin.builder import BuildError, build
from shardkin.builder import source as source_module
from shardkin.builder.decode import probe_or_reason
from shardkin.builder.plan import gather
from shardkin.format.options import BuildOptions
from shardkin.synth import make_video

from helpers import segfault, tree_bytes

KW = dict(frames_per_clip=2, step_between_clips=1, clips_per_shard=20, progress=False)
# botocore tries once (and s3fs too: see _once): shardkin's retries meet every failure
ONCE = {"config_kwargs": {"retries": {"max_attempts": 1}}}


@pytest.fixture
def _once(monkeypatch):
    """s3fs tries each request once (its class attribute, inherited by forked workers)."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)


def _upload(folder: Path, url: str) -> None:
    import s3fs

    s3fs.S3FileSystem().put(f"{folder}/", url.removeprefix("s3://"), recursive=True)


@pytest.fixture(scope="module")
def remote_root(made_root, s3_endpoint) -> str:
    """``made_root`` copied to a bucket."""
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="videos")
    _upload(made_root, "s3://videos/k")
    return "s3://videos/k"


def test_build_from_bucket_equals_local_build(made_root, remote_root, tmp_path):
    remote = build(remote_root, tmp_path / "remote", "train", workers=2, **KW)
    local = build(made_root, tmp_path / "local", "train", workers=2, **KW)
    assert remote == local and local["totals"]["videos"] == 6
    assert tree_bytes(tmp_path / "remote") == tree_bytes(tmp_path / "local")


def test_long_videos_read_in_blocks_give_the_same_bytes(made_root, remote_root, tmp_path,
                                                        monkeypatch):
    """Every video fetched in small ranges (as one over WHOLE_BYTES is) into a local file
    that its three demuxers (the timeline's scan, the picture, the sound) read."""
    monkeypatch.setattr(source_module, "WHOLE_BYTES", 0)
    monkeypatch.setattr(source_module, "BLOCK_BYTES", 4096)
    remote = build(remote_root, tmp_path / "remote", "train", workers=1, **KW)
    local = build(made_root, tmp_path / "local", "train", workers=1, **KW)
    assert remote == local
    assert tree_bytes(tmp_path / "remote") == tree_bytes(tmp_path / "local")


def _probe_crashes_on_one(path):
    """``probe_or_reason``, but probing b_2997.mkv crashes the process (quietly)."""
    if "b_2997.mkv" in str(getattr(path, "url", path)):
        segfault()
    return probe_or_reason(path)


def test_a_video_that_kills_its_probe_is_skipped(made_root, remote_root, tmp_path,
                                                 monkeypatch):
    """Probed 32 at once in one process, one video crashes it: the others are probed again
    each alone, that one twice, then skipped with the reason; the rest is built."""
    monkeypatch.setattr(source_module, "probe_or_reason", _probe_crashes_on_one)  # forked
    m = build(remote_root, tmp_path / "out", "train", workers=2, **KW)
    assert m["skipped"] == [{"path": "train/archery/b_2997.mkv",
                             "reason": "worker process died probing it twice: SIGSEGV"}]
    assert m["totals"]["videos"] == 5


def test_listing_keeps_torchvision_order(s3_endpoint, tmp_path):
    """Nested folders whose key order differs from sorted(os.walk()) (as keys 'b c/' and
    'b-c/' sort before 'b/', as folders 'b' comes first), hidden files and other extensions:
    the bucket's plan lists the same videos in the same order as the local tree's."""
    import boto3

    root = tmp_path / "tree"
    for name in ["x/a.mp4", "x/b c/y.mp4", "x/b/z.mp4", "x/b-c/w.mp4", "x/B.mp4", "x/.h.mp4",
                 "x/b/sub/v.MP4", "x/b/n.txt", "y z/q.mp4", ".hidden/h.mp4", "empty_y/t.txt"]:
        (root / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "train" / name).write_bytes(b"")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="order")
    _upload(root, "s3://order/r")
    options = BuildOptions.from_kwargs()
    local, remote = gather(root, "train", options), gather("s3://order/r", "train", options)
    assert [(v.path, v.label) for v in remote["videos"]] == [
        (v.path, v.label) for v in local["videos"]]
    assert [v.path for v in local["videos"]][:7] == [  # as keys, b/z would come last
        f"train/x/{n}" for n in [".h.mp4", "B.mp4", "a.mp4", "b/z.mp4", "b c/y.mp4", "b-c/w.mp4",
                                 "b/sub/v.MP4"]]
    assert remote["classes"] == local["classes"] == ["empty_y", "x", "y z"]
    assert remote["skipped_extensions"] == local["skipped_extensions"] == {".txt": 2}
    assert {v.size for v in remote["videos"]} == {0}  # the listing's sizes, kept for probing


def test_flaky_store_is_retried_to_the_same_bytes(made_root, remote_root, s3_endpoint,
                                                  tmp_path, _once):
    from servers import cutting_proxy

    local = build(made_root, tmp_path / "local", "train", workers=1, **KW)
    with cutting_proxy(urlparse(s3_endpoint).port, cut_after=3000, cuts=4, errors=3) as proxy:
        remote = build(remote_root, tmp_path / "remote", "train", workers=1,
                       storage_options={"endpoint_url": proxy.url, **ONCE}, **KW)
        assert proxy.errored == 3 and proxy.cut == 4  # every failure was met and retried
    assert remote == local
    assert tree_bytes(tmp_path / "remote") == tree_bytes(tmp_path / "local")


def test_unreadable_video_is_recorded_with_its_url(s3_endpoint, tmp_path, monkeypatch, _once):
    """A video whose every read is cut (past 60 KB a connection) is recorded as failed with
    its URL and reason, after retries; the others are built as from a local folder."""
    import boto3

    from servers import cutting_proxy

    root = tmp_path / "root"
    for i in range(2):
        make_video(root / "train" / "c" / f"small{i}.mp4", 10, 30, (32, 24), seed=i)
    big = make_video(tmp_path / "big.mp4", 30, 30, (320, 240), seed=5)
    assert big.stat().st_size > 60_000
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="cut")
    _upload(root, "s3://cut/r")
    import s3fs

    s3fs.S3FileSystem().put(str(big), "cut/r/train/c/big.mp4")
    local = build(root, tmp_path / "local", "train", workers=1, **KW)
    monkeypatch.setattr(source_module, "PROBE_BLOCK", 8192)  # the probe's reads get through
    with cutting_proxy(urlparse(s3_endpoint).port, cut_after=25_000, cuts=10**6) as proxy:
        remote = build("s3://cut/r", tmp_path / "remote", "train", workers=1,
                       storage_options={"endpoint_url": proxy.url, **ONCE}, **KW)
        assert proxy.cut >= 5
    (failed,) = remote["skipped"]
    assert failed["path"] == "train/c/big.mp4"
    assert failed["reason"].startswith("cannot read s3://cut/r/train/c/big.mp4")
    assert "could not be read in 5 attempts" in failed["reason"]
    def made(m: dict) -> list:
        return [(v["path"], v["label"], v["frames"], v["clips"], v["status"]) for v in m["videos"]]

    assert made(remote) == made(local) and remote["totals"]["clips"] == 18


def test_missing_or_unreadable_bucket_is_a_clear_error(s3_endpoint, tmp_path):
    with pytest.raises(BuildError, match=r"cannot list dataset root s3://no-such-bucket/k: .*"
                                         r"bucket does not exist"):
        build("s3://no-such-bucket/k", tmp_path / "o", "train", **KW)
    assert not (tmp_path / "o").exists()
    r = subprocess.run([sys.executable, "-m", "shardkin", "build", "s3://no-such-bucket/k",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "s3://no-such-bucket/k" in r.stderr
    from servers import moto_server

    with moto_server(require_auth=True) as endpoint:  # the credentials are refused
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong",
               "AWS_ENDPOINT_URL": endpoint}
        r = subprocess.run([sys.executable, "-m", "shardkin", "build", "s3://b/k",
                            str(tmp_path / "o"), "--split", "train"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "cannot list dataset root s3://b/k: PermissionError" in r.stderr
    assert not (tmp_path / "o").exists()


def test_next_video_is_fetched_ahead_once(remote_root, s3_endpoint):
    """A shard's next video is fetched while the current one decodes: opening it (twice:
    picture and sound) then costs no request."""
    from servers import cutting_proxy

    with cutting_proxy(urlparse(s3_endpoint).port, cut_after=1 << 40, cuts=0) as proxy:
        root = source_module.Root(remote_root, {"endpoint_url": proxy.url})
        (path, size), *_ = root.files("train/archery")
        listed = proxy.requests
        root.prefetch([{"path": path, "bytes": size}])
        video = root.video(path, size)
        video().close()
        video().close()
        assert proxy.requests == listed + 1  # one GET
        root.prefetch([{"path": f"train/x{i}.mp4", "bytes": 10} for i in range(3)])
        assert len(root._ahead) <= 6  # never taken: not kept without bound


def test_a_long_video_is_downloaded_once(s3_endpoint, tmp_path, monkeypatch):
    """A video over WHOLE_BYTES is read by three demuxers (the timeline's scan to its end
    first, then the picture and the sound): it is fetched from the store once, into a local
    file, not once for the scan and again for the decoding; the shards equal a local build's."""
    import boto3

    from servers import cutting_proxy

    local = tmp_path / "tree"
    make_video(local / "train" / "a" / "long.mp4", 240, 30, (640, 480), 16000, 1, seed=3)
    kw = dict(KW, frames_per_clip=16, step_between_clips=16, min_dimension=32)
    size = (local / "train" / "a" / "long.mp4").stat().st_size
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="long")
    _upload(local, "s3://long/r")
    monkeypatch.setattr(source_module, "WHOLE_BYTES", 0)
    monkeypatch.setattr(source_module, "BLOCK_BYTES", 16 << 10)
    with cutting_proxy(urlparse(s3_endpoint).port, cut_after=1 << 40, cuts=0) as proxy:
        remote = build("s3://long/r", tmp_path / "remote", "train", workers=1,
                       storage_options={"endpoint_url": proxy.url}, **kw)
        fetched = proxy.forwarded
    assert remote == build(local, tmp_path / "local", "train", workers=1, **kw)
    assert tree_bytes(tmp_path / "remote") == tree_bytes(tmp_path / "local")
    # once, plus the plan's probe (a few 64 KiB blocks) and the listing's answers
    assert size < fetched < 1.2 * size, (size, fetched)
