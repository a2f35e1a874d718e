"""Make small synthetic Kinetics-style datasets with PyAV (for the demo, tests and benchmarks).

Frames are smooth colour gradients that move with the frame index, so every frame
differs; audio is a sine whose pitch depends on the class.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# container suffix -> (video codec, audio codec or None)
CODECS = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "libopus"),
    ".webm": ("libvpx-vp9", "libopus"),
    ".avi": ("mpeg4", None),
}


def frame_image(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3] test image for frame ``index``."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(width - 1, 1) + 7 * index + seed * 40) % 256
    g = (y * 255 // max(height - 1, 1) + 3 * index) % 256
    b = ((x + y) // 4 + 11 * index + seed * 90) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def make_video(
    path: str | os.PathLike,
    frames: int,
    fps: Fraction | int | float = 30,
    size: tuple[int, int] = (64, 48),
    audio_rate: int | None = 16000,
    audio_channels: int = 1,
    seed: int = 0,
    container_options: dict | None = None,
) -> Path:
    """Encode ``frames`` frames (and a sine of the same length) into ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vcodec, acodec = CODECS[path.suffix.lower()]
    fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    width, height = size
    with av.open(os.fspath(path), "w", options=container_options or {}) as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if vcodec == "libx264":
            vs.options = {"preset": "ultrafast", "g": "30", "bf": "2"}
        as_ = None
        if audio_rate and acodec:
            rate = 48000 if acodec == "libopus" else audio_rate
            as_ = out.add_stream(acodec, rate=rate)
            as_.layout = "mono" if audio_channels == 1 else "stereo"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height, seed), format="rgb24")
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if as_ is not None:
            total = int(frames / fps * as_.rate)
            t = np.arange(total) / as_.rate
            wave = (0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t)).astype(np.float32)
            chunk = as_.codec_context.frame_size or 1024
            for start in range(0, total, chunk):
                data = np.tile(wave[start : start + chunk], (audio_channels, 1))
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp",
                                                layout=as_.layout.name)
                af.rate, af.pts = as_.rate, start
                out.mux(as_.encode(af))
            out.mux(as_.encode(None))
    return path


def make_dataset(root: str | os.PathLike, classes: int = 3, videos_per_class: int = 2,
                 frames: int = 48, splits: tuple[str, ...] = ("train", "val"),
                 size: tuple[int, int] = (96, 72)) -> Path:
    """A small ``root/<split>/<class>/<video>.mp4`` tree."""
    root = Path(root)
    for split in splits:
        for c in range(classes):
            for v in range(videos_per_class):
                make_video(root / split / f"class_{c}" / f"video_{v}.mp4",
                           frames + 8 * v, 30, size, seed=c)
    return root
