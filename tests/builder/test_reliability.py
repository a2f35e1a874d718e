"""One builder per split, nothing broken published, errors that retrying cannot fix
fail at once, and progress that counts each video once."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import shardkin.builder.shard as shard_module
from shardkin.builder import BuildError, build
from shardkin.store.folder import Folder
from shardkin.store.lock import LEASE, BuildLock, LockedError
from shardkin.synth import make_video

KW = dict(frames_per_clip=4, clips_per_shard=6, workers=1, progress=False)


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory) -> Path:
    """Videos that take a few seconds to build with one worker."""
    root = tmp_path_factory.mktemp("slow")
    for i in range(6):
        make_video(root / "train" / f"c{i % 2}" / f"v{i}.mp4", 150, 30, (320, 240), 16000, 1,
                   seed=i)
    return root


def shardkin_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shardkin", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    """Wait until ``path`` (or a file matching it, a glob pattern) exists."""
    deadline = time.monotonic() + seconds
    while not next(path.parent.glob(path.name), None):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("other", [[], ["--frames-per-clip", "8", "--overwrite"]])
def test_a_second_build_of_a_running_split_is_refused(slow_root, tmp_path, other):
    out = tmp_path / "out"
    first = shardkin_cli("build", str(slow_root), str(out), "--split", "train", "--workers", "1",
                         "--quiet", "--frames-per-clip", "4")
    # the plan is saved once the lock is held (the lock file itself exists a moment before)
    wait_for(out / "train" / ".build" / "plan.json", first)
    first.send_signal(signal.SIGSTOP)  # still running while the second starts, however slowly
    try:
        second = shardkin_cli("build", str(slow_root), str(out), "--split", "train",
                              "--workers", "1", "--quiet", *(other or ["--frames-per-clip", "4"]))
        _, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, err
    assert f"is being built by pid {first.pid}" in err
    assert first.wait(timeout=300) == 0, first.communicate()
    check = subprocess.run([sys.executable, "-m", "shardkin", "verify", str(out / "train"),
                            "--quiet"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not (out / "train" / ".build.lock").exists()


def test_a_killed_builder_leaves_no_lock_behind(slow_root, tmp_path):
    out = tmp_path / "out"
    first = shardkin_cli("build", str(slow_root), str(out), "--split", "train", "--workers", "1",
                         "--quiet", "--frames-per-clip", "4")
    wait_for(out / "train" / ".train-*.tmp-*", first)  # its worker is writing a shard
    worker = psutil.Process(first.pid).children()
    first.send_signal(signal.SIGKILL)
    first.wait()
    _, alive = psutil.wait_procs(worker, timeout=10)  # the worker is gone too
    assert worker and not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    manifest = build(slow_root, out, "train", **{**KW, "clips_per_shard": None})
    assert manifest["totals"]["clips"] > 0


def test_a_lease_on_object_storage_refuses_a_second_builder(made_root, bucket):
    split = Folder(f"{bucket}/out").child("train")
    holder = BuildLock(split)
    holder.acquire()
    try:
        with pytest.raises(BuildError, match="is being built by .*--break-lock"):
            build(made_root, f"{bucket}/out", "train", **KW)
        with pytest.raises(LockedError):
            BuildLock(split).acquire()
        build(made_root, f"{bucket}/out", "train", break_lock=True, **KW)  # breaks it
    finally:
        holder.release()
    assert not split.exists(LEASE)


def test_an_expired_lease_is_taken_over(made_root, bucket):
    split = Folder(f"{bucket}/out").child("train")
    split.make()
    dead = {"host": "elsewhere", "pid": 1, "id": "x", "expires": time.time() - 1}
    split.create(LEASE, json.dumps(dead).encode())
    manifest = build(made_root, f"{bucket}/out", "train", **KW)
    assert manifest["totals"]["clips"] > 0 and not split.exists(LEASE)


_real_build_shard = shard_module.build_shard


def _then_removed(task, root, out, options, **kw):
    """A shard built, then removed by another process before the manifest is written."""
    record = _real_build_shard(task, root, out, options, **kw)
    if task["name"].endswith("000001.tar"):
        os.unlink(os.path.join(out, task["name"]))
    return record


def _fails_once(task, root, out, options, progress=None, **kw):
    """Shard 0 reports its videos, then its worker fails, the first time only."""
    marker = Path(os.environ["SHARDKIN_TEST_MARKER"])
    if task["name"].endswith("000000.tar") and not marker.exists():
        marker.touch()
        for _ in task["videos"]:
            progress(1, 1000)
        raise RuntimeError("worker lost")
    return _real_build_shard(task, root, out, options, progress=progress, **kw)


def test_a_split_whose_shard_vanished_is_not_published(made_root, tmp_path, monkeypatch):
    monkeypatch.setattr(shard_module, "build_shard", _then_removed)
    with pytest.raises(BuildError, match="not published.*train-000001.tar: missing"):
        build(made_root, tmp_path, "train", **KW)
    assert not (tmp_path / "train" / "manifest.json").exists()


def test_progress_counts_each_video_once(made_root, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SHARDKIN_TEST_MARKER", str(tmp_path / "failed-once"))
    monkeypatch.setattr(shard_module, "build_shard", _fails_once)
    manifest = build(made_root, tmp_path, "train", **{**KW, "progress": True})
    assert (tmp_path / "failed-once").exists()
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) \[", capfd.readouterr().err)]
    assert counts and all(n <= total for n, total in counts)
    assert counts[-1][0] == counts[-1][1] == len(manifest["videos"]) + len(
        [s for s in manifest["skipped"] if "class folder" not in s["reason"]])


def test_a_full_disk_fails_at_once(made_root, tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                                           str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        start = time.monotonic()
        with pytest.raises(BuildError, match="No space left on device.*Retrying cannot fix"):
            build(made_root, disk, "train", **{**KW, "clips_per_shard": 1000})
        assert time.monotonic() - start < 30
        assert not (disk / "train" / "manifest.json").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)
