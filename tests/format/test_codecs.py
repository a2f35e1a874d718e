"""Video codecs: raw, lossless zstd, per-frame JPEG."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from shardkin.builder import build
from shardkin.format import codecs
from shardkin.format.options import BuildOptions
from shardkin.synth import frame_image

from helpers import read_split

pytest.importorskip("zstandard")
pytest.importorskip("simplejpeg")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.stack([frame_image(i, 40, 24, seed=i) for i in range(5)])


def test_zstd_is_bit_identical_and_smaller(frames):
    member, data = codecs.encode_video(frames, "zstd", zstd_level=5)
    assert member == "video.npy.zst"
    raw_member, raw = codecs.encode_video(frames, "raw")
    assert raw_member == "video.npy" and len(data) < len(raw)
    np.testing.assert_array_equal(codecs.decode_video(member, data), frames)
    import zstandard

    assert zstandard.ZstdDecompressor().decompress(data) == raw  # the payload is the raw npy


def test_jpeg_round_trip_quality(frames):
    member, data = codecs.encode_video(frames, "jpeg", jpeg_quality=95)
    out = codecs.decode_video(member, data)
    assert member == "video.jpgs" and out.shape == frames.shape and out.dtype == np.uint8
    assert _psnr(out, frames) > 35
    low = codecs.decode_video(*codecs.encode_video(frames, "jpeg", jpeg_quality=30))
    assert _psnr(low, frames) < _psnr(out, frames)


def test_jpeg_psnr_target_holds_for_the_clip(frames):
    sizes = []
    for target in (30.0, 40.0, 45.0):
        member, data = codecs.encode_video(frames, "jpeg", jpeg_psnr=target)
        assert codecs.clip_psnr(frames, codecs.decode_video(member, data)) >= target
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    noisy = np.clip(frames.astype(int) + np.arange(frames.size).reshape(frames.shape) % 7 - 3,
                    0, 255).astype(np.uint8)
    assert codecs.clip_psnr(frames, noisy) == pytest.approx(_psnr(noisy, frames), abs=1e-9)
    assert codecs.clip_psnr(frames, frames) == float("inf")
    storage = BuildOptions.from_kwargs(video_codec="jpeg").storage
    assert (storage.jpeg_psnr, storage.jpeg_quality) == (codecs.JPEG_PSNR, None)
    storage = BuildOptions.from_kwargs(video_codec="jpeg", jpeg_quality=80).storage
    assert (storage.jpeg_psnr, storage.jpeg_quality) == (None, 80)


def test_corrupt_payloads_are_refused(frames):
    member, data = codecs.encode_video(frames, "jpeg")
    with pytest.raises(ValueError, match="not a shardkin"):
        codecs.decode_video(member, b"XXXX" + data[4:])
    with pytest.raises(ValueError, match="trailing"):
        codecs.decode_video(member, data + b"\0")
    with pytest.raises(ValueError, match="not a video member"):
        codecs.decode_video("video.gif", data)
    with pytest.raises(ValueError, match="unknown video codec"):
        codecs.encode_video(frames, "png")


@pytest.mark.parametrize("codec", ["zstd", "jpeg"])
def test_build_with_codec_matches_raw_build(made_root, tmp_path, codec):
    kw = dict(frames_per_clip=4, clips_per_shard=8, workers=1, progress=False)
    raw = build(made_root, tmp_path / "raw", "val", **kw)
    coded = build(made_root, tmp_path / codec, "val", video_codec=codec, audio_codec="raw", **kw)
    assert coded["totals"]["clips"] == raw["totals"]["clips"]
    assert coded["options"]["video_codec"] == codec
    _, raw_samples = read_split(tmp_path / "raw" / "val")
    _, coded_samples = read_split(tmp_path / codec / "val")
    member = codecs.MEMBER[codec]
    for a, b in zip(raw_samples, coded_samples):
        assert a["key"] == b["key"] and member in b and "video.npy" not in b
        video = codecs.decode_video(member, b[member])
        if codec == "zstd":
            np.testing.assert_array_equal(video, a["video.npy"])
        else:
            assert video.shape == a["video.npy"].shape and _psnr(video, a["video.npy"]) > 30
        np.testing.assert_array_equal(b["audio.npy"], a["audio.npy"])
    r = subprocess.run([sys.executable, "-m", "shardkin", "verify", str(tmp_path / codec / "val"),
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
