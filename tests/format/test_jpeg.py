"""The jpeg member: a clip as one JPEG (format version 3), and the one-JPEG-a-frame layout
of versions 1-2, checked against simplejpeg and Pillow used directly."""
from __future__ import annotations

import io
import itertools
import struct

import numpy as np
import pytest

from shardkin.format import codecs, jpeg
from shardkin.synth import frame_image

simplejpeg = pytest.importorskip("simplejpeg")


def clip(frames: int, width: int, height: int) -> np.ndarray:
    noise = np.random.default_rng(frames).integers(0, 24, (frames, height, width, 3))
    return np.stack([frame_image(i, width, height, seed=i) for i in range(frames)]) ^ noise.astype(
        np.uint8)


def encode(video: np.ndarray, quality: int) -> bytes:
    return codecs.encode_video(video, "jpeg", jpeg_quality=quality)[1]


def per_frame(video: np.ndarray, quality: int) -> list[bytes]:
    """What format versions 1-2 stored: each frame its own JPEG (unpadded)."""
    return [simplejpeg.encode_jpeg(np.ascontiguousarray(f), quality=quality, colorspace="RGB",
                                   colorsubsampling="444") for f in video]


def old_member(video: np.ndarray, quality: int) -> bytes:
    frames = per_frame(video, quality)
    t, h, w, _ = video.shape
    return struct.pack(f"<4s3I{t}I", b"SKJ1", t, h, w, *map(len, frames)) + b"".join(frames)


def scan_start(image: bytes) -> int:
    """Where a JPEG's scan data starts: after its SOS segment."""
    sos = image.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(image[sos + 2 : sos + 4], "big")


def header(data: bytes) -> tuple[int, ...]:
    """T, H, W, parts, then (frames, bytes) of each part."""
    t, h, w, p = struct.unpack_from("<4I", data, 4)
    return (t, h, w, p, *struct.unpack_from(f"<{2 * p}I", data, 20))


@pytest.mark.parametrize("height", [24, 21, 9])
def test_pixels_and_scan_bytes_equal_each_frame_encoded_alone(height):
    """Heights off the 8-row block are padded as libjpeg pads a frame alone: the stacked
    image's scan data is each frame's own, byte for byte, so the pixels are too."""
    video = clip(6, 37, height)
    data = encode(video, 85)
    assert data[:4] == b"SKJ2" and header(data)[:4] == (6, height, 37, 1)
    alone = per_frame(video, 85)
    want = np.stack([simplejpeg.decode_jpeg(f, colorspace="RGB") for f in alone])
    np.testing.assert_array_equal(jpeg.decode(data), want)
    part = data[20 + 8 + 4 * 6 :]
    starts = [*struct.unpack_from("<6I", data, 28), len(part)]  # the last ends at EOI
    for i, frame in enumerate(alone):
        assert part[starts[i] : starts[i + 1] - 2] == frame[scan_start(frame) : -2]
    assert len(data) < len(old_member(video, 85))  # one header instead of six


def test_any_frames_decode_alone_as_standard_jpegs():
    Image = pytest.importorskip("PIL.Image")
    video = clip(7, 20, 13)
    data = encode(video, 90)
    whole = jpeg.decode(data)
    for a, b in itertools.combinations(range(8), 2):
        np.testing.assert_array_equal(jpeg.decode(data, a, b), whole[a:b])
        (t, h, w), runs = jpeg.runs(data, a, b)
        assert (t, h, w) == (7, 13, 20) and [(r.first, r.frames, r.rows) for r in runs] == [
            (0, b - a, 16)]
        image = np.asarray(Image.open(io.BytesIO(bytes(runs[0].data))).convert("RGB"))
        np.testing.assert_array_equal(image.reshape(b - a, 16, 20, 3)[:, :13], whole[a:b])
    assert jpeg.decode(data, 3, 3).shape == (0, 13, 20, 3)
    out = np.zeros((2, 13, 20, 3), np.uint8)
    assert jpeg.decode(data, 5, 7, out) is out and np.array_equal(out, whole[5:])
    with pytest.raises(ValueError, match="not in a clip of 7"):
        jpeg.decode(data, 2, 8)


def test_parts_split_tall_clips_and_huge_frames():
    video = np.repeat(clip(3, 8, 8), 2800, axis=0)[:8200]  # 8200 x 8 rows > 65500
    data = encode(video, 70)
    assert header(data)[:6] == (8200, 8, 8, 2, 8187, header(data)[5])
    whole = jpeg.decode(data)
    np.testing.assert_array_equal(whole, np.stack([simplejpeg.decode_jpeg(f, colorspace="RGB")
                                                   for f in per_frame(video, 70)]))
    (_, _, _), runs = jpeg.runs(data, 8180, 8195)  # across the parts
    assert [(r.first, r.frames) for r in runs] == [(0, 7), (7, 8)]
    np.testing.assert_array_equal(jpeg.decode(data, 8180, 8195), whole[8180:8195])
    big = clip(2, 2048, 2056)  # 256 x 257 blocks: more than a restart interval counts
    data = encode(big, 60)
    first = data[header(data)[0] * 4 + 20 + 16 :]
    assert header(data)[3] == 2 and b"\xff\xdd" not in first[: scan_start(first)]
    np.testing.assert_array_equal(jpeg.decode(data, 1, 2), jpeg.decode(data)[1:])


def test_the_layout_of_versions_1_and_2_still_decodes():
    video = clip(5, 16, 12)
    data = old_member(video, 80)
    want = np.stack([simplejpeg.decode_jpeg(f, colorspace="RGB") for f in per_frame(video, 80)])
    np.testing.assert_array_equal(jpeg.decode(data), want)
    np.testing.assert_array_equal(jpeg.decode(data, 1, 4), want[1:4])
    (_, h, _), runs = jpeg.runs(data, 1, 4)
    assert [(r.first, r.frames, r.rows) for r in runs] == [(0, 1, 12), (1, 1, 12), (2, 1, 12)]


def test_damage_is_a_value_error_before_any_allocation():
    video = clip(4, 16, 16)
    data = encode(video, 80)
    part = 20 + 8 + 4 * 4
    starts = struct.unpack_from("<4I", data, 28)
    sof = part + data[part:].index(b"\xff\xc0")
    dri = part + data[part:].index(b"\xff\xdd")
    restart = part + starts[2] - 2  # RST1, closing frame 1
    assert data[restart : restart + 2] == b"\xff\xd1"
    bad = [
        b"SKJ3" + data[4:],
        data + b"\0",
        data[:-1],
        data[:30],
        struct.pack("<4s4I", b"SKJ2", 1 << 30, 16, 16, 1) + data[20:],  # forged frame count
        data[:8] + struct.pack("<I", 1 << 20) + data[12:],  # forged height
        data[:16] + struct.pack("<I", 2) + data[20:],  # forged part count
        data[:28] + struct.pack("<I", 0) + data[32:],  # a frame offset off its marker
        data[:36] + struct.pack("<I", 1 << 31) + data[40:],
        data[: sof + 5] + struct.pack(">H", 60000) + data[sof + 7 :],  # the image's height
        data[:dri] + b"\xff\xfe" + data[dri + 2 :],  # no restart interval
        data[:restart] + b"\xff\xd5" + data[restart + 2 :],  # a marker misnumbered
    ]
    for payload in bad:
        with pytest.raises(ValueError):
            jpeg.decode(payload)
    scan = bytearray(data)
    scan[-30:-28] = b"\xff\xd9"  # an end inside the last frame's scan data (libjpeg, strict)
    with pytest.raises(ValueError, match="premature end"):
        jpeg.decode(bytes(scan))
    np.testing.assert_array_equal(jpeg.decode(bytes(scan), 0, 3), jpeg.decode(data, 0, 3))
