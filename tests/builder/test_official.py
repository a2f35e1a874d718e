"""The official Kinetics download as it comes: a flat split folder and the annotation CSV.

Compared with the real torchvision 0.28: its ``Kinetics._make_ds_structure`` arranges a copy
into class folders, and its ``find_classes``/``make_dataset`` give the classes, labels and
order shardkin must give without moving anything."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shardkin.builder import BuildError, build
from shardkin.builder.official import class_folder, is_official
from shardkin.builder.plan import gather
from shardkin.format.options import BuildOptions
from shardkin.synth import make_video

import reference
from helpers import read_split

KW = dict(frames_per_clip=4, step_between_clips=3, clips_per_shard=5, workers=2, progress=False)
HEADER = "label,youtube_id,time_start,time_end,split,is_cc"
# (label, youtube id, start, end, the file is there). Sanitising changes the order: raw,
# "passing American..." < "passingBall" (' ' < 'B'); as folders "passingBall" comes first
# ('B' < '_'). Row 8 names row 2's video again under another label.
ROWS = [
    ("massaging person's head", "zz9", 10, 20, True),
    ("massaging person's head", "Ab_c-1", 0, 10, True),
    ("passingBall", "q1", 5, 15, True),
    ("passing American football (in game)", "m2", 30, 40, True),
    ("passing American football (in game)", "m2", 40, 50, False),  # taken down
    ("passing American football (not in game)", "k3", 1, 11, True),
    ("all gone", "x0", 0, 10, False),  # every video of the class missing
    ("passingBall", "zz9", 10, 20, True),
]


def _csv(rows=ROWS, header=HEADER) -> str:
    lines = [header] + [f'"{label}",{yt},{a},{b},train,0' for label, yt, a, b, _ in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def official_root(tmp_path_factory) -> Path:
    """ROOT/train/ID_START_END.mp4 (flat) and ROOT/annotations/train.csv, as downloaded;
    two files the CSV does not name."""
    root = tmp_path_factory.mktemp("official")
    seen = set()
    for i, (_, yt, a, b, there) in enumerate(ROWS):
        name = f"{yt}_{a:06}_{b:06}.mp4"
        if there and name not in seen:
            make_video(root / "train" / name, 10 + 3 * i, 30, (32, 24), 16000 if i % 2 else None,
                       seed=i)
            seen.add(name)
    make_video(root / "train" / "extra_000001_000002.mp4", 12, 30, (32, 24), seed=9)
    (root / "train" / "notes.txt").write_text("not a video")
    (root / "annotations").mkdir()
    (root / "annotations" / "train.csv").write_text(_csv())
    return root


ARRANGE = """
import json, os, shutil, sys
from torchvision.datasets.folder import find_classes, make_dataset
from torchvision.datasets.kinetics import Kinetics

src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
k = Kinetics.__new__(Kinetics)  # only its arrangement: the CSV is there, nothing is fetched
k.root, k.split, k.num_classes = dst, "train", "400"
k.split_folder = os.path.join(dst, "train")
k._make_ds_structure()
classes, class_to_idx = find_classes(k.split_folder)
samples = make_dataset(k.split_folder, class_to_idx, ("avi", "mp4"), allow_empty=True)
print(json.dumps({"classes": classes,
                  "samples": [[os.path.relpath(p, dst), i] for p, i in samples]}))
"""


@pytest.fixture(scope="module")
def arranged(official_root, tmp_path_factory) -> tuple[Path, dict]:
    """A copy arranged by torchvision's own ``_make_ds_structure``, and what its
    ``Kinetics`` lists there."""
    dst = tmp_path_factory.mktemp("arranged") / "root"
    return dst, reference.run(ARRANGE, official_root, dst)


def _options(csv: Path | str, **kw) -> BuildOptions:
    return BuildOptions.from_kwargs(annotations=csv, **kw)


def test_classes_labels_and_order_are_torchvision_s(official_root, arranged):
    _, tv = arranged
    found = gather(official_root, "train", _options(official_root / "annotations/train.csv"))
    assert found["classes"] == tv["classes"] == sorted({class_folder(r[0]) for r in ROWS})
    assert tv["classes"].index("passingBall") < tv["classes"].index(
        "passing_American_football_in_game")  # sanitised, then sorted
    assert [(Path(v.path).name, v.label) for v in found["videos"]] == [
        (Path(p).name, label) for p, label in tv["samples"]]
    assert all(v.path.count("/") == 1 for v in found["videos"])  # read where they are: flat


def test_build_equals_the_build_of_the_arranged_tree(official_root, arranged, tmp_path):
    dst, _ = arranged
    flat = build(official_root, tmp_path / "flat", "train",
                 annotations=official_root / "annotations/train.csv", **KW)
    tree = build(dst, tmp_path / "tree", "train", **KW)
    assert flat["classes"] == tree["classes"]

    def videos(m: dict) -> list:
        return [{**v, "path": Path(v["path"]).name} for v in m["videos"]]

    assert videos(flat) == videos(tree) and flat["totals"]["clips"] == tree["totals"]["clips"]
    _, a = read_split(tmp_path / "flat" / "train")
    _, b = read_split(tmp_path / "tree" / "train")
    assert len(a) == len(b) == flat["totals"]["clips"] > 10
    for x, y in zip(a, b):
        assert (x["key"], x["shard"], x["cls"]) == (y["key"], y["shard"], y["cls"])
        np.testing.assert_array_equal(x["video.npy"], y["video.npy"])
        np.testing.assert_array_equal(x["audio.npy"], y["audio.npy"])
        assert x["json"] == {**y["json"], "path": x["json"]["path"]}
        assert x["json"]["path"] == f"train/{Path(y['json']['path']).name}"


def test_missing_unlisted_and_repeated_rows_are_listed_and_counted(official_root, tmp_path):
    r = subprocess.run([sys.executable, "-m", "shardkin", "build", str(official_root),
                        str(tmp_path / "o"), "--split", "train", "--annotations",
                        str(official_root / "annotations/train.csv"), "--frames-per-clip", "4",
                        "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o/train/manifest.json").read_text())
    assert m["missing"] == [
        {"row": 6, "path": "train/m2_000040_000050.mp4",
         "class": "passing_American_football_in_game"},
        {"row": 8, "path": "train/x0_000000_000010.mp4", "class": "all_gone"}]
    assert m["unlisted"] == ["train/extra_000001_000002.mp4", "train/notes.txt"]
    assert m["duplicates"] == [{"row": 9, "path": "train/zz9_000010_000020.mp4",
                                "class": "passingBall", "first_row": 2,
                                "first_class": "massaging_persons_head"}]
    assert {k: m["totals"][k] for k in ("missing", "unlisted", "duplicates", "videos")} == {
        "missing": 2, "unlisted": 2, "duplicates": 1, "videos": 5}
    lines = {" ".join(line.split()[:-1]): line.split()[-1] for line in r.stderr.splitlines()
             if line.strip()}
    assert lines["videos in the CSV, missing"] == "2"
    assert lines["files not in the CSV"] == "2"
    assert lines["CSV rows repeated"] == "1"


def test_half_arranged_folder(official_root, tmp_path):
    """An interrupted _make_ds_structure: some videos already in their class folders."""
    root = tmp_path / "root"
    shutil.copytree(official_root, root)
    moved = root / "train" / "passingBall" / "q1_000005_000015.mp4"
    moved.parent.mkdir()
    (root / "train" / moved.name).rename(moved)
    csv = official_root / "annotations/train.csv"
    half = build(root, tmp_path / "half", "train", annotations=csv, **KW)
    flat = build(official_root, tmp_path / "flat", "train", annotations=csv, **KW)
    paths = [v["path"] for v in half["videos"]]
    assert "train/passingBall/q1_000005_000015.mp4" in paths
    assert [Path(p).name for p in paths] == [Path(v["path"]).name for v in flat["videos"]]
    assert half["totals"]["clips"] == flat["totals"]["clips"]
    assert half["unlisted"] == flat["unlisted"]


@pytest.mark.parametrize("header, rows, message", [
    ("label,youtube_id,start,end,split", ROWS, r"train.csv:1: unknown header .*no time_start, "
     r"time_end column; unknown column 'start', 'end'.*label,youtube_id,time_start"),
    ("youtube_id,time_start,time_end,split", ROWS, r"train.csv:1: .*no label column.*test "
     r"split's CSV has no labels"),
    (HEADER, [ROWS[0], ("", "b2", 0, 10, True)], r"train.csv:3: empty label"),
    (HEADER, [ROWS[0], ("x", "b2", "0.5", 10, True)], r"train.csv:3: time_start and time_end "
     r"must be whole numbers"),
])
def test_bad_official_csv_is_a_clear_error_naming_the_row(official_root, tmp_path, header, rows,
                                                          message):
    csv = tmp_path / "train.csv"
    text = _csv(rows, header)
    if not header.startswith("label"):  # the test split's CSV: no label field either
        text = "\n".join([header] + [",".join(line.split(",")[1:])
                                     for line in text.splitlines()[1:]]) + "\n"
    csv.write_text(text)
    with pytest.raises(BuildError, match=message):
        build(official_root, tmp_path / "o", "train", annotations=csv, **KW)
    assert not list((tmp_path / "o").rglob("*.tar"))
    assert not list((tmp_path / "o").rglob("manifest.json"))


def test_official_download_in_a_bucket(official_root, s3_endpoint, tmp_path):
    """ROOT and the CSV in a bucket: the same build as from the local folder."""
    import boto3
    import s3fs

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="official")
    s3fs.S3FileSystem().put(f"{official_root}/", "official/k400", recursive=True)
    remote = build("s3://official/k400", tmp_path / "remote", "train",
                   annotations="s3://official/k400/annotations/train.csv", **KW)
    local = build(official_root, tmp_path / "local", "train",
                  annotations=official_root / "annotations/train.csv", **KW)
    assert {**remote, "options": None} == {**local, "options": None}
    assert remote["totals"]["missing"] == 2
    for name in [s["name"] for s in local["shards"]]:
        assert (tmp_path / "remote/train" / name).read_bytes() == (
            tmp_path / "local/train" / name).read_bytes()


@pytest.mark.parametrize("text, message", [
    ("path,label\ntrain/a.mp4,x\ntrain/b.mp4,\n", r"train.csv:3: empty label"),
    ("train/a.mp4,x\ntrain/b.mp4,y\ntrain/a.mp4,y\n",
     r"train.csv:3: train/a.mp4 is named again \(first on row 1\)"),
])
def test_path_label_csv_errors_name_the_row(official_root, tmp_path, text, message):
    csv = tmp_path / "train.csv"
    csv.write_text(text)
    with pytest.raises(BuildError, match=message):
        build(official_root, tmp_path / "o", "train", annotations=csv, **KW)


def test_the_official_csv_is_told_by_its_header():
    assert is_official("\n" + HEADER + "\n", "t.csv")
    assert is_official("youtube_id,label,time_end,time_start\n", "t.csv")  # any order
    for other in ("path,label\ntrain/a.mp4,x\n", "train/a,b.mp4,label\n", "a.mp4 3\n", ""):
        assert not is_official(other, "t.csv")  # path,label rows (a path may hold commas)
    with pytest.raises(ValueError, match="t.csv:1: .*a column named twice"):
        is_official("label,youtube_id,time_start,time_end,label\n", "t.csv")
