"""decode_device: workers hand on JPEG bytes, batches decoded in the main process. Without
a GPU here, decode_device="cpu" runs every step but nvJPEG; its batches must equal the
workers' own decoding, exactly, in every way of reading."""
from __future__ import annotations

import itertools
import json
import pickle
import struct
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data._utils.pin_memory import pin_memory

import shardkin.builder.plan
import shardkin.format.sample
from shardkin import Kinetics, ShardDataset, ShardError, make_loader, wds_decoder
from shardkin.builder import build
from shardkin.inspection.verify import verify_split
from shardkin.reader import collate
from shardkin.reader.collate import read_videos
from shardkin.reader.device import JpegBatch, decode_batch, decode_jpegs, pack_refs
from shardkin.store.split import open_split

from reader_fixtures import make_split

simplejpeg = pytest.importorskip("simplejpeg")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def built(made_root, tmp_path_factory) -> Path:
    """A contiguous jpeg build, 48x36 frames: 36 rows pad to 40 in the stacked JPEG."""
    out = tmp_path_factory.mktemp("device")
    build(made_root, out, "train", frames_per_clip=4, min_dimension=36, video_codec="jpeg",
          jpeg_quality=90, clips_per_shard=7, workers=2, progress=False)
    return out / "train"


@pytest.fixture(scope="module")
def old_build(made_root, tmp_path_factory) -> Path:
    """The same build as format version 2 wrote it: one JPEG a frame (SKJ1)."""
    def per_frame(video: np.ndarray, codec: str, zstd_level: int, quality: int | None,
                  psnr: float) -> tuple[str, bytes]:
        assert codec == "jpeg" and quality is not None
        frames = [simplejpeg.encode_jpeg(np.ascontiguousarray(f), quality=quality,
                                         colorspace="RGB", colorsubsampling="444") for f in video]
        t, h, w, _ = video.shape
        return "video.jpgs", (struct.pack(f"<4s3I{t}I", b"SKJ1", t, h, w, *map(len, frames))
                              + b"".join(frames))

    out = tmp_path_factory.mktemp("device-old")
    with pytest.MonkeyPatch.context() as mp:  # workers=1 builds in this process
        mp.setattr(shardkin.format.sample, "encode_video", per_frame)
        mp.setattr(shardkin.builder.plan, "format_version", lambda audio, video: 2)
        mp.setattr(shardkin.format.sample, "format_version", lambda audio, video: 2)
        build(made_root, out, "train", frames_per_clip=4, min_dimension=36, video_codec="jpeg",
              jpeg_quality=90, clips_per_shard=7, workers=1, progress=False)
    return out / "train"


def same(a, b) -> None:
    """Two batches (tuples or dicts) hold equal values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    else:
        assert a == b


def test_byte_batch_holds_each_clip_once_and_decodes_to_the_workers_pixels(built):
    ds = ShardDataset(built, shuffle=False)
    refs = [r for r, _ in itertools.islice(ds._stream(0, 1), 6)]
    batch = pack_refs(refs, ds)
    assert isinstance(batch, JpegBatch) and batch.size.tolist() == [6, 4, 36, 48]
    ends, runs = batch.offsets.tolist(), batch.runs.tolist()
    assert ends[0] == 0 and ends[-1] == len(batch.data) and ends == sorted(set(ends))
    for lo, hi in zip(ends, ends[1:]):
        image = bytes(batch.data[lo:hi])
        assert image[:2] == b"\xff\xd8" and image[-2:] == b"\xff\xd9"
    assert runs == [[i, 0, 4, 40] for i in range(6)]  # one JPEG a clip, rows padded to 40
    assert (batch.layout, batch.dtype, len(batch.where)) == ("TCHW", "uint8", 6)
    want = read_videos(refs, torch.uint8).permute(0, 1, 4, 2, 3)
    same(decode_jpegs(batch, CPU), want)
    windows = ShardDataset(built, shuffle=False, frames_per_clip=6, step_between_clips=1)
    refs = [r for r, _ in itertools.islice(windows._stream(0, 1), 8)]
    batch = pack_refs(refs, windows)
    per_clip = [[r[2] for r in batch.runs.tolist() if r[0] == i] for i in range(8)]
    assert all(sum(n) == 6 for n in per_clip) and any(len(n) == 2 for n in per_clip)
    same(decode_jpegs(batch, CPU), read_videos(refs, torch.uint8).permute(0, 1, 4, 2, 3))


@pytest.mark.parametrize("kw", [{}, {"clips_per_video": 2}, {"return_dict": True},
                                {"frames_per_clip": 6, "step_between_clips": 1},
                                {"output_format": "THWC", "verify": True},
                                {"return_dict": True, "video_dtype": torch.uint8}],
                         ids=["stored", "clips_per_video", "dicts", "windows", "thwc-verify",
                              "dicts-uint8"])
def test_loader_batches_equal_the_workers_decoding(built, kw):
    def epoch(**more):
        return list(make_loader(ShardDataset(built, seed=3, **kw), 5, num_workers=2, **more))

    want, got = epoch(), epoch(decode_device="cpu")
    assert len(want) == len(got) > 2
    for a, b in zip(want, got):
        same(a, b)
    scaled = epoch(decode_device="cpu", device_transform=lambda v: v[:, :2].float() / 255)
    video = scaled[0]["video"] if kw.get("return_dict") else scaled[0][0]
    assert video.dtype == torch.float32 and video.shape[1] == 2 and video.max() <= 1


def test_resume_mid_epoch_gives_the_rest_of_the_epoch(built):
    def loader():
        return make_loader(ShardDataset(built, seed=5, return_dict=True, frames_per_clip=6,
                                        step_between_clips=2), 3, num_workers=2,
                           decode_device="cpu")

    def by_key(batches) -> dict:
        return {(v, c): b["video"][i] for b in batches
                for i, (v, c) in enumerate(zip(b["video_index"].tolist(),
                                               b["clip_index"].tolist()))}

    full = by_key(make_loader(ShardDataset(built, seed=5, return_dict=True, frames_per_clip=6,
                                           step_between_clips=2), 3, num_workers=2))
    first = loader()
    head = list(itertools.islice(first, 2))
    rest = loader()
    rest.load_state_dict(first.state_dict())
    got = [*head, *rest]
    assert sum(len(b["label"]) for b in got) == len(full)
    for key, video in by_key(got).items():
        assert torch.equal(video, full[key])


def test_kinetics_through_make_loader_and_items(built):
    k = Kinetics(built, split="train", frames_per_clip=6, step_between_clips=2)

    def epoch(**more):
        sampler = RandomSampler(k, generator=torch.Generator().manual_seed(1))
        return list(make_loader(k, 4, num_workers=2, sampler=sampler, **more))

    for a, b in zip(epoch(), epoch(decode_device="cpu"), strict=True):
        same(a, b)
    assert k.decode_device is None  # the loader's copy hands out JPEGs, not the user's
    items = Kinetics(built, split="train", frames_per_clip=6, step_between_clips=2,
                     decode_device="cpu")
    video, audio, label = items[3]
    assert isinstance(video, JpegBatch)
    # spawned workers get the dataset pickled: the decode device goes with it
    assert pickle.loads(pickle.dumps(items)).decode_device == torch.device("cpu")
    same(decode_batch((video, audio, label), "cpu"), (k[3][0][None], k[3][1], k[3][2]))


def test_own_loop_with_a_dataloader(built):
    ds = ShardDataset(built, seed=2, decode_device="cpu")
    items = DataLoader(ds, 4, num_workers=2, collate_fn=collate)
    plain = DataLoader(ShardDataset(built, seed=2), 4, num_workers=2, collate_fn=collate)
    for a, b in zip(items, plain, strict=True):
        assert isinstance(a[0], JpegBatch) and a[0].size[0] == len(a[2])
        same(decode_batch(a, "cpu"), b)
    item = next(iter(ShardDataset(built, seed=2, decode_device="cpu", return_dict=True)))
    assert isinstance(item["video"], JpegBatch) and item["video"].layout == "CTHW"


def test_the_byte_batch_survives_pinning(built, monkeypatch):
    """The DataLoader's pin_memory thread pins each tensor of the batch's JpegBatch and
    keeps its structure (pinning itself needs CUDA, so it is recorded here)."""
    pinned = []

    def pin(t, *args, **kwargs):
        pinned.append(t.data_ptr())
        return t.clone()

    ds = ShardDataset(built, shuffle=False)
    batch = (pack_refs([r for r, _ in itertools.islice(ds._stream(0, 1), 3)], ds),
             torch.zeros(3, 1, 5), torch.arange(3))
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    out = pin_memory(batch)
    jb = out[0]
    assert isinstance(jb, JpegBatch) and (jb.layout, jb.dtype, jb.where) == batch[0][4:]
    assert {t.data_ptr() for t in (*batch[0][:4], *batch[1:])} <= set(pinned)
    same(decode_jpegs(jb, CPU), decode_jpegs(batch[0], CPU))


def test_pinned_by_default_with_a_cuda_decode_device(built, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader = make_loader(ShardDataset(built), 4, num_workers=1, decode_device="cuda")
    assert loader._kwargs["pin_memory"] and loader.decode_device == torch.device("cuda")
    assert not make_loader(ShardDataset(built), 4, decode_device="cpu")._kwargs["pin_memory"]
    with pytest.raises(ValueError, match="the dataset decodes on cpu"):
        make_loader(ShardDataset(built, decode_device="cpu"), 4, decode_device="cuda")


def test_api_errors(built):
    if not torch.cuda.is_available():
        for make in (lambda: ShardDataset(built, decode_device="cuda"),
                     lambda: make_loader(ShardDataset(built), 4, decode_device="cuda"),
                     lambda: Kinetics(built, decode_device="cuda:1")):
            with pytest.raises(ValueError, match="torch sees no CUDA device: pass decode_device"):
                make()
    with pytest.raises(ValueError, match="must be a CUDA device or 'cpu'"):
        ShardDataset(built, decode_device="meta")
    for make in (lambda: ShardDataset(built, transform=lambda v: v, decode_device="cpu"),
                 lambda: Kinetics(built, transform=lambda v: v, decode_device="cpu"),
                 lambda: make_loader(ShardDataset(built, transform=lambda v: v), 4,
                                     decode_device="cpu")):
        with pytest.raises(ValueError, match="transform the decoded batch"):
            make()
    with pytest.raises(ValueError, match="give decode_device too"):
        make_loader(ShardDataset(built), 4, device_transform=lambda v: v)


def test_a_damaged_jpeg_names_its_clip(built):
    ds = ShardDataset(built, shuffle=False)
    refs = [r for r, _ in itertools.islice(ds._stream(0, 1), 3)]
    batch = pack_refs(refs, ds)
    lo, hi = batch.offsets[1:3].tolist()
    batch.data[hi - 30 : hi - 28] = torch.tensor([0xFF, 0xD9], dtype=torch.uint8)
    with pytest.raises(ShardError, match=rf"{refs[1].key}.* its JPEG does not decode"):
        decode_jpegs(batch, CPU)


def test_raw_builds_are_read_by_the_workers_and_moved(tmp_path):
    folder = make_split(tmp_path, [3, 2, 4], 2)
    want = list(make_loader(ShardDataset(folder, seed=1), 4, num_workers=2))
    got = list(make_loader(ShardDataset(folder, seed=1), 4, num_workers=2, decode_device="cpu",
                           device_transform=lambda v: v.float()))
    for a, b in zip(want, got, strict=True):
        same([a[0].float(), *a[1:]], b)


def test_builds_of_format_version_2_still_read(built, old_build, tmp_path):
    """Pixels are the same in both layouts at one quality: the old build reads as the new
    one, by every reader, and verify accepts it, but not as version 3."""
    assert json.loads((old_build / "manifest.json").read_text())["format_version"] == 2
    assert json.loads((built / "manifest.json").read_text())["format_version"] == 3
    shard = next(old_build.glob("*.tar")).read_bytes()
    assert b"SKJ1" in shard and b"SKJ2" not in shard
    for kw in ({}, {"frames_per_clip": 6, "step_between_clips": 1}):
        for more in ({}, {"decode_device": "cpu"}):
            new = make_loader(ShardDataset(built, seed=4, **kw), 5, num_workers=2, **more)
            old = make_loader(ShardDataset(old_build, seed=4, **kw), 5, num_workers=2, **more)
            for a, b in zip(new, old, strict=True):
                same(a, b)
    old, new = Kinetics(old_build, frames_per_clip=6), Kinetics(built, frames_per_clip=6)
    for i in range(0, len(new), 7):
        same(old[i], new[i])
    members = [{m.name: tar.extractfile(m).read() for m in tar if "video" in m.name}
               for tar in (tarfile.open(next(d.glob("*.tar"))) for d in (old_build, built))]
    assert members[0].keys() == members[1].keys()
    for name, data in members[0].items():
        ext = "." + name.partition(".")[2]
        same(wds_decoder(ext, data), wds_decoder(ext, members[1][name]))
    assert verify_split(open_split(old_build, head=False), progress=False) == []
    manifest = json.loads((old_build / "manifest.json").read_text())
    copy = tmp_path / "train"
    copy.mkdir()
    for f in old_build.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
    (copy / "head.json").write_text(json.dumps(  # as a build of version 3 would have it
        {**json.loads((old_build / "head.json").read_text()), "format_version": 3}))
    found = verify_split(open_split(copy, head=False), progress=False)
    assert found and all("video.jpgs is in the layout of format version 1-2, the build is 3"
                         in line for line in found)


class FakeNvjpeg:
    """``torchvision.io`` as _on_cuda calls it, decoding with libjpeg-turbo on the CPU: the
    CUDA path's placement of decoded images, tested without a GPU."""

    class ImageReadMode:
        RGB = "RGB"

    calls: list[int] = []

    @classmethod
    def decode_jpeg(cls, images, mode, device):
        single = isinstance(images, torch.Tensor)
        cls.calls.append(1 if single else len(images))
        out = [torch.from_numpy(simplejpeg.decode_jpeg(i.numpy(), colorspace="RGB")).permute(
            2, 0, 1).contiguous() for i in ([images] if single else images)]
        return out[0] if single else out


@pytest.mark.parametrize("padded", [True, False])
def test_cuda_placement_with_a_stand_in_decoder(built, tmp_path, monkeypatch, padded):
    from shardkin.reader.device import _on_cuda

    monkeypatch.setitem(sys.modules, "torchvision.io", FakeNvjpeg)
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    folder = built if padded else make_split(tmp_path, [3, 2, 4], 2, codec="jpeg")
    for kw in ({}, {"frames_per_clip": 6, "step_between_clips": 1}) if padded else ({},):
        ds = ShardDataset(folder, shuffle=False, **kw)
        refs = [r for r, _ in itertools.islice(ds._stream(0, 1), 5)]
        batch = pack_refs(refs, ds)
        ends, runs = batch.offsets.tolist(), batch.runs.tolist()
        images = [batch.data[lo:hi] for lo, hi in zip(ends, ends[1:])]
        FakeNvjpeg.calls.clear()
        got = _on_cuda(images, runs, tuple(batch.size.tolist()), CPU, batch.where)
        assert FakeNvjpeg.calls == [len(images)]  # one batched call
        assert got.is_contiguous()
        same(got, decode_jpegs(batch, CPU).contiguous())
    batch.data[ends[2] - 30 : ends[2] - 28] = torch.tensor([0xFF, 0xD9], dtype=torch.uint8)

    decode = FakeNvjpeg.decode_jpeg

    def fails(images, mode, device):
        if isinstance(images, list) or bytes(images[-30:-28].tolist()) == b"\xff\xd9":
            raise RuntimeError("nvjpeg status 6")
        return decode(images, mode, device)

    monkeypatch.setattr(FakeNvjpeg, "decode_jpeg", fails)
    images = [batch.data[lo:hi] for lo, hi in zip(ends, ends[1:])]
    clip = int(batch.runs[1, 0])
    with pytest.raises(ShardError, match=rf"{batch.where[clip]}: its JPEG does not decode"):
        _on_cuda(images, batch.runs.tolist(), tuple(batch.size.tolist()), CPU, batch.where)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.delitem(sys.modules, "torchvision.io")
    with pytest.raises(ImportError, match="pip install torchvision"):
        _on_cuda(images, batch.runs.tolist(), tuple(batch.size.tolist()), CPU, batch.where)
