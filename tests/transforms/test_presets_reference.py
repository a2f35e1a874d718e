"""shardkin.transforms against the real torchvision 0.28 (tests/reference.py): the reference
recipe's presets (``references/video_classification/presets.py``: its composition of
torchvision's own transforms) and ``torchvision.transforms._presets.VideoClassification``,
bit for bit, over 100 seeds, at and off ``resize_size``, on contiguous clips and on
shardkin's ``[T, C, H, W]`` views of ``[T, H, W, C]`` memory, per clip and batched; with the
one-pass path (:mod:`shardkin.transforms.onepass`, numba) and with torch's passes."""
from __future__ import annotations

from pathlib import Path

import pytest

import reference

SCRIPT = r'''
import json, sys
import torch
torch.set_num_threads(1)  # the machine is shared: threads spinning against other jobs cost 10x
from torchvision.transforms import InterpolationMode, transforms as T
from torchvision.transforms import functional as TF
from torchvision.transforms._presets import VideoClassification as TVVideoClassification

import shardkin
from shardkin import transforms as S

MEAN, STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)


class ConvertBCHWtoCBHW(torch.nn.Module):  # the recipe's transforms.py
    def forward(self, vid):
        return vid.permute(1, 0, 2, 3)


def train(crop_size, resize_size, hflip_prob=0.5, mean=MEAN, std=STD):  # presets.py's
    trans = [T.ConvertImageDtype(torch.float32), T.Resize(resize_size, antialias=False)]
    if hflip_prob > 0:
        trans.append(T.RandomHorizontalFlip(hflip_prob))
    trans.extend([T.Normalize(mean=mean, std=std), T.RandomCrop(crop_size), ConvertBCHWtoCBHW()])
    return T.Compose(trans)


def evaluation(crop_size, resize_size, mean=MEAN, std=STD):  # presets.py's eval preset
    return T.Compose([T.ConvertImageDtype(torch.float32), T.Resize(resize_size, antialias=False),
                      T.Normalize(mean=mean, std=std), T.CenterCrop(crop_size),
                      ConvertBCHWtoCBHW()])


def windowed(clip, window, crop_size, resize_size):
    """The train preset with its draws given: torchvision's functional ops in its order."""
    x = TF.resize(TF.convert_image_dtype(clip, torch.float32), resize_size, antialias=False)
    h, w = x.shape[-2:]
    left = w - crop_size[1] - window.left if window.flip else window.left
    x = TF.normalize(TF.hflip(x) if window.flip else x, MEAN, STD)
    return TF.crop(x, window.top, left, *crop_size).permute(1, 0, 2, 3)


# (input height, width), crop_size, resize_size, hflip_prob: at and off resize_size
CASES = [((128, 171), (112, 112), (128, 171), 0.5), ((128, 171), 112, [128], 0.5),
         ((120, 160), (112, 112), (128, 171), 0.5), ((150, 200), (112, 112), (128, 171), 0.5),
         ((128, 171), (112, 112), (128, 171), 0.0), ((112, 112), (112, 112), (112, 112), 1.0),
         ((100, 130), (96, 120), [96], 0.3)]
checked, bad = 0, []


def same(name, a, b):
    global checked
    checked += 1
    if a.shape != b.shape or not torch.equal(a, b):
        bad.append(name)


for seed in range(100):
    (h, w), crop, resize, p = CASES[seed % len(CASES)]
    g = torch.Generator().manual_seed(seed)
    stored = torch.randint(0, 256, (2, 2, h, w, 3), dtype=torch.uint8, generator=g)
    views = stored.permute(0, 1, 4, 2, 3)  # shardkin's batches: [B, T, C, H, W] views
    for layout, batch in (("views", views), ("contiguous", views.contiguous())):
        name = f"seed {seed} {layout} {h}x{w} crop {crop} resize {resize} p {p}"
        ref, ours = train(crop, resize, p), S.VideoClassificationPresetTrain(
            crop_size=crop, resize_size=resize, hflip_prob=p)
        torch.manual_seed(seed)
        a = [ref(clip) for clip in batch]
        after = torch.get_rng_state()
        torch.manual_seed(seed)
        b = [ours(clip) for clip in batch]
        for i in range(len(a)):
            same(f"train {name} clip {i}", a[i], b[i])
        same(f"train {name}: random state after", after, torch.get_rng_state())
        torch.manual_seed(seed)
        same(f"train batch {name}", torch.stack(a), ours.batch(batch))
        if (h, w) == tuple(S.ops.resized_size(h, w, resize)):
            torch.manual_seed(seed)
            split = ours.normalize_batch(ours.crop_batch(batch),
                                         memory_format=torch.contiguous_format)
            same(f"train uint8 + float parts {name}", torch.stack(a), split)
            windows = [ours.sample_window(h, w, seed=seed, epoch=2, sample=f"{i:08d}_000000")
                       for i in range(len(batch))]
            expected = torch.stack([windowed(c, win, ours.crop, resize)
                                    for c, win in zip(batch, windows)])
            same(f"train per-sample windows {name}", expected,
                 ours.normalize_batch(ours.crop_batch(batch, windows)))
            same(f"train per-sample windows, float in workers {name}", expected,
                 ours.in_workers(seed=seed, to_float=True)(
                     batch, [f"{i:08d}_000000" for i in range(len(batch))], 2))

        ref, ours = evaluation(crop, resize), S.VideoClassificationPresetEval(
            crop_size=crop, resize_size=resize)
        a = torch.stack([ref(clip) for clip in batch])
        same(f"eval {name}", a, torch.stack([ours(clip) for clip in batch]))
        same(f"eval batch {name}", a, ours.batch(batch))

        vc = dict(crop_size=crop if isinstance(crop, tuple) else (crop, crop),
                  resize_size=resize if isinstance(resize, tuple) else tuple(resize))
        mode = [InterpolationMode.BILINEAR, InterpolationMode.NEAREST,
                InterpolationMode.BICUBIC][seed % 3]
        ref = TVVideoClassification(**vc, interpolation=mode)
        ours = S.VideoClassification(**vc, interpolation=mode)
        a = ref(batch)
        same(f"weights.transforms() {mode} {name}", a, ours(batch))
        same(f"weights.transforms() one clip {mode} {name}", ref(batch[0]), ours(batch[0]))
        same(f"weights.transforms() batch {mode} {name}", a, ours.batch(batch))

# every uint8 value in every channel (each channel a different order), all three forms,
# on contiguous clips and on shardkin's views
values = torch.stack([torch.arange(256).roll(85 * c) for c in range(3)]).to(torch.uint8)
clip = values.view(1, 3, 16, 16).expand(2, 3, 16, 16).contiguous()
for layout, clip in (("contiguous", clip), ("views", clip.permute(0, 2, 3, 1).contiguous()
                                            .permute(0, 3, 1, 2))):
    for p in (0.0, 1.0):
        torch.manual_seed(0)
        a = train((16, 16), (16, 16), p)(clip)
        ours = S.VideoClassificationPresetTrain(crop_size=(16, 16), resize_size=(16, 16),
                                                hflip_prob=p)
        torch.manual_seed(0)
        same(f"every value, train p {p} {layout}", a, ours(clip))
        torch.manual_seed(0)
        same(f"every value, train batch p {p} {layout}", a[None], ours.batch(clip[None]))
        same(f"every value, float part p {p} {layout}", a[None], ours.normalize_batch(
            ours.crop_batch(clip[None], [S.Window(0, 0, bool(p))])))
    same(f"every value, eval {layout}", evaluation((16, 16), (16, 16))(clip),
         S.VideoClassificationPresetEval(crop_size=(16, 16), resize_size=(16, 16))(clip))
    same(f"every value, weights.transforms() {layout}",
         TVVideoClassification(crop_size=(16, 16), resize_size=(16, 16))(clip),
         S.VideoClassification(crop_size=(16, 16), resize_size=(16, 16))(clip))

# a center crop larger than the resized clip: torchvision pads (eval: after normalizing)
clip = torch.randint(0, 256, (2, 3, 90, 100), dtype=torch.uint8)
same("eval padded", evaluation((112, 112), (96, 108))(clip),
     S.VideoClassificationPresetEval(crop_size=(112, 112), resize_size=(96, 108))(clip))
same("weights.transforms() padded",
     TVVideoClassification(crop_size=(112, 112), resize_size=(96, 108))(clip),
     S.VideoClassification(crop_size=(112, 112), resize_size=(96, 108))(clip))
# one mean and one std for all channels: Normalize broadcasts them
clip = torch.randint(0, 256, (2, 20, 24, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
one = dict(mean=[0.45], std=[0.225])
for layout, x in (("views", clip), ("contiguous", clip.contiguous())):
    for p in (0.0, 1.0):
        torch.manual_seed(1)
        a = train((16, 16), (20, 24), p, **one)(x)
        ours = S.VideoClassificationPresetTrain(crop_size=16, resize_size=(20, 24), hflip_prob=p,
                                                **one)
        torch.manual_seed(1)
        same(f"one mean and std, train p {p} {layout}", a, ours(x))
        torch.manual_seed(1)
        same(f"one mean and std, train batch p {p} {layout}", a[None], ours.batch(x[None]))
    same(f"one mean and std, eval {layout}", evaluation((16, 16), (20, 24), **one)(x),
         S.VideoClassificationPresetEval(crop_size=16, resize_size=(20, 24), **one)(x))
print(json.dumps({"checked": checked, "bad": bad, "shardkin": shardkin.__file__,
                  "one_pass": S.onepass.enabled()}))
'''


@pytest.mark.parametrize("one_pass", [True, False], ids=["one pass (numba)", "torch passes"])
def test_presets_bit_identical_to_torchvision(one_pass, monkeypatch):
    monkeypatch.setenv("SHARDKIN_JIT", "1" if one_pass else "0")
    out = reference.run(SCRIPT)
    assert Path(out["shardkin"]).is_relative_to(reference.PROJECT)  # this tree, not another
    assert out["one_pass"] == one_pass  # numba is in the reference environment (CI builds it)
    assert out["bad"] == []
    assert out["checked"] > 2000
