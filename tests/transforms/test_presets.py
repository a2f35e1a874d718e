"""shardkin.transforms on their own: batched forms equal to the per-clip ones, the uint8 and
float parts equal to the whole, per-sample windows, errors, each with the one pass and
with torch's passes (the comparison with the real torchvision is
test_presets_reference.py)."""
from __future__ import annotations

import ast
import sys
import warnings
from pathlib import Path

import pytest
import torch

import shardkin
from shardkin.transforms import (
    VideoClassification,
    VideoClassificationPresetEval,
    VideoClassificationPresetTrain,
    Window,
    onepass,
    sample_window,
)
from shardkin.transforms.windows import cut


@pytest.fixture(autouse=True, params=["one pass", "torch passes"])
def path(request, monkeypatch):
    """Every test twice: with the one pass (numba, in the test environment) and without."""
    if request.param == "torch passes":
        monkeypatch.setattr(onepass, "_kernel", lambda: None)
    assert onepass.enabled() == (request.param == "one pass")
    return request.param


def batch_of(clips: int, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``[B, T, C, H, W]`` as shardkin's loaders give it: a view of ``[B, T, H, W, C]``."""
    g = torch.Generator().manual_seed(seed)
    stored = torch.randint(0, 256, (clips, frames, height, width, 3), dtype=torch.uint8,
                           generator=g)
    return stored.permute(0, 1, 4, 2, 3)


def presets(resize=(16, 20), crop=(12, 12)):
    return [VideoClassificationPresetTrain(crop_size=crop, resize_size=resize),
            VideoClassificationPresetEval(crop_size=crop, resize_size=resize),
            VideoClassification(crop_size=crop, resize_size=resize)]


@pytest.mark.parametrize("size", [(16, 20), (14, 18), (30, 24)])  # at and off resize_size
@pytest.mark.parametrize("contiguous", [False, True])
def test_batch_equals_the_per_clip_preset(size, contiguous):
    video = batch_of(4, 3, *size)
    video = video.contiguous() if contiguous else video
    for preset in presets():
        torch.manual_seed(7)
        one = torch.stack([preset(clip) for clip in video])
        torch.manual_seed(7)
        assert torch.equal(preset.batch(video), one), type(preset).__name__
        if size == (16, 20) or isinstance(preset, VideoClassification):
            torch.manual_seed(7)
            parts = preset.normalize_batch(preset.crop_batch(video))
            assert torch.equal(parts, one)
            torch.manual_seed(7)
            flat = preset.normalize_batch(preset.crop_batch(video),
                                          memory_format=torch.contiguous_format)
            assert flat.is_contiguous() and torch.equal(flat, one)


def test_outputs_keep_the_inputs_memory_layout():
    video = batch_of(2, 3, 16, 20)
    train = presets()[0]
    out = train.batch(video)
    assert out.shape == (2, 3, 3, 12, 12) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last_3d)  # [B, T, h, w, C] memory
    crops = train.crop_batch(video)
    assert crops.permute(0, 1, 3, 4, 2).is_contiguous()


def test_windows_follow_torchs_draws_and_mirror_the_column():
    video = batch_of(1, 2, 16, 20)[0]
    train = VideoClassificationPresetTrain(crop_size=12, resize_size=(16, 20), hflip_prob=1.0)
    torch.manual_seed(3)
    out = train(video)
    torch.manual_seed(3)
    assert bool(torch.rand(1) < 1.0)
    top = int(torch.randint(0, 16 - 12 + 1, (1,)))
    left = int(torch.randint(0, 20 - 12 + 1, (1,)))  # on the flipped clip
    x = video.flip(-1).float().div(255)[..., top : top + 12, left : left + 12]
    mean = torch.tensor((0.43216, 0.394666, 0.37645)).view(3, 1, 1)
    std = torch.tensor((0.22803, 0.22145, 0.216989)).view(3, 1, 1)
    assert torch.equal(out, ((x - mean) / std).permute(1, 0, 2, 3))
    win = [Window(top, 20 - 12 - left, True)]
    assert torch.equal(train.batch(video[None], win)[0], out)


def test_the_input_is_never_written():
    for preset in presets(resize=(16, 20)):
        for video in (batch_of(2, 2, 16, 20).float().div(255), batch_of(2, 2, 16, 20)):
            before = video.clone()
            preset(video[0])
            if video.dtype == torch.uint8:
                preset.batch(video)
            assert torch.equal(video, before)


def test_sample_windows_are_a_function_of_seed_epoch_and_sample():
    def win(seed=0, epoch=0, sample="00000001_000002", p=0.5):
        return sample_window(128, 171, (112, 112), p, seed=seed, epoch=epoch, sample=sample)

    assert win() == win()
    assert len({win(epoch=e) for e in range(20)}) > 10
    assert len({win(seed=s) for s in range(20)}) > 10
    many = [win(sample=i) for i in range(4000)]
    assert {w.top for w in many} == set(range(17)) and {w.left for w in many} == set(range(60))
    assert 0.45 < sum(w.flip for w in many) / len(many) < 0.55
    assert not any(win(sample=i, p=0.0).flip for i in range(200))
    assert all(win(sample=i, p=1.0).flip for i in range(200))
    assert sample_window(112, 112, (112, 112), 0.5, seed=0, epoch=0, sample=1)[:2] == (0, 0)


def test_errors_say_what_to_do():
    train = VideoClassificationPresetTrain(crop_size=112, resize_size=(128, 171))
    with pytest.raises(ValueError, match="not at resize_size=.*build the shards at that size"):
        train.crop_batch(batch_of(1, 1, 120, 160))
    with pytest.raises(ValueError, match="larger than input image size"):
        VideoClassificationPresetTrain(crop_size=200, resize_size=(128, 171))(
            batch_of(1, 1, 128, 171)[0])
    with pytest.raises(ValueError, match="uint8"):
        train.crop_batch(batch_of(1, 1, 128, 171).float())
    two = [Window(0, 0, False)] * 2
    for take, size in ((train.crop_batch, (128, 171)), (train.batch, (128, 171)),
                       (train.batch, (120, 160))):  # at resize_size, and resized first
        with pytest.raises(ValueError, match="2 windows for 4 clips"):
            take(batch_of(4, 1, *size), two)
    with pytest.raises(ValueError, match="std evaluated to zero"):
        VideoClassificationPresetEval(crop_size=112, resize_size=128, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="interpolation"):
        VideoClassification(crop_size=(112, 112), resize_size=(128, 171), interpolation="box")


def test_transforms_stand_beside_the_other_packages():
    """transforms imports nothing of shardkin; format, store and builder never import it."""
    root = Path(shardkin.__file__).parent

    def imported(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                package = ".".join(path.relative_to(root.parent).parts[:-1]).split(".")
                base = package[: len(package) - node.level + 1] if node.level else []
                names.add(".".join([*base, *(node.module or "").split(".")]).strip("."))
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    for path in (root / "transforms").rglob("*.py"):
        assert {n for n in imported(path) if n.startswith("shardkin.")} <= {
            n for n in imported(path) if n.startswith("shardkin.transforms")}, path
    for package in ("format", "store", "builder"):
        for path in (root / package).rglob("*.py"):
            assert not any(n.startswith("shardkin.transforms") for n in imported(path)), path


def test_the_float_part_as_a_gpu_does_it_whole_batch():
    """On a device normalize_batch converts the whole batch in a few kernels (no device
    here: the same operations on CPU tensors)."""
    train = presets()[0]
    crops = train.crop_batch(batch_of(3, 2, 16, 20))
    for fmt in (torch.preserve_format, torch.contiguous_format):
        whole = train._whole(train._float_batch(crops.shape, crops, None, fmt), crops)
        assert torch.equal(whole, train.normalize_batch(crops))


def test_the_one_pass_takes_what_it_can_and_gives_torchs_values(path):
    train = VideoClassificationPresetTrain(crop_size=(5, 7), resize_size=(9, 13))
    video = batch_of(1, 3, 9, 13)[0]  # [T, C, H, W] view of [T, H, W, C] memory
    assert onepass.applies(video) == (path == "one pass")
    for other in (video.contiguous(), video.float(), video[:, :1], video[:, :, 1:, 1:]):
        assert not onepass.applies(other)  # [T, C, H, W] memory, float, 1 channel, a view
    assert not onepass.applies(video, torch.empty(3, 3, 5, 7))  # out not [T, h, w, C]
    if path == "torch passes":
        return
    for window in (Window(0, 0, False), Window(4, 6, True), Window(2, 3, False),
                   Window(4, 0, True), Window(0, 6, False)):  # every edge, mirrored or not
        want = train._normalized(cut(video, window, train.crop))
        got = onepass.crop_normalize(video, window, train.crop, train._pass)
        assert torch.equal(got, want) and got.stride() == want.stride(), window
    with pytest.raises(ValueError, match="does not fit"):
        onepass.crop_normalize(video, Window(5, 0, False), train.crop, train._pass)
    with pytest.raises(ValueError, match="out is"):
        onepass.crop_normalize(video, Window(0, 0, False), train.crop, train._pass,
                               torch.empty(3, 3, 7, 5))
    two = batch_of(2, 3, 9, 13)
    out = train._float_batch((2, 3, 3, *train.crop), two, None, torch.preserve_format)
    with pytest.raises(ValueError, match="1 windows and 2 outputs for 2 clips"):
        onepass.crop_normalize_batch(two, [Window(0, 0, False)], train.crop, train._pass, out)
    assert onepass.applies(video[:1]) and onepass.applies(batch_of(1, 3, 1, 13)[0])  # size 1
    for bad, out in ((video.contiguous(), None), (video, torch.empty(3, 7, 5, 3).permute(
            0, 3, 2, 1))):  # [T, C, H, W] memory; out [T, w, h, C] memory
        with pytest.raises(ValueError, match="applies"):
            onepass.crop_normalize(bad, Window(0, 0, False), train.crop, train._pass, out)


def test_one_mean_and_std_are_for_every_channel():
    video = batch_of(2, 2, 10, 12)
    one = VideoClassificationPresetTrain(crop_size=8, resize_size=(10, 12), mean=[0.5],
                                         std=[0.25])
    three = VideoClassificationPresetTrain(crop_size=8, resize_size=(10, 12), mean=[0.5] * 3,
                                           std=[0.25] * 3)
    for clips in (video, video.contiguous()):
        torch.manual_seed(3)
        a = one.batch(clips)
        torch.manual_seed(3)
        assert torch.equal(a, three.batch(clips))
    with pytest.raises(ValueError, match="a value for each of the 3 channels or one for all"):
        VideoClassificationPresetEval(crop_size=8, resize_size=(10, 12), mean=[0.5, 0.5],
                                      std=[0.25, 0.25])(video[0])


def test_without_a_working_numba_the_presets_take_torchs_passes(path, monkeypatch):
    """numba that cannot compile (e.g. no writable cache directory) or import is said once,
    then off; without numba the presets say nothing."""
    if path == "torch passes":
        pytest.skip("the one pass is already off")
    numba = pytest.importorskip("numba")

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot cache function: no locator available")

    monkeypatch.setattr(numba, "njit", refuse)
    onepass._kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="one pass is off.*no locator"):
            assert not onepass.enabled()
        onepass._kernel.cache_clear()
        monkeypatch.setitem(sys.modules, "numba", None)  # not installed
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not onepass.enabled()
        video = batch_of(2, 2, 16, 20)
        train = VideoClassificationPresetTrain(crop_size=(12, 12), resize_size=(16, 20))
        torch.manual_seed(5)
        without = train.batch(video)
    finally:
        monkeypatch.undo()
        onepass._kernel.cache_clear()
    assert onepass.enabled()
    torch.manual_seed(5)
    assert torch.equal(without, train.batch(video))
