"""``shardkin info``, ``verify`` and ``show`` on small builds: counts from the manifest
and from the shards (read with tarfile), each kind of damage caught, a PNG parsed back."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from helpers import read_split
from reader_fixtures import make_split
from shardkin.builder import build
from shardkin.font import glyph
from shardkin.sheet import GAP, LINE, MARGIN, ROW_GAP, contact_sheet, frame_positions, pick
from shardkin.synth import make_dataset, make_video
from shardkin.verify import verify_split

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
    rows = [line.split() for line in text.stdout.splitlines() if line.lstrip().startswith(("0 ", "1 ", "2 "))]
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
    manifest = json.loads((split / "manifest.json").read_text())
    edit(manifest)
    (split / "manifest.json").write_text(json.dumps(manifest))


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
    assert problems(r) == [problems(r)[0]]  # only the checksum can see it
    assert problems(r)[0].startswith("train-000000.tar: checksum mismatch") and "sha256" in r.stdout


def test_verify_missing_shard(copy):
    (copy / "train-000001.tar").unlink()
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert len(problems(r)) == 1 and problems(r)[0].startswith("train-000001.tar: missing")


def test_verify_wrong_count_in_manifest(copy):
    _edit_manifest(copy, lambda m: m["shards"][2].update(clips=m["shards"][2]["clips"] + 1))
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert any(p.startswith("train-000002.tar: 6 samples, the manifest says 7") for p in problems(r))
    assert "totals.clips" in r.stdout


def test_verify_wrong_label(copy):
    key = _wrong_label(copy)
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert "checksum" not in r.stdout
    assert problems(r) and all(p.startswith(f"train-000001.tar {key}: ") for p in problems(r))
    assert any("label mismatch" in p for p in problems(r))


def test_verify_unknown_shard(copy):
    shutil.copy(copy / "train-000000.tar", copy / "train-000099.tar")
    r = cli("verify", copy, "--quiet")
    assert r.returncode == 1
    assert len(problems(r)) == 1
    assert problems(r)[0].startswith("train-000099.tar: on disk but not in the manifest")


def test_verify_checks_frame_size_against_options(copy):
    _edit_manifest(copy, lambda m: m["options"].update(min_dimension=40))
    found = verify_split(json.loads((copy / "manifest.json").read_text()), str(copy), progress=False)
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
    tile = 64  # 32-pixel frames are drawn twice as large
    assert read_png(tmp_path / "s.png").shape[0] == 2 * MARGIN + LINE + 3 * (LINE + GAP + tile + ROW_GAP)


def test_verify_accepts_shards_written_by_tarfile(tmp_path):
    """Shards written by another tar writer (reader test fixtures, no options, no index)."""
    folder = make_split(tmp_path, [3, 1, 4, 2], videos_per_shard=2)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert verify_split(manifest, str(folder), progress=False) == []


def read_png(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] of an 8-bit RGB PNG without filtering, chunk CRCs checked."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        assert struct.unpack(">I", data[pos + 8 + size : pos + 12 + size])[0] == zlib.crc32(kind + body)
        chunks.append((kind, body))
        pos += 12 + size
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_show_draws_the_chosen_clips(built, tmp_path):
    n, k, seed = 5, 3, 7
    split = Path(shutil.copytree(built / "train", tmp_path / "train"))
    manifest, samples = read_split(split)
    picks = pick(manifest, n, seed)
    needed = {manifest["shards"][s]["name"] for s, _ in picks}
    for shard in manifest["shards"]:  # only the shards holding the picks may be read
        if shard["name"] not in needed:
            (split / shard["name"]).unlink()
    r = cli("show", split, "-o", tmp_path / "sheet.png", "--n", n, "--frames", k, "--seed", seed)
    assert r.returncode == 0, r.stderr
    image = read_png(tmp_path / "sheet.png")

    by_shard = defaultdict(list)
    for s in samples:
        by_shard[s["shard"]].append(s)
    chosen = sorted((by_shard[manifest["shards"][s]["name"]][i] for s, i in picks),
                    key=lambda s: (s["cls"], s["key"]))
    assert len(chosen) == n
    positions = frame_positions(FPC, k)
    assert len(positions) == k and positions[0] == 0 and positions[-1] == FPC - 1
    h, w = 48, 64
    assert image.shape[0] == 2 * MARGIN + LINE + n * (LINE + GAP + h + ROW_GAP)
    assert image.shape[1] >= 2 * MARGIN + k * w + (k - 1) * GAP
    for row, sample in enumerate(chosen):
        y = MARGIN + LINE + ROW_GAP + row * (LINE + GAP + h + ROW_GAP) + LINE + GAP
        for j, t in enumerate(positions):
            x = MARGIN + j * (w + GAP)
            tile = image[y : y + h, x : x + w]
            assert tile.std() > 0
            np.testing.assert_array_equal(tile, sample["video.npy"][t])
        title = image[y - GAP - LINE : y - GAP, MARGIN : image.shape[1] - MARGIN]
        assert title.std() > 0  # something is written above the row


def test_show_is_seeded(built):
    manifest = json.loads((built / "train" / "manifest.json").read_text())
    folder = str(built / "train")
    a = contact_sheet(manifest, folder, n=4, seed=1, frames=2)
    assert np.array_equal(a, contact_sheet(manifest, folder, n=4, seed=1, frames=2))
    assert not np.array_equal(a, contact_sheet(manifest, folder, n=4, seed=2, frames=2))


def test_unknown_characters_are_boxes():
    box = glyph("\u00e9")
    assert box[0].all() and box[-1].all() and box[:, 0].all() and not box[1:-1, 1:-1].any()
    assert not np.array_equal(glyph("e"), box)



def test_verify_truncated_shard(copy):
    shard = copy / "train-000003.tar"
    shard.write_bytes(shard.read_bytes()[:200_000])
    found = verify_split(json.loads((copy / "manifest.json").read_text()), str(copy), progress=False)
    assert len(found) == 2
    assert found[0].startswith("train-000003.tar: checksum mismatch: 200000 bytes")
    assert found[1].startswith("train-000003.tar: unreadable after 4 samples") and "truncated" in found[1]


def test_verify_index_rows(copy):
    from shardkin.npy import decode_npy, encode_npy

    rows = decode_npy((copy / "index.npy").read_bytes()).copy()
    rows[[3, 4]] = rows[[4, 3]]  # two clips swapped, the checksum fixed: only the rows tell
    data = encode_npy(rows)
    (copy / "index.npy").write_bytes(data)
    _edit_manifest(copy, lambda m: m["index"].update(sha256=hashlib.sha256(data).hexdigest()))
    found = verify_split(json.loads((copy / "manifest.json").read_text()), str(copy), progress=False)
    assert [p.split(" is ")[0] for p in found] == ["index.npy: row 3", "index.npy: row 4"]
