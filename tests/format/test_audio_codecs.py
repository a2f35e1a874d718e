"""Audio codecs (raw, flac, none): each keeps its promise in the member itself, in both
readers and through make_loader, in verify, info and show; older builds still read."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from shardkin import Kinetics, ShardDataset, ShardError, make_loader
from shardkin.builder import build
from shardkin.builder import decode as builder_decode
from shardkin.format import audio
from shardkin.format.manifest import Manifest
from shardkin.format.options import AudioOptions, BuildOptions
from shardkin.inspection.info import summarize
from shardkin.inspection.sheet import contact_sheet
from shardkin.inspection.verify import verify_split
from shardkin.store.split import open_split

CODECS = ("raw", "flac", "none")


def _flac(x: np.ndarray) -> np.ndarray:
    """What flac gives back for float32 ``x``."""
    return audio.from_pcm16(*audio.to_pcm16(x))


def _frames_at(data: bytes) -> int:
    """Where an audio.flac payload's frames begin: after STREAMINFO and the gain block."""
    return audio.FLAC_HEAD + 4 + int.from_bytes(data[audio.FLAC_HEAD + 1:audio.FLAC_HEAD + 4],
                                                "big")


def _check_promise(x: np.ndarray, data: bytes) -> np.ndarray:
    """x's flac payload decodes to int16 * gain (exactly, in float32 and float64), within
    half a step of x (gain / 2, gain within 0.4% above peak / 32767), the peak within
    0.4% of full scale."""
    y = audio.decode_audio("audio.flac", data, check_md5=True)
    pcm, gain = audio.to_pcm16(x)
    peak = float(np.abs(x).max(initial=0))
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, audio.from_pcm16(pcm, gain))
    assert np.array_equal(y.astype(np.float64), pcm.astype(np.float64) * gain)  # exact
    assert np.abs(y.astype(np.float64) - x).max(initial=0) <= gain / 2
    if peak:
        assert peak / 32767 <= gain <= max(peak / 32767 * (1 + 2**-8), 2.0**-126)
        if gain > 2.0**-126:  # (the smallest gain: peaks below 2**-111 have fewer steps)
            assert 32639 <= np.abs(pcm).max() <= 32767  # the peak near full scale
    else:
        assert gain == 2**-15 and not y.any()
    return y


def test_flac_round_trips_within_half_a_step_of_the_peak():
    rng = np.random.default_rng(0)
    for channels, samples in [(1, 1), (1, 5000), (2, 12345), (3, 100), (8, 4608 * 2 + 1)]:
        x = (rng.standard_normal((channels, samples)) * 0.3).astype(np.float32)
        x[0, 0] = 1.5  # beyond full scale: kept, not clipped
        member, data = audio.encode_audio(x, "flac", 44100)
        assert member == "audio.flac"
        assert audio.flac_layout(data) == (channels, samples, 44100)
        y = _check_promise(x, data)
        assert abs(y[0, 0] - 1.5) <= 1.5 / 32767 / 2 * (1 + 2**-8)  # not clipped to 1
    for scale in (1e-3, 0.02, 1.01, 3.0, 1e-36):  # quiet, loud, beyond full scale, tiny
        x = (rng.uniform(-1, 1, (2, 3000)) * scale).astype(np.float32)
        y = _check_promise(x, audio.encode_audio(x, "flac", 16000)[1])
        assert np.abs(y - x).max() <= max(scale / 32767, 2.0**-126)
    pcm = rng.integers(-32767, 32768, (2, 3000)).astype(np.float32)
    pcm[0, 0] = 32767  # 16-bit audio at full scale comes back exact
    exact = pcm / np.float32(32768)
    np.testing.assert_array_equal(audio.decode_audio(*audio.encode_audio(exact, "flac", 8000)),
                                  exact)
    for silent in (np.zeros((2, 500), np.float32), np.zeros((2, 0), np.float32),
                   np.full((1, 9), -0.0, np.float32)):
        y = _check_promise(silent, audio.encode_audio(silent, "flac", 8000)[1])
        assert y.shape == silent.shape
    empty = audio.encode_audio(np.zeros((2, 0), np.float32), "flac", 0)
    assert audio.decode_audio(*empty, check_md5=True).shape == (2, 0)
    with pytest.raises(ValueError, match="1 to 8 channels"):
        audio.encode_audio(np.zeros((9, 10), np.float32), "flac", 8000)
    for bad in (np.nan, np.inf, 2.0**121):
        with pytest.raises(ValueError, match="finite"):
            audio.encode_audio(np.array([[0.5, bad]], np.float32), "flac", 8000)


def test_flac_members_written_before_gains_still_read():
    """STREAMINFO the last block, no gain tag: int16 / 32768, as before."""
    x = (np.random.default_rng(2).standard_normal((2, 4000)) * 0.2).astype(np.float32)
    for samples in (4000, 0):
        data = audio.encode_audio(x[:, :samples], "flac", 22050)[1]
        old = data[:4] + b"\x80" + data[5:audio.FLAC_HEAD] + data[_frames_at(data):]
        assert audio.flac_layout(old) == (2, samples, 22050)
        pcm = audio.to_pcm16(x[:, :samples])[0]
        y = audio.decode_audio("audio.flac", old, check_md5=True)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, pcm.astype(np.float32) / np.float32(32768))


def test_raw_and_none_members_and_plain_flac_tools():
    x = np.random.default_rng(1).standard_normal((2, 700)).astype(np.float32)
    member, data = audio.encode_audio(x, "raw")
    assert member == "audio.npy" and np.array_equal(audio.decode_audio(member, data), x)
    assert audio.encode_audio(x, "none") is None
    assert audio.audio_member(["video.npy", "cls"]) is None
    _, flac = audio.encode_audio(x * 0.1, "flac", 22050)
    pcm16, gain = audio.to_pcm16(x * 0.1)
    with av.open(io.BytesIO(flac)) as container:  # a plain FLAC demuxer reads the member
        tags = {k.upper(): v for k, v in container.metadata.items()}
        assert float(tags[audio.GAIN_TAG]) == gain  # and shows the gain tag
        stream = container.streams.audio[0]
        assert (stream.sample_rate, stream.channels) == (22050, 2)
        pcm = np.concatenate([f.to_ndarray() for f in container.decode(stream)], axis=1)
    np.testing.assert_array_equal(pcm.reshape(-1, 2).T, pcm16)


def test_damaged_flac_member_is_an_error():
    t = np.arange(20000) / 16000
    x = (0.4 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)
    member, data = audio.encode_audio(x, "flac", 16000)
    for pos in [*range(audio.FLAC_HEAD, _frames_at(data)),
                *range(_frames_at(data), len(data), len(data) // 25)]:
        for bit in (0x01, 0x20):  # the gain block byte by byte, then frames
            bad = bytearray(data)
            bad[pos] ^= bit
            with pytest.raises((ValueError, av.FFmpegError)):
                audio.decode_audio(member, bytes(bad))
    bad = bytearray(data)
    bad[4] ^= 0x80  # STREAMINFO made the last block: the gain block read as frames
    with pytest.raises((ValueError, av.FFmpegError)):
        audio.decode_audio(member, bytes(bad))
    bad = bytearray(data)
    bad[30] ^= 1  # the MD5: the samples decode, verify's check does not pass
    audio.decode_audio(member, bytes(bad))
    with pytest.raises(ValueError, match="MD5"):
        audio.decode_audio(member, bytes(bad), check_md5=True)
    with pytest.raises(ValueError, match="not a shardkin audio.flac"):
        audio.decode_audio(member, b"RIFF" + data[4:])


def test_options_default_and_older_builds():
    assert BuildOptions.from_kwargs().audio.audio_codec == "raw"
    assert BuildOptions.from_kwargs(video_codec="jpeg").audio.audio_codec == "flac"
    assert BuildOptions.from_kwargs(video_codec="zstd").audio.audio_codec == "raw"
    assert BuildOptions.from_kwargs(audio_codec="none", audio_rate=8000,
                                    audio_channels=2).audio == AudioOptions(0, 0, "none")
    with pytest.raises(ValueError, match="unknown audio codec"):
        BuildOptions.from_kwargs(audio_codec="mp3")
    older = BuildOptions.from_manifest({"video_codec": "jpeg", "jpeg_quality": 88})
    assert older.audio.audio_codec == "raw"  # not the new default for jpeg
    for version in (1, 2, 3):
        text = json.dumps({"classes": [], "format_version": version, "shards": [], "split": "t"})
        assert Manifest.parse(text.encode()).format_version == version
    with pytest.raises(ValueError, match="format_version 4"):
        Manifest.parse(text.replace(": 3", ": 4").encode())


def test_none_does_not_open_the_audio(made_root, monkeypatch):
    def refuse(*args):
        raise AssertionError("the audio track was opened")

    monkeypatch.setattr(builder_decode, "AudioTrack", refuse)
    path = str(made_root / "train" / "archery" / "b_2997.mkv")  # has audio
    clips = list(builder_decode.VideoCutter(path, BuildOptions.from_kwargs(
        frames_per_clip=8, audio_codec="none")))
    assert clips and all(c.audio.shape == (1, 0) for c in clips)


@pytest.fixture(scope="module")
def builds(made_root, tmp_path_factory) -> dict[str, Path]:
    """OUT of the made train split with each audio codec (raw frames, 8-frame clips)."""
    out = tmp_path_factory.mktemp("audio_codecs")
    for codec in CODECS:
        build(made_root, out / codec, "train", frames_per_clip=8, audio_codec=codec,
              clips_per_shard=6, workers=1, progress=False)
    return {codec: out / codec for codec in CODECS}


def _members(split: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for shard in sorted(split.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                found.setdefault(key, set()).add(ext)
    return found


def test_each_codec_in_manifest_members_and_json(builds):
    want = {"raw": "audio.npy", "flac": "audio.flac", "none": None}
    for codec, out in builds.items():
        manifest = json.loads((out / "train" / "manifest.json").read_text())
        assert manifest["format_version"] == (1 if codec == "raw" else 2)
        assert manifest["options"]["audio_codec"] == codec
        rests = set()
        for exts in _members(out / "train").values():
            rest = {e for e in exts if e.startswith("rest.")}  # a contiguous build's
            assert exts - rest == {"video.npy", "cls", "json"} | ({want[codec]} - {None})
            rests |= rest
        assert rests == {"rest.video.npy"} | ({f"rest.{want[codec]}"} - {"rest.None"})
        meta = Kinetics(out, split="train", return_dict=True)[0]
        assert meta["audio"].dtype == torch.float32
        with tarfile.open(next((out / "train").glob("*.tar"))) as tar:
            doc = json.loads(tar.extractfile(next(m for m in tar if m.name.endswith(".json")))
                             .read())
        assert doc["format_version"] == manifest["format_version"]
        assert doc.get("audio_codec", "raw") == codec
        assert verify_split(open_split(out, "train", head=False), progress=False) == []
        summary = summarize(open_split(out, "train", head=False).manifest)
        assert summary["options"]["audio_codec"] == codec
    sheet = contact_sheet(open_split(builds["none"], "train"), n=2, frames=2)
    assert sheet.size[0] > 0


def test_both_readers_and_make_loader(builds):
    raw, flac, none = (Kinetics(builds[c], split="train") for c in CODECS)
    assert len(raw) == len(flac) == len(none) > 0
    with_sound = 0
    for i in range(len(raw)):
        (v, a, label), (fv, fa, fl), (nv, na, nl) = raw[i], flac[i], none[i]
        assert torch.equal(v, fv) and torch.equal(v, nv) and label == fl == nl
        assert fa.dtype == torch.float32
        assert torch.equal(fa, torch.from_numpy(_flac(a.numpy())))
        assert na.dtype == torch.float32 and na.shape == (1, 0)
        with_sound += a.shape[1] > 0
    assert with_sound > 0
    streams = [ShardDataset(builds[c], "train", shuffle=False) for c in CODECS]
    for (v, a, label), (fv, fa, fl), (nv, na, nl) in zip(*streams, strict=True):
        assert torch.equal(v, fv) and torch.equal(v, nv) and label == fl == nl
        assert torch.equal(fa, torch.from_numpy(_flac(a.numpy())))
        assert na.dtype == torch.float32 and na.shape == (1, 0)
    loaders = [make_loader(ds, 4, num_workers=1) for ds in streams]
    for (v, a, label), (fv, fa, fl), (nv, na, nl) in zip(*loaders, strict=True):
        assert torch.equal(v, fv) and torch.equal(v, nv)
        assert torch.equal(label, fl) and torch.equal(label, nl)
        assert torch.equal(fa, torch.from_numpy(np.stack([_flac(c) for c in a.numpy()])))
        assert na.dtype == torch.float32 and na.shape == (len(label), 1, 0)


def test_older_and_newer_builds_read_side_by_side(builds, tmp_path):
    """A build made before audio codecs (no audio_codec option) reads and verifies as raw,
    next to a format version 2 build."""
    old = Path(shutil.copytree(builds["raw"], tmp_path / "old"))
    path = old / "train" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["options"]["audio_codec"]
    path.write_text(json.dumps(manifest, sort_keys=True))
    (old / "train" / "head.json").unlink()  # older builds had none: the manifest is read
    assert verify_split(open_split(old, "train", head=False), progress=False) == []
    assert summarize(open_split(old, "train", head=False).manifest)["options"][
        "audio_codec"] == "raw"
    older, newer = Kinetics(old, split="train"), Kinetics(builds["flac"], split="train")
    for i in range(len(older)):
        a, fa = older[i][1], newer[i][1]
        assert torch.equal(fa, torch.from_numpy(_flac(a.numpy())))
    batches = [next(iter(make_loader(ShardDataset(b, "train", shuffle=False), 3)))
               for b in (old, builds["flac"])]
    assert torch.equal(batches[0][0], batches[1][0])


def test_verify_and_readers_catch_a_damaged_flac_member(builds, tmp_path):
    split = Path(shutil.copytree(builds["flac"] / "train", tmp_path / "train"))
    shard = next(s for s in sorted(split.glob("*.tar")))
    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name.endswith(".audio.flac")
                      and audio.flac_layout(tar.extractfile(m).read(64))[1] > 0)
        head = tar.extractfile(member).read(256)
    key = member.name.partition(".")[0]
    data = bytearray(shard.read_bytes())
    data[member.offset_data + _frames_at(head) + 40] ^= 0x08  # in a frame
    shard.write_bytes(bytes(data))
    found = verify_split(open_split(split, head=False), progress=False)
    assert any(p.startswith(f"{shard.name} {key}: undecodable") for p in found), found
    assert any(p.startswith(f"{shard.name}: checksum mismatch") for p in found), found
    ds = Kinetics(split.parent, split="train", verify=False)  # the decoder sees it too
    with pytest.raises(ShardError, match="corrupt audio.flac member"):
        for i in range(len(ds)):
            ds[i]
    with pytest.raises(ShardError, match="corrupt audio.flac member"):
        list(ShardDataset(split.parent, "train", shuffle=False, verify=False))
    ds = Kinetics(split.parent, split="train")  # by default its checksum, before decoding
    with pytest.raises(ShardError, match=f"sample {key}: damaged: .*does not match its checksum"):
        for i in range(len(ds)):
            ds[i]
    with pytest.raises(ShardError, match=f"sample {key}: damaged: .*does not match its checksum"):
        list(ShardDataset(split.parent, "train", shuffle=False))
