"""``decode_audio=False`` (PyTorchVideo's name): no sound is read; every clip's audio is
the empty float32 ``[1, 0]`` of a video without audio; everything else is as read with
sound, in both readers, for stored clips and windows, items, dicts and batches."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shardkin import Kinetics, ShardDataset, make_loader
from shardkin.builder import build

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
EMPTY = (1, 0)


@pytest.fixture(scope="module")
def split(made_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sound")
    build(made_root, out, "train", frames_per_clip=4, workers=1, progress=False)
    return out / "train"


def test_the_build_has_sound(split):
    assert any(a.shape[1] for _, a, _ in ShardDataset(split, shuffle=False))


@pytest.mark.parametrize("windows", [{}, {"frames_per_clip": 3, "step_between_clips": 2}])
def test_stream_items_are_those_with_sound_less_the_sound(split, windows):
    with_sound = list(ShardDataset(split, seed=3, **windows))
    without = list(ShardDataset(split, seed=3, decode_audio=False, **windows))
    assert len(without) == len(with_sound) > 0
    for (v, _, label), (w, b, other) in zip(with_sound, without):
        assert torch.equal(v, w) and label == other
        assert b.dtype == torch.float32 and tuple(b.shape) == EMPTY


@pytest.mark.parametrize("windows", [{}, {"frames_per_clip": 3, "step_between_clips": 2}])
def test_kinetics_items_are_those_with_sound_less_the_sound(split, windows):
    with_sound, without = Kinetics(split, **windows), Kinetics(split, decode_audio=False,
                                                               **windows)
    assert len(without) == len(with_sound)
    for i in range(len(with_sound)):
        (v, _, label), (w, b, other) = with_sound[i], without[i]
        assert torch.equal(v, w) and label == other and tuple(b.shape) == EMPTY


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_and_dicts_without_sound(split, workers):
    ds = ShardDataset(split, seed=1, decode_audio=False)
    video, audio, label = next(iter(make_loader(ds, 4, num_workers=workers)))
    assert video.shape[0] == 4 and tuple(audio.shape) == (4, *EMPTY) and label.shape == (4,)
    item = next(iter(ShardDataset(split, return_dict=True, decode_audio=False)))
    assert item["audio"].shape == (0,) and item["video"].dtype == torch.float32
