"""Clips cut at read time from a contiguous build: torchvision's windows, every pixel and
audio sample against plain decodes, both readers, samplers, ranks, workers and resume."""
from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from shardkin import Kinetics, ShardDataset, make_loader
from shardkin.builder import build
from shardkin.builder.clips import ClipRule
from shardkin.format.options import ClipOptions
from shardkin.reader.cutting import window_ref
from shardkin.reader.loading import read_video
from shardkin.reader.windows import Windows, windows_for
from shardkin.samplers import ClipCounts, RandomClipSampler, UniformClipSampler

from helpers import (
    audio_span,
    decode_audio,
    has_audio,
    resumed_keys,
    timeline_frames,
    tv_random,
    tv_uniform,
)

F0 = 4  # the builds' frames_per_clip (contiguous: step 4)
SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov")


@pytest.fixture(scope="module", params=[None, 10], ids=["native", "rate10"])
def built(request, made_root, tmp_path_factory) -> tuple[Path, float | None]:
    out = tmp_path_factory.mktemp("windows")
    build(made_root, out, "train", frames_per_clip=F0, frame_rate=request.param,
          clips_per_shard=7, workers=2, progress=False)
    return out / "train", request.param


def source_videos(root: Path) -> list[Path]:
    """The train videos in torchvision's order: classes sorted, videos sorted."""
    return [p for cls in sorted(os.listdir(root / "train"))
            for p in sorted((root / "train" / cls).iterdir()) if p.suffix in SUFFIXES]


def windows_by_rule(frames: int, rule: ClipRule, f: int, s: int) -> int:
    """torchvision's clip count with ``f`` and ``s`` over a video's resampled frames; 0
    for a video shorter than F0, of which a build of F0 keeps nothing."""
    n = rule.num_positions(frames)
    return (n - f) // s + 1 if n >= max(f, F0) else 0


def test_window_arithmetic_equals_torchvision_rule():
    rng = random.Random(0)
    for _ in range(300):
        f0, f, s = rng.randint(1, 20), rng.randint(1, 40), rng.randint(1, 9)
        stored = [rng.randint(0, 12) for _ in range(rng.randint(1, 6))]
        tails = [rng.randint(0, f0 - 1) for _ in stored]
        w = Windows(stored, f0, f, s, tails)
        expected = []  # (video, first frame) of torchvision's windows over all frames
        for v, (n, t) in enumerate(zip(stored, tails)):
            frames = n * f0 + t if n else 0
            expected += [(v, b) for b in range(0, frames - f + 1, s)]
        assert len(w) == len(expected) == sum(w.counts)
        for i, (v, b) in enumerate(expected):
            video, k = w.locate(i)
            first, offset, last = w.span(k, stored[v])
            assert (video, k * s) == (v, b)
            assert (first, last) == (min(b // f0, stored[v] - 1),
                                     min((b + f - 1) // f0, stored[v] - 1))
            assert first * f0 + offset == b
        ks = np.arange(int(w.counts.max(initial=0)))
        for n in stored:
            assert [np.asarray(a).tolist() for a in w.span(ks, n)] == [
                [w.span(int(k), n)[j] for k in ks] for j in range(3)]
    assert Windows([3, 2], 4, 5, 2).counts.tolist() == [4, 2]  # older builds: no tails


def test_arguments_choose_windows_or_the_build_clips():
    contiguous = ClipOptions(16, 16)
    def never():
        raise AssertionError("the counts are read only for windows")

    def counts():
        return [3], [5]

    assert windows_for(contiguous, never, "x", None, None) is None
    assert windows_for(contiguous, never, "x", 16, 16) is None
    w = windows_for(contiguous, counts, "x", 8, None)  # a step left out is the build's
    assert (w.frames, w.step, w.counts.tolist()) == (8, 16, [3])
    assert windows_for(contiguous, counts, "x", 16, 1).counts.tolist() == [38]
    with pytest.raises(ValueError, match="built with frames_per_clip=16, step_between_clips=2"):
        windows_for(ClipOptions(16, 2), never, "x", 16, 1)
    with pytest.raises(ValueError, match=">= 1"):
        windows_for(contiguous, never, "x", 16, 0)


@pytest.mark.parametrize("f,s", [(4, 1), (6, 3), (9, 2), (2, 5), (13, 7)])
def test_every_window_of_kinetics_is_torchvisions(made_root, built, f, s, monkeypatch):
    """Order and count by torchvision's rules, every pixel against a sequential decode,
    and the sound sample for sample a full decode's (the gaps that --frame-rate leaves
    between stored clips, and the tail, included). Each window is one positioned read."""
    split, frame_rate = built
    ds = Kinetics(split, split=None, frames_per_clip=f, step_between_clips=s, frame_rate=frame_rate,
                  output_format="THWC", return_dict=False)
    reads = []
    read_range = ds._split.folder.read_range
    monkeypatch.setattr(ds._split.folder, "read_range", lambda *a: reads.append(a) or
                        read_range(*a))
    i = tails = 0
    for path in source_videos(made_root):
        frames, fps, t0 = timeline_frames(path)
        rule = ClipRule(F0, F0, float(fps), frame_rate)
        count = windows_by_rule(len(frames), rule, f, s)
        sound = decode_audio(path) if has_audio(path) else None
        for k in range(count):
            video, audio, label = ds[i]
            sources = [rule.source_index(p) for p in range(k * s, k * s + f)]
            tails += sources[-1] >= rule.source_index(rule.num_clips(len(frames)) * F0)
            np.testing.assert_array_equal(video.numpy(), np.stack([frames[j] for j in sources]))
            assert label == ds.classes.index(path.parent.name)
            if sound is None:
                assert audio.shape[1] == 0
            else:
                data, origin, rate = sound
                span = audio_span(t0 + sources[0] / fps, t0 + (sources[-1] + 1) / fps,
                                  origin, rate)
                np.testing.assert_array_equal(audio.numpy(), data[:, span])
            i += 1
    assert i == len(ds) == len(reads) and ds.video_clips.num_clips() == len(ds)
    assert tails > 0 or s > 1  # at step 1, windows reaching into the tails were among them


def test_samplers_over_windows_equal_torchvisions(made_root, built):
    split, frame_rate = built
    ds = Kinetics(split, split=None, frames_per_clip=5, step_between_clips=2, return_dict=True)
    counts = []
    for path in source_videos(made_root):
        frames, fps, _ = timeline_frames(path)
        counts.append(windows_by_rule(len(frames), ClipRule(F0, F0, float(fps), frame_rate),
                                      5, 2))
    assert ds.video_clips.counts.tolist() == counts
    reference = ClipCounts(counts)
    for k in (1, 3):
        torch.manual_seed(k)
        want = tv_random(reference, k)
        torch.manual_seed(k)
        assert list(RandomClipSampler(ds, k)) == want
        assert list(UniformClipSampler(ds, k)) == tv_uniform(reference, k)
    for i in UniformClipSampler(ds, 2):
        item = ds[i]
        assert (item["video_index"], item["clip_index"]) == ds.video_clips.get_clip_location(i)


def keys(split, *, world_size=1, workers=2, epoch=0, **kw) -> list[list[tuple[int, int]]]:
    """Per rank, the (video_index, window number) of ``epoch`` in order, every window's
    pixels checked against the map-style reader's."""
    ref = Kinetics(split, split=None, return_dict=True, video_dtype=torch.uint8,
                   frames_per_clip=kw["frames_per_clip"],
                   step_between_clips=kw["step_between_clips"])
    where = {ref.video_clips.get_clip_location(i): i for i in range(len(ref))}
    ranks = []
    for rank in range(world_size):
        ds = ShardDataset(split, None, return_dict=True, video_dtype=torch.uint8, rank=rank,
                          world_size=world_size, **kw)
        ds.set_epoch(epoch)
        got = []
        for batch in make_loader(ds, 3, num_workers=workers):
            for video, v, k in zip(batch["video"], batch["video_index"], batch["clip_index"]):
                got.append((int(v), int(k)))
                assert torch.equal(video, ref[where[got[-1]]]["video"])
        ranks.append(got)
    return ranks


def test_streamed_windows_are_exact_across_ranks_and_workers(built):
    split, _ = built
    kw = dict(frames_per_clip=6, step_between_clips=1, shuffle_buffer=16)
    total = len(Kinetics(split, split=None, frames_per_clip=6, step_between_clips=1))
    for world, workers in [(1, 0), (2, 2), (3, 1)]:
        ranks = keys(split, world_size=world, workers=workers, drop_remainder=False, **kw)
        assert len({len(r) for r in ranks}) == 1
        seen = Counter(itertools.chain(*ranks))
        assert len(seen) == total and sum(seen.values()) - total < world
    ds = ShardDataset(split, None, rank=1, world_size=3, **kw)
    assert len(ds) == total // 3


def test_streamed_windows_with_clips_per_video(built):
    split, _ = built
    ref = Kinetics(split, split=None, frames_per_clip=5, step_between_clips=2)
    counts = ref.video_clips.counts.tolist()
    kw = dict(frames_per_clip=5, step_between_clips=2, drop_remainder=False)
    for epoch in (0, 1):
        got = keys(split, clips_per_video=2, epoch=epoch, **kw)[0]
        per_video = Counter(v for v, _ in got)
        assert len(set(got)) == len(got)
        assert all(per_video[v] == min(2, n) for v, n in enumerate(counts))
    got = keys(split, clips_per_video=3, clip_sampler="uniform", workers=0, **kw)[0]
    start, want = 0, []
    for v, n in enumerate(counts):  # torchvision's UniformClipSampler over the windows
        if n:
            picks = torch.linspace(start, start + n - 1, steps=3).floor().to(torch.int64) - start
            want += [(v, int(k)) for k in picks]
        start += n
    assert sorted(got) == sorted(want)


def test_streamed_windows_resume_mid_epoch(built):
    split, _ = built
    kw = dict(frames_per_clip=7, step_between_clips=2, shuffle_buffer=16, seed=5)
    whole = keys(split, workers=2, epoch=1, **kw)[0]

    def dataset():
        ds = ShardDataset(split, None, return_dict=True, **kw)
        ds.set_epoch(1)
        return ds

    head, tail, state = resumed_keys(dataset, 3)
    assert head and sorted(head + tail) == sorted(whole)
    other = ShardDataset(split, None, **{**kw, "step_between_clips": 3})
    with pytest.raises(ValueError, match="step"):
        other.load_state_dict(state)


@pytest.mark.parametrize("f", [F0, 6])
def test_a_window_reads_each_stored_clip_once_into_place(built, monkeypatch, f):
    """One positioned read per stored clip the window spans, straight into its place:
    at most 2 when frames_per_clip is at most the build's."""
    split, _ = built
    ds = ShardDataset(split, None, frames_per_clip=f, step_between_clips=1, shuffle=False)
    calls = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda *a: calls.append(a) or real(*a))
    for ref, _ in itertools.islice(ds._stream(0, 1), 40):
        out = torch.empty((f, *ref.video.shape[1:]), dtype=torch.uint8)
        calls.clear()
        assert read_video(ref.video, out) is out
        offset = ref.video.parts[0].start
        assert len(calls) == len(ref.video.parts) == (offset + f - 1) // F0 + 1
        assert len(calls) <= (2 if f <= F0 else 3)
        assert sum(p.stop - p.start for p in ref.video.parts) == f


def test_builds_without_audio_marks_are_refused_with_a_reason(built):
    split, _ = built
    ds = ShardDataset(split, None, frames_per_clip=6, step_between_clips=1, shuffle=False)
    refs = [ref for ref, _ in itertools.islice(ds._stream(0, 1), 1)]
    old = [r._replace(meta={k: v for k, v in r.meta.items() if k != "audio_marks"})
           for r in refs]
    assert refs[0].audio.shape[1] > 0  # archery/a 24fps.mp4 has sound
    with pytest.raises(ValueError, match="keeps no audio marks .built by an older shardkin"):
        window_ref(old, 0, 2, F0, 0)


def test_windows_on_real_videos(real_root, tmp_path):
    """Real clips (H.264, MPEG-4, odd frame rates): windows of 16 frames, step 5, from a
    contiguous build of 8, every pixel and sample against full decodes."""
    videos = source_videos(real_root)[:4]
    root = tmp_path / "src"
    for p in videos:
        (root / "train" / p.parent.name).mkdir(parents=True)
        (root / "train" / p.parent.name / p.name).symlink_to(p)
    build(root, tmp_path / "out", "train", frames_per_clip=8, workers=2, progress=False)
    ds = Kinetics(tmp_path / "out", split="train", frames_per_clip=16, step_between_clips=5,
                  output_format="THWC")
    i = 0
    for p in videos:
        frames, fps, t0 = timeline_frames(p)
        sound = decode_audio(p) if has_audio(p) else None
        present = (len(frames) - 16) // 5 + 1  # torchvision's count: the tail is kept
        for k in range(0, present, 3):
            video, audio, _ = ds[i + k]
            np.testing.assert_array_equal(video.numpy(), np.stack(frames[k * 5 : k * 5 + 16]))
            if sound is not None:
                data, origin, rate = sound
                span = audio_span(t0 + k * 5 / fps, t0 + (k * 5 + 16) / fps, origin, rate)
                np.testing.assert_array_equal(audio.numpy(), data[:, span])
        i += present
    assert i == len(ds)


def test_windows_over_http_equal_local_ones(built):
    """Object storage: each run of consecutive samples the windows need is one range
    request (nginx, through a proxy that counts the bytes)."""
    from urllib.parse import urlsplit

    from servers import cutting_proxy, nginx_server

    split, _ = built
    kw = dict(frames_per_clip=5, step_between_clips=1)
    local = Kinetics(split, split=None, **kw)
    with nginx_server(split.parent) as url:
        with cutting_proxy(urlsplit(url).port, cut_after=1 << 40, cuts=0) as proxy:
            remote = Kinetics(f"{proxy.url}/train", split=None, **kw)
            for i in range(0, len(local), 7):
                assert all(torch.equal(a, b) for a, b in zip(local[i][:2], remote[i][:2]))
            one = proxy.forwarded
            remote[3]
            assert proxy.forwarded - one < 3 * split.joinpath(
                local._split.shards[0].name).stat().st_size / local._split.shards[0].clips
            streamed = keys(f"{proxy.url}/train", workers=1, clips_per_video=2, seed=4, **kw)
            assert streamed == keys(split, workers=1, clips_per_video=2, seed=4, **kw)
