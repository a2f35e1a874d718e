"""Clip samplers: torchvision's indices, lengths and distributed shares, over real builds."""
from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Sampler

import shardkin
from shardkin import Kinetics
from shardkin.builder import build
from shardkin.reader import collate, make_loader
from shardkin.samplers import (
    ClipCounts,
    DistributedSampler,
    RandomClipSampler,
    UniformClipSampler,
    random_clip_indices,
    uniform_clip_indices,
)

from helpers import tv_random, tv_uniform

# The references: torchvision.datasets.samplers.clip_sampler (unchanged since 2020), each
# operation as its source performs it (tv_random and tv_uniform are in helpers.py).


def tv_distributed(dataset, num_replicas: int, rank: int, shuffle: bool = False,
                   group_size: int = 1, epoch: int = 0) -> list[int]:
    num_samples = int(math.ceil(len(dataset) // group_size * 1.0 / num_replicas)) * group_size
    total_size = num_samples * num_replicas
    g = torch.Generator()
    g.manual_seed(epoch)
    indices = (torch.randperm(len(dataset), generator=g).tolist() if shuffle
               else list(range(len(dataset))))
    indices += indices[: (total_size - len(indices))]
    total_group_size = total_size // group_size
    indices = torch.reshape(torch.LongTensor(indices), (total_group_size, group_size))
    indices = torch.reshape(indices[rank:total_group_size:num_replicas, :], (-1,)).tolist()
    if isinstance(dataset, Sampler):
        orig_indices = list(iter(dataset))
        indices = [orig_indices[i] for i in indices]
    return indices


BUILDS = {"step2": dict(frames_per_clip=8, step_between_clips=2),
          "rate15": dict(frames_per_clip=4, step_between_clips=1, frame_rate=15)}


@pytest.fixture(scope="module", params=sorted(BUILDS))
def kinetics(request, made_root, tmp_path_factory) -> Kinetics:
    out = tmp_path_factory.mktemp(request.param)
    build(made_root, out, "train", **BUILDS[request.param], clips_per_shard=16, workers=2,
          progress=False)
    return Kinetics(out, split="train", return_dict=True, **BUILDS[request.param])


def test_video_clips_are_lazy_and_map_every_index_to_its_clip(kinetics):
    ds = Kinetics(kinetics._split.folder.url, split=None)
    assert "video_clips" not in vars(ds) and ds._split._table is None
    vc = kinetics.video_clips
    counts = [len(c) for c in vc.clips]
    assert vc.num_videos() == len(counts) == 6 and vc.num_clips() == sum(counts) == len(kinetics)
    assert counts[4] == 0 and min(counts[:4] + counts[5:]) > 1  # café au lait/short.mp4
    for i in range(len(kinetics)):
        item = kinetics[i]
        assert (item["video_index"], item["clip_index"]) == vc.get_clip_location(i)
    assert pickle.loads(pickle.dumps(vc)).clips == vc.clips
    with pytest.raises(IndexError):
        vc.get_clip_location(len(kinetics))


@pytest.mark.parametrize("k", [1, 3, 100])
def test_random_equals_torchvision_under_the_same_seed(kinetics, k):
    counts = [len(c) for c in kinetics.video_clips.clips]
    for source in (kinetics, kinetics.video_clips):
        sampler = RandomClipSampler(source, k)
        assert len(sampler) == sum(min(n, k) for n in counts)
        for seed in (0, 1, 7):
            torch.manual_seed(seed)
            want = tv_random(kinetics.video_clips, k)
            torch.manual_seed(seed)
            assert list(sampler) == want and len(want) == len(sampler)
            g = torch.Generator().manual_seed(seed)
            got = random_clip_indices(clips_per_video=counts, max_clips_per_video=k, generator=g)
            assert got.tolist() == want
    assert list(sampler) != list(sampler)  # drawn afresh
    locations = [kinetics.video_clips.get_clip_location(i) for i in sampler]
    assert len(set(locations)) == len(locations)
    assert all(sum(v == w for v, _ in locations) == min(n, k) for w, n in enumerate(counts))


@pytest.mark.parametrize("k", [1, 3, 5, 40])
def test_uniform_equals_torchvision(kinetics, k):
    counts = [len(c) for c in kinetics.video_clips.clips]
    sampler = UniformClipSampler(kinetics, k)
    want = tv_uniform(kinetics.video_clips, k)
    assert list(sampler) == want == list(UniformClipSampler(kinetics.video_clips, k))
    assert len(sampler) == k * sum(n > 0 for n in counts) == len(want)
    assert uniform_clip_indices(clips_per_video=counts, num_clips_per_video=k).tolist() == want
    if k == 40:  # more than any video has: repeats
        assert len(set(want)) < len(want)


def test_index_functions_equal_torchvision_on_many_videos():
    """Thousands of videos, and offsets past 2**24 where float32 linspace rounds."""
    counts = torch.randint(0, 40, (3000,), generator=torch.Generator().manual_seed(0)).tolist()
    big = ClipCounts([2**24 - 5, 7, 0, 100_003, 1, 2**20 + 9])
    torch.manual_seed(11)
    want = tv_random(ClipCounts(counts), 3)
    torch.manual_seed(11)
    assert list(RandomClipSampler(ClipCounts(counts), 3)) == want
    for vc in (ClipCounts(counts), big):
        for k in (2, 5, 16):
            assert list(UniformClipSampler(vc, k)) == tv_uniform(vc, k)


def test_index_functions_edge_cases():
    assert random_clip_indices(clips_per_video=[], max_clips_per_video=2).tolist() == []
    assert uniform_clip_indices(clips_per_video=[0, 0], num_clips_per_video=2).tolist() == []
    assert uniform_clip_indices(clips_per_video=[0, 3, 0, 1], num_clips_per_video=3
                                ).tolist() == [0, 1, 2, 3, 3, 3]
    got = random_clip_indices(clips_per_video=[2, 0, 5], max_clips_per_video=5).tolist()
    assert sorted(got) == list(range(7))
    vc = ClipCounts([3, 0, 2])
    assert [vc.get_clip_location(i) for i in range(5)] == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]
    with pytest.raises(TypeError, match="video_clips"):
        RandomClipSampler([1, 2], 3)


def test_distributed_tables_of_torchvision_docstring():
    data = list(range(14))
    g1 = [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 0], [3, 7, 11, 1]]
    g2 = [[0, 1, 8, 9], [2, 3, 10, 11], [4, 5, 12, 13], [6, 7, 0, 1]]
    for group_size, table in ((1, g1), (2, g2)):
        for rank, want in enumerate(table):
            s = DistributedSampler(data, num_replicas=4, rank=rank, group_size=group_size)
            assert list(s) == want and len(s) == 4
    with pytest.raises(ValueError, match="multiple of group size"):
        DistributedSampler(list(range(5)), num_replicas=2, rank=0, group_size=2)


@pytest.mark.parametrize("replicas,group_size,shuffle", [(2, 1, False), (3, 1, False),
                                                         (3, 2, True), (2, 4, False)])
def test_distributed_shares_equal_torchvision(kinetics, replicas, group_size, shuffle):
    for inner in (UniformClipSampler(kinetics, 4), RandomClipSampler(kinetics, 4)):
        if len(inner) % group_size:
            continue
        shares = []
        for rank in range(replicas):
            s = DistributedSampler(inner, num_replicas=replicas, rank=rank, shuffle=shuffle,
                                   group_size=group_size)
            s.set_epoch(3)
            torch.manual_seed(rank)
            want = tv_distributed(inner, replicas, rank, shuffle, group_size, epoch=3)
            torch.manual_seed(rank)
            shares.append(list(s))
            assert shares[-1] == want and len(s) == len(want)
        assert len({len(x) for x in shares}) == 1
        if isinstance(inner, UniformClipSampler) and not shuffle:  # the partition
            drawn = list(inner)
            padded = drawn + drawn[: replicas * len(shares[0]) - len(drawn)]
            assert sorted(sum(shares, [])) == sorted(padded)


class Recorded(Sampler[int]):
    """A sampler that keeps the indices it last handed out."""

    def __init__(self, inner: Sampler[int]) -> None:
        self.inner, self.drawn = inner, []

    def __iter__(self):
        self.drawn = list(self.inner)
        return iter(self.drawn)

    def __len__(self) -> int:
        return len(self.inner)


def test_through_make_loader_and_a_dataloader(kinetics):
    assert shardkin.RandomClipSampler is RandomClipSampler
    assert shardkin.UniformClipSampler is UniformClipSampler
    vc = kinetics.video_clips
    sampler = Recorded(DistributedSampler(RandomClipSampler(vc, 2), num_replicas=2, rank=1))
    for loader in (make_loader(kinetics, 3, sampler=sampler),
                   DataLoader(kinetics, 3, sampler=sampler, num_workers=2, collate_fn=collate)):
        for _ in range(2):
            got = [(int(v), int(c)) for b in loader
                   for v, c in zip(b["video_index"], b["clip_index"])]
            assert got == [vc.get_clip_location(i) for i in sampler.drawn]
            assert len(got) == len(sampler) == 5  # 2 clips of 5 videos, over 2 ranks
