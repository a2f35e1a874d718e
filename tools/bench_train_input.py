"""Feeding a training step: clips/s per core of torchvision's reference video recipe input.

    python tools/bench_train_input.py [--root ROOT] [--out DIR] [--workers N]
                                      [--batch-size B] [--seconds S] [--runs R]

Both ways deliver the model input of torchvision's video_classification reference
(``VideoClassificationPresetTrain``): float ``[B, 3, 16, 112, 112]``, normalized with the
Kinetics mean and std, with a random crop and a random horizontal flip per clip. Both
read the same shards (ROOT/train's real clips built once at 128x171, the recipe's resize
size, 16 frames) through ``make_loader`` with the same workers and batch:

(a) reference: the preset's per-clip operations as ``ShardDataset``'s ``transform``, in
    the DataLoader workers: uint8 TCHW -> float /255 (ConvertImageDtype), resize to
    128x171 (bilinear, align_corners=False, antialias=False), RandomHorizontalFlip,
    Normalize, RandomCrop 112, TCHW -> CTHW; batches stacked in the workers.
(b) device: ``make_loader``'s uint8 batches (no transform); in the main process, which
    stands in for the device (the CPU here), float /255 then Kornia's
    ``VideoSequential`` on the whole batch (same parameters for a clip's frames, drawn
    per clip): Resize 128x171, RandomCrop 112, RandomHorizontalFlip, Normalize; then
    ``[B, T, C, H, W] -> [B, C, T, H, W]`` contiguous. Cropping before flipping and
    normalizing gives the same distribution of outputs and touches fewer pixels.
    Run with ``torch.set_num_threads(1)`` (the per-core figure) and with as many
    threads as cores.

Per core: clips / CPU seconds (user + system) of the main process and the DataLoader
workers together over the timed epochs, i.e. clips per core-second (wall time x busy
cores, measured rather than assumed). "host" counts the workers only: in (b) they
only read, which is all a CPU feeding a GPU does before the copy (the main process's
copy and kernel launches are not measured here, with no GPU). Each way is timed for
``--seconds`` (8 batches at least) after a warm-up (:func:`measure`), over epochs of a manifest
listing the shards about 1024 clips' worth; page cache warm; ``--runs`` times, then the
range of each figure.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import psutil
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_read import REAL, scaled_manifest  # noqa: E402

from shardkin import ShardDataset, make_loader  # noqa: E402
from shardkin.builder import BuildError, build  # noqa: E402

MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
RESIZE, CROP, FRAMES = (128, 171), 112, 16


def reference_preset(clip: torch.Tensor) -> torch.Tensor:
    """torchvision's VideoClassificationPresetTrain on one uint8 ``[T, C, H, W]`` clip,
    op by op as its tensor transforms do them -> float ``[C, T, 112, 112]``."""
    clip = clip.to(torch.float32).div_(255)
    clip = F.interpolate(clip, size=RESIZE, mode="bilinear", align_corners=False,
                         antialias=False)
    if torch.rand(1) < 0.5:
        clip = clip.flip(-1)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    clip = clip.sub(mean).div_(std)
    top = int(torch.randint(0, clip.shape[-2] - CROP + 1, (1,)))
    left = int(torch.randint(0, clip.shape[-1] - CROP + 1, (1,)))
    return clip[..., top : top + CROP, left : left + CROP].permute(1, 0, 2, 3)


def device_augment() -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``[B, T, C, H, W]`` batch -> float ``[B, C, T, 112, 112]``, with Kornia."""
    import kornia.augmentation as K

    aug = K.VideoSequential(
        K.Resize(RESIZE, antialias=False),
        K.RandomCrop((CROP, CROP)),
        K.RandomHorizontalFlip(),
        K.Normalize(mean=MEAN, std=STD),
        data_format="BTCHW", same_on_frame=True)
    return lambda video: aug(video.float().div_(255)).transpose(1, 2).contiguous()


class Rate(NamedTuple):
    wall: float  # clips/s on this machine
    workers_ms: float  # DataLoader workers' CPU ms a clip
    main_ms: float  # the main process's CPU ms a clip (all its threads)

    @property
    def per_core(self) -> float:
        return 1e3 / (self.workers_ms + self.main_ms)

    @property
    def host_per_core(self) -> float:
        return 1e3 / self.workers_ms


def _cpu(procs: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def measure(ds: ShardDataset, workers: int, batch: int, seconds: float,
            step: Callable[[torch.Tensor], torch.Tensor]) -> Rate:
    """``step`` applied to the batches of ``seconds`` or more (8 batches at least), after
    a warm-up in which the workers start and touch all their batch memory (5 slots each:
    its first use costs page faults that a long run does not pay) and ``step`` runs twice."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    loader = make_loader(ds, batch, num_workers=workers)

    def batches() -> Iterator[torch.Tensor]:
        for epoch in itertools.count():
            ds.set_epoch(epoch)
            yield from (video for video, _, _ in loader)

    warm = 5 * workers + 2
    procs: list[psutil.Process] = []
    t = main = work = 0.0
    clips = timed = 0
    for i, video in enumerate(batches()):
        if i < warm - 2:
            continue
        out = step(video)
        if out.shape[1:] != (3, FRAMES, CROP, CROP) or out.dtype != torch.float32:
            raise AssertionError(f"model input is {out.dtype} {tuple(out.shape)}")
        if i == warm - 1:  # warm: the timing starts
            procs = [p for p in me.children(recursive=True) if p.pid not in before]
            t, main, work = time.perf_counter(), _cpu([me]), _cpu(procs)
        elif i >= warm:
            clips, timed = clips + len(out), timed + 1
            if timed >= 8 and time.perf_counter() - t >= seconds:
                break
    wall = time.perf_counter() - t
    return Rate(clips / wall, (_cpu(procs) - work) / clips * 1e3,
                (_cpu([me]) - main) / clips * 1e3)


def show(name: str, r: Rate) -> None:
    print(f"  {name:34s} {r.wall:7.0f} clips/s  CPU ms/clip: workers {r.workers_ms:5.2f}, "
          f"main {r.main_ms:5.2f}  -> {r.per_core:5.0f} clips/s per core "
          f"(host {r.host_per_core:5.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL)
    ap.add_argument("--out", type=Path, default=Path("/tmp/shardkin-bench-train-input"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0, help="time each way this long")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not (args.root / "train").is_dir():
        sys.exit(f"no videos at {args.root}/train: pass --root")
    cores = os.cpu_count() or 1
    options = dict(frames_per_clip=FRAMES, width=RESIZE[1], height=RESIZE[0], workers=cores,
                   progress=False)
    try:  # reused when already built with these options
        m = build(args.root, args.out, "train", **options)
    except BuildError:  # built with other options (an older shardkin's defaults)
        m = build(args.root, args.out, "train", overwrite=True, **options)
    long, _ = scaled_manifest(args.out / "train", 1024)
    w, b = args.workers, args.batch_size
    print(f"{m['totals']['clips']} real clips at 128x171 (epochs of {long.name}), "
          f"{cores} cores, {w} DataLoader workers, batch {b}")
    runs: list[tuple[Rate, Rate, Rate]] = []
    for run in range(args.runs):
        torch.set_num_threads(cores)
        a = measure(ShardDataset(long, transform=reference_preset), w, b, args.seconds,
                    lambda video: video)
        step = device_augment()
        torch.set_num_threads(1)
        b1 = measure(ShardDataset(long), w, b, args.seconds, step)
        torch.set_num_threads(cores)
        bn = measure(ShardDataset(long), w, b, args.seconds, step)
        print(f"run {run + 1}:")
        show("(a) reference preset in workers", a)
        show("(b) Kornia batched, 1 thread", b1)
        show(f"(b) Kornia batched, {cores} threads", bn)
        print(f"  preset alone {a.workers_ms - b1.workers_ms:.2f} ms/clip per core, reading "
              f"{b1.workers_ms:.2f}: {(a.workers_ms - b1.workers_ms) / b1.workers_ms:.1f}x; "
              f"per core b/a {b1.per_core / a.per_core:.2f} (Kornia on the CPU), "
              f"host b/a {b1.host_per_core / a.per_core:.1f}")
        runs.append((a, b1, bn))

    def spread(name: str, values: list[float], fmt: str) -> None:
        print(f"  {name:44s} {min(values):{fmt}} - {max(values):{fmt}}")

    print(f"over {len(runs)} runs (min - max):")
    spread("(a) reference preset: clips/s per core", [a.per_core for a, _, _ in runs], ".0f")
    spread("(a) clips/s (wall)", [a.wall for a, _, _ in runs], ".0f")
    spread("(b) Kornia on the CPU, 1 thread: per core", [b.per_core for _, b, _ in runs], ".0f")
    spread(f"(b) Kornia on the CPU, {cores} threads: per core",
           [b.per_core for _, _, b in runs], ".0f")
    spread(f"(b) {cores} threads: clips/s (wall)", [b.wall for _, _, b in runs], ".0f")
    spread("(b) host (reading): clips/s per core", [b.host_per_core for _, b, _ in runs], ".0f")
    spread("preset alone, ms/clip per core", [a.workers_ms - b.workers_ms for a, b, _ in runs],
           ".2f")
    spread("ratio per core b/a, Kornia on the CPU", [b.per_core / a.per_core
                                                       for a, b, _ in runs], ".2f")
    spread("ratio host per core b/a (a GPU does (b)'s work)",
           [b.host_per_core / a.per_core for a, b, _ in runs], ".1f")


if __name__ == "__main__":
    main()
