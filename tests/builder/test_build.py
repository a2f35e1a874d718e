"""End-to-end builds of made videos, checked against a direct PyAV decode."""
from __future__ import annotations

import inspect
import json
from dataclasses import fields, replace

import numpy as np
import pytest

from shardkin.builder import BuildError, build
from shardkin.builder.executors import EXECUTORS
from shardkin.builder.plan import class_list
from shardkin.format.flags import command_line
from shardkin.format.options import EXECUTOR_NAMES, BuildOptions, ExecutionOptions, option_groups

from helpers import check_against_source, read_split


def test_clips_pixels_audio_labels(made_root, tmp_path):
    build(made_root, tmp_path, "train", frames_per_clip=8, step_between_clips=5,
          clips_per_shard=6, workers=2, progress=False)
    manifest, samples = check_against_source(made_root, tmp_path / "train", 8, 5, None)
    assert manifest["classes"] == ["archery", "bowling", "café au lait"]
    assert manifest["skipped_extensions"] == {".txt": 1}
    status = {v["path"]: v["status"] for v in manifest["videos"]}
    assert status["train/café au lait/short.mp4"] == "too_short"
    assert (manifest["totals"]["clips"] == len(samples)
            == sum(s["clips"] for s in manifest["shards"]))
    keys = [s["key"] for s in samples]
    assert len(set(keys)) == len(keys) and all(k.isascii() and "." not in k for k in keys)
    assert len(manifest["shards"]) > 2


def test_frame_rate_and_resize(made_root, tmp_path):
    build(made_root, tmp_path, "train", frames_per_clip=6, step_between_clips=4, frame_rate=15,
          min_dimension=32, workers=1, progress=False)
    manifest, samples = check_against_source(made_root, tmp_path / "train", 6, 4, 15.0,
                                              size=(0, 0, 32, 0))
    assert {s["video.npy"].shape[1:] for s in samples} == {(32, 43, 3)}
    assert {s["json"]["fps"] for s in samples} == {15.0}


def test_labels_agree_across_splits_and_classes_from(made_root, tmp_path):
    train = build(made_root, tmp_path, "train", frames_per_clip=8, workers=1, progress=False)
    val = build(made_root, tmp_path, "val", frames_per_clip=8, workers=1, progress=False)
    assert val["classes"] == train["classes"]
    assert {v["path"]: v["label"] for v in val["videos"]} == {
        "val/bowling/e.mp4": 1, "val/café au lait/f.mp4": 2}
    other = build(made_root, tmp_path / "again", "val", frames_per_clip=8, workers=1,
                  classes_from=tmp_path, progress=False)
    assert other["classes"] == train["classes"]
    (tmp_path / "classes.txt").write_text("b\na\n\n", encoding="utf-8")
    assert class_list(made_root, "val", _classes_from(tmp_path / "classes.txt")) == ["b", "a"]
    for source in (tmp_path / "val", tmp_path / "val" / "manifest.json"):
        assert class_list(made_root, "val", _classes_from(source)) == train["classes"]


def _classes_from(source) -> BuildOptions:
    return BuildOptions.from_kwargs(classes_from=source)


def test_options_are_one_record_from_flags_to_manifest():
    """Every option is an argument of build() with its field's default and, but for
    storage_options, a flag; the manifest records all but the execution options."""
    defaults = {f.name: f.default for g in option_groups().values() for f in fields(g)}
    params = inspect.signature(build).parameters
    assert {k: p.default for k, p in params.items()
            if k not in ("root", "out", "split")} == defaults
    assert [f.dest for f in command_line()] == [n for n in defaults if n != "storage_options"]
    assert set(EXECUTORS) == set(EXECUTOR_NAMES)
    options = BuildOptions.from_kwargs(frames_per_clip=8, extensions=[".MP4", "avi"],
                                       classes=["b", "a"], video_codec="zstd", workers=3)
    recorded = options.to_manifest()
    assert (recorded["step_between_clips"], recorded["extensions"], recorded["classes"],
            recorded["zstd_level"], recorded["jpeg_quality"]) == (8, ["avi", "mp4"], ["a", "b"], 3,
                                                                  None)
    assert "workers" not in recorded
    again = BuildOptions.from_manifest(json.loads(json.dumps(recorded)))
    assert again == replace(options, execution=ExecutionOptions())
    assert BuildOptions.from_manifest({"frames_per_clip": 4}) == BuildOptions.from_kwargs(
        frames_per_clip=4, timeline="pyav")  # an older build counted frames so
    with pytest.raises(TypeError, match="frames_per_klip"):
        BuildOptions.from_kwargs(frames_per_klip=4)


def test_same_inputs_give_same_bytes(made_root, tmp_path):
    kw = dict(frames_per_clip=4, step_between_clips=3, clips_per_shard=5, progress=False)
    build(made_root, tmp_path / "a", "train", workers=1, **kw)
    build(made_root, tmp_path / "b", "train", workers=2, **kw)
    files = sorted(p.relative_to(tmp_path / "a")
                   for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 3
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_subsets_are_seeded(made_root, tmp_path):
    m = build(made_root, tmp_path / "c", "train", classes=["bowling", "archery"],
              frames_per_clip=8, workers=1, progress=False)
    assert m["classes"] == ["archery", "bowling"]
    assert {v["label"] for v in m["videos"]} == {0, 1}
    picks = []
    for i in range(2):
        m = build(made_root, tmp_path / f"f{i}", "train", fraction=0.5, seed=3,
                  frames_per_clip=8, workers=1, progress=False)
        picks.append([v["path"] for v in m["videos"]] + [s["path"] for s in m["skipped"]])
    assert picks[0] == picks[1] and len(picks[0]) == 3  # one of the two videos of each class
    m = build(made_root, tmp_path / "l", "train", limit=2, frames_per_clip=8, workers=1,
              progress=False)
    assert len(m["videos"]) + len(m["skipped"]) == 2


def test_annotation_csv(made_root, tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("path,label\ntrain/bowling/c 30fps.avi,bowling\n"
                   "train/archery/a 24fps.mp4,archery\n", encoding="utf-8")
    m = build(made_root, tmp_path / "o", "train", annotations=csv, frames_per_clip=8,
              workers=1, progress=False)
    assert m["classes"] == ["archery", "bowling"]
    assert [(v["path"], v["label"]) for v in m["videos"]] == [
        ("train/archery/a 24fps.mp4", 0), ("train/bowling/c 30fps.avi", 1)]
    space = tmp_path / "ints.csv"
    space.write_text("train/bowling/c 30fps.avi 7\n", encoding="utf-8")
    m = build(made_root, tmp_path / "p", "train", annotations=space, frames_per_clip=8,
              workers=1, progress=False)
    assert m["videos"][0]["label"] == 7 and m["totals"]["clips"] == 4


def test_other_options_refused_unless_overwrite(made_root, tmp_path):
    build(made_root, tmp_path, "val", frames_per_clip=8, workers=1, progress=False)
    again = build(made_root, tmp_path, "val", frames_per_clip=8, workers=1, progress=False)
    assert again["totals"]["clips"] > 0
    with pytest.raises(BuildError, match="frames_per_clip"):
        build(made_root, tmp_path, "val", frames_per_clip=4, workers=1, progress=False)
    m = build(made_root, tmp_path, "val", frames_per_clip=4, workers=1, overwrite=True,
              progress=False)
    _, samples = read_split(tmp_path / "val")
    assert ({s["video.npy"].shape[0] for s in samples} == {4}
            and len(samples) == m["totals"]["clips"])


def test_webdataset_reads_shards_unaided(made_root, tmp_path):
    import webdataset as wds

    m = build(made_root, tmp_path, "train", frames_per_clip=8, workers=1, progress=False)
    urls = [str(tmp_path / "train" / s["name"]) for s in m["shards"]]
    seen = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(seen) == m["totals"]["clips"]
    s = seen[0]
    assert s["video.npy"].dtype == np.uint8 and s["video.npy"].shape[0] == 8
    assert s["audio.npy"].dtype == np.float32 and s["json"]["label"] == s["cls"]


def test_index_locates_every_clip_in_torchvision_order(made_root, tmp_path):
    import xxhash

    from shardkin.format.npy import decode_npy

    m = build(made_root, tmp_path, "train", frames_per_clip=4, clips_per_shard=5, workers=1,
              progress=False)
    _, samples = read_split(tmp_path / "train")
    index = decode_npy((tmp_path / "train" / m["index"]["name"]).read_bytes())
    assert index.shape == (m["totals"]["clips"], 4)
    by_key = {s["key"]: s for s in samples}
    expected = sorted(by_key)  # video_index follows class order, then video order
    assert [v["path"] for v in m["videos"]] == sorted(
        (v["path"] for v in m["videos"]), key=lambda p: (m["classes"].index(p.split("/")[1]), p))
    for i, (shard, offset, length, checksum) in enumerate(index):
        with open(tmp_path / "train" / m["shards"][shard]["name"], "rb") as f:
            f.seek(offset)
            blob = f.read(length)
        assert xxhash.xxh3_64_intdigest(blob) == int(checksum) % (1 << 64)
        key = blob[:100].split(b"\0", 1)[0].decode().split(".")[0]
        assert key == expected[i]
        video = by_key[key]["video.npy"]
        assert video.tobytes() in blob


def test_audio_resampled_to_rate_and_channels(made_root, tmp_path):
    from helpers import audio_span, decode_audio, timeline_frames

    build(made_root, tmp_path, "train", frames_per_clip=8, audio_rate=8000, audio_channels=1,
          classes=["archery"], workers=1, progress=False)
    _, samples = read_split(tmp_path / "train")
    src = made_root / "train/archery/b_2997.mkv"  # opus, 48 kHz stereo
    data, origin, rate = decode_audio(src, 8000, 1)
    _, fps, t0 = timeline_frames(src)
    mine = [s for s in samples if s["json"]["path"].endswith("b_2997.mkv")]
    assert len(mine) == 5
    for s in mine:
        first, last = s["json"]["source_frames"][0], s["json"]["source_frames"][-1]
        assert s["json"]["audio_rate"] == 8000 and s["audio.npy"].shape[0] == 1
        span = audio_span(t0 + first / fps, t0 + (last + 1) / fps, origin, rate)
        np.testing.assert_array_equal(s["audio.npy"], data[:, span])
        assert abs(s["audio.npy"].shape[1] - 8 / fps * 8000) <= 1
    silent = [s for s in samples if s["json"]["path"].endswith("a 24fps.mp4")]
    assert silent and all(s["audio.npy"].shape[0] == 1 for s in silent)


def test_memory_is_bounded_by_a_clip_not_the_video(tmp_path):
    """A long video is cut as it streams: its peak memory is that of a short one."""
    import subprocess
    import sys

    from shardkin.synth import make_video

    script = ("import resource, sys; from shardkin.builder.decode import VideoCutter; "
              "from shardkin.format.options import BuildOptions; "
              "options = BuildOptions.from_kwargs(frames_per_clip=16); "
              "n = sum(1 for _ in VideoCutter(sys.argv[1], options)); "
              "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")

    def peak_kb(frames: int) -> tuple[int, int]:
        path = make_video(tmp_path / f"v{frames}.mp4", frames, 30, (320, 240), audio_rate=16000)
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
        return int(out[0]), int(out[1])

    short_clips, short_kb = peak_kb(48)
    long_clips, long_kb = peak_kb(900)
    assert (short_clips, long_clips) == (3, 56)
    whole_kb = 900 * 320 * 240 * 3 // 1024  # 202 MB if the video were held
    assert long_kb - short_kb < whole_kb / 10, (short_kb, long_kb)
