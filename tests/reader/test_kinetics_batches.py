"""``make_loader`` over ``shardkin.Kinetics`` reads each clip straight from its local shard
into its batch (``Kinetics.clip_refs``): the same batches as its items collated, for
stored clips and clips cut at read time, tuples and dicts, uint8 and float, with and
without sound or a batch transform; a clip found damaged while read sends the batch to
the items' path, which does what ``on_error`` says."""
from __future__ import annotations

import contextlib
import random
import tarfile
from pathlib import Path
from unittest import mock

import pytest
import torch

from shardkin import Kinetics, ShardError, make_loader
from shardkin.builder import build
from shardkin.reader.collate import collate
from shardkin.store.split import LocalShard
from shardkin.transforms import VideoClassificationPresetTrain

from helpers import flipped_copy

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


@pytest.fixture(scope="module")
def built(made_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kinb")
    build(made_root, out, "train", frames_per_clip=4, clips_per_shard=5, workers=1,
          progress=False)
    return out / "train"


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("kw", [
    {},
    {"frames_per_clip": 3, "step_between_clips": 1},  # windows over the stored clips
    {"return_dict": True},
    {"video_dtype": torch.float32, "decode_audio": False},
    {"frames_per_clip": 6, "step_between_clips": 2, "return_dict": True},
    {"transform": lambda v: v[..., 8:24, 4:36].float() / 2},  # read into reused memory
    {"extensions": ("mp4", "avi")},  # some of the build's videos
])
@pytest.mark.parametrize("workers", [0, 1])
def test_batches_read_in_place_equal_the_items_collated(built, kw, workers):
    with (pytest.warns(UserWarning, match="leaves out 3 of the 6 videos") if "extensions" in kw
          else contextlib.nullcontext()):
        ds = Kinetics(built, **kw)
    refs = ds.clip_refs([0, len(ds) - 1])
    pieces = [getattr(r.video, "parts", [(r.video,)]) for r in refs]
    assert all(isinstance(p[0].source, LocalShard) for parts in pieces for p in parts)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1)).tolist()
    loader = make_loader(ds, 4, num_workers=workers, sampler=order)
    with mock.patch.object(Kinetics, "__getitem__", side_effect=AssertionError("an item")):
        batches = list(loader)  # read in place: no item made (in this process or a worker)
    assert len(batches) == -(-len(ds) // 4)
    for n, batch in enumerate(batches):
        assert _equal(batch, collate([ds[i] for i in order[4 * n : 4 * n + 4]]))


def test_a_batch_transform_gets_the_clips_read_in_place(built):
    ds = Kinetics(built)
    preset = VideoClassificationPresetTrain(crop_size=(32, 32), resize_size=(48, 64))
    transform = preset.in_workers(seed=5, to_float=True)
    order = list(range(len(ds)))[::-1]
    got = list(make_loader(ds, 5, sampler=order, batch_transform=transform))
    for n, (video, audio, label) in enumerate(got):
        picked = order[5 * n : 5 * n + 5]  # the transform's draws: by dataset index
        want = collate([ds[i] for i in picked])
        assert torch.equal(video, transform(want[0], picked, 0, None))
        assert torch.equal(audio, want[1]) and torch.equal(label, want[2])


def _flip_pixel(split: Path, out: Path, clip: int) -> Path:
    """A copy of ``split`` with one pixel byte of the ``clip``-th stored clip flipped."""
    with tarfile.open(sorted(split.glob("*.tar"))[0]) as tar:
        videos = [m for m in tar.getmembers() if m.name.endswith(".video.npy")]
    return flipped_copy(split, out, videos[clip].offset_data + 128
                        + random.Random(clip).randrange(1000), 0x10)


def test_a_damaged_clip_goes_the_items_way(built, tmp_path):
    folder = _flip_pixel(built, tmp_path / "copy", 2)
    with pytest.raises(ShardError, match="does not match its checksum"):
        list(make_loader(Kinetics(folder), 4, sampler=range(8)))
    ds = Kinetics(folder, on_error="skip")
    with pytest.warns(UserWarning, match="unreadable"):
        got = list(make_loader(ds, 4, sampler=range(8)))
    clean = Kinetics(built)
    want = [collate([clean[i] for i in (0, 1, 3, 3)]), collate([clean[i] for i in range(4, 8)])]
    assert _equal(got, want)  # clip 2 stood in for by the next readable one, as ds[2] does
    unchecked = list(make_loader(Kinetics(folder, verify=False), 4, sampler=range(8)))
    assert not torch.equal(unchecked[0][0], want[0][0])  # the damage is there to be found


class WithVideoId(Kinetics):
    """A subclass making its own items, as torchvision's recipe does."""

    def __getitem__(self, i):
        video, audio, label = super().__getitem__(i)
        return video, audio, label, i


def test_a_subclass_making_its_own_items_gets_them(built):
    ds = WithVideoId(built)
    assert ds.clip_refs([0]) is None
    batches = list(make_loader(ds, 4, sampler=range(len(ds))))
    assert torch.cat([b[3] for b in batches]).tolist() == list(range(len(ds)))
    assert _equal(batches[0], collate([ds[i] for i in range(4)]))
