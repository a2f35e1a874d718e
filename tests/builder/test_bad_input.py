"""Bad input: clear errors for a wrong root or split, recorded skips for bad files."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from shardkin import Kinetics
from shardkin.builder import BuildError, build, plan
from shardkin.builder import shard as shard_module
from shardkin.builder.clips import ClipRule
from shardkin.builder.source import probe_chunk
from shardkin.synth import make_video

from helpers import decode_frames, read_split, segfault


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


def test_a_video_whose_decoding_never_ends_is_stopped_and_skipped(made_root, tmp_path,
                                                                   monkeypatch):
    """``video_timeout``: a decoder caught in a loop is stopped, twice, then its video is
    skipped and recorded; the build is published with every other video."""
    real = shard_module._write_video

    def hangs_on_one(writer, root, video, *args):
        if video["path"].endswith("d_60.webm"):
            time.sleep(600)
        return real(writer, root, video, *args)

    monkeypatch.setattr(shard_module, "_write_video", hangs_on_one)  # forked workers
    m = build(made_root, tmp_path / "out", "train", frames_per_clip=4, workers=2,
              video_timeout=3, progress=False)
    assert m["skipped"] == [{"path": "train/bowling/d_60.webm", "reason": "worker process "
                             "died on it twice: stopped after 3 s without progress"}]
    assert len(m["videos"]) == 5


def test_a_long_video_still_making_clips_is_not_stopped(made_root, tmp_path, monkeypatch):
    """``video_timeout`` watches for a new clip, not for the end of a video: a video whose
    25 clips take 5 s in all, with a 2 s timeout, is built whole (its worker's heartbeats
    say it is alive)."""
    real = shard_module.encode_sample

    def slow_on_one(*args, **kwargs):
        if args[3]["path"].endswith("d_60.webm"):  # its metadata
            time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(shard_module, "encode_sample", slow_on_one)  # forked workers
    m = build(made_root, tmp_path / "out", "train", frames_per_clip=2, workers=2,
              video_timeout=2, progress=False)
    slow = [v for v in m["videos"] if v["path"].endswith("d_60.webm")]
    assert m["skipped"] == [] and [v["clips"] for v in slow] == [25]


def test_a_video_that_kills_its_worker_is_skipped(made_root, tmp_path, monkeypatch):
    """A video whose decoding kills its worker process (a crash in FFmpeg, the OOM killer)
    is recorded failed, with how the process died, after it died on it twice; the build
    is published, every other video built as without it, its shard's included."""
    kw = dict(frames_per_clip=4, step_between_clips=4, clips_per_shard=6, workers=2,
              progress=False)
    whole = build(made_root, tmp_path / "whole", "train", **kw)
    real = shard_module._write_video

    def crashes_on_one(writer, root, video, *args):
        if video["path"].endswith("b_2997.mkv"):
            segfault()
        return real(writer, root, video, *args)

    monkeypatch.setattr(shard_module, "_write_video", crashes_on_one)  # forked workers
    m = build(made_root, tmp_path / "out", "train", **kw)
    assert m["skipped"] == [{"path": "train/archery/b_2997.mkv",
                             "reason": "worker process died on it twice: SIGSEGV"}]
    assert m["totals"]["skipped"] == 1
    kept = [v for v in whole["videos"] if v["path"] != "train/archery/b_2997.mkv"]
    assert [(v["path"], v["clips"]) for v in m["videos"]] == \
        [(v["path"], v["clips"]) for v in kept]
    files = [sorted(str(p.relative_to(d)) for p in d.rglob("*")) for d in
             (tmp_path / "whole/train", tmp_path / "out/train")]
    assert files[0] == files[1]  # nothing left of the runs that died
    got = read_split(tmp_path / "out/train")[1]
    want = [s for s in read_split(tmp_path / "whole/train")[1]
            if s["json"]["path"] != "train/archery/b_2997.mkv"]
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g["json"] == w["json"]
        np.testing.assert_array_equal(g["video.npy"], w["video.npy"])


def _probe_fails_on_one(root, options, videos, threads=1, beat=None):
    """``probe_chunk``, but probing b_2997.mkv crashes the process, or with a heartbeat
    (a timeout set) never ends."""
    if any(path.endswith("b_2997.mkv") for path, _ in videos):
        if beat is None:
            segfault()
        time.sleep(600)  # a demuxer caught in a loop
    return probe_chunk(root, options, videos, threads=threads, beat=beat)


def test_a_video_that_kills_its_probe_is_skipped(made_root, tmp_path, monkeypatch):
    kw = dict(frames_per_clip=4, step_between_clips=4, workers=2, progress=False)
    whole = build(made_root, tmp_path / "whole", "train", **kw)
    monkeypatch.setattr(plan, "probe_chunk", _probe_fails_on_one)
    m = build(made_root, tmp_path / "out", "train", **kw)
    assert m["skipped"] == [{"path": "train/archery/b_2997.mkv",
                             "reason": "worker process died probing it twice: SIGSEGV"}]
    assert [v["path"] for v in m["videos"]] == \
        [v["path"] for v in whole["videos"] if v["path"] != "train/archery/b_2997.mkv"]


def test_a_probe_chunk_beats_after_each_video(made_root):
    videos = [(str(p.relative_to(made_root)), None) for p in sorted(made_root.rglob("*.*"))
              if p.suffix in {".mp4", ".mkv", ".avi", ".webm", ".mov"}]
    beats = []
    for threads in (1, 3):
        probes = probe_chunk(str(made_root), None, videos, threads=threads,
                             beat=lambda: beats.append(1))
        assert len(probes) == len(videos) > 3 and all("fps" in p for p in probes)
    assert len(beats) == 2 * len(videos)


def test_a_probe_that_never_ends_is_stopped_and_skipped(made_root, tmp_path, monkeypatch):
    """``video_timeout`` covers the probes: a probe caught in a loop is stopped, its chunk
    is probed again video by video, and its video alone is skipped and recorded."""
    monkeypatch.setattr(plan, "probe_chunk", _probe_fails_on_one)
    t = time.monotonic()
    m = build(made_root, tmp_path / "out", "train", frames_per_clip=4, workers=2,
              video_timeout=2, progress=False)
    assert m["skipped"] == [{"path": "train/archery/b_2997.mkv", "reason": "worker process "
                             "died probing it twice: stopped after 2 s without progress"}]
    assert len(m["videos"]) == 5 and time.monotonic() - t < 60


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
    for timeout in (0, -1):
        with pytest.raises(BuildError, match="--video-timeout takes seconds above 0"):
            build(made_root, tmp_path / "o", "train", video_timeout=timeout, progress=False)


def _damage_audio_midway(path: Path) -> None:
    """Overwrite the middle audio packet of ``path`` (AAC): its decoder fails there."""
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.size]
    pos, size = packets[len(packets) // 2]
    data = bytearray(path.read_bytes())
    data[pos : pos + size] = b"\xff" * size
    path.write_bytes(data)


def test_sound_that_fails_partway_is_recorded(tmp_path):
    from shardkin.builder.summary import summary

    root = tmp_path / "root"
    damaged = make_video(root / "train" / "a" / "damaged.mp4", 60, 30, (64, 48), 16000, seed=1)
    make_video(root / "train" / "a" / "fine.mp4", 60, 30, (64, 48), 16000, seed=2)
    _damage_audio_midway(damaged)
    sound = []  # the samples PyAV decodes before the error
    with av.open(str(damaged)) as c, pytest.raises(av.FFmpegError):
        for frame in c.decode(c.streams.audio[0]):
            sound.append(frame.to_ndarray())
    sound = np.concatenate(sound, axis=1)
    m = build(root, tmp_path / "out", "train", frames_per_clip=8, workers=1, progress=False)
    bad, fine = m["videos"]
    assert bad["status"] == "ok" and bad["frames"] == 60 and bad["clips"] == 7  # all frames
    assert bad["audio_error"].startswith(f"audio decode error after {sound.shape[1] / 16000:.2f} s")
    assert "audio_error" not in fine
    assert m["totals"]["audio_errors"] == 1
    assert "sound cut short     1" in summary(m, 1.0)
    _, samples = read_split(tmp_path / "out" / "train")
    clips = [s for s in samples if s["json"]["video_index"] == 0]
    frames = decode_frames(damaged)
    for k, s in enumerate(clips):  # the pictures are whole
        np.testing.assert_array_equal(s["video.npy"], np.stack(frames[8 * k : 8 * k + 8]))
    lengths = [s["audio.npy"].shape[1] for s in clips]
    cut = next(k for k, n in enumerate(lengths) if n < 4266)
    assert 0 < lengths[cut] and set(lengths[cut + 1 :]) == {0}, lengths  # short, then none
    assert "rest.audio.npy" not in clips[-1]  # nor with the tail
    first = clips[0]["json"]["audio_marks"]["first"]
    np.testing.assert_array_equal(np.concatenate([s["audio.npy"] for s in clips], axis=1),
                                  sound[:, first:])  # every sample that decoded, in place
