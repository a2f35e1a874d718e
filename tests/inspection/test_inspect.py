"""``shardkin info``, ``verify`` and ``show`` on small builds: counts from the manifest
and from the shards (read with tarfile), each kind of damage caught, the contact sheet
read back with Pillow and searched for the frames it must show."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardkin.builder import build
from shardkin.format.manifest import Manifest
from shardkin.inspection.sheet import contact_sheet, frame_positions, pick
from shardkin.inspection.verify import verify_split
from shardkin.store.split import open_split
from shardkin.synth import make_dataset, make_video

from helpers import read_split
from reader_fixtures import make_split, sample_members, write_tar

FPC = 4


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardkin", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """OUT of a train split: 3 classes x 2 videos (24 and 32 frames of 64x48), 5 clips a shard."""
    base = tmp_path_factory.mktemp("inspect")
    make_dataset(base / "root", classes=3, videos_per_class=2, frames=24, splits=("train",),
                 size=(64, 48))
    build(base / "root", base / "out", split="train", frames_per_clip=FPC, clips_per_shard=5,
          workers=1, progress=False)
    return base / "out"


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A copy of the build's train split folder, free to damage."""
    return Path(shutil.copytree(built / "train", tmp_path / "train"))


def problems(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_info_counts_match_manifest_and_shards(built):
    manifest, samples = read_split(built / "train")
    clips, videos = Counter(), defaultdict(set)
    for s in samples:
        clips[s["cls"]] += 1
        videos[s["cls"]].add(s["json"]["video_index"])
    r = cli("info", built, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert [c["class"] for c in info["classes"]] == manifest["classes"] == [
        "class_0", "class_1", "class_2"]
    for c in info["classes"]:
        assert c["clips"] == clips[c["label"]] == sum(
            v["clips"] for v in manifest["videos"] if v["label"] == c["label"])
        assert c["videos"] == len(videos[c["label"]]) == 2
        assert c["clips"] == 24 // FPC + 32 // FPC  # videos of 24 and 32 frames
    assert [(s["name"], s["clips"]) for s in info["shards"]] == [
        (s["name"], s["clips"]) for s in manifest["shards"]]
    assert info["options"]["frames_per_clip"] == FPC and info["left_out"] == []
    text = cli("info", built / "train")
    assert text.returncode == 0
    rows = [line.split() for line in text.stdout.splitlines()
            if line.lstrip().startswith(("0 ", "1 ", "2 "))]
    assert rows == [[str(i), f"class_{i}", "2", str(clips[i]), "0"] for i in range(3)]
    assert "frames_per_clip: 4" in text.stdout and "train-000000.tar" in text.stdout


def test_info_groups_left_out_videos(tmp_path):
    root = tmp_path / "root"
    make_video(root / "train" / "a" / "ok.mp4", 12)
    make_video(root / "train" / "a" / "short.mp4", 3)
    make_video(root / "train" / "b" / "short2.mp4", 2)
    (root / "train" / "b" / "broken.mp4").write_bytes(b"not a video")
    build(root, tmp_path / "out", "train", frames_per_clip=FPC, workers=1, progress=False)
    info = json.loads(cli("info", tmp_path / "out", "--json").stdout)
    groups = {(g["status"], g["reason"]): sorted(g["paths"]) for g in info["left_out"]}
    assert groups[("too_short", "too short")] == ["train/a/short.mp4", "train/b/short2.mp4"]
    assert [k[0] for k in groups if k[1] != "too short"] == ["skipped"]
    assert [(c["videos"], c["too_short"]) for c in info["classes"]] == [(1, 1), (0, 1)]
    text = cli("info", tmp_path / "out").stdout
    assert "too_short: too short: 2" in text and "train/b/broken.mp4" in text


def test_source_resolution_errors(built, tmp_path):
    out = Path(shutil.copytree(built, tmp_path / "out"))
    shutil.copytree(out / "train", out / "val")
    r = cli("info", out)
    assert r.returncode == 2 and "--split" in r.stderr and "train, val" in r.stderr
    r = cli("verify", out, "--split", "test")
    assert r.returncode == 2 and "no split 'test'" in r.stderr
    assert cli("info", out, "--split", "train").returncode == 0
    assert cli("info", out / "train" / "manifest.json").returncode == 0
    r = cli("show", tmp_path / "nothing", "-o", tmp_path / "x.png")
    assert r.returncode == 2 and "shardkin build" in r.stderr
    r = cli("info", out / "val", "--split", "val")  # a copy of train: its manifest says so
    assert r.returncode == 2 and "manifest of split 'train', not 'val'" in r.stderr


def test_verify_passes_on_a_good_build(built):
    r = cli("verify", built, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok:") and "42 clips" in r.stdout


def _flip_byte(split: Path) -> None:
    with tarfile.open(split / "train-000000.tar") as tar:
        video = next(m for m in tar.getmembers() if m.name.endswith(".video.npy"))
    data = bytearray((split / "train-000000.tar").read_bytes())
    data[video.offset_data + video.size // 2] ^= 0x01  # one pixel, no structure touched
    (split / "train-000000.tar").write_bytes(data)


def _edit_manifest(split: Path, edit) -> None:
    """Edit the manifest, and head.json with it (as a build would have written them)."""
    manifest = json.loads((split / "manifest.json").read_text())
    edit(manifest)
    (split / "manifest.json").write_text(json.dumps(manifest))
    head = Manifest.from_json(manifest).head_json()
    (split / "head.json").write_text(json.dumps(head))


def test_verify_finds_a_head_json_that_differs_from_the_manifest(copy):
    head = json.loads((copy / "head.json").read_text())
    head["shards"]["clips"][0] += 1
    (copy / "head.json").write_text(json.dumps(head))
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1 and problems(r) == [
        "head.json: differs from the manifest's head: readers would start from other shards "
        "or options; re-run the build command to rewrite it"]


def test_verify_finds_a_damaged_head_json(copy):
    (copy / "head.json").write_text('{"shards": ')
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1 and len(problems(r)) == 1
    assert problems(r)[0].startswith("head.json: undecodable: ")


def _wrong_label(split: Path) -> str:
    """Change the cls of one sample in place and fix the shard's sha256: the bytes check passes."""
    shard = split / "train-000001.tar"
    with tarfile.open(shard) as tar:
        cls = next(m for m in tar.getmembers() if m.name.endswith(".cls"))
        label = int(tar.extractfile(cls).read())
    data = bytearray(shard.read_bytes())
    data[cls.offset_data] = ord(str((label + 1) % 3))
    shard.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    _edit_manifest(split, lambda m: m["shards"][1].update(sha256=sha))
    return cls.name.split(".")[0]


def test_verify_flipped_byte(copy):
    _flip_byte(copy)
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert len(problems(r)) == 2  # only the checksums can see it: the shard's and the clip's
    assert problems(r)[0].startswith("train-000000.tar: checksum mismatch") and "sha256" in r.stdout
    assert problems(r)[1].startswith("train-000000.tar 00000000_000000: damaged: bytes 0-")


def test_verify_missing_shard(copy):
    (copy / "train-000001.tar").unlink()
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert len(problems(r)) == 1 and problems(r)[0].startswith("train-000001.tar: missing")


def test_verify_wrong_count_in_manifest(copy):
    _edit_manifest(copy, lambda m: m["shards"][2].update(clips=m["shards"][2]["clips"] + 1))
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert any(p.startswith("train-000002.tar: 6 samples, the manifest says 7")
               for p in problems(r))
    assert "totals.clips" in r.stdout


def test_verify_wrong_label(copy):
    key = _wrong_label(copy)
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert "checksum mismatch" not in r.stdout  # the shard's sha256 was forged to match
    assert problems(r) and all(p.startswith(f"train-000001.tar {key}: ") for p in problems(r))
    assert any("label mismatch" in p for p in problems(r))
    assert any("damaged" in p for p in problems(r))  # the clip's own checksum was not


def test_verify_unknown_shard(copy):
    shutil.copy(copy / "train-000000.tar", copy / "train-000099.tar")
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert len(problems(r)) == 1
    assert problems(r)[0].startswith("train-000099.tar: on disk but not in the manifest")


def test_verify_checks_frame_size_against_options(copy):
    _edit_manifest(copy, lambda m: m["options"].update(min_dimension=40))
    found = verify_split(open_split(copy, head=False), progress=False)
    assert len(found) == 42 and all("frames are 64x48, the resize options give short side 40" in p
                                    for p in found)


def test_all_tools_on_resized_audio_and_silent_builds(tmp_path):
    root = tmp_path / "root"
    make_video(root / "train" / "loud" / "a.mp4", 20, audio_rate=16000, seed=1)
    make_video(root / "train" / "quiet" / "b.mp4", 20, audio_rate=None, seed=2)
    build(root, tmp_path / "out", "train", frames_per_clip=5, min_dimension=32, audio_rate=8000,
          audio_channels=2, workers=1, progress=False)
    _, samples = read_split(tmp_path / "out" / "train")
    assert {s["video.npy"].shape for s in samples} == {(5, 32, 43, 3)}
    assert {s["audio.npy"].shape[0] for s in samples} == {2}
    assert {s["audio.npy"].shape[1] > 0 for s in samples} == {True, False}
    assert cli("verify", tmp_path / "out", "--quiet").returncode == 0
    assert cli("info", tmp_path / "out").returncode == 0
    r = cli("show", tmp_path / "out", "-o", tmp_path / "s.png", "--n", "3")
    assert r.returncode == 0, r.stderr
    image = read_png(tmp_path / "s.png")
    first = [s["video.npy"][0].repeat(2, 0).repeat(2, 1) for s in samples]  # 32 pixels high: 2x
    assert sum(len(find(image, tile)) for tile in first) == 3


def test_verify_accepts_shards_written_by_tarfile(tmp_path):
    """Shards written by another tar writer (reader test fixtures, no options, no index)."""
    folder = make_split(tmp_path, [3, 1, 4, 2], videos_per_shard=2)
    assert verify_split(open_split(folder, head=False), progress=False) == []


def test_verify_incomplete_and_repeated_members(tmp_path):
    """Samples the readers refuse are reported, and the rest of the shard is still checked."""
    folder = make_split(tmp_path, [2, 1], videos_per_shard=2)
    members = [*sample_members(0, 0), *sample_members(0, 1)[1:], *sample_members(1, 0)]
    members.insert(-1, members[-2])  # 00000001_000000 gets its cls twice
    size, sha = write_tar(folder / "train-000000.tar", members)
    _edit_manifest(folder, lambda m: m["shards"][0].update(bytes=size, sha256=sha))
    _edit_manifest(folder, lambda m: m["totals"].update(bytes=size))
    found = verify_split(open_split(folder, head=False), progress=False)
    assert found == [
        "train-000000.tar 00000000_000001: incomplete: no video.npy member",
        "train-000000.tar 00000001_000000: two cls members",
        "train-000000.tar video 0 (abseiling/video_0000.mp4): 1 clips in the shards, "
        "the manifest says 2"]


def read_png(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] of an 8-bit RGB PNG, read by Pillow."""
    with Image.open(path) as image:
        assert (image.format, image.mode) == ("PNG", "RGB")
        return np.asarray(image)


def find(image: np.ndarray, tile: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``tile`` is in ``image``, pixel for pixel."""
    h, w = tile.shape[:2]
    rows, cols = image.shape[0] - h + 1, image.shape[1] - w + 1
    if rows <= 0 or cols <= 0:
        return []
    maybe = np.ones((rows, cols), bool)  # a few pixels first, then the candidates whole
    for dy, dx in ((0, 0), (h // 2, w // 2), (h - 1, w - 1), (0, w - 1), (h - 1, 0)):
        maybe &= (image[dy : dy + rows, dx : dx + cols] == tile[dy, dx]).all(-1)
    return [(int(y), int(x)) for y, x in zip(*np.nonzero(maybe))
            if np.array_equal(image[y : y + h, x : x + w], tile)]


def text_lines(band: np.ndarray, background: np.ndarray) -> int:
    """Lines of text in a horizontal band: runs of pixel rows with ink, apart by 5 or more."""
    inked = np.flatnonzero((np.abs(band.astype(int) - background).sum(-1) > 60).any(axis=1))
    return 0 if not len(inked) else 1 + int((np.diff(inked) >= 5).sum())


def test_show_draws_the_chosen_clips(built, tmp_path):
    n, k, seed = 5, 3, 7
    split = Path(shutil.copytree(built / "train", tmp_path / "train"))
    manifest, samples = read_split(split)
    picks = pick(open_split(split).shards, n, seed)
    needed = {manifest["shards"][s]["name"] for s, _ in picks}
    for shard in manifest["shards"]:  # only the shards holding the picks may be read
        if shard["name"] not in needed:
            (split / shard["name"]).unlink()
    r = cli("show", split, "-o", tmp_path / "sheet.png", "--n", n, "--frames", k, "--seed", seed)
    assert r.returncode == 0, r.stderr
    image = read_png(tmp_path / "sheet.png")
    assert f"({image.shape[1]}x{image.shape[0]} pixels)" in r.stdout
    background = image[-1, -1].astype(int)

    by_shard = defaultdict(list)
    for s in samples:
        by_shard[s["shard"]].append(s)
    chosen = sorted((by_shard[manifest["shards"][s]["name"]][i] for s, i in picks),
                    key=lambda s: (s["cls"], s["key"]))
    assert len(chosen) == n
    positions = frame_positions(FPC, k)
    assert len(positions) == k and positions[0] == 0 and positions[-1] == FPC - 1
    h, w = 48, 64  # shown as they are: within the readable range
    rows = []
    for sample in chosen:  # a row per clip, sorted by label: its frames left to right
        found = [find(image, sample["video.npy"][t]) for t in positions]
        assert all(len(f) == 1 for f in found), found
        ys, xs = {y for [(y, _)] in found}, [x for [(_, x)] in found]
        assert len(ys) == 1 and len(set(np.diff(xs))) == 1 and np.diff(xs)[0] > w
        rows.append((ys.pop(), xs[0]))
    tops = [y for y, _ in rows]
    assert len({x for _, x in rows}) == 1 and len(set(np.diff(tops))) == 1
    assert tops == sorted(tops) and np.diff(tops)[0] > h
    bands = [image[: tops[0]], *(image[a + h : b] for a, b in zip(tops, tops[1:]))]
    assert [text_lines(b, background) for b in bands] == [2] + [1] * (n - 1)  # header, titles
    assert (image[tops[-1] + h :] == background).all() and image.shape[0] > tops[-1] + h


def test_show_is_seeded(built):
    split = open_split(built / "train")
    a = np.asarray(contact_sheet(split, n=4, seed=1, frames=2))
    assert np.array_equal(a, np.asarray(contact_sheet(split, n=4, seed=1, frames=2)))
    assert not np.array_equal(a, np.asarray(contact_sheet(split, n=4, seed=2, frames=2)))


def test_show_without_pillow_says_how_to_install_it(built, tmp_path):
    """Pillow is only needed to draw: info and verify run without it."""
    def run(*args: object) -> subprocess.CompletedProcess:
        script = ("import sys; sys.modules['PIL'] = None; from shardkin.cli import main; "
                  "sys.exit(main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-c", script, *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    r = run("show", built, "-o", tmp_path / "x.png")
    assert r.returncode == 2 and "pip install 'shardkin[inspect]'" in r.stderr
    assert not (tmp_path / "x.png").exists()
    assert run("info", built).returncode == 0 and run("verify", built, "--quiet").returncode == 0


def test_verify_truncated_shard(copy):
    shard = copy / "train-000003.tar"
    shard.write_bytes(shard.read_bytes()[:200_000])
    found = verify_split(open_split(copy, head=False), progress=False)
    assert len(found) == 2
    assert found[0].startswith("train-000003.tar: checksum mismatch: 200000 bytes")
    assert (found[1].startswith("train-000003.tar: unreadable after 4 samples")
            and "truncated" in found[1])


def test_verify_index_rows(copy):
    from shardkin.format.npy import decode_npy, encode_npy

    rows = decode_npy((copy / "index.npy").read_bytes()).copy()
    rows[[3, 4]] = rows[[4, 3]]  # two clips swapped, the checksum fixed: only the rows tell
    data = encode_npy(rows)
    (copy / "index.npy").write_bytes(data)
    _edit_manifest(copy, lambda m: m["index"].update(sha256=hashlib.sha256(data).hexdigest()))
    found = verify_split(open_split(copy, head=False), progress=False)
    assert [p.split(" is ")[0] for p in found] == ["index.npy: row 3", "index.npy: row 4"]
