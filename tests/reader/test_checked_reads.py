"""Every clip checked against its checksum by default, in both readers, as it is read:
flipped pixel bytes are never read silently; ``on_error="skip"`` stands a readable clip in;
windows check the whole stored clips they read part of; ``verify=False`` turns it off."""
from __future__ import annotations

import json
import random
import re
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import shardkin
from shardkin import Kinetics, ShardDataset, ShardError, make_loader
from shardkin.builder import build

from helpers import flipped_copy

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
MISMATCH = r"train-000000\.tar: sample (\d{8}_\d{6}): damaged: .*does not match its checksum"


@pytest.fixture(scope="module")
def good(made_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("checked")
    build(made_root, out, "train", frames_per_clip=4, clips_per_shard=1000, workers=1,
          progress=False, classes=["archery", "bowling"])
    return out / "train"


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def _pixel(shard: Path, rng: random.Random, member: str = ".video.npy"
           ) -> tuple[str, int]:
    """(sample key, byte offset) of a random data byte of a random ``member`` of ``shard``
    (past the npy header)."""
    chosen = rng.choice([m for m in _members(shard) if m.name.endswith(member)])
    return chosen.name.partition(".")[0], chosen.offset_data + 128 + rng.randrange(
        chosen.size - 128)


def _read(folder: Path, reader: str, **kw) -> ShardError | None:
    try:
        if reader == "stream":
            for _ in ShardDataset(folder, shuffle=False, **kw):
                pass
        else:
            ds = Kinetics(folder, **kw)
            for i in range(len(ds)):
                ds[i]
    except ShardError as e:
        return e
    return None


@pytest.mark.parametrize("reader", ["stream", "map"])
def test_randomly_flipped_pixel_bytes_are_never_read_silently(good, tmp_path, reader):
    """40 shards with a random pixel byte flipped: read silently with verify=False (nothing
    but the checksum can see them), each a ShardError naming its clip by default."""
    rng = random.Random(7)
    silent = caught = 0
    for _ in range(40):
        key, at = _pixel(good / "train-000000.tar", rng)
        folder = flipped_copy(good, tmp_path / "copy", at, 1 << rng.randrange(8))
        silent += _read(folder, reader, verify=False) is None
        error = _read(folder, reader)
        assert error is not None and re.search(MISMATCH, str(error)), error
        assert re.search(MISMATCH, str(error))[1] == key
        caught += 1
    assert silent == 40 and caught == 40


@pytest.mark.parametrize("workers", [0, 2])
def test_make_loader_skips_a_damaged_clip_with_a_stand_in(good, tmp_path, workers):
    rng = random.Random(1)
    key, at = _pixel(good / "train-000000.tar", rng)
    folder = flipped_copy(good, tmp_path / "copy", at)
    ds = ShardDataset(folder, shuffle=False, return_dict=True)
    with pytest.raises(ShardError, match=MISMATCH):
        for _ in make_loader(ds, 4, num_workers=workers):
            pass
    ds = ShardDataset(folder, shuffle=False, return_dict=True, on_error="skip")
    loader = make_loader(ds, 4, num_workers=workers)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = [f"{v:08d}_{c:06d}" for b in loader
               for v, c in zip(b["video_index"].tolist(), b["clip_index"].tolist())]
    clean = ShardDataset(good, shuffle=False, return_dict=True)
    want = [f"{d['video_index']:08d}_{d['clip_index']:06d}" for d in clean]
    assert len(got) == len(want) == len(ds)  # the count stays
    assert key not in got and sorted(set(got)) == sorted(set(want) - {key})
    assert loader.substitutes == 1
    if workers == 0:  # warnings of workers go to their stderr
        assert any(re.search(MISMATCH, str(w.message)) for w in seen)


def test_the_stand_in_holds_the_clip_it_repeats(good, tmp_path):
    """The readable clip read in place of a damaged one is read whole (its pixels, not the
    damaged clip's), in a batch read again."""
    first = next(m for m in _members(good / "train-000000.tar") if m.name.endswith(".video.npy"))
    folder = flipped_copy(good, tmp_path / "copy", first.offset_data + 200)  # clip 0: none before
    ds = ShardDataset(folder, shuffle=False, on_error="skip", output_format="THWC")
    with pytest.warns(UserWarning, match=MISMATCH):
        video, _, label = next(iter(make_loader(ds, 3)))
    clean = list(ShardDataset(good, shuffle=False, output_format="THWC"))
    assert torch.equal(video[0], clean[1][0]) and torch.equal(video[1], clean[1][0])
    assert torch.equal(video[2], clean[2][0]) and label.tolist() == [clean[1][2]] * 2 + [
        clean[2][2]]


def test_iterating_the_dataset_skips_too(good, tmp_path):
    key, at = _pixel(good / "train-000000.tar", random.Random(2))
    folder = flipped_copy(good, tmp_path / "copy", at)
    ds = ShardDataset(folder, shuffle=False, return_dict=True, on_error="skip")
    with pytest.warns(UserWarning, match=MISMATCH):
        got = [f"{d['video_index']:08d}_{d['clip_index']:06d}" for d in ds]
    assert len(got) == len(ds) and key not in got


def test_kinetics_skips_to_the_next_readable_clip(good, tmp_path):
    rows = np.load(good / "index.npy")
    folder = flipped_copy(good, tmp_path / "copy", int(rows[3, 1]) + 1024)  # in clip 3's pixels
    ds = Kinetics(folder, on_error="skip", output_format="THWC")
    with pytest.warns(UserWarning, match="clip 3 is unreadable"):
        video, _, _ = ds[3]
    assert torch.equal(video, Kinetics(good, output_format="THWC")[4][0])
    with pytest.raises(ShardError, match=MISMATCH):
        Kinetics(folder)[3]


def test_bytes_no_reader_loads_are_checked_too(good, tmp_path):
    """A flip in the json (not loaded for tuples), a tail (not loaded for stored clips) or
    the sound with ``decode_audio=False`` is caught: the checksum covers the whole sample."""
    rng = random.Random(3)
    for member, kw in ((".json", {}), (".rest.video.npy", {}),
                       (".audio.npy", {"decode_audio": False})):
        key, _ = _pixel(good / "train-000000.tar", rng, member)
        info = next(m for m in _members(good / "train-000000.tar")
                    if m.name == f"{key}{member}")
        folder = flipped_copy(good, tmp_path / member.strip("."), info.offset_data + info.size - 1)
        for reader in ("stream", "map"):
            assert _read(folder, reader, verify=False, **kw) is None
            error = _read(folder, reader, **kw)
            assert error is not None and re.search(MISMATCH, str(error))[1] == key


@pytest.mark.parametrize("reader", ["stream", "map"])
def test_windows_check_the_whole_stored_clips_they_read(good, tmp_path, reader):
    """Windows of 2 frames at step 2 read halves of the 4-frame stored clips: a flip in
    frame 3 of stored clip 1 is caught by window 2 too, which reads only frames 0-1 of
    it, since a stored clip is checked whole."""
    info = next(m for m in _members(good / "train-000000.tar")
                if m.name.endswith("_000001.video.npy"))
    key = info.name.partition(".")[0]
    video = int(key.partition("_")[0])
    frame = (info.size - 128) // 4
    folder = flipped_copy(good, tmp_path / "copy", info.offset_data + 128 + 3 * frame + 5)
    kw = dict(frames_per_clip=2, step_between_clips=2)
    assert _read(folder, reader, verify=False, **kw) is None
    error = _read(folder, reader, **kw)
    assert re.search(MISMATCH, str(error))[1] == key
    halves = {f"{video:08d}_000002", f"{video:08d}_000003"}  # the windows over clip 1
    if reader == "stream":
        ds = ShardDataset(folder, shuffle=False, return_dict=True, on_error="skip", **kw)
        loader = make_loader(ds, 4)
        with pytest.warns(UserWarning, match=MISMATCH):
            got = {f"{v:08d}_{c:06d}" for b in loader
                   for v, c in zip(b["video_index"].tolist(), b["clip_index"].tolist())}
        assert loader.substitutes == 2 and not got & halves
    else:
        ds = Kinetics(folder, **kw)
        first = int(ds.video_clips.counts[:video].sum())  # the video's first window
        with pytest.raises(ShardError, match=MISMATCH):
            ds[first + 2]  # frames 0-1 of stored clip 1, undamaged themselves
        ds[first + 1]  # frames 2-3 of stored clip 0


def test_a_build_without_checksums_is_read_unchecked_with_a_warning(good, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(good, folder)
    rows = np.load(folder / "index.npy")[:, :3]
    np.save(folder / "index.npy", rows)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["index"]["bytes"] = (folder / "index.npy").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for make in (ShardDataset, Kinetics):
        with pytest.warns(UserWarning, match="keeps no checksums .*read unchecked"):
            ds = make(folder)
        assert not ds.verify
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            make(folder, verify=False)  # no warning when asked for none


def test_option_types_are_literal():
    import typing

    hints = typing.get_type_hints(ShardDataset.__init__)
    assert typing.get_args(hints["on_error"]) == ("raise", "skip")
    assert typing.get_args(hints["output_format"]) == ("TCHW", "THWC")
    assert typing.get_args(hints["clip_sampler"]) == ("random", "uniform")
    assert typing.get_args(typing.get_type_hints(shardkin.make_loader)["audio"]) == (
        "pad", "list")
    assert typing.get_args(typing.get_type_hints(Kinetics.__init__)["on_error"]) == (
        "raise", "skip")
