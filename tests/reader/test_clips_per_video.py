"""Streaming ``clips_per_video``: k clips per video an epoch, exact across ranks and
workers, resumable, and only the chosen clips' bytes read (also over http)."""
from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

from shardkin import ShardDataset, make_loader
from shardkin.builder import build

from helpers import resumed_keys
from servers import cutting_proxy, nginx_server


@pytest.fixture(scope="module")
def built(made_root, tmp_path_factory) -> tuple[Path, dict[int, int]]:
    """A build with several clips a video, small shards; and clips per video."""
    out = tmp_path_factory.mktemp("cpv")
    manifest = build(made_root, out, "train", frames_per_clip=4, step_between_clips=2,
                     clips_per_shard=20, workers=1, progress=False)
    return out / "train", {v["video_index"]: v["clips"] for v in manifest["videos"]}


def keys(source, *, epoch=0, world_size=1, workers=2, **kw) -> list[list[tuple[int, int]]]:
    """Per rank, the (video_index, clip_index) pairs of ``epoch`` in order."""
    ranks = []
    for rank in range(world_size):
        ds = ShardDataset(source, return_dict=True, rank=rank, world_size=world_size, **kw)
        ds.set_epoch(epoch)
        got = []
        for batch in make_loader(ds, 3, num_workers=workers):
            got += list(zip(batch["video_index"].tolist(), batch["clip_index"].tolist()))
        ranks.append(got)
    return ranks


def uniform_picks(n: int, k: int, start: int) -> list[int]:
    """torchvision's UniformClipSampler picks of a video (global clip numbers from start)."""
    return (torch.linspace(start, start + n - 1, steps=k).floor().to(torch.int64) - start).tolist()


@pytest.mark.parametrize("k", [1, 3])
def test_random_picks_k_distinct_clips_per_video_each_epoch(built, k):
    split, clips = built
    epochs = []
    for e in range(2):
        got = list(itertools.chain(*keys(split, epoch=e, clips_per_video=k, drop_remainder=False,
                                         shuffle_buffer=16)))
        per_video = defaultdict(list)
        for v, c in got:
            per_video[v].append(c)
        assert {v: len(cs) for v, cs in per_video.items()} == {
            v: min(k, n) for v, n in clips.items() if n}
        assert all(len(set(cs)) == len(cs) and all(0 <= c < clips[v] for c in cs)
                   for v, cs in per_video.items())
        epochs.append(sorted(got))
    assert epochs[0] != epochs[1]  # drawn afresh


def test_uniform_picks_are_torchvisions(built):
    split, clips = built
    k = 3
    got = sorted(itertools.chain(*keys(split, clips_per_video=k, clip_sampler="uniform",
                                       drop_remainder=False)))
    want, start = [], 0
    for v in sorted(clips):
        if clips[v]:
            want += [(v, c) for c in uniform_picks(clips[v], k, start)]
        start += clips[v]
    assert got == sorted(want)
    assert any(clips[v] < k for v in clips if clips[v])  # repeats were exercised


def test_exact_across_ranks_and_workers(built):
    split, clips = built
    k, world = 2, 3
    ranks = keys(split, world_size=world, clips_per_video=k, shuffle_buffer=16)
    total = sum(min(k, n) for n in clips.values())
    assert [len(r) for r in ranks] == [total // world] * world
    seen = Counter(itertools.chain(*ranks))
    assert max(seen.values()) == 1  # every clip at most once
    ds = ShardDataset(split, clips_per_video=k, rank=0, world_size=world)
    assert len(ds) == total // world


def test_resume_mid_epoch(built):
    split, _ = built
    kw = dict(clips_per_video=2, shuffle_buffer=16, seed=3)
    whole = keys(split, workers=2, epoch=1, **kw)[0]

    def dataset():
        ds = ShardDataset(split, return_dict=True, **kw)
        ds.set_epoch(1)
        return ds

    head, tail, state = resumed_keys(dataset, 4)
    assert head and sorted(head + tail) == sorted(whole) and len(head + tail) == len(whole)
    other = ShardDataset(split, return_dict=True, clips_per_video=3, shuffle_buffer=16, seed=3)
    with pytest.raises(ValueError, match="clips_per_video"):
        other.load_state_dict(state)


def test_only_chosen_clips_are_fetched_over_http(built):
    split, clips = built
    shard_bytes = sum(s["bytes"] for s in json.loads((split / "manifest.json").read_text())
                      ["shards"])
    with nginx_server(split.parent) as url:
        with cutting_proxy(urlsplit(url).port, cut_after=1 << 40, cuts=0) as proxy:
            remote = f"{proxy.url}/train"
            every = keys(remote, workers=0, drop_remainder=False)[0]
            all_bytes = proxy.forwarded
            one = keys(remote, workers=0, clips_per_video=1, drop_remainder=False)[0]
            one_bytes = proxy.forwarded - all_bytes
    assert len(every) == sum(clips.values()) and all_bytes >= shard_bytes
    assert len(one) == sum(1 for n in clips.values() if n)
    # one clip a video out of ~5: the bytes fetched shrink with the clips read
    assert one_bytes < all_bytes * 2.5 * len(one) / len(every)
    local = sorted(keys(split, workers=0, clips_per_video=1, drop_remainder=False)[0])
    assert sorted(one) == local  # the same draws as reading the same build from disk
