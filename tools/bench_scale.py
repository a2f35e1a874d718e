"""Start-up, first batch and memory of both readers on simulated builds of any size.

    python tools/bench_scale.py [--sizes 160k,640k,2.56m] [--workers 2] [--keep DIR]

A simulated build is what a build of that size writes -- ``manifest.json`` (every shard and
every video listed), ``head.json``, ``index.npy``, ``videos.npy``, ``paths.npy`` -- over
copies of one real shard (built here from small made videos; every shard name is a link to
it), so the files a
reader opens at start-up are of the real size while the clips it reads are real. Sizes are
in videos: ``640k`` is Kinetics-700 (640k videos, 8.9M clips, 40k shards); ``2.56m`` 4x
that; ``howto`` HowTo100M's shape (1.2M long videos, 136M clips, 612k shards).

Each measurement runs in a fresh process, as a training job starts: ``ShardDataset`` and
``Kinetics`` constructed (start-up), then the first batch of 32 through ``make_loader`` with
``--workers`` workers (Kinetics through a sampler of 64 random indices: torch's own
``RandomSampler`` alone costs over a second at 35M clips); the peak memory is that of the
whole process tree (proportional set size, so pages shared by the workers count once),
sampled every 20 ms. ``pickle`` is ``len(pickle.dumps(Kinetics(...)))``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shardkin import build  # noqa: E402
from shardkin.format.manifest import Manifest  # noqa: E402
from shardkin.format.videos import encode_videos  # noqa: E402
from shardkin.synth import make_dataset  # noqa: E402

# name: (videos, clips per video, clips per shard)
SIZES = {"160k": (160_000, 14, 222), "640k": (640_000, 14, 222), "2.56m": (2_560_000, 14, 222),
         "howto": (1_200_000, 113, 222)}


def source_shard(tmp: Path) -> Path:
    """One real shard of 16-frame clips (made videos built raw at 171x128)."""
    videos = make_dataset(tmp / "videos", classes=4, videos_per_class=4, frames=224,
                          splits=("train",), size=(172, 128))
    build(videos, tmp / "src", "train", frames_per_clip=16, width=171, height=128,
          clips_per_shard=10_000, audio_codec="none", workers=2, progress=False)
    return tmp / "src" / "train"


def simulate(src: Path, out: Path, videos: int, per_video: int, per_shard: int) -> Path:
    """A split folder as a build of ``videos`` videos of ``per_video`` clips would write,
    ``per_shard`` clips a shard, every shard a link to ``src``'s one shard."""
    m = json.loads((src / "manifest.json").read_text())
    (shard,) = m["shards"]
    rows = np.load(src / "index.npy")
    rows = rows[np.argsort(rows[:, 1])]
    clips = videos * per_video
    nshards = -(-clips // per_shard)
    out.mkdir(parents=True)
    for k in range(nshards):
        os.symlink(src / shard["name"], out / f"train-{k:06d}.tar")
    take = rows[np.arange(per_shard) % len(rows)]  # a shard's samples: the source's, repeated
    index = np.lib.format.open_memmap(out / "index.npy", "w+", np.int64, (clips, rows.shape[1]))
    for first in range(0, nshards, 4096):  # a block of shards at a time
        block = np.tile(take, (min(4096, nshards - first), 1))
        block[:, 0] = np.repeat(np.arange(first, first + len(block) // per_shard), per_shard)
        lo = first * per_shard
        index[lo : lo + len(block)] = block[: clips - lo]
    index.flush()
    del index
    index = (out / "index.npy").read_bytes()
    classes = [f"class_{c:03d}" for c in range(700)]
    listing = [{"path": f"train/{classes[v % 700]}/v{v:08d}.mp4", "label": v % 700,
                "status": "ok", "video_index": v, "clips": per_video, "tail": 5,
                "frames": per_video * 16 + 5, "held": [], "fps": 30.0,
                "shard": v * per_video // per_shard, "offset": 512} for v in range(videos)]
    vtable, ptable = encode_videos(listing)
    (out / "videos.npy").write_bytes(vtable)
    (out / "paths.npy").write_bytes(ptable)

    def info(name: str, data: bytes) -> dict:
        return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    head = {"format_version": m["format_version"], "split": "train", "options": m["options"],
            "classes": classes, "index": info("index.npy", index),
            "video_table": info("videos.npy", vtable), "path_table": info("paths.npy", ptable),
            "shards": [{"name": f"train-{k:06d}.tar", "clips": per_shard,
                        "bytes": shard["bytes"], "sha256": shard["sha256"]}
                       for k in range(nshards)],
            "skipped": [], "skipped_extensions": {},
            "totals": {"videos": videos, "clips": clips, "shards": nshards}}
    (out / "head.json").write_text(json.dumps(Manifest.from_json(head).head_json(),
                                              sort_keys=True, separators=(",", ":")))
    with open(out / "manifest.json", "w") as f:  # sorted keys, as a build writes it
        text = json.dumps(head, sort_keys=True)
        f.write(text[:-1] + ', "videos": [')
        for i, v in enumerate(listing):
            f.write(("" if i == 0 else ", ") + json.dumps(
                {k: v[k] for k in ("clips", "fps", "frames", "held", "label", "path",
                                   "status", "tail", "video_index")} | {
                    "reason": None, "shard": f"train-{v['shard']:06d}.tar"}, sort_keys=True))
        f.write("]}")
    return out


PROBE = r"""
import json, pickle, sys, time
t0 = time.perf_counter()
import numpy as np, torch
import shardkin
reader, source, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
if reader == "ShardDataset":
    ds = shardkin.ShardDataset(source, split=None, shuffle=True, seed=0)
    loader = shardkin.make_loader(ds, 32, num_workers=workers)
else:
    ds = shardkin.Kinetics(source, split=None)
    picks = np.random.default_rng(0).integers(0, len(ds), 64).tolist()
    loader = shardkin.make_loader(ds, 32, num_workers=workers, sampler=picks)
start = time.perf_counter() - t
batch = next(iter(loader))
first = time.perf_counter() - t
size = len(pickle.dumps(ds)) if reader == "Kinetics" else None
print(json.dumps({"start": start, "first": first, "pickle": size, "len": len(ds),
                  "import": t - t0}))
"""


def measure(reader: str, source: Path, workers: int) -> dict:
    """One fresh process: start-up, first batch, peak memory of its process tree."""
    proc = subprocess.Popen([sys.executable, "-c", PROBE, reader, str(source), str(workers)],
                            stdout=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        me = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [me, *me.children(recursive=True)]
                peak = max(peak, sum(p.memory_full_info().pss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate(timeout=600)
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{reader} failed on {source}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="160k,640k,2.56m",
                    help=f"comma-separated, of {', '.join(SIZES)} (default 160k,640k,2.56m)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2, help="fresh processes per measurement")
    ap.add_argument("--keep", type=Path, help="make the simulated builds here and keep them")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    where = args.keep or tmp
    try:
        src = source_shard(tmp)
        print(f"{'size':>6} {'videos':>10} {'clips':>12} {'shards':>8} {'manifest':>9}  "
              f"{'reader':<12} {'start s':>8} {'first s':>8} {'peak GB':>8} {'pickle B':>9}")
        for name in args.sizes.split(","):
            videos, per_video, per_shard = SIZES[name]
            split = where / f"sim-{name}" / "train"
            if not (split / "manifest.json").exists():
                t = time.perf_counter()
                simulate(src, split, videos, per_video, per_shard)
                print(f"(simulated {name} in {time.perf_counter() - t:.0f} s)", flush=True)
            manifest_mb = (split / "manifest.json").stat().st_size / 1e6
            for reader in ("ShardDataset", "Kinetics"):
                runs = [measure(reader, split, args.workers) for _ in range(args.runs)]
                clips = videos * per_video
                starts = "/".join(f"{x['start']:.2f}" for x in runs)
                firsts = "/".join(f"{x['first']:.2f}" for x in runs)
                size = runs[0]["pickle"] if runs[0]["pickle"] is not None else ""
                print(f"{name:>6} {videos:>10,} {clips:>12,} {-(-clips // per_shard):>8,} "
                      f"{manifest_mb:>7.0f}MB  {reader:<12} {starts:>8} {firsts:>8} "
                      f"{max(x['peak'] for x in runs) / 1e9:>8.2f} {size:>9}", flush=True)
            if args.keep is None:
                shutil.rmtree(split.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
