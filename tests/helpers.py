"""Independent references for the tests: read shards with tarfile/np.load, decode with
plain PyAV."""
from __future__ import annotations

import faulthandler
import io
import itertools
import json
import math
import os
import shutil
import signal
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


def _not_coded_vop(packet: bytes, increment_bits: int) -> bytes:
    """An MPEG-4 VOP that is not coded ("show the previous picture again"): the header of
    ``packet``'s VOP up to its time increment, then ``vop_coded = 0``."""
    assert packet[:4] == b"\x00\x00\x01\xb6"
    bits = "".join(f"{x:08b}" for x in packet[4:12])
    i = 2  # vop_coding_type
    while bits[i] == "1":  # modulo_time_base, ended by a 0
        i += 1
    head = bits[: i + 1 + 1 + increment_bits + 1] + "0"  # 0, marker, increment, marker, coded
    head += "0" + "1" * ((-len(head) - 1) % 8)  # stuffing to the byte
    return packet[:4] + int(head, 2).to_bytes(len(head) // 8, "big")


def make_not_coded_avi(path: Path, frames: int, after: tuple[int, ...], fps: int = 30,
                       size: tuple[int, int] = (64, 48)) -> list[int]:
    """An MPEG-4 AVI of ``frames`` pictures with a not-coded frame (its own timestamp, no
    picture) after each packet in ``after``, as some AVI encoders write; returns the
    timeline slots of the not-coded frames."""
    from shardkin.synth import frame_image

    src = path.with_suffix(".src.avi")
    with av.open(str(src), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for i in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame_image(i, *size),
                                                             format="rgb24")))
        out.mux(stream.encode(None))
    held = []
    with av.open(str(src)) as source, av.open(str(path), "w") as out:
        packets = [p for p in source.demux(video=0) if p.size]
        stream = out.add_stream_from_template(source.streams.video[0])
        shift = 0
        for k, packet in enumerate(packets):
            packet.stream = stream
            packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
            out.mux(packet)
            if k in after:
                shift += 1
                held.append(packet.pts + 1)
                skip = av.Packet(_not_coded_vop(bytes(packet), (fps - 1).bit_length()))
                skip.stream, skip.time_base = stream, packet.time_base
                skip.pts = skip.dts = packet.pts + 1
                out.mux(skip)
    src.unlink()
    return held


def decode_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def timeline_frames(path: Path) -> tuple[list[np.ndarray], Fraction, Fraction]:
    """(the picture at each slot of torchvision 0.28's timeline, its fps, its start time):
    the timeline shardkin.builder.timeline computes, checked against TorchCodec itself in
    test_timeline, over a plain decode."""
    from shardkin.builder.timeline import place, scan

    with av.open(str(path)) as c:
        found = scan(c, c.streams.best("video"))
    with av.open(str(path)) as c:
        pictures = [p.frame.to_ndarray(format="rgb24")
                    for p in place(c.decode(c.streams.best("video")), found.slots)]
    return pictures, Fraction(found.fps), found.begin


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


def _stream_start(path: Path) -> Fraction:
    """The first packet's time (decoding time in AVI, which stores no presentation time)."""
    with av.open(str(path)) as c:
        s = c.streams.best("video")
        avi = c.format.name == "avi"
        times = [(p.dts if avi else p.pts) for p in c.demux(s) if p.size]
        return Fraction(min(t for t in times if t is not None)) * s.time_base


def slot_pictures(pictures: list, frames: int, held: list[int]) -> list:
    """The picture shown at each of ``frames`` timeline slots: the decoded ones in order, a
    held slot showing the one before."""
    assert len(pictures) + len(held) == frames
    shown, k = [], -1
    for slot in range(frames):
        k += slot not in held
        shown.append(pictures[max(k, 0)])
    return shown


def has_audio(path: Path) -> bool:
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
        frames = slot_pictures(decode_frames(src), video["frames"], video["held"])
        rule = ClipRule(fpc, step, video["fps"], frame_rate)  # the timeline: test_timeline
        assert video["clips"] == rule.num_clips(len(frames))
        clips = by_video.pop(video["path"], [])
        assert [c["json"]["clip_index"] for c in clips] == list(range(video["clips"]))
        assert {c["shard"] for c in clips} <= {video["shard"]}
        audio = decode_audio(src) if has_audio(src) else None
        t0, fps = _stream_start(src), Fraction(video["fps"])
        for clip in clips:
            meta = clip["json"]
            assert meta["source_frames"] == rule.clip_sources(meta["clip_index"])
            assert clip["cls"] == meta["label"] == video["label"]
            assert manifest["classes"][clip["cls"]] == meta["class"] == src.parent.name
            want = np.stack([frames[j] for j in meta["source_frames"]])
            if size:
                w, h = output_size(want.shape[2], want.shape[1], *size)
                with av.open(str(src)) as c:
                    all_frames = slot_pictures(list(c.decode(video=0)), video["frames"],
                                               video["held"])
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
                span = audio_span(t0 + first / fps, t0 + (last + 1) / fps, origin, rate)
                assert meta["audio_rate"] == rate
                np.testing.assert_array_equal(clip["audio.npy"], data[:, span])
                assert clip["audio.npy"].shape[1] == pytest.approx(
                    (last + 1 - first) / fps * rate, abs=2)
    assert not by_video, "samples of videos the manifest does not list"
    return manifest, samples


def flipped_copy(good: Path, folder: Path, at: int, bit: int = 1) -> Path:
    """``good`` (a split folder) copied to ``folder`` (once) with the byte at ``at`` of its
    first shard flipped (``bit``)."""
    shard = sorted(p.name for p in good.glob("*.tar"))[0]
    if not folder.exists():
        shutil.copytree(good, folder)
    data = bytearray((good / shard).read_bytes())
    data[at] ^= bit
    (folder / shard).write_bytes(bytes(data))
    return folder


def segfault() -> None:
    """This process dies of SIGSEGV, as in a crash in FFmpeg (quietly: pytest's
    faulthandler would print the dump to the terminal)."""
    faulthandler.disable()
    os.kill(os.getpid(), signal.SIGSEGV)
