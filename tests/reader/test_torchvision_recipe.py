"""torchvision's reference video-classification recipe on shardkin, against the real
torchvision 0.28 (tests/reference.py): its ``datasets.py`` with the base class changed, its
arguments, samplers, collate, evaluation and dataset cache; the same clips and index lists."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from shardkin import Kinetics, build
from shardkin.synth import make_video

import reference
from helpers import make_not_coded_avi

# The recipe, run by the real torchvision next to its own Kinetics on the same videos.
RECIPE = r'''
import io, json, sys, warnings
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate
from torchvision.datasets.samplers import (DistributedSampler, RandomClipSampler,
                                           UniformClipSampler)
from torchvision.datasets.video_utils import VideoClips
import torchvision.transforms as T

import shardkin

warnings.filterwarnings("ignore")
videos, shards, extensions = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))


class KineticsWithVideoId(shardkin.Kinetics):  # the one line changed (datasets.py)
    def __getitem__(self, idx):
        video, audio, info, video_idx = self.video_clips.get_clip(idx)
        label = self.samples[video_idx][1]
        if self.transform is not None:
            video = self.transform(video)
        return video, audio, label, video_idx


class ConvertBCHWtoCBHW(nn.Module):  # presets.py
    def forward(self, vid):
        return vid.permute(1, 0, 2, 3)


def preset(train):  # presets.py's VideoClassificationPreset{Train,Eval}, at 64x85 / 56
    mean, std = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
    ops = [T.ConvertImageDtype(torch.float32), T.Resize((64, 85), antialias=False)]
    ops += [T.RandomHorizontalFlip(0.5)] if train else []
    ops += [T.Normalize(mean=mean, std=std)]
    ops += [T.RandomCrop((56, 56)) if train else T.CenterCrop((56, 56)), ConvertBCHWtoCBHW()]
    return T.Compose(ops)


def collate_fn(batch):  # train.py
    batch = [(d[0], d[2], d[3]) for d in batch]
    return default_collate(batch)


out = {"splits": {}}
for split in ("train", "val"):
    args = dict(frames_per_clip=16, num_classes="400", split=split, step_between_clips=1,
                transform=preset(split == "train"), frame_rate=15, extensions=extensions,
                output_format="TCHW", num_workers=2)
    tv = torchvision.datasets.Kinetics(videos, **args)
    sk = KineticsWithVideoId(shards, **args)
    positional = KineticsWithVideoId(shards, 16, "400", split, 15, 1, None, extensions, False,
                                     1, 2, None, 0, 0, 0, 0, 0, False, "TCHW")
    r = {"isinstance": isinstance(sk.video_clips, VideoClips),
         "counts": [[len(c) for c in d.video_clips.clips] for d in (tv, sk, positional)],
         "samples": [[p.split(videos)[-1].lstrip("/") for p, _ in tv.samples],
                     [p for p, _ in sk.samples]],
         "classes": [[tv.classes[y] for _, y in tv.samples],
                     [sk.classes[y] for _, y in sk.samples]],
         "len": [len(tv), len(sk), sk.video_clips.num_clips(), sk.video_clips.num_videos()],
         "location": [[d.video_clips.get_clip_location(i) for i in range(0, len(tv), 7)]
                      for d in (tv, sk)]}
    lists = {}
    for name, d in (("tv", tv), ("sk", sk)):
        torch.manual_seed(3)
        lists[name] = [list(RandomClipSampler(d.video_clips, 5)) for _ in range(2)]
        lists[name].append(list(UniformClipSampler(d.video_clips, 5)))
        for rank in range(2):  # train.py wraps the samplers when distributed
            torch.manual_seed(4)
            ds = DistributedSampler(RandomClipSampler(d.video_clips, 5), num_replicas=2,
                                    rank=rank, shuffle=True)
            ds.set_epoch(1)
            lists[name].append(list(ds))
    r["lists"] = [lists["tv"], lists["sk"]]
    # the last clip: torchvision's own get_clip fails on it for a video whose last frame
    # has no picture ("no more frames left to decode"), shardkin's holds the one before
    v, a, info, vid = sk.video_clips.get_clip(len(sk) - 1)
    r["get_clip"] = [[list(v.shape), v.dtype == torch.uint8, info, vid],
                     tv.video_clips.get_clip_location(len(tv) - 1)[0]]
    out["splits"][split] = r

# train.py: samplers over video_clips, a DataLoader with workers and pinned memory, a few
# SGD steps, then the video-level evaluation over samples / classes / video_idx
train = KineticsWithVideoId(shards, 16, split="train", step_between_clips=1,
                            transform=preset(True), frame_rate=15, extensions=extensions)
test = KineticsWithVideoId(shards, 16, split="val", step_between_clips=1,
                           transform=preset(False), frame_rate=15, extensions=extensions)
loader = DataLoader(train, batch_size=4, sampler=RandomClipSampler(train.video_clips, 5),
                    num_workers=2, pin_memory=True, collate_fn=collate_fn)
test_loader = DataLoader(test, batch_size=4, sampler=UniformClipSampler(test.video_clips, 5),
                         num_workers=2, pin_memory=True, collate_fn=collate_fn)
model = nn.Sequential(nn.Conv3d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                      nn.Flatten(), nn.Linear(4, len(train.classes)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
steps = []
for step, (video, target, _) in enumerate(loader):
    loss = nn.functional.cross_entropy(model(video), target)
    opt.zero_grad(); loss.backward(); opt.step()
    steps.append([list(video.shape), float(loss)])
    if step == 2:
        break
agg = torch.zeros(len(test.samples), len(test.classes))
seen = torch.zeros(len(test.samples))
with torch.inference_mode():
    for video, target, video_idx in test_loader:
        preds = torch.softmax(model(video), dim=1)
        for b in range(video.size(0)):
            agg[video_idx[b]] += preds[b]
            seen[video_idx[b]] += 1
            assert test.samples[video_idx[b]][1] == target[b]
labels = torch.tensor([y for _, y in test.samples])
out["train"] = steps
out["eval"] = {"videos": int((seen > 0).sum()), "clips": int(seen.sum()),
               "acc": float((agg.argmax(1) == labels)[seen > 0].float().mean())}
# --cache-dataset: torch.save((dataset, dir)), torch.load(weights_only=False), new transform
buf = io.BytesIO()
torch.save((train, shards), buf)
out["cache_bytes"] = buf.tell()
buf.seek(0)
loaded, _ = torch.load(buf, weights_only=False)
loaded.transform = preset(False)
out["cache"] = [len(loaded) == len(train), list(loaded[0][0].shape),
                [len(c) for c in loaded.video_clips.clips]
                == [len(c) for c in train.video_clips.clips]]
print(json.dumps(out))
'''


def _check(result: dict, max_bytes: int) -> None:
    for split, r in result["splits"].items():
        tv, sk, positional = r["counts"]
        assert r["isinstance"], split
        assert sk == tv and positional == tv, split  # every video's clip count
        assert r["samples"][0] == r["samples"][1], split  # the same videos, in order
        assert r["classes"][0] == r["classes"][1], split  # labels name the same classes
        assert r["len"] == [sum(tv)] * 3 + [len(tv)], split
        assert r["location"][0] == r["location"][1], split
        assert r["lists"][0] == r["lists"][1], split  # Random, Uniform, Distributed
        ours, video = r["get_clip"]
        assert ours[0][:2] == [16, 3] and ours[1], split  # TCHW uint8
        assert ours[2:] == [{"video_fps": 15}, video], split  # as torchvision's info
    assert result["train"] and all(s[0][1:] == [3, 16, 56, 56] for s in result["train"])
    ev = result["eval"]
    assert ev["videos"] == sum(1 for n in result["splits"]["val"]["counts"][1] if n)
    assert ev["clips"] == 5 * ev["videos"]
    assert result["cache"] == [True, [3, 16, 56, 56], True]
    assert result["cache_bytes"] < max_bytes


def _link_tree(src: Path, dst: Path, splits: tuple[str, ...]) -> Path:
    dst.mkdir()
    for split in splits:
        (dst / split).symlink_to(src / split, target_is_directory=True)
    return dst


def test_recipe_on_real_videos_equals_torchvision(real_root, tmp_path):
    """The real videos (not-coded frames, measured fps: 5 of 22 differed before), at the
    recipe's settings, built once as contiguous 16-frame clips and read at step 1."""
    reference.require()
    root = _link_tree(real_root, tmp_path / "videos", ("train", "val"))
    out = tmp_path / "shards"
    for split in ("train", "val"):
        build(root, out, split, frames_per_clip=16, frame_rate=15, min_dimension=64,
              audio_codec="none", workers=2, progress=False)
    _check(reference.run(RECIPE, root, out, "avi,mp4,mkv"), 200_000)


@pytest.fixture(scope="module")
def made_videos(tmp_path_factory) -> Path:
    """Videos at odd rates, with B-frames, too short, with not-coded frames."""
    root = tmp_path_factory.mktemp("recipe")
    specs = [("train", "a", "x.mp4", 70, 24), ("train", "a", "y.mkv", 61, 29.97),
             ("train", "b", "z.mp4", 9, 30), ("train", "b", "w.webm", 90, 60),
             ("val", "a", "v.mp4", 50, 25), ("val", "b", "u.mp4", 44, 30)]
    for i, (split, cls, name, frames, fps) in enumerate(specs):
        make_video(root / split / cls / name, frames, fps, (48, 32), None, seed=i)
    make_not_coded_avi(root / "train" / "b" / "nc.avi", 60, after=(3, 30, 41))
    make_not_coded_avi(root / "val" / "a" / "nc.avi", 40, after=(1,))
    return root


def test_recipe_on_made_videos_equals_torchvision(made_videos, tmp_path):
    reference.require()
    for split in ("train", "val"):
        build(made_videos, tmp_path, split, frames_per_clip=16, frame_rate=15,
              audio_codec="none", workers=2, progress=False)
    _check(reference.run(RECIPE, made_videos, tmp_path, "avi,mp4,mkv,webm"), 200_000)
    # the recipe's own extensions leave the .mkv and .webm out, as torchvision does
    _check(reference.run(RECIPE, made_videos, tmp_path, "avi,mp4"), 200_000)


def test_torchvisions_arguments_mean_something(made_videos, tmp_path):
    build(made_videos, tmp_path, "train", frames_per_clip=8, workers=1, progress=False)
    with pytest.raises(ValueError, match="downloads nothing"):
        Kinetics(tmp_path, 8, download=True)
    with pytest.raises(ValueError, match="num_classes"):
        Kinetics(tmp_path, 8, num_classes="401")
    with pytest.raises(TypeError, match="split=..."):
        Kinetics(tmp_path, "train")  # the order of earlier releases: root, split
    with pytest.warns(UserWarning, match="_precomputed_metadata"):
        Kinetics(tmp_path, 8, _precomputed_metadata={"video_paths": []})
    with pytest.warns(UserWarning, match="leaves out 3 of the 5 videos"):
        mp4 = Kinetics(tmp_path, 8, extensions=("mp4",))
    assert [p for p, _ in mp4.samples] == ["train/a/x.mp4", "train/b/z.mp4"]
    legacy = Kinetics(tmp_path / "train", 8, _legacy=True)
    assert legacy.output_format == "THWC" and legacy.split == "unknown"
    assert len(legacy) == len(Kinetics(tmp_path, 8, num_workers=8, num_download_workers=4))
    assert legacy[0][0].shape[-1] == 3


def test_a_pickled_dataset_reopens_the_build(made_videos, tmp_path):
    build(made_videos, tmp_path, "train", frames_per_clip=8, workers=1, progress=False)
    ds = Kinetics(tmp_path, 4, split="train", step_between_clips=2, transform=abs)
    data = pickle.dumps(ds)
    again = pickle.loads(data)
    assert len(data) < 2000 and len(again) == len(ds) and again.transform is abs
    assert [len(c) for c in again.video_clips.clips] == [len(c) for c in ds.video_clips.clips]
    assert (again[5][0] == ds[5][0]).all()
    assert pickle.loads(pickle.dumps(ds.video_clips)).num_clips() == len(ds)
