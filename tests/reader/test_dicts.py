"""PyTorchVideo's dicts (``return_dict=True``): what its Kinetics yields, and its
tutorial's transforms run on them unchanged.

PyTorchVideo does not install here (it needs torchvision), so the tutorial's transforms
are re-implemented below from their source (pytorchvideo/transforms/transforms.py and
functional.py; torchvision/transforms/_transforms_video.py and _functional_video.py).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest
import torch

from shardkin import Kinetics, ShardDataset, make_loader
from shardkin.builder import build
from shardkin.reader.collate import collate

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
KEYS = ["video", "video_name", "video_index", "clip_index", "aug_index", "label", "audio"]


# -- the tutorial's transforms, as their libraries define them ------------------------

class Compose:  # torchvision.transforms.Compose
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ApplyTransformToKey:  # pytorchvideo.transforms
    def __init__(self, key: str, transform: Callable) -> None:
        self._key, self._transform = key, transform

    def __call__(self, x: dict) -> dict:
        x[self._key] = self._transform(x[self._key])
        return x


def uniform_temporal_subsample(x: torch.Tensor, num_samples: int) -> torch.Tensor:
    t = x.shape[-3]
    indices = torch.clamp(torch.linspace(0, t - 1, num_samples), 0, t - 1).long()
    return torch.index_select(x, -3, indices)


def short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    assert len(x.shape) == 4
    assert x.dtype == torch.float32
    c, t, h, w = x.shape
    new_h, new_w = (int(h / w * size), size) if w < h else (size, int(w / h * size))
    return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear",
                                           align_corners=False)


def random_short_side_scale(min_size: int, max_size: int) -> Callable:
    return lambda x: short_side_scale(x, torch.randint(min_size, max_size + 1, (1,)).item())


def normalize_video(mean: Sequence[float], std: Sequence[float]) -> Callable:
    """torchvision's NormalizeVideo: a clone normalized in place."""
    def f(clip: torch.Tensor) -> torch.Tensor:
        clip = clip.clone()
        m = torch.as_tensor(mean, dtype=clip.dtype)
        s = torch.as_tensor(std, dtype=clip.dtype)
        clip.sub_(m[:, None, None, None]).div_(s[:, None, None, None])
        return clip
    return f


def random_crop_video(size: int) -> Callable:
    def f(clip: torch.Tensor) -> torch.Tensor:
        h, w = clip.shape[-2:]
        if (h, w) == (size, size):
            return clip
        i = torch.randint(0, h - size + 1, size=(1,)).item()
        j = torch.randint(0, w - size + 1, size=(1,)).item()
        return clip[..., i:i + size, j:j + size]
    return f


def random_horizontal_flip_video(p: float = 0.5) -> Callable:
    return lambda clip: clip.flip(-1) if random.random() < p else clip


def tutorial_transform(mean255: bool = False) -> ApplyTransformToKey:
    """The tutorial's train pipeline (sizes scaled to 64x48 clips); ``mean255``: the
    variant normalizing 0..255 values without dividing first."""
    scale = [] if mean255 else [lambda x: x / 255.0]
    mean, std = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
    if mean255:
        mean, std = tuple(m * 255 for m in mean), tuple(s * 255 for s in std)
    return ApplyTransformToKey("video", Compose([
        lambda x: uniform_temporal_subsample(x, 8), *scale, normalize_video(mean, std),
        random_short_side_scale(40, 52), random_crop_video(36),
        random_horizontal_flip_video(0.5)]))


# -- the dicts -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def split(made_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicts")
    build(made_root, out, "train", frames_per_clip=4, step_between_clips=4,
          clips_per_shard=5, workers=1, progress=False)
    return out / "train"


def _by_key(items) -> dict:
    return {(int(d["video_index"]), int(d["clip_index"])): d for d in items}


@pytest.mark.parametrize("reader", ["stream", "kinetics"])
def test_items_are_pytorchvideo_dicts(split, reader):
    if reader == "stream":
        dicts = _by_key(ShardDataset(split, return_dict=True, shuffle=False))
        tuples = list(ShardDataset(split, output_format="THWC", shuffle=False))
    else:
        ds = Kinetics(split, return_dict=True)
        dicts = _by_key(ds[i] for i in range(len(ds)))
        tuples = [Kinetics(split, output_format="THWC")[i] for i in range(len(ds))]
    stereo = 0
    for d, (video, audio, label) in zip(dicts.values(), tuples):
        assert list(d) == KEYS
        assert d["video"].dtype == torch.float32 and d["video"].shape[0] == 3
        assert torch.equal(d["video"], video.permute(3, 0, 1, 2).float())
        assert d["audio"].dtype == torch.float32 and d["audio"].dim() == 1
        assert torch.equal(d["audio"], audio.mean(0))  # channels averaged
        stereo += audio.shape[0] == 2 and audio.shape[1] > 0
        assert d["label"] == label and d["aug_index"] == 0
        assert d["video_name"].endswith((".mp4", ".mkv", ".avi", ".webm", ".mov"))
        assert "/" not in d["video_name"]
    assert stereo  # averaging was tested on two channels


def test_video_dtype(split):
    d = next(iter(ShardDataset(split, return_dict=True, video_dtype=torch.uint8)))
    assert d["video"].dtype == torch.uint8
    ref = next(iter(ShardDataset(split, return_dict=True)))
    assert torch.equal(d["video"].float(), ref["video"])
    assert Kinetics(split, return_dict=True, video_dtype=torch.uint8)[0]["video"].dtype \
        == torch.uint8
    video, _, _ = next(iter(ShardDataset(split)))  # tuples stay torchvision's uint8
    assert video.dtype == torch.uint8
    video, _, _ = next(iter(ShardDataset(split, video_dtype=torch.float32)))
    assert video.dtype == torch.float32 and video.shape[1] == 3
    with pytest.raises(ValueError, match="video_dtype"):
        ShardDataset(split, return_dict=True, video_dtype=torch.float16)


@pytest.mark.parametrize("dtype", [None, torch.uint8])
@pytest.mark.parametrize("workers", [0, 1])
def test_batches_equal_collated_items(split, dtype, workers):
    ds = ShardDataset(split, return_dict=True, video_dtype=dtype, seed=1)
    slow = ShardDataset(split, return_dict=True, video_dtype=dtype, seed=1, transform=lambda x: x)
    fast_batches = list(make_loader(ds, 4, num_workers=workers))
    slow_batches = list(make_loader(slow, 4, num_workers=workers))
    for batch, ref in zip(fast_batches, slow_batches, strict=True):
        assert list(batch) == [*KEYS, "audio_lengths"] == list(ref)
        b = len(batch["label"])
        assert batch["video"].dtype == (dtype or torch.float32)
        assert batch["video"].shape[:2] == (b, 3) and batch["audio"].dim() == 2
        assert batch["aug_index"].tolist() == [0] * b
        for k in batch:
            assert (torch.equal(batch[k], ref[k]) if isinstance(batch[k], torch.Tensor)
                    else batch[k] == ref[k])
        items = _by_key(ShardDataset(split, return_dict=True, video_dtype=dtype, shuffle=False))
        want = collate([items[k] for k in zip(batch["video_index"].tolist(),
                                              batch["clip_index"].tolist())])
        for k in batch:
            assert (torch.equal(batch[k], want[k]) if isinstance(batch[k], torch.Tensor)
                    else batch[k] == want[k])
        for i, n in enumerate(batch["audio_lengths"].tolist()):
            assert not batch["audio"][i, n:].any()  # zero-padded


def test_kinetics_batches(split):
    batch = next(iter(make_loader(Kinetics(split, return_dict=True), 5, shuffle=True)))
    assert list(batch) == [*KEYS, "audio_lengths"]
    assert batch["video"].dtype == torch.float32 and batch["audio"].shape[0] == 5


# -- the tutorial's pipeline -------------------------------------------------------------

def _seed(d: dict) -> None:
    """The global RNGs seeded from the clip: each clip's draws are its own, whatever other
    threads (a test server's client) draw from the same RNGs between clips."""
    seed = int(d["video_index"]) * 1000 + int(d["clip_index"])
    torch.manual_seed(seed)
    random.seed(seed)


@pytest.mark.parametrize("mean255", [False, True])
def test_tutorial_transforms_run_unchanged(split, mean255):
    transform = tutorial_transform(mean255)
    ds = ShardDataset(split, return_dict=True, shuffle=False,
                      transform=lambda d: (_seed(d), transform(d))[1])
    out = list(ds)
    plain = ShardDataset(split, output_format="THWC", shuffle=False)
    for d, (video, _, _) in zip(out, plain, strict=True):
        _seed(d)
        want = tutorial_transform(mean255)({"video": video.permute(3, 0, 1, 2).float()})
        assert d["video"].shape == (3, 8, 36, 36) and d["video"].dtype == torch.float32
        torch.testing.assert_close(d["video"], want["video"])
    loader = make_loader(ShardDataset(split, return_dict=True, transform=tutorial_transform()),
                         4, num_workers=1)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == len(out)
    assert batches[0]["video"].shape == (4, 3, 8, 36, 36)


def test_uint8_dicts_need_a_float_conversion_first(split):
    """Why float32 is the default: NormalizeVideo normalizes in place, which uint8 refuses
    (PyTorchVideo's ShortSideScale asserts float32 too)."""
    ds = ShardDataset(split, return_dict=True, video_dtype=torch.uint8,
                      transform=tutorial_transform(mean255=True))
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type Byte"):
        next(iter(ds))
    ok = ShardDataset(split, return_dict=True, video_dtype=torch.uint8,
                      transform=tutorial_transform())  # x / 255.0 first: runs
    assert next(iter(ok))["video"].dtype == torch.float32
