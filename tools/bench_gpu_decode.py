"""JPEG clips decoded by CPU workers against batches decoded on the GPU: one run, one table.

    python tools/bench_gpu_decode.py --prepare .gpubench      # here: shards (PyAV) + wheels
    python tools/bench_gpu_decode.py --shards .gpubench/train  # on the GPU machine
    python tools/bench_gpu_decode.py --shards .gpubench/train --cpu-only   # a dry run, no GPU

Made for one run of a few minutes on a GPU machine with torch and torchvision (CUDA), no
PyAV and no network, from jpeg shards built beforehand and carried along. ``--prepare
DIR`` (on a machine with PyAV and the real videos) builds ``DIR/train``: the real train
clips at the recipe's 128x171, 16 frames, ``--video-codec jpeg --audio-codec none``
(about 27 MB), and downloads into ``DIR/../.whl`` the wheels the GPU machine lacks
(simplejpeg, for the CPU decoding it is measured against). Both paths must be ignored by
git (``.git/info/exclude``) and named in the run's ``carry``.

All on the same shards (their train split listed over and over, epochs of ``--clips``),
batches of ``--batch-size``, through ``make_loader``, each timed for ``--seconds`` after a
warm-up; clips/s, and CPU core-seconds a clip (user + system of the main process, all its
threads, and the DataLoader workers, over the timed batches):

(a) CPU decode in N worker processes (N = ``--cpu-workers``, default 1,2,4,8,15): the
    workers decode (libjpeg-turbo), batches pinned and copied to the GPU;
(b) GPU decode with N = 1 and 2 workers: ``decode_device="cuda"``, the workers only pack
    the JPEG bytes, the main process decodes each batch with nvJPEG (torchvision);
(c) (b) followed by the train preset on the GPU (``device_transform``): shardkin's
    ``VideoClassificationPresetTrain(...).batch`` (per clip a random 112x112 crop and flip,
    float, normalized with Kinetics' mean and std, ``[B, C, T, H, W]``: torchvision's
    reference preset, bit-identical) on clips already at 128x171;
(d) decode alone in the main process, whole batches, by member layout: one JPEG a clip
    (this format), one JPEG a frame (format versions 1-2, split from the same bytes), one
    JPEG a clip without restart markers (re-encoded at q90): where nvJPEG's per-image
    cost and its hardware decoder's support for restart markers show;
(e) pixels: every clip of the shards decoded by nvJPEG and by libjpeg-turbo, the largest
    and the mean absolute difference;
(f) shardkin.transforms' device path with N = the GPU rows' workers: the workers decode
    and cut the uint8 crops (``in_workers()``; and with ``flip_on_device=True``), the
    main process runs ``normalize_batch`` on the GPU after a pinned, non-blocking copy;
(g) the device path's floats on the GPU against the CPU's, every clip of the shards
    (the README says the CUDA path gives the CPU's values bit for bit: checked here).

``--cpu-only`` (no CUDA needed) runs (a) without the copy, (b) and (c) with
``decode_device="cpu"`` (the same path but libjpeg-turbo in the main process instead of
nvJPEG), (d) with libjpeg-turbo and (f) on the CPU, to check the script end to end; its
figures are not GPU figures. ``--out FILE`` writes the report there too.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from jpeg_members import frames_member  # noqa: E402

from shardkin import ShardDataset, make_loader  # noqa: E402
from shardkin.reader.device import decode_jpegs, pack_refs  # noqa: E402
from shardkin.transforms import Crops, VideoClassificationPresetTrain  # noqa: E402

CROP = 112
REAL = Path(__file__).resolve().parents[2] / "shared" / "realvideos"
WHEELS = ["simplejpeg==1.9.0"]  # what the GPU machine lacks (its image: /work/.library/device)
PRESET = VideoClassificationPresetTrain(crop_size=CROP, resize_size=(128, 171))  # (f), (g)


def long_manifest(split: Path, clips: int) -> Path:
    """A manifest listing ``split``'s shards over and over: about ``clips`` an epoch."""
    m = json.loads((split / "manifest.json").read_text())
    real = m["shards"]
    per_shard = sum(s["clips"] for s in real) / len(real)
    count = max(len(real), round(clips / per_shard))
    m["shards"] = [dict(real[i % len(real)]) for i in range(count)]
    path = split / f"gpubench-{clips}-manifest.json"
    path.write_text(json.dumps(m, sort_keys=True))
    return path


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(ds: ShardDataset, workers: int, batch: int, seconds: float, device: str | None,
            step: Callable[[torch.Tensor], torch.Tensor], **loader_kw) -> tuple[float, float]:
    """(clips/s, CPU core-seconds a clip) of ``step`` over the loader's videos."""
    gc.collect()  # the previous row's persistent workers stop before this one's start
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    loader = make_loader(ds, batch, num_workers=workers, **loader_kw)

    def videos() -> Iterator[torch.Tensor]:
        for epoch in itertools.count():
            ds.set_epoch(epoch)
            yield from (b[0] for b in loader)

    def sync() -> None:
        if device is not None and device.startswith("cuda"):
            torch.cuda.synchronize()

    stream, clips, timed = videos(), 0, 0
    for video in itertools.islice(stream, 3 * workers + 3):  # workers start, memory touched
        step(video)
    sync()
    procs = [me, *(p for p in me.children(recursive=True) if p.pid not in before)]
    t, cpu = time.perf_counter(), _cpu(procs)
    for video in stream:
        step(video)
        clips, timed = clips + len(video.video if isinstance(video, Crops) else video), timed + 1
        if timed >= 8 and time.perf_counter() - t >= seconds:
            break
    sync()
    wall, spent = time.perf_counter() - t, _cpu(procs) - cpu
    stream.close()
    return clips / wall, spent / clips


def batches_of(split: Path, batch: int) -> list:
    """Every clip of ``split`` as byte batches (the workers' packing, in this process)."""
    ds = ShardDataset(split, shuffle=False, decode_device="cpu")
    refs = [r for r, _ in ds._stream(0, 1)]
    return [pack_refs(refs[i : i + batch], ds) for i in range(0, len(refs), batch)]


def pixels(split: Path, batch: int) -> str:
    """(e): nvJPEG against libjpeg-turbo over every clip of ``split``."""
    largest, total, count, differ = 0, 0, 0, 0
    for jb in batches_of(split, batch):
        gpu = decode_jpegs(jb, torch.device("cuda")).cpu().to(torch.int16)
        cpu = decode_jpegs(jb, torch.device("cpu")).to(torch.int16)
        diff = (gpu - cpu).abs()
        largest = max(largest, int(diff.max()))
        total, count = total + int(diff.sum()), count + diff.numel()
        differ += int((diff > 0).sum())
    return (f"(e) nvJPEG vs libjpeg-turbo over {count:,} values: largest difference {largest}, "
            f"mean {total / count:.4f}, {differ / count:.2%} of values differ")


def same_floats(split: Path, batch: int) -> str:
    """(g): ``normalize_batch`` of every clip's crops on the GPU against the CPU."""
    ds = ShardDataset(split, shuffle=False)
    hooks = PRESET.in_workers(seed=1), PRESET.in_workers(seed=1, flip_on_device=True)
    batches = differ = largest = 0
    for n, (video, _, _) in enumerate(make_loader(ds, batch)):
        keys = [f"{n}/{i}" for i in range(len(video))]
        for hook in hooks:
            crops = hook(video, keys, 0)
            on_cpu = PRESET.normalize_batch(crops)
            on_gpu = PRESET.normalize_batch(crops.to("cuda")).cpu()
            if not torch.equal(on_cpu, on_gpu):
                differ += 1
                largest = max(largest, float((on_cpu - on_gpu).abs().max()))
            batches += 1
    return (f"(g) device path floats, GPU against CPU: {batches} batches, "
            + ("all bit-identical" if not differ else
               f"{differ} differ (largest difference {largest:.3g})"))


def layouts(split: Path, batch: int, device: torch.device, seconds: float) -> list[str]:
    """(d): decode alone, whole batches, one JPEG a clip / a frame / a clip without restarts."""
    import simplejpeg

    members = []
    for shard in sorted(split.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members += [tar.extractfile(m).read() for m in tar if m.name.endswith(".video.jpgs")]
    members = members[: len(members) // batch * batch] or members

    def images(member: bytes, layout: str) -> list[bytes]:
        if layout == "one JPEG a frame (v1-2)":
            data, t = frames_member(member), int.from_bytes(member[4:8], "little")
            sizes = [int.from_bytes(data[16 + 4 * i : 20 + 4 * i], "little") for i in range(t)]
            pos, out = 16 + 4 * t, []
            for n in sizes:
                out.append(data[pos : pos + n])
                pos += n
            return out
        p = int.from_bytes(member[16:20], "little")
        t = int.from_bytes(member[4:8], "little")
        whole = member[20 + 8 * p + 4 * t :]
        if layout == "one JPEG a clip (v3)" or p != 1:
            return [whole]
        image = simplejpeg.decode_jpeg(whole, colorspace="RGB")
        return [simplejpeg.encode_jpeg(image, quality=90, colorspace="RGB",
                                       colorsubsampling="444")]

    names = ["one JPEG a clip (v3)", "one JPEG a frame (v1-2)", "one JPEG a clip, no restarts"]
    sets = {n: [[torch.frombuffer(bytearray(i), dtype=torch.uint8)
                 for m in members[k : k + batch] for i in images(m, n)]
                for k in range(0, len(members), batch)] for n in names}
    if device.type == "cuda":
        from torchvision.io import ImageReadMode, decode_jpeg

        def decode(tensors):
            decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    else:
        def decode(tensors):
            for t in tensors:
                simplejpeg.decode_jpeg(t.numpy(), colorspace="RGB")

    rates = {n: [0, 0.0, 0.0] for n in names}  # clips, seconds, CPU seconds
    me = psutil.Process()
    for n in names:  # warm-up
        decode(sets[n][0])
    deadline = time.perf_counter() + seconds * len(names)
    while not rates[names[0]][0] or time.perf_counter() < deadline:  # in turn, batches of each
        for n in names:
            for tensors in sets[n][:4]:
                t, c = time.perf_counter(), _cpu([me])
                decode(tensors)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                r = rates[n]
                r[0] += batch
                r[1] += time.perf_counter() - t
                r[2] += _cpu([me]) - c
    lines = []
    for n in names:
        clips, wall, cpu = rates[n]
        count = len(sets[n][0]) / batch
        lines.append(f"(d) {n:32s} {clips / wall:8,.0f} clips/s ({clips / wall * count:9,.0f} "
                     f"images/s), {cpu / clips * 1e3:6.3f} CPU ms a clip, "
                     f"{sum(map(len, sets[n][0])) / batch / 1e3:6.1f} KB a clip")
    return lines


def prepare(folder: Path, root: Path) -> None:
    """Build the carried shards here (PyAV) and fetch the wheels the GPU machine lacks."""
    from shardkin.builder import build

    m = build(root, folder, "train", frames_per_clip=16, width=171, height=128,
              video_codec="jpeg", audio_codec="none", shard_size="8MB", progress=True,
              overwrite=True)
    size = sum(s["bytes"] for s in m["shards"])
    print(f"{m['totals']['clips']} clips, {size / 1e6:.1f} MB in {folder / 'train'}")
    wheels = folder.parent / ".whl"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--platform",
           "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(wheels),
           *WHEELS]
    if subprocess.run(cmd).returncode:
        print("could not download the wheels; run:\n  " + " ".join(cmd))
    print(f"carry {folder} and {wheels} (ignored by git); on the GPU machine:\n"
          "  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && "
          f"PYTHONPATH=/tmp/site:$PWD python3 tools/bench_gpu_decode.py --shards {folder}/train")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, help="a jpeg build's split folder (see --prepare)")
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="build DIR/train, get wheels")
    ap.add_argument("--root", type=Path, default=REAL, help="videos for --prepare")
    ap.add_argument("--cpu-only", action="store_true", help="no GPU: the dry run (see above)")
    ap.add_argument("--cpu-workers", default="1,2,4,8,15",
                    help="worker counts of the CPU rows, comma-separated")
    ap.add_argument("--gpu-workers", default="1,2",
                    help="worker counts of the GPU rows, comma-separated")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--clips", type=int, default=2048, help="clips an epoch")
    ap.add_argument("--seconds", type=float, default=10.0, help="time each row this long")
    ap.add_argument("--out", type=Path, help="also write the report here")
    args = ap.parse_args()
    if args.prepare:
        return prepare(args.prepare, args.root)
    if args.shards is None:
        ap.error("--shards (or --prepare)")
    device = "cpu" if args.cpu_only else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --cpu-only for the dry run")
    torch.set_num_threads(1)  # the main process's own work is measured on one core
    long = long_manifest(args.shards, args.clips)
    lines = [f"{platform.node()}: {os.cpu_count()} cores, torch {torch.__version__}, "
             + (f"{torch.cuda.get_device_name()}" if device == "cuda" else "no GPU (--cpu-only)")]
    try:
        import torchvision

        lines[0] += f", torchvision {torchvision.__version__}"
    except ImportError:
        pass
    lines.append(f"{args.shards}: epochs of {args.clips} clips, batch {args.batch_size}; "
                 "clips/s and CPU core-ms a clip (main process and workers)")
    print("\n".join(lines), flush=True)
    b = args.batch_size

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)
        if args.out:  # as it goes: a run cut short still leaves its rows
            args.out.write_text("\n".join(lines) + "\n")

    def row(name: str, measured: Callable[[], tuple[float, float]]) -> None:
        try:
            rate, cost = measured()
        except Exception as e:  # one failing row must not cost the others' device time
            say(f"{name:48s} FAILED: {type(e).__name__}: {e}")
            return
        say(f"{name:48s} {rate:8,.0f} clips/s {cost * 1e3:7.3f} core-ms a clip "
            f"({1 / cost:6,.0f} clips/s a core)")

    to_gpu = ((lambda v: v.to("cuda", non_blocking=True)) if device == "cuda"
              else (lambda v: v))
    for n in map(int, args.cpu_workers.split(",")):
        row(f"(a) CPU decode, workers={n}", lambda n=n: measure(
            ShardDataset(long, seed=n), n, b, args.seconds, device, to_gpu,
            pin_memory=device == "cuda"))
    kind = "GPU" if device == "cuda" else "main-process CPU (dry run)"
    for preset in (False, True):
        for n in map(int, args.gpu_workers.split(",")):
            label = f"({'c' if preset else 'b'}) {kind} decode, workers={n}" + (
                " + preset" if preset else "")
            row(label, lambda n=n, preset=preset: measure(
                ShardDataset(long, seed=n), n, b, args.seconds, device, lambda v: v,
                decode_device=device, device_transform=PRESET.batch if preset else None))
    for flip_on_device in (False, True):
        for n in map(int, args.gpu_workers.split(",")):
            row(f"(f) device path, workers={n}" + (", flips on it" if flip_on_device else ""),
                lambda n=n, f=flip_on_device: measure(
                    ShardDataset(long, seed=n), n, b, args.seconds, device,
                    lambda v: PRESET.normalize_batch(v.to(device, non_blocking=True)),
                    pin_memory=device == "cuda",
                    batch_transform=PRESET.in_workers(seed=n, flip_on_device=f)))
    try:
        for line in layouts(args.shards, b, torch.device(device), args.seconds / 2):
            say(line)
        if device == "cuda":
            say(pixels(args.shards, b))
            say(same_floats(args.shards, b))
    except Exception as e:
        say(f"(d)/(e)/(g) FAILED: {type(e).__name__}: {e}")
    long.unlink()


if __name__ == "__main__":
    main()
