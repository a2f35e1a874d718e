"""videos.npy / paths.npy: every video a build listed, in torchvision's order, for readers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from shardkin import Kinetics, ShardDataset, build
from shardkin.format.npy import decode_npy
from shardkin.format.videos import COLUMNS, STATUS, VideoTable, encode_videos
from shardkin.store.split import open_split


def test_the_table_lists_every_video_with_its_record(made_root, tmp_path):
    root = tmp_path / "src"
    shutil.copytree(made_root, root)
    (root / "train/bowling/broken.mp4").write_bytes(b"not a video")  # the probe refuses it
    build(root, tmp_path / "out", "train", frames_per_clip=4, clips_per_shard=6, workers=2,
          progress=False)
    manifest = json.loads((tmp_path / "out/train/manifest.json").read_text())
    table = open_split(tmp_path / "out", "train").video_table()
    paths = [table.path(i) for i in range(len(table))]
    assert paths == sorted(paths, key=lambda p: (p.split("/")[1], p))  # class, then name
    assert "train/bowling/broken.mp4" in paths and len(paths) == len(manifest["videos"]) + 1
    broken = paths.index("train/bowling/broken.mp4")
    row = dict(zip(COLUMNS, table.table[:, broken].tolist()))
    assert (row["video_index"], STATUS[row["status"]], row["clips"]) == (-1, "skipped", 0)
    assert row["label"] == manifest["classes"].index("bowling")
    index = np.load(tmp_path / "out/train/index.npy")
    names = [s["name"] for s in manifest["shards"]]
    for v in manifest["videos"]:
        i = paths.index(v["path"])
        row = dict(zip(COLUMNS, table.table[:, i].tolist()))
        assert (row["video_index"], row["label"], STATUS[row["status"]], row["clips"],
                row["tail"], row["frames"], row["held"]) == (
            v["video_index"], v["label"], v["status"], v["clips"], v["tail"], v["frames"],
            len(v["held"]))
        assert table.column("fps")[i] == v["fps"]
        first = table.first_rows()[i]
        if v["clips"]:  # its rows in index.npy, found from the table alone
            assert names[row["shard"]] == v["shard"]
            assert (index[first : first + v["clips"], 0] == row["shard"]).all()
    ds = Kinetics(tmp_path / "out", split="train")
    assert ds.samples[broken] == ("train/bowling/broken.mp4", row_label(table, broken))
    assert len(ds.video_clips.clips[broken]) == 0 and len(ds.samples) == len(paths)


def row_label(table: VideoTable, i: int) -> int:
    return int(table.column("label")[i])


def test_paths_match_extensions_as_torchvision_tests_names():
    videos, paths = encode_videos([
        {"path": p, "label": 0, "status": "ok"}
        for p in ("a/x.MP4", "a/y.avi", "b/zmp4", "b/é.mkv", "m")])
    table = VideoTable(decode_npy(videos), decode_npy(paths))
    assert table.ends_with(("avi", "mp4")).tolist() == [True, True, True, False, False]
    assert table.ends_with((".mkv",)).tolist() == [False, False, False, True, False]
    assert table.ends_with(("",)).all() and table.path(3) == "b/é.mkv"


def test_a_build_made_before_the_reader_files_reads_and_gets_them(made_root, tmp_path):
    kw = dict(frames_per_clip=4, classes=["archery", "bowling"], workers=1, progress=False)
    build(made_root, tmp_path, "train", **kw)
    split = tmp_path / "train"
    want = Kinetics(tmp_path, split="train")
    counts, samples = want.video_clips.counts.tolist(), list(want.samples)
    manifest = json.loads((split / "manifest.json").read_text())
    for name in ("head.json", "videos.npy", "paths.npy"):
        (split / name).unlink()
    for key in ("video_table", "path_table"):
        del manifest[key]
    (split / "manifest.json").write_text(json.dumps(manifest))
    older = Kinetics(tmp_path, split="train")  # from the whole manifest
    assert older.video_clips.counts.tolist() == counts and list(older.samples) == samples
    build(made_root, tmp_path, "train", **kw)  # the same command: adds what readers start from
    assert {p.name for p in split.iterdir()} >= {"head.json", "videos.npy", "paths.npy"}
    again = Kinetics(tmp_path, split="train")
    assert again.video_clips.counts.tolist() == counts and list(again.samples) == samples
    assert (again[3][0] == want[3][0]).all()


def test_readers_start_from_head_json_whatever_the_manifests_layout(made_root, tmp_path):
    """A manifest rewritten by any JSON tool (other key order, no spaces), or whose
    per-video list readers never look at: both readers start the same (head.json)."""
    build(made_root, tmp_path, "train", frames_per_clip=4, workers=1, progress=False)
    split = tmp_path / "train"
    want = [len(Kinetics(split)), len(ShardDataset(split))]
    manifest = json.loads((split / "manifest.json").read_text())
    rewritten = dict(reversed(list(manifest.items())))
    (split / "manifest.json").write_text(json.dumps(rewritten, separators=(",", ":")))
    assert [len(Kinetics(split)), len(ShardDataset(split))] == want
    (split / "manifest.json").write_text(json.dumps({**manifest, "videos": "not read"}))
    assert [len(Kinetics(split)), len(ShardDataset(split))] == want
    head = json.loads((split / "head.json").read_text())
    (split / "head.json").write_text(json.dumps({**head, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        ShardDataset(split)
