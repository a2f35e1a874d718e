"""The streaming reader: tar parsing, exact epochs across ranks and workers, shuffling,
resume, sample formats, bad shards, and (with the builder) pixels equal to the source."""
from __future__ import annotations

import io
import itertools
import json
import os
import random
import shutil
import socket
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from shardkin import ShardDataset, ShardError, make_loader
from shardkin.format.npy import encode_npy
from shardkin.format.samples import iter_samples
from shardkin.format.tarread import TarReader
from shardkin.reader.collate import collate, stack
from shardkin.reader.loader import ShardLoader
from shardkin.reader.loading import load_clip
from shardkin.reader.memory import Arena
from shardkin.reader.partition import mix, per_rank, shard_order, split_sizes, worker_lanes
from shardkin.reader.records import npy_layout

from reader_fixtures import (
    FRAMES,
    SIZE,
    all_keys,
    clip_audio,
    clip_video,
    make_split,
    sample_members,
)

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

# 50 videos of 5..10 clips (370 clips), 4 videos a shard: totals divisible by neither 4 nor 3
CPV = [5 + (v * 7) % 6 for v in range(50)]
ALL = all_keys(CPV)


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    return make_split(tmp_path_factory.mktemp("shards"), CPV, 4)


def dict_keys(batch: dict) -> list[tuple[int, int]]:
    return [(int(v), int(c)) for v, c in zip(batch["video_index"], batch["clip_index"])]


def audio_key(audio: torch.Tensor) -> tuple[int, int]:
    """The clip of a fixture audio tensor (its first value is v * 1000 + c)."""
    return divmod(int(audio[0, 0]), 1000)


def epoch_batches(loader) -> list[list[tuple[int, int]]]:
    return [dict_keys(b) for b in loader]


# -- tar layer -----------------------------------------------------------------------

def tar_bytes(members, fmt=tarfile.USTAR_FORMAT, extra=()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._f.readinto(b)


def members_of(f) -> list[tuple[str, bytes]]:
    reader, out = TarReader(f, "x.tar"), []
    while (m := reader.next()) is not None:
        out.append((m.name, bytes(reader.read())))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_reader_matches_tarfile(fmt):
    long = "d" * 120 + "/" + "k" * 130 + ".video.npy"
    members = [("a.cls", b"7"), (long, os.urandom(1000)), ("ünï.json", b"{}"), ("e.txt", b"")]
    if fmt == tarfile.USTAR_FORMAT:
        members[1] = ("d" * 120 + "/k.video.npy", members[1][1])  # USTAR: long prefix only
    folder = tarfile.TarInfo("somedir")
    folder.type = tarfile.DIRTYPE
    data = tar_bytes(members, fmt, extra=[folder])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        want = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    assert want == members
    assert members_of(io.BytesIO(data)) == want
    assert members_of(io.BufferedReader(Unseekable(data))) == want


def shard_bytes(n: int) -> bytes:
    return tar_bytes([m for v in range(n) for m in sample_members(v, 0)])


def test_iter_samples_ranges_and_skips_payloads():
    data = shard_bytes(6)

    class Counting(io.BytesIO):
        got = 0

        def read(self, n=-1):
            out = super().read(n)
            self.got += len(out)
            return out

        def readinto(self, b):
            n = super().readinto(b)
            self.got += n
            return n

    f = Counting(data)
    out = list(iter_samples(TarReader(f, "x"), start=2, stop=5, load=lambda i: i != 3))
    assert [(s.index, s.key) for s in out] == [(2, "00000002_000000"), (3, "00000003_000000"),
                                               (4, "00000004_000000")]
    assert out[1].members is None
    assert set(out[0].members) == {"video.npy", "audio.npy", "cls", "json"}
    assert bytes(out[2].members["video.npy"]) == dict(sample_members(4, 0))[
        "00000004_000000.video.npy"]
    payload = len(dict(sample_members(0, 0))["00000000_000000.video.npy"])
    assert f.got < 2 * payload + 40 * 1024  # two video payloads read, not six
    with pytest.raises(ShardError, match="truncated: 6 samples where at least 7"):
        list(iter_samples(TarReader(io.BytesIO(data), "x"), stop=7))


@pytest.mark.parametrize("cut", ["mid_header", "mid_loaded", "mid_skipped", "no_end_block"])
@pytest.mark.parametrize("seekable", [True, False])
def test_truncated_tar_raises(cut, seekable):
    data = shard_bytes(3)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        m = tar.getmembers()
    end = m[-1].offset_data + m[-1].size + (-m[-1].size % 512)
    size = {"mid_header": m[4].offset + 100, "mid_loaded": m[4].offset_data + 300,
            "mid_skipped": m[4].offset_data + 300, "no_end_block": end}[cut]
    f = io.BytesIO(data[:size]) if seekable else io.BufferedReader(Unseekable(data[:size]))
    load = (lambda i: i != 1) if cut == "mid_skipped" else (lambda i: True)
    with pytest.raises(ShardError, match=r"^x\.tar: truncated: .* at byte \d+$"):
        list(iter_samples(TarReader(f, "x.tar"), load=load))


def test_corrupt_tar_raises():
    data = bytearray(shard_bytes(2))
    data[3] ^= 0xFF  # inside the first header's name
    with pytest.raises(ShardError, match="bad header checksum at byte 0"):
        list(iter_samples(TarReader(io.BytesIO(bytes(data)), "x")))
    missing = [m for m in sample_members(0, 0) if not m[0].endswith(".cls")] + sample_members(1, 0)
    with pytest.raises(ShardError, match="sample 00000000_000000 has no cls member"):
        list(iter_samples(TarReader(io.BytesIO(tar_bytes(missing)), "x")))
    twice = sample_members(0, 0) + sample_members(0, 0)[-1:]
    with pytest.raises(ShardError, match="two json members"):
        list(iter_samples(TarReader(io.BytesIO(tar_bytes(twice)), "x")))


# -- pure planning -----------------------------------------------------------------

def positions(clips, lanes) -> list[tuple[int, int]]:
    return [(s.shard, i) for lane in lanes for s in lane for i in range(s.start, s.stop)]


@pytest.mark.parametrize("drop", [True, False])
def test_epoch_split_is_exact(drop):
    rng = random.Random(0)
    for _ in range(60):
        clips = [rng.randint(0, 12) for _ in range(rng.randint(1, 9))]
        total = sum(clips)
        if total == 0:
            continue
        world, workers, inter = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 5)
        epoch = rng.randint(0, 9)
        if per_rank(total, world, drop) == 0:
            continue
        seen, per_worker = [], []
        for rank in range(world):
            counts = []
            for w in range(workers):
                lanes = worker_lanes(clips, seed=3, epoch=epoch, rank=rank,
                                     world_size=world, worker=w, num_workers=workers,
                                     interleave=inter, drop_remainder=drop)
                got = positions(clips, lanes)
                seen += got
                counts.append(len(got))
            per_worker.append(counts)
        n = per_rank(total, world, drop)
        assert all(c == split_sizes(n, workers) for c in per_worker)  # same on every rank
        assert all(0 <= i < clips[s] for s, i in seen)
        counts = Counter(seen)
        if drop:
            assert max(counts.values()) == 1 and total - len(counts) <= world - 1
        else:
            assert len(counts) == total and len(seen) - total <= world - 1


def test_the_shard_order_is_a_seeded_permutation_fixed_across_versions():
    orders = [shard_order(1000, seed, epoch).tolist() for seed in (0, 1) for epoch in (0, 1)]
    assert all(sorted(o) == list(range(1000)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4
    assert shard_order(1000, 0, 0, shuffle=False).tolist() == list(range(1000))
    # no library's random stream: the same order on every rank, numpy version and release
    assert shard_order(10, 0, 1).tolist() == [9, 3, 8, 1, 5, 7, 4, 0, 6, 2]
    # spread: where the first 100 shards land is close to uniform (10 per tenth)
    place = np.argsort(shard_order(1000, 7, 3))[:100] // 100
    assert np.bincount(place, minlength=10).max() <= 20


def test_mix_is_a_seeded_permutation():
    lengths = [5, 0, 17, 3]

    def lanes():
        return [iter([(i, k) for k in range(n)]) for i, n in enumerate(lengths)]

    a = list(mix(lanes(), lengths, random.Random("s"), 8))
    assert sorted(a) == sorted(k for lane in lanes() for k in lane)
    assert a == list(mix(lanes(), lengths, random.Random("s"), 8))
    assert a != list(mix(lanes(), lengths, random.Random("t"), 8))
    one = list(mix([iter(range(9))], [9], random.Random(1), 1))
    assert one == list(range(9))  # no buffer, one lane: stored order


def test_lanes_start_mid_shard_only_where_needed():
    clips = [10] * 41  # 410 clips: the parts of 3 workers end mid-shard
    for w in range(3):
        lanes = worker_lanes(clips, seed=1, epoch=2, rank=0, world_size=1, worker=w,
                             num_workers=3, interleave=4, min_lane=4)
        pieces = [s for lane in lanes for s in lane]
        assert len(lanes) == 4 and sum(s.stop - s.start for s in pieces) == split_sizes(410, 3)[w]
        assert sum(s.start > 0 for s in pieces) <= 1  # only where the part begins
        assert [lane.clips() for lane in lanes] == [sum(s.stop - s.start for s in lane)
                                                    for lane in lanes]
        assert lanes[0][1:] == list(lanes[0])[1:] and lanes[0][-1] == list(lanes[0])[-1]
    # a part smaller than the lanes wanted: shards are halved, never below min_lane
    lanes = worker_lanes([40], seed=0, epoch=0, rank=0, world_size=1, worker=0, num_workers=1,
                         interleave=32, min_lane=8)
    assert sorted(s.stop - s.start for lane in lanes for s in lane) == [10, 10, 10, 10]


def test_npy_layout():
    video = encode_npy(np.zeros((2, 3, 4, 3), np.uint8))
    assert npy_layout(video[:1024], len(video)) == (len(video) - 72, torch.uint8, (2, 3, 4, 3))
    loose = b"{ 'shape': (5,  2), 'fortran_order': False, 'descr': '<f4' }"
    loose = loose + b" " * (117 - len(loose)) + b"\n"
    payload = b"\x93NUMPY\x01\x00" + len(loose).to_bytes(2, "little") + loose + bytes(40)
    assert npy_layout(payload, len(payload)) == (128, torch.float32, (5, 2))  # not numpy's layout
    for bad, error in [(b"NOTNUMPY" + payload[8:], "not an npy"),
                       (payload.replace(b"False", b"True "), "unsupported"),
                       (payload.replace(b"<f4", b"<f8"), "unsupported"),
                       (payload + b"x", "does not hold")]:
        with pytest.raises(ValueError, match=error):
            npy_layout(bad[:1024], len(bad))


def test_stack_in_memory_order():
    clips = [torch.randint(0, 255, (4, 9, 10, 3), dtype=torch.uint8) for _ in range(3)]
    views = [c.permute(0, 3, 1, 2)[..., 1:8, 2:9] for c in clips]  # cropped TCHW views
    out = stack(views)
    assert torch.equal(out, torch.stack(views)) and out.shape == (3, 4, 3, 7, 7)
    assert out.permute(0, 1, 3, 4, 2).is_contiguous()  # stored as [B, T, H, W, C]
    mixed = [views[0], views[1].contiguous()]
    assert torch.equal(stack(mixed), torch.stack(mixed))
    with pytest.raises(ValueError, match="different shapes"):
        stack([views[0], clips[0]])


# -- samples -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["TCHW", "THWC"])
def test_tuple_items_are_the_stored_clips(split_dir, fmt):
    ds = ShardDataset(split_dir, output_format=fmt)
    seen = []
    for video, audio, label in ds:
        v, c = audio_key(audio)
        seen.append((v, c))
        frames = video.permute(0, 2, 3, 1) if fmt == "TCHW" else video
        assert video.dtype == torch.uint8 and video.shape[1 if fmt == "TCHW" else 3] == 3
        assert np.array_equal(frames.numpy(), clip_video(v, c))
        assert np.array_equal(audio.numpy(), clip_audio(v, c)) and audio.dtype == torch.float32
        assert label == v % 3 and isinstance(label, int)
    assert sorted(seen) == ALL and len(ds) == len(ALL)


def test_transform_applies_to_video(split_dir):
    ds = ShardDataset(split_dir, transform=lambda v: v[:, :, :2, :3].float() / 255)
    video, audio, label = next(iter(ds))
    v, c = audio_key(audio)
    want = torch.from_numpy(clip_video(v, c)).permute(0, 3, 1, 2)[:, :, :2, :3].float() / 255
    assert torch.equal(video, want)


def test_dict_items(split_dir):
    ds = ShardDataset(split_dir, return_dict=True)
    items = list(ds)
    assert sorted((d["video_index"], d["clip_index"]) for d in items) == ALL
    d = items[0]
    v, c = d["video_index"], d["clip_index"]
    assert list(d) == ["video", "video_name", "video_index", "clip_index", "aug_index",
                       "label", "audio"]  # PyTorchVideo's keys, in its order
    assert d["video"].shape == (3, FRAMES, SIZE, SIZE) and d["video"].dtype == torch.float32
    assert np.array_equal(d["video"].permute(1, 2, 3, 0).numpy(), clip_video(v, c))
    assert np.array_equal(d["audio"].numpy(), clip_audio(v, c).mean(0))
    assert d["aug_index"] == 0
    assert d["label"] == v % 3 and d["video_name"] == f"video_{v:04d}.mp4"
    seen = []
    ds = ShardDataset(split_dir, return_dict=True,
                      transform=lambda x: seen.append(x["clip_index"]) or {**x, "extra": 1.5})
    assert next(iter(ds))["extra"] == 1.5 and len(seen) == 1


def test_dict_batches(split_dir):
    ds = ShardDataset(split_dir, return_dict=True)
    batch = next(iter(make_loader(ds, 5)))
    assert batch["video"].shape == (5, 3, FRAMES, SIZE, SIZE)
    keys = dict_keys(batch)
    for i, (v, c) in enumerate(keys):
        assert np.array_equal(batch["video"][i].permute(1, 2, 3, 0).numpy(), clip_video(v, c))
        want = clip_audio(v, c).mean(0)
        n = batch["audio_lengths"][i]
        assert n == want.shape[0]
        assert np.array_equal(batch["audio"][i, :n].numpy(), want)
        assert not batch["audio"][i, n:].any()
        assert batch["video_name"][i] == f"video_{v:04d}.mp4"
    assert batch["label"].tolist() == [v % 3 for v, _ in keys]
    # the fast path gives what collate() gives from the items
    ds2 = ShardDataset(split_dir, return_dict=True, transform=lambda x: x)
    slow = next(iter(make_loader(ds2, 5)))
    assert slow.keys() == batch.keys()
    for k in batch:
        assert (torch.equal(batch[k], slow[k]) if isinstance(batch[k], torch.Tensor)
                else batch[k] == slow[k])


@pytest.mark.parametrize("codec", ["zstd", "jpeg"])
def test_compressed_video_members(tmp_path, codec):
    pytest.importorskip("zstandard" if codec == "zstd" else "simplejpeg")
    from shardkin.format.codecs import decode_video, encode_video

    cpv = [3, 2, 4]
    folder = make_split(tmp_path, cpv, 2, codec=codec)

    def want(v, c):  # zstd is lossless; jpeg as its own decoder gives it
        return decode_video(*encode_video(clip_video(v, c), codec))

    items = list(ShardDataset(folder, return_dict=True))
    assert sorted((d["video_index"], d["clip_index"]) for d in items) == all_keys(cpv)
    for d in items:
        assert np.array_equal(d["video"].permute(1, 2, 3, 0).numpy(),
                              want(d["video_index"], d["clip_index"]))
    for batch in make_loader(ShardDataset(folder, return_dict=True), 4, num_workers=2):
        for i, (v, c) in enumerate(dict_keys(batch)):
            assert np.array_equal(batch["video"][i].permute(1, 2, 3, 0).numpy(), want(v, c))
    if codec == "zstd":
        assert np.array_equal(want(1, 1), clip_video(1, 1))
    shard = folder / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    pos = data.index(b"SKJ2" if codec == "jpeg" else b"\x28\xb5\x2f\xfd") + 60
    data[pos : pos + 200] = bytes(200)  # damage the first clip's compressed frames
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train-000000\.tar: sample 00000000_000000: corrupt"):
        list(ShardDataset(folder, shuffle=False))


def test_collate_audio_options():
    items = [(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.ones(c, s), i)
             for i, (c, s) in enumerate([(1, 4), (2, 2), (1, 0)])]
    video, audio, label = collate(items)
    assert video.shape == (3, 2, 1, 3, 3) and label.tolist() == [0, 1, 2]
    assert audio.shape == (3, 2, 4) and audio.sum() == 4 + 4
    *_, lengths = collate(items, audio_lengths=True)
    assert lengths.tolist() == [4, 2, 0]
    _, audio, _ = collate(items, audio="list")
    assert [tuple(a.shape) for a in audio] == [(1, 4), (2, 2), (1, 0)]


def test_tuple_batches_and_lengths(split_dir):
    ds = ShardDataset(split_dir)
    loader = make_loader(ds, 8, audio_lengths=True)
    video, audio, label, lengths = next(iter(loader))
    assert video.shape == (8, FRAMES, 3, SIZE, SIZE) and video.dtype == torch.uint8
    for i in range(8):
        v, c = audio_key(audio[i])
        assert np.array_equal(video[i].permute(0, 2, 3, 1).numpy(), clip_video(v, c))
        assert lengths[i] == clip_audio(v, c).shape[1] and label[i] == v % 3


def track_slots(monkeypatch) -> list[tuple[int, int]]:
    """The (worker, memory slot) of every batch handed out (slot -1: fresh memory)."""
    slots = []
    real = ShardLoader._hold

    def hold(self, worker, slot, batch):
        slots.append((worker, slot))
        real(self, worker, slot, batch)

    monkeypatch.setattr(ShardLoader, "_hold", hold)  # on the class: no reference cycle
    return slots


@pytest.mark.filterwarnings("ignore:.*pin_memory:UserWarning")
@pytest.mark.parametrize("workers,pin", [(0, False), (2, False), (2, True)])
def test_reused_batch_memory_never_overwrites_held_batches(split_dir, workers, pin,
                                                          monkeypatch):
    loader = make_loader(ShardDataset(split_dir), 4, num_workers=workers, pin_memory=pin)
    slots = track_slots(monkeypatch)

    def check(batch):
        video, audio, label = batch
        for i in range(len(label)):
            v, c = audio_key(audio[i])
            assert np.array_equal(video[i].permute(0, 2, 3, 1).numpy(), clip_video(v, c))
            assert np.array_equal(audio[i, : 1 + v % 2, : 10 + (v + c) % 7].numpy(),
                                  clip_audio(v, c))

    kept = []
    for epoch in range(2):
        loader.dataset.set_epoch(epoch)
        for n, batch in enumerate(loader):
            check(batch)
            if n % 5 == 0:
                kept.append(batch)
    for batch in kept:
        check(batch)  # still intact after later batches, and epochs, reused memory
    reused = Counter(s for s in slots if s[1] >= 0)
    assert max(reused.values()) > 3 and len(slots) == 2 * len(loader)


@pytest.mark.parametrize("return_dict", [False, True])
def test_audio_padding_is_zero_whatever_the_batch_memory_held(split_dir, monkeypatch,
                                                              return_dict):
    """Audio is read straight into the batch and only its padding zeroed (the batch is not
    zeroed first): memory handed out holding stale values gives the same batches."""
    real = Arena.__call__
    monkeypatch.setattr(Arena, "__call__", lambda self, shape, dtype: real(
        self, shape, dtype).fill_(7))
    loader = make_loader(ShardDataset(split_dir, return_dict=return_dict), 4, audio_lengths=True)
    seen = 0
    for batch in loader:
        if return_dict:
            audio, lengths, keys = batch["audio"], batch["audio_lengths"], dict_keys(batch)
        else:
            audio, lengths, keys = batch[1], batch[3], [audio_key(a) for a in batch[1]]
        for row, n, (v, c) in zip(audio, lengths.tolist(), keys):
            want = torch.from_numpy(clip_audio(v, c))
            want = want.mean(0) if return_dict else want  # dicts: mono, [B, S]
            assert n == want.shape[-1]
            padded = torch.zeros_like(row)
            padded[tuple(slice(0, k) for k in want.shape)] = want
            assert torch.equal(row, padded)
            seen += 1
    assert seen == sum(CPV) and audio.shape[-1] > min(lengths.tolist())


def test_unfinished_epochs_do_not_leak_batch_memory(split_dir, monkeypatch):
    ds = ShardDataset(split_dir)
    loader = make_loader(ds, 4, num_workers=2)
    slots = track_slots(monkeypatch)
    for epoch in range(4):  # leave each epoch after two batches, prefetched ones queued
        ds.set_epoch(epoch)
        for n, _ in enumerate(loader):
            if n == 1:
                break
    slots.clear()
    ds.set_epoch(4)
    assert sum(1 for _ in loader) == len(loader) == len(slots)
    fresh = sum(slot < 0 for _, slot in slots)
    assert fresh <= 2  # (nearly) every batch found a free slot: none leaked


# -- order -------------------------------------------------------------------------

def order(split_dir, **kw) -> list[tuple[int, int]]:
    return [(d["video_index"], d["clip_index"])
            for d in ShardDataset(split_dir, return_dict=True, **kw)]


def test_order_depends_on_seed_and_epoch(split_dir):
    a = order(split_dir, seed=1)
    assert a == order(split_dir, seed=1) and sorted(a) == ALL
    assert a != order(split_dir, seed=2)
    ds = ShardDataset(split_dir, seed=1, return_dict=True)
    ds.set_epoch(1)
    b = [(d["video_index"], d["clip_index"]) for d in ds]
    assert sorted(b) == ALL and b != a
    assert order(split_dir, shuffle=False) == ALL


def test_clips_of_a_video_do_not_come_in_runs(tmp_path):
    cpv = [8] * 60  # 8 clips a video, stored together
    folder = make_split(tmp_path, cpv, 5)
    loader = make_loader(ShardDataset(folder, return_dict=True), 8, num_workers=2)
    videos = [v for b in loader for v, _ in dict_keys(b)]
    assert sorted(Counter(videos).values()) == [8] * 60
    runs = [len(list(g)) for _, g in itertools.groupby(videos)]
    same = sum(a == b for a, b in zip(videos, videos[1:])) / (len(videos) - 1)
    assert max(runs) <= 3 and same < 0.08, (max(runs), same)  # stored order: 7/8 same


# -- ranks, workers, epochs ------------------------------------------------------------

@pytest.mark.parametrize("drop", [True, False])
def test_four_ranks_three_workers_exact(split_dir, drop):
    world, workers, batch = 4, 3, 4
    loaders = [make_loader(ShardDataset(split_dir, return_dict=True, seed=5, rank=r,
                                        world_size=world, drop_remainder=drop), batch,
                           num_workers=workers) for r in range(world)]
    n = per_rank(len(ALL), world, drop)
    for epoch in range(2 if drop else 1):
        seen, batch_counts = [], []
        for loader in loaders:
            loader.dataset.set_epoch(epoch)
            batches = epoch_batches(loader)
            assert sum(len(b) for b in batches) == len(loader.dataset) == n
            assert len(batches) == len(loader)
            batch_counts.append(len(batches))
            seen += [k for b in batches for k in b]
        assert len(set(batch_counts)) == 1
        counts = Counter(seen)
        assert set(counts) <= set(ALL)
        if drop:
            assert max(counts.values()) == 1 and len(ALL) - len(counts) <= world - 1
        else:
            assert set(counts) == set(ALL) and len(seen) - len(ALL) <= world - 1
        if epoch == 0:
            first = seen
    if drop:
        assert seen != first  # epoch 1 reached the persistent workers


def _gloo_rank(rank: int, world: int, folder: str, port: int, out: str) -> None:
    import datetime

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # how long a collective waits for the other rank: its first batch waits for two spawned
    # workers to import torch, which takes minutes on a busy machine; a real hang (a rank
    # with fewer batches) still fails, within the test's own timeout
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=240))
    ds = ShardDataset(folder, return_dict=True)
    assert (ds.rank, ds.world_size) == (rank, world)
    loader = make_loader(ds, 8, num_workers=2)  # spawned workers: this process was spawned
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        keys = []
        for batch in loader:
            keys += dict_keys(batch)
            dist.all_reduce(torch.ones(1))  # as DDP does: a rank with fewer batches would hang
        epochs.append(keys)
    Path(out, f"{rank}.json").write_text(json.dumps(epochs))
    dist.destroy_process_group()


@pytest.mark.timeout(600)
def test_torch_distributed_gloo(split_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_gloo_rank, args=(2, str(split_dir), port, str(tmp_path)),
                                nprocs=2)
    ranks = [json.loads(Path(tmp_path, f"{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        keys = [ranks[0][epoch], ranks[1][epoch]]
        assert len(keys[0]) == len(keys[1]) == len(ALL) // 2
        together = [tuple(k) for k in keys[0] + keys[1]]
        assert len(set(together)) == len(together) and set(together) <= set(ALL)
    assert ranks[0][0] != ranks[0][1]  # set_epoch reached the persistent (spawned) workers


# -- resume ------------------------------------------------------------------------

def test_loader_resumes_mid_epoch(split_dir):
    def loader():
        return make_loader(ShardDataset(split_dir, return_dict=True, seed=9, rank=1, world_size=2),
                           6, num_workers=3)

    full = loader()
    full.dataset.set_epoch(2)
    whole = epoch_batches(full)
    first = loader()
    first.dataset.set_epoch(2)
    it = iter(first)
    head = [dict_keys(next(it)) for _ in range(7)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
    del it
    second = loader()
    second.load_state_dict(state)
    second.dataset.set_epoch(2)
    tail = epoch_batches(second)
    assert head == whole[:7]
    assert sorted(head + tail) == sorted(whole)  # the same batches, none repeated or lost
    second.dataset.set_epoch(3)
    assert sorted(k for b in epoch_batches(second) for k in b) == sorted(
        k for b in epoch_batches(_at_epoch(loader(), 3)) for k in b)
    other = make_loader(ShardDataset(split_dir, return_dict=True, seed=9, rank=1, world_size=2),
                        6, num_workers=2)
    with pytest.raises(ValueError, match="taken with 3 worker"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="seed: saved 9, now 8"):
        make_loader(ShardDataset(split_dir, seed=8, rank=1, world_size=2), 6,
                    num_workers=3).load_state_dict(state)


def _at_epoch(loader, epoch):
    loader.dataset.set_epoch(epoch)
    return loader


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_epochs_advance_by_themselves(split_dir, workers):
    """Each new pass is the next epoch unless set_epoch was called since the previous
    pass or a state was loaded (as LitData's StreamingDataLoader)."""
    def loader():
        return make_loader(ShardDataset(split_dir, return_dict=True, seed=2), 16,
                           num_workers=workers)

    def order(epoch):
        return epoch_batches(_at_epoch(loader(), epoch))

    passes = loader()
    got = [epoch_batches(passes) for _ in range(3)]
    assert got == [order(0), order(1), order(2)] and got[0] != got[1]
    assert all(sorted(k for b in p for k in b) == ALL for p in got)
    assert passes.state_dict()["epoch"] == 3  # a finished pass: the next one from its start
    passes.dataset.set_epoch(7)
    assert epoch_batches(passes) == order(7)
    passes.dataset.set_epoch(7)  # set again: repeated
    assert epoch_batches(passes) == order(7)
    it = iter(passes)  # epoch 8, left unfinished
    head = [dict_keys(next(it)) for _ in range(3)]
    state = passes.state_dict()
    assert state["epoch"] == 8 and sum(state["delivered"]) == 48
    del it
    assert epoch_batches(passes) == order(9)  # an unfinished pass counts too
    resumed = loader()
    resumed.load_state_dict(state)
    tail = epoch_batches(resumed)
    assert sorted(head + tail) == sorted(order(8)) and head == order(8)[:3]
    assert epoch_batches(resumed) == order(9)  # after the resumed epoch, the next
    restarted = loader()
    restarted.load_state_dict(resumed.state_dict())
    assert epoch_batches(restarted) == order(10)


def test_dataset_resumes_without_decoding_skipped_clips(split_dir, monkeypatch):
    import shardkin.reader.loading as loading

    ds = ShardDataset(split_dir, return_dict=True, seed=4)
    whole = [(d["video_index"], d["clip_index"]) for d in ds]
    ds = ShardDataset(split_dir, return_dict=True, seed=4)
    head = [(d["video_index"], d["clip_index"]) for d in itertools.islice(ds, 123)]
    state = ds.state_dict()
    assert state["delivered"] == [123]
    decoded = []
    real = loading.read_array
    monkeypatch.setattr(loading, "read_array",
                        lambda a, out=None: decoded.append(1) or real(a, out))
    again = ShardDataset(split_dir, return_dict=True, seed=4)
    again.load_state_dict(state)
    tail = [(d["video_index"], d["clip_index"]) for d in again]
    assert head + tail == whole
    assert len(decoded) == 2 * len(tail)  # video and audio of the remaining clips only


# -- bad shards --------------------------------------------------------------------

def broken_copy(split_dir: Path, tmp_path: Path, how: str) -> tuple[Path, set]:
    """A copy of the split with shard 2 damaged; returns (folder, keys of that shard)."""
    folder = tmp_path / "train"
    shutil.copytree(split_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    shard = folder / manifest["shards"][2]["name"]
    data = bytearray(shard.read_bytes())
    keys = {k for k in ALL if k[0] in range(8, 12)}
    if how == "truncated":  # shorter than the manifest says
        data = data[: len(data) // 2]
    elif how == "truncated_in_stream":  # manifest updated, so the damage is met mid-shard
        data = data[: len(data) // 2]
        manifest["shards"][2]["bytes"] = len(data)
    elif how == "bad_sample":  # one video payload with a broken npy magic
        pos = data.index(b"\x93NUMPY")
        data[pos : pos + 6] = b"XXXXXX"
        keys = {(8, 0)}
    if how == "missing":
        shard.unlink()
    else:
        shard.write_bytes(bytes(data))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, keys


HOW = ["truncated", "truncated_in_stream", "bad_sample", "missing"]


@pytest.mark.parametrize("how", HOW)
def test_bad_shard_raises_by_default(split_dir, tmp_path, how):
    folder, _ = broken_copy(split_dir, tmp_path, how)
    with pytest.raises(ShardError, match=r"train-000002\.tar.*on_error='skip'"):
        list(ShardDataset(folder))
    with pytest.raises(ShardError, match=r"train-000002\.tar"):
        list(make_loader(ShardDataset(folder), 4, num_workers=2))


@pytest.mark.parametrize("how", HOW)
def test_bad_shard_skipped_and_counted(split_dir, tmp_path, how):
    folder, bad = broken_copy(split_dir, tmp_path, how)
    ds = ShardDataset(folder, return_dict=True, on_error="skip")
    loader = make_loader(ds, 4)
    with pytest.warns(UserWarning, match=r"shardkin: skipping .*train-000002\.tar"):
        keys = [k for b in loader for k in dict_keys(b)]
    assert len(keys) == len(ds) == len(ALL)  # same count: ranks stay in step
    got = set(keys)
    lost = set(ALL) - got
    assert got <= set(ALL)
    assert lost < bad if how == "truncated_in_stream" else lost == bad  # mid-shard: some read
    assert loader.substitutes == len(keys) - len(got) == len(ALL) - len(got) > 0
    # with workers too, and the count is still exact
    loader = make_loader(ShardDataset(folder, return_dict=True, on_error="skip"), 4,
                         num_workers=2)
    keys = [k for b in loader for k in dict_keys(b)]
    assert len(keys) == len(ALL) and set(ALL) - set(keys) == lost


def test_clear_errors(split_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no shardkin manifest"):
        ShardDataset(tmp_path)
    with pytest.raises(ValueError, match="give both rank and world_size"):
        ShardDataset(split_dir, rank=1)
    with pytest.raises(ValueError, match="fewer than world_size"):
        ShardDataset(split_dir, rank=0, world_size=1000)
    assert len(ShardDataset(split_dir.as_uri() + "/manifest.json")) == len(ALL)
    assert len(ShardDataset(split_dir.parent, "train")) == len(ALL)


# -- end to end with the builder ------------------------------------------------------

def test_built_shards_read_back_equal_to_pyav(tmp_path):
    av = pytest.importorskip("av")
    from shardkin.builder import build
    from shardkin.synth import make_video

    root = tmp_path / "videos"
    make_video(root / "train" / "archery" / "a.mp4", 23, 24, (48, 32), 16000, 1, seed=1)
    make_video(root / "train" / "archery" / "b.mkv", 17, 30, (40, 30), 48000, 2, seed=2)
    make_video(root / "train" / "bowling" / "c.avi", 20, 25, (32, 48), None, 1, seed=3)
    manifest = build(root, tmp_path / "out", "train", frames_per_clip=4, step_between_clips=3,
                     clips_per_shard=4, workers=1, progress=False)
    assert len(manifest["shards"]) > 1
    ds = ShardDataset(tmp_path / "out", "train", return_dict=True)
    decoded = {}
    for v in manifest["videos"]:
        with av.open(str(root / v["path"])) as c:
            decoded[v["video_index"]] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    seen = []
    for ref, _ in ds._stream(0, 1):
        clip = load_clip(ref)
        item = ds.sample(clip)
        frames = decoded[item["video_index"]]
        want = np.stack([frames[j] for j in clip.meta["source_frames"]])
        assert np.array_equal(item["video"].permute(1, 2, 3, 0).numpy(), want)
        assert item["label"] == manifest["classes"].index(Path(clip.meta["path"]).parent.name)
        seen.append((item["video_index"], item["clip_index"]))
    want_keys = [(v["video_index"], k) for v in manifest["videos"] for k in range(v["clips"])]
    assert sorted(seen) == sorted(want_keys) and len(seen) == len(ds) == sum(
        s["clips"] for s in manifest["shards"])
    with pytest.raises(ValueError, match="cannot batch clips of different shapes"):
        list(make_loader(ShardDataset(tmp_path / "out"), 3))
    crop = ShardDataset(tmp_path / "out", transform=lambda v: v[..., :24, :24])
    for video, audio, label, lengths in make_loader(crop, 3, audio_lengths=True):
        assert video.shape[1:] == (4, 3, 24, 24) and audio.shape[0] == len(lengths) == len(label)
