"""shardkin.wds_decoder: webdataset pipelines give the readers' tensors for every codec
(video: raw, zstd, jpeg; audio: raw npy, flac, none)."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import shardkin
from shardkin.builder import build
from shardkin.format.npy import encode_npy
from shardkin.format.wds import decoder

wds = pytest.importorskip("webdataset")
pytest.importorskip("zstandard")
pytest.importorskip("simplejpeg")

VIDEO = "video.npy;video.npy.zst;video.jpgs"
AUDIO = "audio.npy;audio.flac"


@pytest.fixture(scope="module", params=[("raw", "raw"), ("zstd", "none"), ("jpeg", "flac")],
                ids="-".join)
def split(request, made_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """(split folder, shard paths) of made_root's train split built with one video codec
    and one audio codec."""
    video_codec, audio_codec = request.param
    out = tmp_path_factory.mktemp(video_codec)
    m = build(made_root, out, "train", frames_per_clip=4, min_dimension=24, clips_per_shard=7,
              video_codec=video_codec, audio_codec=audio_codec, workers=1, progress=False)
    assert len(m["shards"]) > 1 and m["options"]["audio_codec"] == audio_codec
    return out / "train", [str(out / "train" / s["name"]) for s in m["shards"]]


def _reference(split_dir: Path) -> dict[tuple[int, int], tuple]:
    """Every clip as Kinetics gives it (THWC), by (video_index, clip_index)."""
    keys = shardkin.Kinetics(split_dir, split="train", return_dict=True)
    clips = shardkin.Kinetics(split_dir, split="train", output_format="THWC")
    return {(keys[i]["video_index"], keys[i]["clip_index"]): clips[i] for i in range(len(clips))}


def test_samples_equal_the_readers_pixel_for_pixel(split):
    split_dir, urls = split
    reference = _reference(split_dir)
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode(shardkin.wds_decoder))
    assert len(samples) == len(reference)
    seen = set()
    for s in samples:
        meta = s["json"]
        where = meta["video_index"], meta["clip_index"]
        video, audio, label = reference[where]
        got = s[next(m for m in VIDEO.split(";") if m in s)]
        assert got.dtype == torch.uint8 and got.shape == video.shape and got.shape[3] == 3
        assert torch.equal(got, video)
        sound = next((s[m] for m in AUDIO.split(";") if m in s), torch.zeros(1, 0))
        assert sound.dtype == torch.float32 and torch.equal(sound, audio)
        assert type(s["cls"]) is int and s["cls"] == label == meta["label"]
        seen.add(where)
    assert seen == set(reference)


def test_to_tuple_and_shardkin_dataset_agree(split):
    split_dir, urls = split
    pipeline = wds.WebDataset(urls, shardshuffle=False).decode(shardkin.wds_decoder)
    has_audio = shardkin.load_manifest(split_dir)["options"]["audio_codec"] != "none"
    pipeline = pipeline.to_tuple(VIDEO, AUDIO, "cls") if has_audio else pipeline.to_tuple(
        VIDEO, "cls").map(lambda t: (t[0], torch.zeros(1, 0), t[1]))
    ds = shardkin.ShardDataset(split_dir, "train", shuffle=False, output_format="THWC")
    got = list(pipeline)
    assert len(got) == len(ds)
    for (video, audio, label), (ref_video, ref_audio, ref_label) in zip(got, ds, strict=True):
        assert torch.equal(video, ref_video) and torch.equal(audio, ref_audio)
        assert label == ref_label


def test_combined_with_webdatasets_own_handlers(tmp_path):
    """Members it does not know go on to webdataset's handlers; its own come first."""
    from PIL import Image

    video = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    audio = np.ones((1, 5), np.float32)
    png = io.BytesIO()
    Image.fromarray(video[0]).save(png, format="png")
    with wds.TarWriter(str(tmp_path / "s.tar")) as sink:
        sink.write({"__key__": "00000000_000000", "video.npy": encode_npy(video),
                    "audio.npy": encode_npy(audio), "cls": b"3", "json": b'{"a": 1}',
                    "png": png.getvalue(), "txt": b"hello", "extra.npy": encode_npy(audio)})
    (s,) = wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False).decode(
        "torchrgb8", shardkin.wds_decoder)
    assert torch.equal(s["video.npy"], torch.from_numpy(video)) and s["video.npy"].is_contiguous()
    assert torch.equal(s["audio.npy"], torch.from_numpy(audio))
    assert s["cls"] == 3 and s["json"] == {"a": 1} and s["txt"] == "hello"
    assert torch.equal(s["png"], torch.from_numpy(video[0]).permute(2, 0, 1))  # webdataset's
    assert isinstance(s["extra.npy"], np.ndarray)  # not a shardkin member: webdataset's npy


def test_unknown_members_are_left_and_bad_ones_refused():
    assert decoder(".jpg", b"x") is None and decoder(".video.mp4", b"x") is None
    assert decoder(".VIDEO.NPY", encode_npy(np.zeros((1, 2, 2, 3), np.uint8))).shape == (1, 2, 2, 3)
    with pytest.raises(ValueError, match="not uint8"):
        decoder(".video.npy", encode_npy(np.zeros((1, 2, 2, 3), np.float32)))
    with pytest.raises(ValueError, match="not float32"):
        decoder(".audio.npy", encode_npy(np.zeros((1, 2, 2), np.float32)))
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="unsupported npy header"):
        decoder(".audio.npy", pickled.getvalue())


def test_import_does_not_import_torch():
    code = "import sys, shardkin; shardkin.wds_decoder; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rest_members_decode_and_windows_are_cut_from_every_codec(split):
    """The tails (rest.video.*) decode like clips, and windows cut at read time from any
    codec are the stored frames and tails in order, with their marks' sound."""
    split_dir, urls = split
    frames, marks, sound = {}, {}, {}
    for s in sorted(wds.WebDataset(urls, shardshuffle=False).decode(shardkin.wds_decoder),
                    key=lambda s: (s["json"]["video_index"], s["json"]["clip_index"])):
        v, meta = s["json"]["video_index"], s["json"]
        parts = [s[m] for m in VIDEO.split(";") if m in s]
        parts += [s[f"rest.{m}"] for m in VIDEO.split(";") if f"rest.{m}" in s]
        assert all(p.dtype == torch.uint8 and p.shape[1:] == parts[0].shape[1:] for p in parts)
        frames[v] = torch.cat([frames.get(v, parts[0][:0]), *parts])
        if "audio_marks" in meta:
            rest = meta.get("rest", {})
            pairs = marks.setdefault(v, ([], []))
            pairs[0].extend(meta["audio_marks"]["starts"] + rest.get("starts", []))
            pairs[1].extend(meta["audio_marks"]["ends"] + rest.get("ends", []))
            sound.setdefault(v, meta["audio_marks"]["first"])
    ds = shardkin.Kinetics(split_dir, split="train", frames_per_clip=6, step_between_clips=3,
                           output_format="THWC")
    assert len(ds) == sum((len(f) - 6) // 3 + 1 for f in frames.values() if len(f) >= 6)
    for i in range(len(ds)):
        v, k = ds.video_clips.get_clip_location(i)
        video, audio, _ = ds[i]
        assert torch.equal(video, frames[v][k * 3 : k * 3 + 6])
        if v in marks:
            starts, ends = marks[v]
            assert audio.shape[1] == ends[k * 3 + 5] - starts[k * 3]
