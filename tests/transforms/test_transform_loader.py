"""make_loader's batch_transform with a preset's ``in_workers``: the uint8 part in the
workers, each clip's window drawn from (seed, epoch, sample) alone: the same whatever the
workers, after a resume, and for map-style datasets."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import Dataset

from shardkin import ShardDataset, make_loader
from shardkin.format.sample import sample_key
from shardkin.transforms import (
    Crops,
    VideoClassificationPresetEval,
    VideoClassificationPresetTrain,
)

from reader_fixtures import SIZE, all_keys, clip_audio, clip_video, make_split

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

CLIPS = [3, 2, 4, 1, 5, 2, 3]
CROP = 6
PRESET = VideoClassificationPresetTrain(crop_size=CROP, resize_size=(SIZE, SIZE))


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("transform-loader"), CLIPS, 2)


def clip(v: int, c: int) -> torch.Tensor:
    return torch.from_numpy(clip_video(v, c)).permute(0, 3, 1, 2)  # a TCHW view, as read


def expected(seed: int, epoch: int, samples: dict) -> dict:
    """Each sample's uint8 crop ``[T, C, 6, 6]`` as the workers should cut it
    (``samples``: the name the loader gives a clip -> the clip)."""
    out = {}
    for name, video in samples.items():
        win = PRESET.sample_window(SIZE, SIZE, seed=seed, epoch=epoch, sample=name)
        crop = video[..., win.top : win.top + CROP, win.left : win.left + CROP]
        out[name] = crop.flip(-1) if win.flip else crop
    return out


STORED = {sample_key(v, c): clip(v, c) for v, c in all_keys(CLIPS)}


def identify(batches: list[torch.Tensor], want: dict) -> list:
    """Which sample each output clip is: the one whose expected crop it equals (pixels
    are a seeded function of the clip, so no two crops are alike)."""
    names = []
    for video in batches:
        assert video.dtype == torch.uint8 and video.shape[1:] == (4, 3, CROP, CROP)
        for crop in video:
            found = [name for name, w in want.items() if torch.equal(w, crop)]
            assert len(found) == 1, "a clip cut at a window other than its sample's"
            names += found
    return names


def videos(loader, batches: int | None = None) -> list[torch.Tensor]:
    return [v.clone() for v, _, _ in itertools.islice(loader, batches)]


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_each_clip_is_cut_at_its_samples_window_by_any_worker(split_dir, workers):
    loader = make_loader(ShardDataset(split_dir, seed=1), 4, num_workers=workers,
                         batch_transform=PRESET.in_workers(seed=5))
    for epoch in (0, 1):  # each pass is the next epoch, with its own windows
        assert sorted(identify(videos(loader), expected(5, epoch, STORED))) == sorted(STORED)
    assert expected(5, 0, STORED).keys() == expected(5, 1, STORED).keys()
    assert any(not torch.equal(a, b) for a, b in zip(expected(5, 0, STORED).values(),
                                                      expected(5, 1, STORED).values()))


def test_float_in_workers_is_the_float_part_of_the_uint8_batches(split_dir):
    def loader(to_float: bool):
        return make_loader(ShardDataset(split_dir, seed=2), 5, num_workers=2,
                           batch_transform=PRESET.in_workers(seed=3, to_float=to_float))

    crops, floats = videos(loader(False)), videos(loader(True))
    assert len(crops) == len(floats) > 1
    for u, f in zip(crops, floats):
        assert f.shape == (len(u), 3, 4, CROP, CROP) and f.dtype == torch.float32
        assert torch.equal(f, PRESET.normalize_batch(u))


@pytest.mark.parametrize("workers", [0, 2])
def test_flips_made_on_the_device_give_the_same_batches(split_dir, workers):
    """``flip_on_device``: the workers hand over unmirrored crops and their flips; the
    float batches equal those of crops mirrored in the workers, and batches kept while
    the loader reuses its memory stay intact (the flags are held memory too)."""
    def loader(on_device: bool):
        return make_loader(ShardDataset(split_dir, seed=7), 1, num_workers=workers,
                           batch_transform=PRESET.in_workers(seed=8, flip_on_device=on_device))

    want = expected(8, 0, STORED)
    mirrored = videos(loader(False))
    kept = [video for video, _, _ in loader(True)]  # held through the epoch, nothing cloned
    assert all(isinstance(c, Crops) and c.flip.dtype == torch.bool for c in kept)
    flips = torch.cat([c.flip for c in kept])
    assert 0 < int(flips.sum()) < len(flips)  # both kinds in the epoch
    assert identify([c.flipped() for c in kept], want) == identify(mirrored, want)
    for crops, u in zip(kept, mirrored, strict=True):
        assert torch.equal(PRESET.normalize_batch(crops), PRESET.normalize_batch(u))
        unmirrored = torch.where(crops.flip.view(-1, 1, 1, 1, 1), u.flip(-1), u)
        assert torch.equal(crops.video, unmirrored)
    with pytest.raises(ValueError, match="nothing goes to a device"):
        PRESET.in_workers(to_float=True, flip_on_device=True)


def test_resumed_epoch_cuts_the_same_windows(split_dir):
    def loader():
        ds = ShardDataset(split_dir, seed=4)
        ds.set_epoch(1)
        return make_loader(ds, 3, num_workers=2, batch_transform=PRESET.in_workers(seed=9))

    want = expected(9, 1, STORED)
    first = loader()
    head = identify(videos(first, 3), want)
    state = first.state_dict()
    again = loader()
    again.load_state_dict(state)
    tail = identify(videos(again), want)
    assert len(head) == 9 and sorted(head + tail) == sorted(STORED)


class Clips(Dataset):
    """A map-style dataset of ``(video TCHW, audio, label)`` items."""

    def __init__(self) -> None:
        self.keys = all_keys(CLIPS)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        v, c = self.keys[i]
        return clip(v, c), torch.from_numpy(clip_audio(v, c)), v % 3


def test_map_style_loaders_draw_by_index_and_pass(split_dir):
    samples = {i: clip(*k) for i, k in enumerate(all_keys(CLIPS))}
    passes = {}
    for workers in (0, 2):
        loader = make_loader(Clips(), 4, num_workers=workers, shuffle=True,
                             batch_transform=PRESET.in_workers(seed=6))
        passes[workers] = [identify(videos(loader), expected(6, epoch, samples))
                           for epoch in (0, 1)]  # the epoch: the loader's passes
        assert all(sorted(p) == sorted(samples) for p in passes[workers])
    flips = make_loader(Clips(), 1, shuffle=True,  # memory slots reused, every batch held
                        batch_transform=PRESET.in_workers(seed=6, flip_on_device=True))
    kept = [v for v, _, _ in flips]
    assert sorted(identify([c.flipped() for c in kept], expected(6, 0, samples))) == sorted(
        samples)
    center = make_loader(Clips(), 4, batch_transform=VideoClassificationPresetEval(
        crop_size=CROP, resize_size=SIZE).in_workers())
    cut = torch.cat(videos(center))
    assert torch.equal(cut, torch.stack([samples[i][..., 1:7, 1:7] for i in range(len(samples))]))


def test_batch_transform_needs_plain_uint8_items(split_dir):
    hook = PRESET.in_workers()
    for kwargs in ({"return_dict": True}, {"transform": lambda v: v}, {"output_format": "THWC"},
                   {"video_dtype": torch.float32}):
        with pytest.raises(ValueError, match="batch_transform needs"):
            make_loader(ShardDataset(split_dir, **kwargs), 4, batch_transform=hook)
    loader = make_loader(ShardDataset(split_dir), 4, batch_transform=lambda v, s, e, a: v)
    with pytest.raises(ValueError, match="must return new tensors"):
        next(iter(loader))
