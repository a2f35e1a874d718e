"""Build speed: `shardkin build` against a bare PyAV decode loop (the floor), and 1 -> 2 workers.

    python tools/bench_build.py [--root ROOT --split train] [--min-dimension 128]

Frames/s counts source frames decoded per second of wall time. The floor opens
every video and decodes and converts every frame to RGB at the same output size,
one FFmpeg thread, nothing written. The build runs with one FFmpeg thread per
worker too, so the 1 -> 2 worker speed-up measures the process pool. Without
../shared/realvideos it makes videos first.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shardkin.builder import build  # noqa: E402
from shardkin.builder.clips import output_size  # noqa: E402
from shardkin.format.options import DEFAULT_EXTENSIONS  # noqa: E402
from shardkin.synth import make_video  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "realvideos"


def floor_decode(paths: list[Path], min_dimension: int) -> int:
    frames = 0
    for path in paths:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            w, h = output_size(s.codec_context.width, s.codec_context.height,
                               0, 0, min_dimension, 0)
            for frame in c.decode(s):
                if min_dimension:
                    frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
                else:
                    frame.to_ndarray(format="rgb24")
                frames += 1
    return frames


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL if (REAL / "train").is_dir() else None)
    ap.add_argument("--split", default="train")
    ap.add_argument("--frames-per-clip", type=int, default=16)
    ap.add_argument("--min-dimension", type=int, default=128)
    ap.add_argument("--shard-size", default="8MB",
                    help="small shards so the pool has work to share")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="ray: also time the build on a local 2-CPU Ray cluster "
                         "against local processes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "videos"
            for i in range(12):
                make_video(root / args.split / f"class_{i % 4}" / f"v{i}.mp4", 150, 30, (320, 240),
                           seed=i)
        paths = sorted(p for p in (root / args.split).rglob("*")
                       if p.suffix.lower().lstrip(".") in DEFAULT_EXTENSIONS)
        t_floor, frames = timed(lambda: floor_decode(paths, args.min_dimension), args.repeat)

        def run(workers: int, executor: str = "local") -> dict:
            out = Path(tempfile.mkdtemp(dir=tmp))
            return build(root, out, args.split, frames_per_clip=args.frames_per_clip,
                         min_dimension=args.min_dimension, shard_size=args.shard_size,
                         workers=workers, decode_threads=1, progress=False, executor=executor)

        t1, m = timed(lambda: run(1), args.repeat)
        t2, _ = timed(lambda: run(2), args.repeat)
        built = sum(v["frames"] for v in m["videos"])
        assert built == frames, (built, frames)
        print(f"videos: {len(paths)} from {root / args.split}, {frames} frames, "
              f"min_dimension={args.min_dimension}, {m['totals']['shards']} shards, "
              f"{m['totals']['bytes'] / 1e6:.0f} MB, cores={os.cpu_count()}")
        print(f"{'PyAV decode loop (floor)':<32}{frames / t_floor:9.0f} frames/s")
        print(f"{'shardkin build --workers 1':<32}{frames / t1:9.0f} frames/s   "
              f"ratio to floor {t_floor / t1:.2f}  (goal >= 0.85)")
        print(f"{'shardkin build --workers 2':<32}{frames / t2:9.0f} frames/s   "
              f"speed-up 1 -> 2 workers {t1 / t2:.2f}  (goal >= 1.7)")
        if args.executor == "ray":
            os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
            import ray

            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1", _temp_dir=os.path.join(tmp, "ray"))
            t_ray, _ = timed(lambda: run(2, "ray"), args.repeat)
            ray.shutdown()
            print(f"{'shardkin build --executor ray':<32}{frames / t_ray:9.0f} frames/s   "
                  f"ratio to local processes {t2 / t_ray:.2f}  "
                  f"(local {os.cpu_count()}-CPU Ray cluster)")


if __name__ == "__main__":
    main()
