"""The map-style ``shardkin.Kinetics``: index i is torchvision's clip i."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from shardkin import Kinetics
from shardkin.builder import build
from shardkin.builder.clips import ClipRule

from helpers import decode_frames, read_split, timeline_frames


@pytest.fixture(scope="module")
def built(made_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("kin")
    manifest = build(made_root, out, "train", frames_per_clip=4, step_between_clips=3,
                     clips_per_shard=5, workers=2, progress=False)
    return out, manifest


def _torchvision_order(made_root, manifest) -> list[tuple[str, list[int]]]:
    """(path, source frames) of every clip by torchvision's rules: classes sorted,
    videos sorted within a class, clips in order."""

    order = []
    for cls in manifest["classes"]:
        for path in sorted(p for p in (made_root / "train" / cls).glob("*")
                           if p.suffix in (".mp4", ".mkv", ".avi", ".webm", ".mov")):
            frames, fps, _ = timeline_frames(path)
            rule = ClipRule(4, 3, float(fps))
            n = len(frames)
            order += [(path.relative_to(made_root).as_posix(), rule.clip_sources(k))
                      for k in range(rule.num_clips(n))]
    return order


def test_index_i_is_torchvision_clip_i(made_root, built):
    out, manifest = built
    ds = Kinetics(out, split="train", frames_per_clip=4, step_between_clips=3, return_dict=True)
    expected = _torchvision_order(made_root, manifest)
    assert len(ds) == len(expected) == manifest["totals"]["clips"]
    frames = {}
    for i, (path, sources) in enumerate(expected):
        item = ds[i]
        assert item["video_name"] == path.rsplit("/", 1)[1]
        if path not in frames:
            frames[path] = decode_frames(made_root / path)
        want = np.stack([frames[path][j] for j in sources])  # [T,H,W,C]
        assert torch.equal(item["video"], torch.from_numpy(want).permute(3, 0, 1, 2))
        assert item["label"] == manifest["classes"].index(path.split("/")[1])


def test_tuple_items_equal_streamed_samples(built):
    out, manifest = built
    _, samples = read_split(out / "train")
    by_key = {s["key"]: s for s in samples}
    ds = Kinetics(out, split="train")
    assert ds[-1][0].shape == ds[len(ds) - 1][0].shape
    for i, key in enumerate(sorted(by_key)):
        video, audio, label = ds[i]
        s = by_key[key]
        assert video.shape[1] == 3 and torch.equal(video.permute(0, 2, 3, 1),
                                                   torch.from_numpy(s["video.npy"]))
        assert torch.equal(audio, torch.from_numpy(s["audio.npy"])) and label == s["cls"]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_other_options_are_refused(built):
    out, _ = built
    with pytest.raises(ValueError, match="step_between_clips=3: clips of other lengths and "
                       "steps .frames_per_clip=8, step_between_clips=3. are cut at read time "
                       "only from a contiguous build"):
        Kinetics(out, split="train", frames_per_clip=8)
    with pytest.raises(ValueError, match="frame_rate=5 .built with None"):
        Kinetics(out, split="train", frame_rate=5)
    with pytest.raises(ValueError, match="_video_min_dimension"):
        Kinetics(out, split="train", _video_min_dimension=128)
    with pytest.raises(FileNotFoundError, match="no split .test.; its splits: train"):
        Kinetics(out, split="test")


@pytest.mark.parametrize("sampler", ["sequential", "random", "distributed"])
def test_samplers_with_worker_processes(built, sampler):
    out, manifest = built
    ds = Kinetics(out, split="train", return_dict=True)
    n = len(ds)
    if sampler == "distributed":
        keys = []
        for rank in range(2):
            s = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
            loader = DataLoader(ds, batch_size=3, sampler=s, num_workers=2, collate_fn=list)
            keys += [(d["video_index"], d["clip_index"]) for b in loader for d in b]
        assert len(keys) == 2 * ((n + 1) // 2) and len(set(keys)) == n
        return
    s = (SequentialSampler(ds) if sampler == "sequential"
         else RandomSampler(ds, generator=torch.Generator().manual_seed(0)))
    loader = DataLoader(ds, batch_size=4, sampler=s, num_workers=2, collate_fn=list)
    keys = [(d["video_index"], d["clip_index"]) for b in loader for d in b]
    assert sorted(keys) == keys if sampler == "sequential" else sorted(keys) != keys
    assert len(set(keys)) == n == len(keys)


def test_startup_reads_only_manifest_and_index(built, tmp_path):
    """A million clips and 240k videos: len() in under a second."""
    import json
    import shutil

    from shardkin.format.npy import encode_npy

    out, manifest = built
    big = tmp_path / "train"
    shutil.copytree(out / "train", big)
    rows = np.zeros((1_000_000, 3), np.int64)
    (big / "index.npy").write_bytes(encode_npy(rows))
    manifest = json.loads((big / "manifest.json").read_text())
    video = manifest["videos"][0]
    manifest["videos"] = [{**video, "path": f"train/c{i % 400}/v{i:06d}.mp4", "video_index": i}
                          for i in range(240_000)]  # as many videos as Kinetics-400
    (big / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1))
    assert (big / "manifest.json").stat().st_size > 40e6
    t = time.process_time()  # CPU time: a busy machine does not lengthen it as it does wall time
    ds = Kinetics(big, split=None)
    n = len(ds)
    assert n == 1_000_000 and time.process_time() - t < 1.0


def test_on_object_storage(built, bucket):
    import s3fs

    out, manifest = built
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(str(out / "train"), f"{bucket.removeprefix('s3://')}/k/train", recursive=True)
    remote = Kinetics(f"{bucket}/k", split="train")
    local = Kinetics(out, split="train")
    assert len(remote) == len(local)
    for i in (0, len(local) // 2, len(local) - 1):
        a, b = remote[i], local[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    loader = DataLoader(remote, batch_size=None, num_workers=2,
                        sampler=RandomSampler(remote, num_samples=6))
    assert sum(1 for _ in loader) == 6
    # with a cache, index.npy and the video table are fetched once and memory-mapped
    cached = Kinetics(f"{bucket}/k", split="train", cache_dir=out / "cache")
    assert isinstance(cached.index.base, np.memmap) and len(cached.video_clips.clips) > 0
    files = sorted(p.name for p in (out / "cache").iterdir() if not p.name.startswith("."))
    entries = [local._split.manifest.index, local._split.manifest.video_table]
    assert files == sorted(f"{e.sha256}.tar" for e in entries)
    again = Kinetics(f"{bucket}/k", split="train", cache_dir=out / "cache")
    assert torch.equal(again[1][0], local[1][0]) and list(again.samples) == list(local.samples)


def test_make_loader_on_kinetics_follows_the_sampler_and_keeps_held_batches(built):
    """Batches come in the sampler's order, equal to collating the items, and a batch
    the user holds is never overwritten by the reused memory."""
    from shardkin.reader import collate, make_loader

    out, _ = built
    ds = Kinetics(out, split="train")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(3)).tolist()
    loader = make_loader(ds, 3, num_workers=2, sampler=order)
    assert len(loader) == -(-len(ds) // 3)
    for _ in range(2):
        held = list(loader)  # every batch kept: their memory must stay theirs
        assert len(held) == len(loader)
        for n, batch in enumerate(held):
            want = collate([ds[i] for i in order[3 * n : 3 * n + 3]])
            assert all(torch.equal(a, b) for a, b in zip(batch, want))
