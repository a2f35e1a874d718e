"""Damaged shards: both readers end with the data or with ``shardkin.ShardError``."""
from __future__ import annotations

import json
import random
import re
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

import shardkin
from shardkin.builder import build

from helpers import flipped_copy


@pytest.fixture(scope="module")
def good(made_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damage")
    build(made_root, out, "train", frames_per_clip=4, clips_per_shard=1000, workers=1,
          progress=False, classes=["archery", "bowling"])
    return out / "train"


def _headers(data: bytes) -> list[tuple[int, str, int]]:
    """(header offset, name, data size) of every member."""
    out, pos = [], 0
    while pos + 512 <= len(data) and any(data[pos : pos + 512]):
        info = tarfile.TarInfo.frombuf(data[pos : pos + 512], "utf-8", "strict")
        out.append((pos, info.name, info.size))
        pos += 512 + info.size + (-info.size % 512)
    return out


def _forge_size(data: bytearray, at: int, size: int) -> None:
    """Write ``size`` into the header at ``at`` with a valid checksum."""
    data[at + 124 : at + 136] = (f"{size:011o}\0".encode() if size < 8**11
                                 else b"\x80" + size.to_bytes(11, "big"))  # GNU base-256
    data[at + 148 : at + 156] = b" " * 8
    data[at + 148 : at + 156] = f"{sum(data[at : at + 512]):06o}\0 ".encode()


def damaged(good: Path, tmp: Path, how: str, seed: int = 0) -> Path:
    folder = tmp / f"{how}-{seed}"
    shutil.copytree(good, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    shard = folder / manifest["shards"][0]["name"]
    data = bytearray(shard.read_bytes())
    members = _headers(bytes(data))
    video = [(at, size) for at, name, size in members if name.endswith(".video.npy")]
    rng = random.Random(seed)
    if how == "header_flip":
        at = rng.choice(members[4:])[0]
        data[at + rng.randrange(0, 148)] ^= 0xFF
    elif how == "truncated":
        data = data[: rng.randrange(1024, len(data) - 2048)]
    elif how == "forged_size":
        at, size = video[1]
        _forge_size(data, at, rng.choice([size + 512 * rng.randrange(1, 5000), 1 << 33]))
    elif how == "forged_npy_shape":
        at, _ = video[1]
        head = data[at + 512 : at + 512 + 128].decode("latin1")
        shape = re.search(r"\(\d+, \d+, \d+, 3\)", head)
        huge = "(4000000000, 100000, 100000, 3)"
        text = head.replace(shape[0], huge)
        text = text.replace(" " * (len(huge) - len(shape[0])) + "\n", "\n", 1)
        data[at + 512 : at + 512 + 128] = text.encode("latin1")[:128]
    elif how == "random_flips":
        for _ in range(8):
            at = rng.choice(members)[0]
            data[at + rng.randrange(0, 512 + 128)] ^= 1 << rng.randrange(8)
    elif how == "payload_flips":  # anywhere in the shard, pixel data included
        for _ in range(8):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    shard.write_bytes(bytes(data))
    if how == "truncated" and seed % 2:  # the manifest agrees: damage met mid-shard
        manifest["shards"][0]["bytes"] = len(data)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def read_all(folder: Path, reader: str, **kw) -> ShardError | None:
    """Read every clip; the ShardError that stopped it, or None. Any other exception fails."""
    try:
        if reader == "stream":
            for _ in shardkin.ShardDataset(folder, shuffle=False, return_dict=True, **kw):
                pass
        else:
            ds = shardkin.Kinetics(folder, return_dict=True, **kw)
            for i in range(len(ds)):
                ds[i]
    except shardkin.ShardError as e:
        assert folder.name in str(e) or "train-000000.tar" in str(e)
        return e
    return None


ShardError = shardkin.ShardError
DETECTED = ["header_flip", "truncated", "forged_size", "forged_npy_shape"]


@pytest.mark.parametrize("reader", ["stream", "map"])
@pytest.mark.parametrize("how", DETECTED)
@pytest.mark.parametrize("seed", [0, 1])
def test_damage_is_a_shard_error(good, tmp_path, reader, how, seed):
    error = read_all(damaged(good, tmp_path, how, seed), reader)
    assert error is not None, f"{how} went unnoticed"
    assert re.search(r"byte", str(error))


@pytest.mark.parametrize("reader", ["stream", "map"])
def test_random_flips_end_in_data_or_shard_error(good, tmp_path, reader):
    errors = sum(read_all(damaged(good, tmp_path, "random_flips", seed), reader) is not None
                 for seed in range(6))
    assert errors >= 1


def test_undamaged_reads(good):
    assert read_all(good, "stream") is None and read_all(good, "map") is None


def _flip_pixel(good: Path, tmp: Path) -> Path:
    """A copy whose second clip has one pixel byte flipped (headers and sizes intact)."""
    shard = good / json.loads((good / "manifest.json").read_text())["shards"][0]["name"]
    at, _ = [(at, size) for at, name, size in _headers(shard.read_bytes())
             if name.endswith(".video.npy")][1]
    return flipped_copy(good, tmp / "pixel", at + 512 + 128 + 7)


@pytest.mark.parametrize("reader", ["stream", "map"])
def test_a_flipped_pixel_byte_is_caught_by_checksums(good, tmp_path, reader):
    folder = _flip_pixel(good, tmp_path)
    assert read_all(folder, reader, verify=False) is None  # only a checksum can see it
    error = read_all(folder, reader, verify=True)
    assert re.search(r"train-000000\.tar.*does not match its checksum", str(error))
    assert str(read_all(folder, reader)) == str(error)  # checked by default
    clean = shardkin.ShardDataset(good, shuffle=False, return_dict=True, verify=True)
    plain = shardkin.ShardDataset(good, shuffle=False, return_dict=True)
    for a, b in zip(clean, plain, strict=True):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])


FUZZ = ["header_flip", "truncated", "forged_size", "forged_npy_shape", "random_flips",
        "payload_flips"]


@pytest.mark.parametrize("reader", ["stream", "map"])
def test_fuzz_ends_in_data_or_shard_error_within_the_shards_size(good, tmp_path, reader):
    """Seeded damage of every kind: each read ends with the data or a ShardError (read_all
    fails on any other exception), and allocates no more than the shard's size."""
    import tracemalloc

    size = sum(p.stat().st_size for p in good.glob("*.tar"))
    errors = 0
    for n in range(24):
        folder = damaged(good, tmp_path, FUZZ[n % len(FUZZ)], seed=100 + n)
        tracemalloc.start()
        try:
            errors += read_all(folder, reader) is not None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < size + (8 << 20), f"{FUZZ[n % len(FUZZ)]}: {peak} bytes allocated"
        shutil.rmtree(folder)
    assert errors >= 12
