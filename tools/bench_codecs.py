"""Codecs compared: bytes per clip, build frames/s, reader clips/s and PSNR, in one table.

    python tools/bench_codecs.py [--root ROOT] [--workers N]

Every codec builds the same clips (ROOT/train, short side 128, 16-frame clips) with
the same workers; reader clips/s are epochs through make_loader (as training reads,
center crop 112); PSNR compares every decoded clip with the raw build's (lossless
codecs: inf). The on-the-fly line is torchvision-style PyAV decoding of the same
clips (tools/bench_read.py's baseline), the cost the shards replace. Without
../shared/realvideos it makes videos first.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_read import REAL, OnTheFly, center_crop, scaled_manifest, throughput  # noqa: E402

from shardkin import Kinetics, ShardDataset, make_loader  # noqa: E402
from shardkin.builder import build  # noqa: E402
from shardkin.synth import make_video  # noqa: E402

CODECS = ("raw", "zstd", "jpeg")


def member_bytes(split: Path) -> dict[str, int]:
    """Payload bytes per member extension over all shards of a split."""
    totals: dict[str, int] = {}
    for shard in sorted(split.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                ext = m.name.partition(".")[2]
                totals[ext] = totals.get(ext, 0) + m.size
    return totals


def psnr(a: Kinetics, b: Kinetics) -> float:
    """PSNR of every clip of ``b`` against the same clip of ``a``, over all pixels."""
    se, n = 0.0, 0
    for i in range(len(a)):
        x, y = a[i][0].double(), b[i][0].double()
        se += float(((x - y) ** 2).sum())
        n += x.numel()
    return math.inf if se == 0 else 10 * math.log10(255**2 / (se / n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL if (REAL / "train").is_dir() else None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shardkin-codecs-"))
    root = args.root
    if root is None:
        root = tmp / "videos"
        for i in range(12):
            make_video(root / "train" / f"class_{i % 4}" / f"v{i}.mp4", 150, 30, (320, 240), seed=i)
    rows, sets = {}, {}
    for codec in CODECS:
        t = time.perf_counter()
        m = build(root, tmp / codec, "train", frames_per_clip=16, min_dimension=128,
                  shard_size="16MB", workers=args.workers, decode_threads=1, video_codec=codec,
                  progress=False)
        seconds = time.perf_counter() - t
        frames = sum(v["frames"] for v in m["videos"])
        long, _ = scaled_manifest(tmp / codec / "train", 2000)
        ds = ShardDataset(long, transform=center_crop)
        loader = make_loader(ds, args.batch_size, num_workers=args.workers)
        rate = max(throughput(loader, ds, args.seconds) for _ in range(2))
        sets[codec] = Kinetics(tmp / codec, "train")
        members = member_bytes(tmp / codec / "train")
        n = m["totals"]["clips"]
        rows[codec] = {"bytes": m["totals"]["bytes"] / n, "build": frames / seconds, "read": rate,
                       "video": sum(v for k, v in members.items() if k.startswith("video.")) / n,
                       "audio": members.get("audio.npy", 0) / n}
    for codec in CODECS:
        rows[codec]["psnr"] = psnr(sets["raw"], sets[codec]) if codec != "raw" else math.inf
    clips = [(r.meta["path"], r.meta["source_frames"], r.label)
             for r, _ in ShardDataset(tmp / "raw", return_dict=True, shuffle=False).stream(0, 1)]
    fly_loader = torch.utils.data.DataLoader(OnTheFly(root, clips), args.batch_size, shuffle=True,
                                             num_workers=args.workers)
    t = time.perf_counter()
    fly = sum(len(labels) for _, labels in fly_loader) / (time.perf_counter() - t)
    raw = rows["raw"]
    print(f"{len(clips)} clips of 16 frames at short side 128 from {root / 'train'}; "
          f"{args.workers} workers, batch {args.batch_size}, {os.cpu_count()} cores")
    print(f"audio (float32, stored as is by every codec): "
          f"{raw['audio'] / 1e3:.0f} KB/clip on average")
    print(f"{'codec':<7}{'video KB':>9}{'smaller':>9}{'all KB':>8}{'smaller':>9}{'build fr/s':>12}"
          f"{'vs raw':>8}{'read clips/s':>14}{'vs raw':>8}{'vs on-the-fly':>15}{'PSNR dB':>9}")
    for codec, r in rows.items():
        print(f"{codec:<7}{r['video'] / 1e3:>9.0f}{raw['video'] / r['video']:>8.1f}x"
              f"{r['bytes'] / 1e3:>8.0f}{raw['bytes'] / r['bytes']:>8.1f}x"
              f"{r['build']:>12.0f}{r['build'] / raw['build']:>8.2f}{r['read']:>14.0f}"
              f"{r['read'] / raw['read']:>8.2f}{r['read'] / fly:>14.0f}x{r['psnr']:>9.2f}")
    print(f"on-the-fly PyAV decoding (torchvision-style): {fly:.1f} clips/s")
    print("goal: one codec >= 8x smaller than raw with PSNR >= 38 dB, "
          "read >= 10x faster than on the fly")


if __name__ == "__main__":
    main()
