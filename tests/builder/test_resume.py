"""kill -9 in the middle of a build, re-run: finished shards are kept, same bytes in the end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from shardkin.builder import build

from helpers import tree_bytes


def test_resume_after_kill_gives_same_bytes(made_root, tmp_path):
    args = ["--split", "train", "--frames-per-clip", "2", "--step-between-clips", "1",
            "--clips-per-shard", "20", "--workers", "1", "--quiet"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "shardkin", "build", str(made_root), str(out),
                             *args], start_new_session=True)
    deadline = time.monotonic() + 60
    records = out / "train" / ".build" / "shards"
    while not list(records.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    split = out / "train"
    assert not (split / "manifest.json").exists(), "the build ended before it could be killed"
    done_before = {p.name: p.read_bytes() for p in split.glob("train-*.tar")}
    assert done_before
    # a finished shard changed since its record (same size): the resume must make it again
    changed = sorted(p.stem for p in records.glob("*.json"))[0]
    data = bytearray(done_before.pop(changed))
    data[1000] ^= 0xFF
    (split / changed).write_bytes(data)
    # nothing partial is visible under a shard name: every visible shard is a complete tar
    r = subprocess.run([sys.executable, "-m", "shardkin", "build", str(made_root), str(out), *args])
    assert r.returncode == 0
    reference = tmp_path / "reference"
    build(made_root, reference, "train", frames_per_clip=2, step_between_clips=1,
          clips_per_shard=20, workers=2, progress=False)
    assert tree_bytes(out) == tree_bytes(reference)
    for name, data in done_before.items():
        assert (split / name).read_bytes() == data
