"""Whole samples compared, video and audio codecs together, in one table.

    python tools/bench_codecs.py [--root ROOT] [--splits train,val,odd] [--side 128]

Every row builds the same clips (16-frame clips at short side ``--side`` of each split
of ROOT) with the same workers: raw+raw, zstd+raw, jpeg+raw, jpeg+flac, jpeg+none (jpeg
at its default: a PSNR target for every clip) and jpeg at one fixed quality (+flac).
Columns: video and audio KB a clip; the whole sample's size against raw+raw; video PSNR
and audio SNR against the raw+raw build (every clip of every split); read clips/s per
core (epochs of the first split through make_loader, one worker a core, center crop;
the best of ``--rounds`` rounds taken in turn over the rows, so that a slow spell of
the machine hits them all); build frames/s (source frames over build seconds, all
splits). A second table gives PSNR and SNR by split: the JPEG default was chosen on
train, so val and odd are videos it has not seen.

Then the jpeg member of format version 3 (the clip as one JPEG) against that of versions
1-2 (one JPEG a frame), on every clip of the jpeg+none build: the old member is made from
the new one without re-encoding (each frame's scan data with its own header: byte for
byte what the per-frame encoder writes), so both hold the same quality and their pixels
must be identical (checked on every clip). Bytes, and single-core decode ms a clip with
libjpeg-turbo (each clip's two members decoded in turn, ``--rounds`` times, each clip's
fastest time of each summed); and windows of 16 frames starting mid-clip, decoded from the rows they
need against their two stored clips decoded whole.
Without ../shared/realvideos it makes videos first.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import struct
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_read import REAL, scaled_manifest, throughput  # noqa: E402
from jpeg_members import frames_member  # noqa: E402

from shardkin import Kinetics, ShardDataset, make_loader  # noqa: E402
from shardkin.builder import build  # noqa: E402
from shardkin.format import jpeg  # noqa: E402
from shardkin.format.codecs import JPEG_PSNR  # noqa: E402
from shardkin.synth import make_video  # noqa: E402

ROWS = {  # name: build options
    "raw+raw": dict(video_codec="raw", audio_codec="raw"),
    "zstd+raw": dict(video_codec="zstd", audio_codec="raw"),
    "jpeg+raw": dict(video_codec="jpeg", audio_codec="raw"),
    "jpeg+flac": dict(video_codec="jpeg", audio_codec="flac"),
    "jpeg+none": dict(video_codec="jpeg", audio_codec="none"),
    "jpeg q90+flac": dict(video_codec="jpeg", audio_codec="flac", jpeg_quality=90),
}


class Crop:
    """``[..., H, W]`` -> ``[..., size, size]``, centred (a view)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        h, w = video.shape[-2:]
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return video[..., top : top + self.size, left : left + self.size]


def member_bytes(split: Path) -> dict[str, int]:
    """Payload bytes per member kind (``video``, ``audio``, ...) over a split's shards."""
    totals: dict[str, int] = {}
    for shard in sorted(split.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                kind = m.name.partition(".")[2].split(".")[0]
                totals[kind] = totals.get(kind, 0) + m.size
    return totals


class Errors:
    """Squared errors summed exactly, for an aggregate ratio in dB and per-clip minima."""

    def __init__(self) -> None:
        self.signal = self.error = 0.0
        self.count = 0
        self.worst = math.inf  # lowest per-clip value

    def add(self, reference: np.ndarray, got: np.ndarray, peak: float | None) -> None:
        x, y = reference.astype(np.float64), got.astype(np.float64)
        error, signal = float(((x - y) ** 2).sum()), float((x**2).sum())
        self.error += error
        self.signal += signal
        self.count += x.size
        if x.size and (peak or signal):
            self.worst = min(self.worst, _db(peak**2 * x.size if peak else signal, error))

    def db(self, peak: float | None) -> float:
        """PSNR (with ``peak``) or SNR in dB over everything added (NaN: nothing was)."""
        if not self.count:
            return math.nan
        return _db(peak**2 * self.count if peak else self.signal, self.error)


def _db(power: float, error: float) -> float:
    return math.inf if error == 0 else 10 * math.log10(power / error)


def compare(reference: Kinetics, other: Kinetics, video: Errors, sound: Errors) -> None:
    """Every clip of ``other`` against the same clip of ``reference``."""
    for i in range(len(reference)):
        (x, a, _), (y, b, _) = reference[i], other[i]
        video.add(x.numpy(), y.numpy(), 255.0)
        if b.shape[-1]:  # none: no audio to compare
            sound.add(a.numpy(), b.numpy(), None)


def measure(name: str, root: Path, out: Path, splits: list[str], side: int, args) -> dict:
    """Build ``splits`` with row ``name``'s options; bytes and build rate."""
    frames = clips = 0
    seconds, kinds = 0.0, {}
    for split in splits:
        t = time.perf_counter()
        m = build(root, out / name, split, frames_per_clip=16, min_dimension=side,
                  shard_size="16MB", workers=args.workers, decode_threads=1, progress=False,
                  **ROWS[name])
        seconds += time.perf_counter() - t
        frames += sum(v["frames"] for v in m["videos"])
        clips += m["totals"]["clips"]
        for kind, n in member_bytes(out / name / split).items():
            kinds[kind] = kinds.get(kind, 0) + n
    return {"video": kinds.get("video", 0) / clips, "audio": kinds.get("audio", 0) / clips,
            "all": sum(kinds.values()) / clips, "build": frames / seconds, "read": 0.0}


def read_rate(split: Path, side: int, args) -> float:
    """Clips/s a core of ``split`` (lengthened to 2000 clips) through make_loader."""
    long, _ = scaled_manifest(split, 2000)
    ds = ShardDataset(long, transform=Crop(min(112, side)))
    loader = make_loader(ds, args.batch_size, num_workers=args.workers)
    return throughput(loader, ds, args.seconds) / args.workers


def _fmt(db: float) -> str:
    return "exact" if db == math.inf else "-" if math.isnan(db) else f"{db:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL if (REAL / "train").is_dir() else None)
    ap.add_argument("--splits", default="train,val,odd")
    ap.add_argument("--side", type=int, default=128, help="short side of the frames")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"some of {','.join(ROWS)}")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3, help="read rounds over the rows")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shardkin-codecs-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    """The builds, the tables and the member comparison, in ``tmp``."""
    root, splits = args.root, args.splits.split(",")
    if root is None:
        root, splits = tmp / "videos", ["train"]
        for i in range(12):
            make_video(root / "train" / f"class_{i % 4}" / f"v{i}.mp4", 150, 30, (320, 240),
                       audio_rate=44100, audio_channels=2, seed=i)
    names = ["raw+raw", *(n for n in args.rows.split(",") if n != "raw+raw")]
    rows = {n: measure(n, root, tmp, splits, args.side, args) for n in names}
    for _ in range(args.rounds):
        for name, row in rows.items():
            row["read"] = max(row["read"], read_rate(tmp / name / splits[0], args.side, args))
    by_split: dict[str, dict[str, tuple[Errors, Errors]]] = {}
    for split in splits:
        reference = Kinetics(tmp / "raw+raw", split)
        for name in names[1:]:
            errors = by_split.setdefault(name, {}).setdefault(split, (Errors(), Errors()))
            compare(reference, Kinetics(tmp / name, split), *errors)
    total, jpeg_raw = rows["raw+raw"]["all"], rows.get("jpeg+raw", {}).get("read")
    print(f"{', '.join(splits)} of {root}: 16-frame clips at short side {args.side}, "
          f"{args.workers} workers ({os.cpu_count()} cores), batch {args.batch_size}, "
          f"jpeg: every clip >= {JPEG_PSNR:g} dB (the default) unless a quality is given")
    print(f"{'row':<16}{'video KB':>9}{'audio KB':>9}{'all KB':>8}{'smaller':>9}{'PSNR dB':>9}"
          f"{'SNR dB':>8}{'read/s/core':>12}{'vs jpeg+raw':>12}{'build fr/s':>11}")
    for name, r in rows.items():
        errs = by_split.get(name, {})
        psnr = _merged(errs, 0, 255.0) if errs else math.inf
        snr = _merged(errs, 1, None) if errs else math.inf
        vs = f"{r['read'] / jpeg_raw:.2f}" if jpeg_raw and name.startswith("jpeg") else ""
        print(f"{name:<16}{r['video'] / 1e3:>9.1f}{r['audio'] / 1e3:>9.1f}{r['all'] / 1e3:>8.1f}"
              f"{total / r['all']:>8.2f}x{_fmt(psnr):>9}{_fmt(snr):>8}{r['read']:>12.0f}"
              f"{vs:>12}{r['build']:>11.0f}")
    print("\nby split: PSNR dB (lowest clip) | audio SNR dB (lowest clip with sound)")
    for name, errs in by_split.items():
        cells = [f"{s} {_fmt(v.db(255.0))} ({_fmt(v.worst)}) | {_fmt(a.db(None))} "
                 f"({_fmt(a.worst if a.count else math.nan)})" for s, (v, a) in errs.items()]
        print(f"  {name:<16}" + "; ".join(cells))
    print("goals: jpeg+flac >= 5x smaller than raw+raw at >= 38 dB with audio SNR >= 80 dB; "
          "jpeg+none >= 8x smaller; jpeg+flac reads >= 0.8 of jpeg+raw's clips/s")
    if "jpeg+none" in rows:
        member_ab(tmp / "jpeg+none", splits, args.rounds)


def clip_members(split: Path) -> list[tuple[str, bytes]]:
    """Every clip's key and video.jpgs payload of a split, in shard order."""
    out = []
    for shard in sorted(split.glob("*.tar")):
        with tarfile.open(shard) as tar:
            out += [(m.name.partition(".")[0], tar.extractfile(m).read()) for m in tar
                    if m.name.partition(".")[2] == "video.jpgs"]
    return out


def member_ab(build: Path, splits: list[str], rounds: int) -> None:
    """The one-JPEG member against one JPEG a frame (see the module)."""
    keyed = [c for s in splits for c in clip_members(build / s)]
    clips = [c for _, c in keyed]
    old = [frames_member(c) for c in clips]
    for new, was in zip(clips, old):
        if not np.array_equal(jpeg.decode(new), jpeg.decode(was)):
            raise SystemExit("the two members' pixels differ")

    def fastest(decodes: list[list]) -> list[float]:
        """Each way's seconds summed over the items, the fastest of ``rounds`` tries of
        each item (ways in turn), so that a busy spell of the machine costs neither."""
        best = [[math.inf] * len(decodes) for _ in decodes[0]]
        for _ in range(rounds):
            for k, ways in enumerate(decodes):
                for i, way in enumerate(ways):
                    t = time.perf_counter()
                    way()
                    best[i][k] = min(best[i][k], time.perf_counter() - t)
        return [sum(b) for b in best]

    best = fastest([[lambda c=c: jpeg.decode(c), lambda o=o: jpeg.decode(o)]
                    for c, o in zip(clips, old)])
    n = len(clips)
    size = [sum(map(len, clips)) / n / 1e3, sum(map(len, old)) / n / 1e3]
    print(f"\njpeg member, {n} clips (jpeg+none build, every clip's pixels identical in both):")
    print(f"  one JPEG a clip (v3)    {size[0]:7.1f} KB  {best[0] / n * 1e3:.3f} ms a clip "
          f"({n / best[0]:,.0f} clips/s a core)")
    print(f"  one JPEG a frame (v1-2) {size[1]:7.1f} KB  {best[1] / n * 1e3:.3f} ms a clip "
          f"({n / best[1]:,.0f} clips/s a core)")
    print(f"  v3 / v1-2: bytes {size[0] / size[1]:.3f}, decode time {best[0] / best[1]:.3f}")
    pairs = [(a, b) for (ka, a), (kb, b) in zip(keyed, keyed[1:])  # a video's next clip
             if ka[:8] == kb[:8] and struct.unpack_from("<I", a, 4)[0] == 16]
    window = fastest([  # offset: the window's first frame in the first clip
        [lambda a=a, b=b, o=1 + k % 15: np.concatenate([jpeg.decode(a, o), jpeg.decode(b, 0, o)]),
         lambda a=a, b=b, o=1 + k % 15: np.concatenate([jpeg.decode(a)[o:], jpeg.decode(b)[:o]])]
        for k, (a, b) in enumerate(pairs)])
    print(f"  16-frame windows over two stored clips ({len(pairs)}): rows they need "
          f"{window[0] / len(pairs) * 1e3:.3f} ms, both clips whole "
          f"{window[1] / len(pairs) * 1e3:.3f} ms ({window[1] / window[0]:.2f}x)")


def _merged(errs: dict[str, tuple[Errors, Errors]], which: int, peak: float | None) -> float:
    """The dB of every split's errors together."""
    merged = Errors()
    for pair in errs.values():
        e = pair[which]
        merged.signal, merged.error = merged.signal + e.signal, merged.error + e.error
        merged.count += e.count
    return merged.db(peak)


if __name__ == "__main__":
    main()
