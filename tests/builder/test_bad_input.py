"""Bad input: clear errors for a wrong root or split, recorded skips for bad files."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from shardkin import Kinetics
from shardkin.builder import BuildError, build
from shardkin.builder import shard as shard_module
from shardkin.builder.clips import ClipRule
from shardkin.synth import make_video

from helpers import decode_frames, read_split


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardkin", *args], capture_output=True,
                          text=True, timeout=120)


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
            f.rate, f.pts = 16000, i * 1024
            out.mux(s.encode(f))
        out.mux(s.encode(None))


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    d = root / "train"
    make_video(d / "good" / "ok.mp4", 24, 30, (32, 32))
    (d / "empty_class").mkdir(parents=True)
    (d / "good" / "zero.mp4").write_bytes(b"")
    (d / "good" / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    _audio_only(d / "good" / "sound_only.mp4")
    full = make_video(root / "src.mp4", 90, 30, (32, 32),
                      container_options={"movflags": "faststart"})
    data = full.read_bytes()
    (d / "good" / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    (d / "good" / "moov_missing.mp4").write_bytes(
        make_video(root / "src2.mp4", 30, 30, (32, 32)).read_bytes()[:2000])
    return root


def test_bad_files_are_recorded_and_valid_ones_kept(bad_root, tmp_path):
    m = build(bad_root, tmp_path, "train", frames_per_clip=8, workers=1, progress=False)
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"train/good/zero.mp4", "train/good/random.mp4",
                            "train/good/sound_only.mp4", "train/good/moov_missing.mp4"}
    assert "no video stream" in reasons["train/good/sound_only.mp4"]
    assert all(reasons.values())
    videos = {v["path"]: v for v in m["videos"]}
    assert (videos["train/good/ok.mp4"]["clips"] == 3
            and videos["train/good/ok.mp4"]["status"] == "ok")
    # a file that decodes part-way keeps exactly the clips of the frames that decoded
    t = videos["train/good/truncated.mp4"]
    assert 8 <= t["frames"] < 90 and t["clips"] == ClipRule(8, 8, 30).num_clips(t["frames"])
    assert t["status"] in ("partial", "ok")
    if t["status"] == "partial":
        assert t["reason"]
    # the frames after the last clip are kept, unless a decode error may have cut them short
    assert t["tail"] == (0 if t["status"] == "partial" else t["frames"] - 8 * t["clips"])
    _, samples = read_split(tmp_path / "train")
    frames = decode_frames(bad_root / "train/good/truncated.mp4")
    kept = [s for s in samples if s["json"]["path"] == "train/good/truncated.mp4"]
    assert len(kept) == t["clips"]
    for s in kept:
        np.testing.assert_array_equal(
            s["video.npy"], np.stack([frames[j] for j in s["json"]["source_frames"]])
        )
    assert m["classes"] == ["empty_class", "good"]


def test_a_last_clip_that_fails_to_write_takes_its_tail(tmp_path, monkeypatch):
    make_video(tmp_path / "root/train/a/v.mp4", 30, 30, (32, 32))  # 3 clips of 8 + 6 frames
    real = shard_module.encode_sample

    def fails_with_a_tail(video, audio, label, meta, *args):
        if (meta.get("rest") or {}).get("frames"):
            raise ValueError("cannot encode")
        return real(video, audio, label, meta, *args)

    m = build(tmp_path / "root", tmp_path / "ok", "train", frames_per_clip=8, workers=1,
              progress=False)
    assert (m["videos"][0]["clips"], m["videos"][0]["tail"]) == (3, 6)
    monkeypatch.setattr(shard_module, "encode_sample", fails_with_a_tail)
    m = build(tmp_path / "root", tmp_path / "out", "train", frames_per_clip=8, workers=1,
              progress=False)
    v = m["videos"][0]
    assert (v["status"], v["clips"], v["tail"]) == ("partial", 2, 0)
    assert "cannot encode" in v["reason"]
    assert len(Kinetics(tmp_path / "out/train", frames_per_clip=8, step_between_clips=1)) == 9


def test_nothing_valid_exits_non_zero(bad_root, tmp_path):
    only_bad = tmp_path / "root"
    shutil.copytree(bad_root / "train", only_bad / "train")
    (only_bad / "train/good/ok.mp4").unlink()
    (only_bad / "train/good/truncated.mp4").unlink()
    r = _cli("build", str(only_bad), str(tmp_path / "out"), "--quiet", "--workers", "1")
    assert r.returncode == 1 and "no clip was built" in r.stderr
    assert (tmp_path / "out/train/manifest.json").is_file()


def test_missing_root_and_split_are_clear_errors(tmp_path, made_root):
    r = _cli("build", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = _cli("build", str(made_root), str(tmp_path / "out"), "--split", "test")
    assert r.returncode == 2 and "split folder" in r.stderr and "train" in r.stderr
    with pytest.raises(BuildError, match="unknown classes"):
        build(made_root, tmp_path / "o", "train", classes=["nope"], progress=False)
