"""Start-up, first batch and memory of both readers on simulated builds of any size.

    python tools/bench_scale.py [--sizes 160k,640k,2.56m] [--workers 2] [--keep DIR]

A simulated build is what a build of that size writes -- ``manifest.json`` (every shard and
every video listed), ``head.json``, ``index.npy``, ``videos.npy``, ``paths.npy`` -- over
copies of one real shard (built here from 16 made videos; every shard name is a link to
it, every copy's rows and checksums its own), so the files a reader opens at start-up are
of the real size while the clips it reads, and checks, are real. Sizes are
in videos: ``640k`` is Kinetics-700 (640k videos, 8.9M clips, 40k shards); ``2.56m`` 4x
that (2.56M videos, 35.8M clips, 160k shards); ``howto`` HowTo100M's shape (1.2M long
videos, 136M clips, 75k shards of small frames).

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

# name: (videos, frames a source video: 14 or 113 clips of 16, frame size)
SIZES = {"160k": (160_000, 224, (172, 128)), "640k": (640_000, 224, (172, 128)),
         "2.56m": (2_560_000, 224, (172, 128)), "howto": (1_200_000, 1808, (64, 48))}
SOURCE_VIDEOS = 16


def source_shard(tmp: Path, frames: int, size: tuple[int, int]) -> Path:
    """One real shard of 16 made videos of ``frames`` frames, 16-frame clips, built raw
    (at 171x128 from 172x128)."""
    videos = make_dataset(tmp / "videos", classes=4, videos_per_class=SOURCE_VIDEOS // 4,
                          frames=frames, splits=("train",), size=size)
    width, height = (171, 128) if size == (172, 128) else size
    build(videos, tmp / "src", "train", frames_per_clip=16, width=width, height=height,
          clips_per_shard=10**9, audio_codec="none", workers=2, progress=False)
    return tmp / "src" / "train"


def simulate(src: Path, out: Path, videos: int) -> Path:
    """A split folder as a build of ``videos`` videos would write: copies of ``src``'s one
    shard (a link each), each holding its videos, rows and checksums again."""
    m = json.loads((src / "manifest.json").read_text())
    (shard,) = m["shards"]
    rows = np.load(src / "index.npy")  # video order
    source = sorted(m["videos"], key=lambda v: v["video_index"])
    copies = -(-videos // len(source))
    out.mkdir(parents=True)
    for k in range(copies):
        os.symlink(src / shard["name"], out / f"train-{k:06d}.tar")
    index = np.lib.format.open_memmap(out / "index.npy", "w+", np.int64,
                                      (copies * len(rows), rows.shape[1]))
    for first in range(0, copies, 4096):  # a block of copies at a time
        block = np.tile(rows, (min(4096, copies - first), 1))
        block[:, 0] = np.repeat(np.arange(first, first + len(block) // len(rows)), len(rows))
        index[first * len(rows) : first * len(rows) + len(block)] = block
    index.flush()
    del index
    index = (out / "index.npy").read_bytes()
    classes = [f"class_{c:03d}" for c in range(700)]
    listing = [{**v, "path": f"train/{classes[n % 700]}/v{n:08d}.mp4", "label": n % 700,
                "video_index": n, "shard": k,
                "held": v.get("held", []), "fps": v.get("fps", 30.0)}
               for k in range(copies) for v in source
               for n in [k * len(source) + v["video_index"]]]
    vtable, ptable = encode_videos(listing)
    (out / "videos.npy").write_bytes(vtable)
    (out / "paths.npy").write_bytes(ptable)

    def info(name: str, data: bytes) -> dict:
        return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    clips = copies * len(rows)
    head = {"format_version": m["format_version"], "split": "train", "options": m["options"],
            "classes": classes, "index": info("index.npy", index),
            "video_table": info("videos.npy", vtable), "path_table": info("paths.npy", ptable),
            "shards": [{"name": f"train-{k:06d}.tar", "clips": shard["clips"],
                        "bytes": shard["bytes"], "sha256": shard["sha256"]}
                       for k in range(copies)],
            "skipped": [], "skipped_extensions": {},
            "totals": {"videos": len(listing), "clips": clips, "shards": copies}}
    (out / "head.json").write_text(json.dumps(Manifest.from_json(head).head_json(),
                                              sort_keys=True, separators=(",", ":")))
    with open(out / "manifest.json", "w") as f:  # sorted keys, as a build writes it
        text = json.dumps(head, sort_keys=True)
        f.write(text[:-1] + ', "videos": [')
        for i, v in enumerate(listing):
            f.write(("" if i == 0 else ", ") + json.dumps(
                {**{k: v[k] for k in ("clips", "fps", "frames", "held", "label", "path",
                                      "status", "tail", "video_index")},
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
    sources: dict = {}
    try:
        print(f"{'size':>6} {'videos':>10} {'clips':>12} {'shards':>8} {'manifest':>9}  "
              f"{'reader':<12} {'start s':>11} {'first s':>11} {'peak GB':>8} {'pickle B':>9}")
        for name in args.sizes.split(","):
            videos, frames, size = SIZES[name]
            if (frames, size) not in sources:
                sources[frames, size] = source_shard(where / f"src-{frames}", frames, size)
            split = where / f"sim-{name}" / "train"
            if not (split / "manifest.json").exists():
                t = time.perf_counter()
                simulate(sources[frames, size], split, videos)
                print(f"(simulated {name} in {time.perf_counter() - t:.0f} s)", flush=True)
            head = json.loads((split / "head.json").read_text())
            clips, shards = head["totals"]["clips"], len(head["shards"]["name"])
            manifest_mb = (split / "manifest.json").stat().st_size / 1e6
            for reader in ("ShardDataset", "Kinetics"):
                runs = [measure(reader, split, args.workers) for _ in range(args.runs)]
                starts = "/".join(f"{x['start']:.2f}" for x in runs)
                firsts = "/".join(f"{x['first']:.2f}" for x in runs)
                size_b = runs[0]["pickle"] if runs[0]["pickle"] is not None else ""
                print(f"{name:>6} {videos:>10,} {clips:>12,} {shards:>8,} "
                      f"{manifest_mb:>7.0f}MB  {reader:<12} {starts:>11} {firsts:>11} "
                      f"{max(x['peak'] for x in runs) / 1e9:>8.2f} {size_b:>9}", flush=True)
            if args.keep is None:
                shutil.rmtree(split.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
