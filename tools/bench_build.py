"""Build speed: `shardkin build` against a bare PyAV decode loop (the floor), and 1 -> 2 workers.

    python tools/bench_build.py [--root ROOT --split train] [--min-dimension 128] [--rounds 3]
                                [--base OTHER_SHARDKIN_TREE] [--executor ray]

Frames/s counts source frames decoded per second of wall time, and per CPU second of
the process and its workers (steadier on a shared machine). The floor opens every video
and decodes (one FFmpeg thread) and converts every frame to RGB at the same output size
with a bare ``frame.to_ndarray``, nothing written; two stricter floors convert on one
swscale thread, and through one swscale context a video (as the build does): see
:func:`floor_decode`. Builds keep each video's tail (16-frame clips at step 16). Each
build runs with one FFmpeg thread per worker, so the 1 -> 2 worker speed-up measures
the process pool.

The machine may be shared: every measurement runs in its own process, all of them in
each round, in an order rotated from round to round, so that a change in load falls on
all sides; the load average is printed with each round. ``--base`` times another source
tree of shardkin the same way in the same rounds (an interleaved A/B). Without
../shared/realvideos it makes videos first.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

HERE = Path(__file__).resolve().parents[1]
REAL = HERE.parent / "shared" / "realvideos"
sys.path.insert(0, os.environ.get("BENCH_TREE") or str(HERE))  # the tree a measurement times
from shardkin.builder.clips import output_size  # noqa: E402
from shardkin.format.options import DEFAULT_EXTENSIONS  # noqa: E402
from shardkin.synth import make_video  # noqa: E402


def floor_decode(paths: list[Path], min_dimension: int, kind: str) -> int:
    """Decode and convert every frame of ``paths`` on one FFmpeg decoding thread; returns
    the frames. ``kind``: "floor" converts with a bare ``frame.to_ndarray`` (PyAV's
    defaults: a new swscale context a frame, on a thread a core with PyAV 17+),
    "floor-1-thread" the same on one swscale thread, "floor-one-context" through one
    ``VideoReformatter`` a video on one thread, as the build does."""
    from av.video.reformatter import VideoReformatter

    frames = 0
    threads = {} if kind == "floor" else {"threads": 1}
    for path in paths:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            w, h = output_size(s.codec_context.width, s.codec_context.height,
                               0, 0, min_dimension, 0)
            size = dict(width=w, height=h, interpolation="AREA") if min_dimension else {}
            convert = VideoReformatter() if kind == "floor-one-context" else None
            for frame in c.decode(s):
                if convert is None:
                    frame.to_ndarray(format="rgb24", **threads, **size)
                else:
                    convert.reformat(frame, format="rgb24", **threads, **size).to_ndarray()
                frames += 1
    return frames


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the build's workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measure(kind: str, args: argparse.Namespace, out: str) -> dict:
    """One measurement, in this process: {"seconds", "cpu", "frames", ...}."""
    paths = sorted(p for p in (args.root / args.split).rglob("*")
                   if p.suffix.lower().lstrip(".") in DEFAULT_EXTENSIONS)
    if kind.startswith("floor"):
        start, cpu = time.perf_counter(), cpu_seconds()
        frames = floor_decode(paths, args.min_dimension, kind)
        return {"seconds": time.perf_counter() - start, "cpu": cpu_seconds() - cpu,
                "frames": frames}
    from shardkin.builder import build

    workers = int(kind.split("-")[1])
    executor = "ray" if kind.startswith("ray") else "local"
    if executor == "ray":  # the cluster's start is not timed
        from shardkin.builder.executors import connect_ray

        connect_ray(None, workers)
    start, cpu = time.perf_counter(), cpu_seconds()
    m = build(args.root, out, args.split, frames_per_clip=args.frames_per_clip,
              min_dimension=args.min_dimension, shard_size=args.shard_size, workers=workers,
              decode_threads=1, progress=False, executor=executor)
    return {"seconds": time.perf_counter() - start, "cpu": cpu_seconds() - cpu,
            # pictures decoded: the timeline's frames less those holding the previous one
            "frames": sum(v["frames"] - len(v.get("held") or ()) for v in m["videos"]),
            "bytes": m["totals"]["bytes"],
            "shards": m["totals"]["shards"]}


def run(kind: str, tree: Path, args: argparse.Namespace, tmp: str) -> dict:
    """``measure(kind)`` in a fresh process with ``tree`` first on its path."""
    command = [sys.executable, __file__, "--measure", kind, "--out", tempfile.mkdtemp(dir=tmp),
               "--root", str(args.root), "--split", args.split,
               "--frames-per-clip", str(args.frames_per_clip),
               "--min-dimension", str(args.min_dimension), "--shard-size", args.shard_size]
    env = {**os.environ, "BENCH_TREE": str(tree), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL if (REAL / "train").is_dir() else None)
    ap.add_argument("--split", default="train")
    ap.add_argument("--frames-per-clip", type=int, default=16)
    ap.add_argument("--min-dimension", type=int, default=128)
    ap.add_argument("--shard-size", default="8MB",
                    help="small shards so the pool has work to share")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", type=Path, help="another shardkin source tree to time alongside")
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="ray: also time the build on a local Ray cluster of 2 CPUs")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args, args.out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            args.root = Path(tmp) / "videos"
            for i in range(12):
                make_video(args.root / args.split / f"class_{i % 4}" / f"v{i}.mp4", 150, 30,
                           (320, 240), seed=i)
        sides = [("floor", HERE), ("floor-1-thread", HERE), ("floor-one-context", HERE),
                 ("build-1", HERE), ("build-2", HERE)]
        if args.base:
            sides += [("build-1", args.base), ("build-2", args.base)]
        if args.executor == "ray":
            sides.append(("ray-2", HERE))
        names = {(k, t): (f"base {k}" if t == args.base else k) for k, t in sides}
        wall: dict[str, list[float]] = {names[s]: [] for s in sides}
        cpu: dict[str, list[float]] = {names[s]: [] for s in sides}
        frames = 0
        for r in range(args.rounds):
            order = sides[r % len(sides):] + sides[: r % len(sides)]
            load = os.getloadavg()[0]
            got = {names[s]: run(*s, args, tmp) for s in order}
            frames = got["floor"]["frames"]
            assert all(g["frames"] == frames for g in got.values()), got
            for name, g in got.items():
                wall[name].append(g["seconds"])
                cpu[name].append(g["cpu"])
            row = "  ".join(f"{n} {frames / g['seconds']:.0f} ({frames / g['cpu']:.0f})"
                            for n, g in got.items())
            print(f"round {r + 1} (load {load:.1f} -> {os.getloadavg()[0]:.1f}), frames/s "
                  f"(per CPU second): {row}", flush=True)
        print(f"videos from {args.root / args.split}: {frames} frames, min_dimension="
              f"{args.min_dimension}, {got['build-1']['shards']} shards, "
              f"{got['build-1']['bytes'] / 1e6:.0f} MB, cores={os.cpu_count()}, "
              f"{args.rounds} rounds (ranges over the rounds; ratios within a round)")

        def ratios(a: str, b: str, of: dict = wall) -> str:
            return spread([tb / ta for ta, tb in zip(of[a], of[b])])

        for name in wall:
            line = (f"{name:<22}{spread([frames / t for t in wall[name]]):>14} frames/s, "
                    f"{spread([frames / t for t in cpu[name]])} per CPU second")
            build, tree = name.removeprefix("base "), "base " if name.startswith("base") else ""
            if build == "build-1":
                line += "".join(
                    f"\n{'':<24}to {floor} {ratios(name, floor)}, per CPU second "
                    f"{ratios(name, floor, cpu)}" + (" (goal >= 0.85)" if floor == "floor" else "")
                    for floor in ("floor", "floor-1-thread", "floor-one-context"))
            elif build == "build-2":
                line += (f"\n{'':<24}1 -> 2 workers {ratios(name, tree + 'build-1')} (goal >= "
                         f"1.7); frames per CPU second, 2 workers over 1: "
                         f"{ratios(name, tree + 'build-1', cpu)}")
            elif name == "ray-2":
                line += f"\n{'':<24}to local processes {ratios(name, 'build-2')}"
            print(line)
        if args.base:
            print(f"this tree / base, 1 worker: {ratios('build-1', 'base build-1')}, per CPU "
                  f"second {ratios('build-1', 'base build-1', cpu)}; 2 workers: "
                  f"{ratios('build-2', 'base build-2')}, per CPU second "
                  f"{ratios('build-2', 'base build-2', cpu)}")


if __name__ == "__main__":
    main()
