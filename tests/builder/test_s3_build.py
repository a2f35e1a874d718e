"""Building straight to an S3-compatible store (moto on 127.0.0.1)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from shardkin.builder import BuildError, build

from helpers import tree_bytes

KW = dict(frames_per_clip=2, step_between_clips=1, clips_per_shard=20, workers=2, progress=False)


def _objects(url: str) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url.removeprefix("s3://")
    return {p[len(root) + 1:]: fs.cat_file(p) for p in sorted(fs.find(root))}



def test_build_to_bucket_equals_local_build(made_root, tmp_path, bucket):
    remote = build(made_root, f"{bucket}/k400", "train", **KW)
    local = build(made_root, tmp_path, "train", **KW)
    assert remote == local
    assert _objects(f"{bucket}/k400") == {
        f"train/{k}": v for k, v in tree_bytes(tmp_path / "train").items()
    }
    again = build(made_root, f"{bucket}/k400", "train", **KW)  # finished: nothing to do
    assert again == remote


def test_interrupted_bucket_build_resumes_to_same_bytes(made_root, tmp_path, bucket):
    import s3fs

    url = f"{bucket}/k"
    args = ["--split", "train", "--frames-per-clip", "2", "--step-between-clips", "1",
            "--clips-per-shard", "20", "--workers", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "shardkin", "build", str(made_root), url, *args],
                            start_new_session=True)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fs.invalidate_cache()
        if any(p.endswith(".tar.json") for p in fs.find(url.removeprefix("s3://"))):
            break  # a shard and its record are written
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _objects(url)
    assert "train/manifest.json" not in before, "the build ended before it could be killed"
    finished = sorted(k for k in before if k.endswith(".tar")
                      and f"train/.build/shards/{k.rsplit('/', 1)[1]}.json" in before)
    assert finished
    # a finished shard changed since its record (same size): the resume must make it again
    changed = bytearray(before[finished[0]])
    changed[1000] ^= 0xFF
    fs.pipe_file(f"{url.removeprefix('s3://')}/{finished[0]}", bytes(changed))
    before[finished[0]] = bytes(changed)
    r = subprocess.run([sys.executable, "-m", "shardkin", "build", str(made_root), url, *args])
    assert r.returncode == 0
    build(made_root, tmp_path, "train", frames_per_clip=2, step_between_clips=1,
          clips_per_shard=20, workers=1, progress=False)
    after = _objects(url)
    assert after == {f"train/{k}": v for k, v in tree_bytes(tmp_path / "train").items()}
    for name in finished[1:]:  # kept (the same bytes)
        assert after[name] == before[name]


def test_missing_bucket_is_a_clear_error(made_root, s3_endpoint):
    with pytest.raises(BuildError, match="bucket does not exist"):
        build(made_root, "s3://no-such-bucket/x", "val", **KW)


def test_wrong_credentials_are_a_clear_error(made_root):
    pytest.importorskip("moto")
    from servers import moto_server

    with moto_server(require_auth=True) as endpoint:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong",
               "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
        r = subprocess.run([sys.executable, "-m", "shardkin", "build", str(made_root), "s3://b/x",
                            "--split", "val", "--quiet"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert r.returncode == 2
    assert "cannot write to s3://b/x/val: PermissionError" in r.stderr
    assert "Access Key Id you provided does not exist" in r.stderr


def test_info_verify_show_on_object_storage(made_root, tmp_path, bucket):
    import s3fs

    url = f"{bucket}/k"
    build(made_root, url, "val", **KW)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "shardkin", *args], capture_output=True,
                              text=True, timeout=120)

    r = cli("verify", url, "--split", "val", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("info", f"{url}/val", "--json")
    assert r.returncode == 0 and '"clips"' in r.stdout
    r = cli("show", f"{url}/val/manifest.json", "-o", str(tmp_path / "s.png"), "--n", "2")
    assert r.returncode == 0 and (tmp_path / "s.png").stat().st_size > 1000
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    key = f"{url.removeprefix('s3://')}/val/val-000000.tar"
    data = bytearray(fs.cat_file(key))
    data[3000] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    r = cli("verify", url, "--split", "val", "--quiet")
    assert r.returncode == 1 and "val-000000.tar" in r.stdout + r.stderr
