"""Independent references for the tests: read shards with tarfile/np.load, decode with
plain PyAV."""
from __future__ import annotations

import io
import itertools
import json
import math
import tarfile
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from shardkin import make_loader
from shardkin.builder.clips import ClipRule, output_size


def read_split(split_dir: Path) -> tuple[dict, list[dict]]:
    """(manifest, samples in shard order) of a built split."""
    manifest = json.loads((split_dir / "manifest.json").read_text())
    samples = []
    for shard in manifest["shards"]:
        with tarfile.open(split_dir / shard["name"]) as tar:
            current: dict = {}
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                if current.get("key") != key:
                    current = {"key": key, "shard": shard["name"]}
                    samples.append(current)
                data = tar.extractfile(m).read()
                if ext.endswith(".npy"):
                    current[ext] = np.load(io.BytesIO(data), allow_pickle=False)
                elif ext in ("video.npy.zst", "video.jpgs"):
                    current[ext] = data
                elif ext == "cls":
                    current["cls"] = int(data)
                elif ext == "json":
                    current["json"] = json.loads(data)
    return manifest, samples


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def decode_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def video_start(path: Path) -> Fraction:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        return Fraction(f.pts) * f.time_base


def decode_audio(path: Path, rate: int = 0, channels: int = 0) -> tuple[np.ndarray, Fraction, int]:
    """Whole audio as float32 [C, S] (resampled when asked), the time of sample 0 and the rate."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        rate = rate or s.codec_context.sample_rate
        ch = channels or s.codec_context.channels
        rs = av.AudioResampler(format="fltp", layout=f"{ch}c", rate=rate)
        chunks, origin = [], None
        for f in c.decode(s):
            if origin is None:
                origin = Fraction(f.pts) * f.time_base
            chunks += [o.to_ndarray().reshape(ch, -1) for o in rs.resample(f)]
        chunks += [o.to_ndarray().reshape(ch, -1) for o in rs.resample(None)]
    return np.concatenate(chunks, axis=1), origin, rate


def audio_span(start: Fraction, end: Fraction, origin: Fraction, rate: int) -> slice:
    """Samples whose presentation time lies in [start, end)."""
    return slice(max(0, math.ceil((start - origin) * rate)),
                 max(0, math.ceil((end - origin) * rate)))


def tv_random(video_clips, max_clips_per_video: int) -> list[int]:
    """torchvision's RandomClipSampler indices, as its source computes them."""
    idxs, s = [], 0
    for c in video_clips.clips:
        length = len(c)
        size = min(length, max_clips_per_video)
        idxs.append(torch.randperm(length)[:size] + s)
        s += length
    idxs_ = torch.cat(idxs)
    return idxs_[torch.randperm(len(idxs_))].tolist()


def tv_uniform(video_clips, num_clips_per_video: int) -> list[int]:
    """torchvision's UniformClipSampler indices, as its source computes them."""
    idxs, s = [], 0
    for c in video_clips.clips:
        length = len(c)
        if length == 0:
            continue
        idxs.append(torch.linspace(s, s + length - 1, steps=num_clips_per_video)
                    .floor().to(torch.int64))
        s += length
    return torch.cat(idxs).tolist()


def resumed_keys(make_dataset, head_batches: int) -> tuple[list, list, dict]:
    """An epoch of ``make_dataset()`` (return_dict, epoch set) read in two goes, batches of
    3 over 2 workers: ``head_batches`` batches, then the rest by a new loader resumed from
    the first one's state. Returns the (video_index, clip_index) pairs of each go and the
    state."""
    def pairs(batches) -> list[tuple[int, int]]:
        return [k for b in batches for k in zip(b["video_index"].tolist(),
                                                b["clip_index"].tolist())]

    loader = make_loader(make_dataset(), 3, num_workers=2)
    head = pairs(itertools.islice(loader, head_batches))
    state = loader.state_dict()
    loader = make_loader(make_dataset(), 3, num_workers=2)
    loader.load_state_dict(state)
    return head, pairs(loader), state


def _fps(path: Path) -> Fraction:
    with av.open(str(path)) as c:
        return Fraction(c.streams.video[0].average_rate)


def _has_audio(path: Path) -> bool:
    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def check_against_source(root: Path, split_dir: Path, fpc: int, step: int,
                         frame_rate: float | None, size=None) -> tuple[dict, list]:
    """Every sample of a built split equals a direct decode of its source frames
    (pixels, audio span, label), and every video has exactly the clips of the rules."""
    manifest, samples = read_split(split_dir)
    by_video = defaultdict(list)
    for s in samples:
        by_video[s["json"]["path"]].append(s)
    for video in manifest["videos"]:
        src = root / video["path"]
        frames = decode_frames(src)
        rule = ClipRule(fpc, step, float(_fps(src)), frame_rate)
        assert video["frames"] == len(frames)
        assert video["clips"] == rule.num_clips(len(frames))
        clips = by_video.pop(video["path"], [])
        assert [c["json"]["clip_index"] for c in clips] == list(range(video["clips"]))
        assert {c["shard"] for c in clips} <= {video["shard"]}
        audio = decode_audio(src) if _has_audio(src) else None
        t0 = video_start(src)
        fps = rule.fps
        for clip in clips:
            meta = clip["json"]
            assert meta["source_frames"] == rule.clip_sources(meta["clip_index"])
            assert clip["cls"] == meta["label"] == video["label"]
            assert manifest["classes"][clip["cls"]] == meta["class"] == src.parent.name
            want = np.stack([frames[j] for j in meta["source_frames"]])
            if size:
                w, h = output_size(want.shape[2], want.shape[1], *size)
                with av.open(str(src)) as c:
                    all_frames = list(c.decode(video=0))
                want = np.stack([all_frames[j].to_ndarray(format="rgb24", width=w, height=h,
                                                          interpolation="AREA")
                                 for j in meta["source_frames"]])
            assert clip["video.npy"].dtype == np.uint8
            np.testing.assert_array_equal(clip["video.npy"], want)
            if audio is None:
                assert clip["audio.npy"].shape == (1, 0)
            else:
                data, origin, rate = audio
                first, last = meta["source_frames"][0], meta["source_frames"][-1]
                f = _fps(src)
                span = audio_span(t0 + first / f, t0 + (last + 1) / f, origin, rate)
                assert meta["audio_rate"] == rate
                np.testing.assert_array_equal(clip["audio.npy"], data[:, span])
                assert clip["audio.npy"].shape[1] == pytest.approx(
                    (last + 1 - first) / fps * rate, abs=2)
    assert not by_video, "samples of videos the manifest does not list"
    return manifest, samples
