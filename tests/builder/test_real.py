"""The real clips in ../shared/realvideos (skipped when absent)."""
from __future__ import annotations

import av

from shardkin.builder import build

from helpers import check_against_source


def test_real_clips_equal_direct_decode(real_root, tmp_path):
    """mp4/aac, Xvid and DivX AVI with mp3, mkv/opus, 29.97 and 25 fps, audio starting
    at 0 and video at 0.04 s: pixels bit-exact, audio sample-exact."""
    classes = ["applying_eye_makeup", "archery", "flipping_pancake", "segwaying",
               "soccer_juggling", "waving"]
    build(real_root, tmp_path, "train", frames_per_clip=16, step_between_clips=16,
          frame_rate=15, classes=classes, workers=2, progress=False)
    manifest, samples = check_against_source(real_root, tmp_path / "train", 16, 16, 15.0)
    assert len(manifest["videos"]) == 8 and len(samples) > 40
    assert all(v["status"] == "ok" for v in manifest["videos"])


def _decoded_frames(path) -> int:
    with av.open(str(path)) as c:
        n = 0
        try:
            for _ in c.decode(c.streams.best("video")):  # TorchCodec's choice
                n += 1
        except av.FFmpegError:
            pass
        return n


def test_real_edge_cases(real_root, tmp_path):
    """Every odd file: counted frames, clip counts by the rules, a reason for each skip."""
    m = build(real_root, tmp_path, "odd", frames_per_clip=16, min_dimension=64,
              extensions=["mp4", "avi", "mkv", "webm", "mov", "mp3", "wav"], workers=2,
              progress=False)
    videos = {v["path"]: v for v in m["videos"]}
    for path, v in videos.items():  # no held frames: one frame per picture (test_timeline)
        assert v["frames"] == _decoded_frames(real_root / path) and v["held"] == [], path
    assert videos["odd/truncated/v_GGSY1Qvo990_truncated_50pct.mp4"]["status"] == "partial"
    assert videos["odd/truncated/v_GGSY1Qvo990_truncated_50pct.mp4"]["clips"] == 177 // 16
    assert videos["odd/rotation/decord_video_90.mov"]["status"] == "too_short"
    assert videos["odd/webm_vp9/moviepy_no_duration.webm"]["clips"] == 74 // 16
    skipped = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(skipped) == {"odd/audio_only/mmaction2_test.wav",
                            "odd/audio_only/nasa_13013.mp4.audio.mp3"}
    assert all("no video stream" in r for r in skipped.values())
    assert m["totals"]["clips"] == sum(v["clips"] for v in videos.values()) > 50
