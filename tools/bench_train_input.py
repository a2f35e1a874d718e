"""Feeding a training step: clips/s per core of torchvision's reference video recipe input,
the real torchvision's presets against shardkin.transforms.

    python tools/bench_train_input.py [--root ROOT] [--out DIR] [--workers N]
                                      [--batch-size B] [--seconds S] [--runs R]
                                      [--reference VENV] [--transforms-only]

Everything delivers the model input of torchvision's video_classification reference:
float32 ``[B, 3, 16, 112, 112]`` (train: random crop and flip per clip; eval: center crop),
normalized with the Kinetics mean and std, from ROOT/train's real clips built once at
128x171 (the recipe's resize size: torchvision's resize is then the identity), raw and
jpeg. The real torchvision comes from the reference environment (``bash
.ci/reference-env.sh``; ``--reference``, default $SHARDKIN_REF_VENV or /tmp/ref-venv):
its site-packages are put after this environment's, which must have the same torch build
(checked), so the same process and cores time both sides.

Each run, in turn (``--runs`` runs; ranges over them):

1. Transforms alone, one core (one process, one thread; ``time.process_time``), on the
   same 64 clips held in memory, outputs dropped (batched forms write into reused memory,
   as in the loader's workers); the rows take turns batch by batch, so that load from
   other jobs falls on all of them alike:
   - the reference train and eval presets per clip on contiguous ``[T, C, H, W]`` clips
     (torchvision's decoders' layout: the baseline of every ratio) and the train preset
     on shardkin's clips (views of ``[T, H, W, C]`` memory, on which it is much slower);
   - shardkin's presets per clip (on shardkin's clips), batched (``batch``, float on
     the CPU), the same two on torch's passes (what they run without numba: the one
     pass's gain, run by run), and the device path's two parts: the uint8 crop and flip
     written into the batch (``in_workers()``, per-sample windows: the CPU side) and the float part
     (``normalize_batch``: what the GPU does, here on the CPU for scale); and the CPU
     side with the flips left to the device (``in_workers(flip_on_device=True)``: the
     uint8 crops and their flags);
   - PyTorchVideo's Kinetics tutorial train transform (real pytorchvideo, on random 2 s
     clips of 60 frames at 256x340: ``UniformTemporalSubsample(8)``, ``/255``,
     ``Normalize``, ``RandomShortSideScale(256, 320)``, ``RandomCrop(244)``,
     ``RandomHorizontalFlip``) on the float clip PyTorchVideo's reader gives, and split as
     a device path: the uint8 subsample in the worker, the rest on the device.
2. Whole pipelines, ``make_loader`` with ``--workers`` workers and batches of
   ``--batch-size``, over epochs of a manifest listing the shards about 1024 clips'
   worth (page cache warm), each timed ``--seconds`` after a warm-up: reading and
   decoding, then the reference train preset as the dataset's ``transform`` (on the clip
   made contiguous first, as torchvision's decoders give it: on shardkin's views it is
   slower still), shardkin's per-clip preset as ``transform``, shardkin's batched preset
   in the workers (``batch_transform=in_workers(to_float=True)``; and on torch's passes),
   the device path's worker side (``in_workers()``: uint8 crops; and with
   ``flip_on_device=True``), and reading alone;
   all with ``decode_audio=False`` (the recipe drops the sound), and reading alone with it.
   Per core = clips / CPU seconds of the main process and the workers together (user +
   system, measured); "host" counts the workers only (what a CPU feeding a GPU spends).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_read import REAL, scaled_manifest  # noqa: E402

from shardkin import ShardDataset, make_loader  # noqa: E402
from shardkin.builder import BuildError, build  # noqa: E402
from shardkin.transforms import (  # noqa: E402
    Crops,
    VideoClassificationPresetEval,
    VideoClassificationPresetTrain,
    onepass,
)

MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
RESIZE, CROP, FRAMES = (128, 171), (112, 112), 16
CODECS = ("raw", "jpeg")


def use_reference(venv: Path) -> None:
    """Make the reference environment's torchvision (and pytorchvideo) importable here."""
    site = next(venv.glob("lib/python*/site-packages"), None)
    if site is None or not (site / "torchvision").is_dir():
        sys.exit(f"no torchvision in {venv}: run `bash .ci/reference-env.sh` (or --reference)")
    theirs = next((d.version for d in importlib.metadata.distributions(path=[str(site)])
                   if d.metadata["Name"] == "torch"), None)
    if theirs != torch.__version__:
        sys.exit(f"{venv} has torch {theirs}, this environment {torch.__version__}: "
                 "they must be the same build")
    sys.path.append(str(site))


def reference_presets() -> tuple[Callable, Callable]:
    """The recipe's presets (references/video_classification/presets.py) of real
    torchvision transforms, at the recipe's sizes."""
    from torchvision.transforms import transforms as T

    def to_cthw(vid: torch.Tensor) -> torch.Tensor:  # the recipe's ConvertBCHWtoCBHW
        return vid.permute(1, 0, 2, 3)

    train = T.Compose([T.ConvertImageDtype(torch.float32), T.Resize(RESIZE, antialias=False),
                       T.RandomHorizontalFlip(0.5), T.Normalize(MEAN, STD),
                       T.RandomCrop(CROP), to_cthw])
    evaluation = T.Compose([T.ConvertImageDtype(torch.float32),
                            T.Resize(RESIZE, antialias=False), T.Normalize(MEAN, STD),
                            T.CenterCrop(CROP), to_cthw])
    return train, evaluation


class Reused:
    """``alloc(shape, dtype)`` handing out the same memory for the same request, as the
    loader's batch memory does."""

    def __init__(self) -> None:
        self.mem: dict[tuple, torch.Tensor] = {}

    def __call__(self, shape: Any, dtype: torch.dtype) -> torch.Tensor:
        key = (tuple(shape), dtype)
        if key not in self.mem:
            self.mem[key] = torch.empty(key[0], dtype=dtype)
        return self.mem[key]


def load_clips(split: Path, n: int) -> torch.Tensor:
    """``n`` clips of the build as uint8 ``[n, T, H, W, C]`` (stored layout)."""
    ds = ShardDataset(split, shuffle=False, output_format="THWC")
    return torch.stack([v for v, _, _ in itertools.islice(ds, n)])


def per_clip_ms(rows: dict[str, Callable[[int], int]], parts: int,
                rounds: int = 2) -> dict[str, float]:
    """CPU ms a clip of each row. A row's call ``row(i)`` does part ``i`` of the clips and
    returns how many it did; the rows take turns part by part (a fraction of a second
    each), so that a busy machine weighs on all of them alike."""
    spent = dict.fromkeys(rows, 0.0)
    clips = dict.fromkeys(rows, 0)
    for row in rows.values():
        row(0)  # warm: memory, caches of the first call
    for _, i in itertools.product(range(rounds), range(parts)):
        for name, row in rows.items():
            t = time.process_time()
            clips[name] += row(i)
            spent[name] += time.process_time() - t
    return {name: spent[name] / clips[name] * 1e3 for name in rows}


def on_torchs_passes() -> VideoClassificationPresetTrain:
    """The train preset on torch's passes, what it runs without numba (its one pass off)."""
    preset = VideoClassificationPresetTrain(crop_size=CROP, resize_size=RESIZE)
    preset._pass = None
    return preset


def transform_rows(stored: torch.Tensor, batch: int) -> tuple[dict[str, Callable], int]:
    """Part 1's rows over the clips ``stored`` ``[N, T, H, W, C]``, in parts of ``batch``
    clips; and the number of parts."""
    ref_train, ref_eval = reference_presets()
    train = VideoClassificationPresetTrain(crop_size=CROP, resize_size=RESIZE)
    evaluation = VideoClassificationPresetEval(crop_size=CROP, resize_size=RESIZE)
    passes = on_torchs_passes()
    views = stored.permute(0, 1, 4, 2, 3)  # shardkin's [T, C, H, W] clips
    batches = [views[i : i + batch] for i in range(0, len(views), batch)]
    contiguous = [b.contiguous() for b in batches]
    keys = [[f"{i:08d}_000000" for i in range(i, i + len(b))] for i, b in
            zip(range(0, len(views), batch), batches)]
    crops, alloc = train.in_workers(seed=0), Reused()
    unflipped = train.in_workers(seed=0, flip_on_device=True)
    cropped = [crops(b, k, 0, Reused()) for b, k in zip(batches, keys)]

    def each(preset: Callable, clips: list[torch.Tensor], most: int = batch) -> Callable:
        def row(i: int) -> int:
            for clip in clips[i][:most]:
                preset(clip)
            return min(len(clips[i]), most)
        return row

    def batched(step: Callable[[int], Any]) -> Callable:
        def row(i: int) -> int:
            step(i)
            return len(batches[i])
        return row

    rows = {
        "reference train, contiguous clips": each(ref_train, contiguous),
        "reference train, shardkin's clips": each(ref_train, batches, 4),
        "shardkin train, per clip": each(train, batches),
        "shardkin train, batched (float on CPU)": batched(
            lambda i: train.batch(batches[i], alloc=alloc)),
        "device path, CPU side (uint8 crop+flip)": batched(
            lambda i: crops(batches[i], keys[i], 0, alloc)),
        "device path, CPU side, flips on the device": batched(
            lambda i: unflipped(batches[i], keys[i], 0, alloc)),
        "device path, float part (on the CPU)": batched(
            lambda i: train.normalize_batch(cropped[i], alloc=alloc)),
        "reference eval, contiguous clips": each(ref_eval, contiguous),
        "shardkin eval, per clip": each(evaluation, batches),
        "shardkin eval, batched (float on CPU)": batched(
            lambda i: evaluation.batch(batches[i], alloc=alloc)),
        "shardkin train, per clip, torch's passes": each(passes, batches),
        "shardkin train, batched, torch's passes": batched(
            lambda i: passes.batch(batches[i], alloc=alloc)),
    }
    rows.update(pytorchvideo_rows())
    return rows, len(batches)


def pytorchvideo_rows() -> dict[str, Callable[[int], int]]:
    """PyTorchVideo's Kinetics tutorial train transform, whole and split."""
    try:
        from pytorchvideo.transforms import (
            Normalize,
            RandomShortSideScale,
            UniformTemporalSubsample,
        )
        from torchvision.transforms import Compose, RandomCrop, RandomHorizontalFlip
    except ImportError:
        return {}
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (2, 3, 60, 256, 340), dtype=torch.uint8, generator=g)
    floats = clips.float()  # PyTorchVideo's reader gives float32 [C, T, H, W], 0..255
    subsample = UniformTemporalSubsample(8)
    rest = Compose([lambda x: x / 255.0, Normalize((0.45,) * 3, (0.225,) * 3),
                    RandomShortSideScale(min_size=256, max_size=320), RandomCrop(244),
                    RandomHorizontalFlip(p=0.5)])
    sub = [subsample(c).float() for c in clips]

    def row(step: Callable[[torch.Tensor], Any], inputs: Any) -> Callable[[int], int]:
        def run(i: int) -> int:
            step(inputs[i % len(inputs)])
            return 1
        return run

    return {"PyTorchVideo tutorial train, per clip": row(lambda x: rest(subsample(x)), floats),
            "  its uint8 subsample (worker side)": row(subsample, clips),
            "  the rest (device side, here on the CPU)": row(rest, sub)}


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
            shape: tuple[int, ...], **loader_kwargs: Any) -> Rate:
    """Batches for ``seconds`` or more (8 at least) after a warm-up in which the workers
    start and touch all their batch memory (5 slots each: its first use costs page faults
    that a long run does not pay); each batch's video must have ``shape[1:]``."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    loader = make_loader(ds, batch, num_workers=workers, **loader_kwargs)

    def batches() -> Iterator[torch.Tensor]:
        for epoch in itertools.count():
            ds.set_epoch(epoch)
            yield from (v.video if isinstance(v, Crops) else v for v, _, _ in loader)

    warm = 5 * workers + 2
    procs: list[psutil.Process] = []
    t = main = work = 0.0
    clips = timed = 0
    for i, video in enumerate(batches()):
        if tuple(video.shape[1:]) != shape[1:]:
            raise AssertionError(f"batch video is {video.dtype} {tuple(video.shape)}")
        if i == warm - 1:  # warm: the timing starts
            procs = [p for p in me.children(recursive=True) if p.pid not in before]
            t, main, work = time.perf_counter(), _cpu([me]), _cpu(procs)
        elif i >= warm:
            clips, timed = clips + len(video), timed + 1
            if timed >= 8 and time.perf_counter() - t >= seconds:
                break
    wall = time.perf_counter() - t
    return Rate(clips / wall, (_cpu(procs) - work) / clips * 1e3,
                (_cpu([me]) - main) / clips * 1e3)


def pipelines(manifest: Path, workers: int, batch: int, seconds: float) -> dict[str, Rate]:
    """Part 2's rows on one build (the sound is not read: the model input is the video)."""
    ref_train, _ = reference_presets()
    train = VideoClassificationPresetTrain(crop_size=CROP, resize_size=RESIZE)
    model = (batch, 3, FRAMES, *CROP)
    crops = (batch, FRAMES, 3, *CROP)
    full = (batch, FRAMES, 3, *RESIZE)

    def dataset(**kwargs: Any) -> ShardDataset:
        return ShardDataset(manifest, **{"decode_audio": False, **kwargs})

    return {
        "reference preset as transform": measure(  # on contiguous clips, as torchvision's
            dataset(transform=lambda v: ref_train(v.contiguous())), workers, batch, seconds,
            model),
        "shardkin preset as transform": measure(
            dataset(transform=train), workers, batch, seconds, model),
        "shardkin batched in workers": measure(
            dataset(), workers, batch, seconds, model,
            batch_transform=train.in_workers(to_float=True)),
        "the same on torch's passes": measure(
            dataset(), workers, batch, seconds, model,
            batch_transform=on_torchs_passes().in_workers(to_float=True)),
        "device path: uint8 crops": measure(
            dataset(), workers, batch, seconds, crops, batch_transform=train.in_workers()),
        "device path, flips on the device": measure(
            dataset(), workers, batch, seconds, crops,
            batch_transform=train.in_workers(flip_on_device=True)),
        "reading alone (uint8 clips)": measure(dataset(), workers, batch, seconds, full),
        "reading alone, with the sound": measure(
            dataset(decode_audio=True), workers, batch, seconds, full),
    }


def built(root: Path, out: Path, codec: str) -> Path:
    options = dict(frames_per_clip=FRAMES, width=RESIZE[1], height=RESIZE[0],
                   workers=os.cpu_count() or 1, progress=False, video_codec=codec)
    try:  # reused when already built with these options
        build(root, out, "train", **options)
    except BuildError:  # built with other options (an older shardkin's defaults)
        build(root, out, "train", overwrite=True, **options)
    return out / "train"


def spread(values: list[float], fmt: str = ".0f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL)
    ap.add_argument("--out", type=Path, default=Path("/tmp/shardkin-bench-train-input"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=4.0, help="time each pipeline this long")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--transforms-only", action="store_true",
                    help="part 1 alone (more runs in the same time)")
    ap.add_argument("--reference", type=Path,
                    default=Path(os.environ.get("SHARDKIN_REF_VENV", "/tmp/ref-venv")))
    args = ap.parse_args()
    if not (args.root / "train").is_dir():
        sys.exit(f"no videos at {args.root}/train: pass --root")
    use_reference(args.reference)
    splits = {codec: built(args.root, args.out / codec, codec) for codec in CODECS}
    manifests = {codec: scaled_manifest(split, 1024)[0] for codec, split in splits.items()}
    stored = load_clips(splits["raw"], 64)
    w, b = args.workers, args.batch_size
    print(f"real clips at 128x171 ({len(stored)} held for part 1), {os.cpu_count()} cores, "
          f"{w} DataLoader workers, batch {b}, {args.runs} runs, the presets' one pass "
          f"{'on' if onepass.enabled() else 'off (numba not installed, or SHARDKIN_JIT=0)'}")
    ms: dict[str, list[float]] = {}
    rates: dict[str, list[Rate]] = {}
    for run in range(args.runs):
        torch.set_num_threads(1)
        for name, value in per_clip_ms(*transform_rows(stored, b)).items():
            ms.setdefault(name, []).append(value)
        print(f"run {run + 1}: " + ", ".join(f"{n.split(',')[0]} {v[-1]:.3f}"
                                             for n, v in list(ms.items())[:4]) + " ms/clip")
        for codec in () if args.transforms_only else CODECS:
            for name, rate in pipelines(manifests[codec], w, b, args.seconds).items():
                rates.setdefault(f"{codec}: {name}", []).append(rate)
                print(f"  {codec}: {name:32s} {rate.per_core:6.0f} clips/s per core "
                      f"(host {rate.host_per_core:6.0f}), {rate.wall:6.0f} clips/s")
    report(ms, rates)


def report(ms: dict[str, list[float]], rates: dict[str, list[Rate]]) -> None:
    transforms(ms)
    if rates:
        whole(rates)


def transforms(ms: dict[str, list[float]]) -> None:
    print(f"\n1. transforms alone, one core: CPU ms a clip (clips/s per core), "
          f"ranges over {len(next(iter(ms.values())))} runs")
    for name, values in ms.items():
        per_core = spread([1e3 / v for v in values])
        print(f"  {name:44s} {spread(values, '.3f'):>13s} ms  ({per_core})")

    def ratio(base: str, name: str) -> str:
        ratios = [b / v for b, v in zip(ms[base], ms[name])]
        return f"{spread(ratios, '.1f')}x, median {statistics.median(ratios):4.1f}x"

    train, evaluation = "reference train, contiguous clips", "reference eval, contiguous clips"
    print("  cheaper than the reference, per core (run by run):")
    for base, name, goal in (
            (train, "shardkin train, per clip", 2.5),
            (train, "shardkin train, batched (float on CPU)", 2.5),
            (train, "device path, CPU side (uint8 crop+flip)", 10),
            (train, "device path, CPU side, flips on the device", 10),
            (evaluation, "shardkin eval, per clip", 2),
            (evaluation, "shardkin eval, batched (float on CPU)", 2),
            (train, "reference train, shardkin's clips", 0)):
        print(f"    {name:44s} {ratio(base, name):>24s}" + (f"  (goal >= {goal}x)" if goal else
                                                            "  (the reference on views)"))
    print("  the one pass (numba) against torch's passes, per core (run by run):")
    for one, torchs in (("shardkin train, per clip", "shardkin train, per clip, torch's passes"),
                        ("shardkin train, batched (float on CPU)",
                         "shardkin train, batched, torch's passes")):
        print(f"    {one:44s} {ratio(torchs, one):>24s}")


def whole(rates: dict[str, list[Rate]]) -> None:
    print("\n2. whole pipelines: clips/s per core (host: workers only), clips/s")
    for name, values in rates.items():
        print(f"  {name:46s} {spread([r.per_core for r in values]):>11s} "
              f"(host {spread([r.host_per_core for r in values])}), "
              f"{spread([r.wall for r in values])}")
    for codec in CODECS:
        ref = rates[f"{codec}: reference preset as transform"]
        for name in ("shardkin preset as transform", "shardkin batched in workers"):
            values = rates[f"{codec}: {name}"]
            print(f"  {codec}: {name} / reference, per core: "
                  f"{spread([v.per_core / r.per_core for v, r in zip(values, ref)], '.2f')}")
        one, torchs = (rates[f"{codec}: {n}"] for n in ("shardkin batched in workers",
                                                        "the same on torch's passes"))
        print(f"  {codec}: batched in workers, the one pass / torch's passes, per core: "
              f"{spread([o.per_core / t.per_core for o, t in zip(one, torchs)], '.2f')}")
        for name in ("device path: uint8 crops", "device path, flips on the device"):
            host = rates[f"{codec}: {name}"]
            print(f"  {codec}: {name}, host / reference, per core: "
                  f"{spread([h.host_per_core / r.per_core for h, r in zip(host, ref)], '.1f')}")
    print("  goal: raw, shardkin batched in workers >= 1,000 clips/s per core")


if __name__ == "__main__":
    main()
