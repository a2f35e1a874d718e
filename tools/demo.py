"""The quick-start demo: make a small video tree, build shards, stream a few batches back.

    make demo        (or: python tools/demo.py [--out demo-out])
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import shardkin  # noqa: E402
from shardkin.synth import make_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    videos = make_dataset(args.out / "videos", classes=4, videos_per_class=3, frames=60)
    print(f"1. made {sum(1 for _ in videos.rglob('*.mp4'))} videos (30 fps, 96x72, with audio) "
          f"under {videos}/<split>/<class>/")
    for split in ("train", "val"):
        shardkin.build(videos, args.out / "shards", split=split, frames_per_clip=8,
                       step_between_clips=8, frame_rate=15, min_dimension=64,
                       clips_per_shard=6)
    manifest = shardkin.load_manifest(args.out / "shards", "train")
    t = manifest["totals"]
    print(f"2. built {t['clips']} train clips of 8 frames at 15 fps, short side 64, into "
          f"{t['shards']} shards ({t['bytes'] / 1e6:.1f} MB) "
          f"+ manifest.json under {args.out / 'shards'}")
    ds = shardkin.ShardDataset(args.out / "shards", split="train", shuffle=True, seed=0)
    loader = shardkin.make_loader(ds, batch_size=4, num_workers=2)
    print(f"3. streaming {len(ds)} clips with 2 loader workers, batches of 4:")
    seen = 0
    for epoch in range(2):
        ds.set_epoch(epoch)
        labels = []
        for video, audio, label in loader:
            if seen == 0:
                print(f"   video {tuple(video.shape)} {video.dtype} (B,T,C,H,W), "
                      f"audio {tuple(audio.shape)} {audio.dtype}, label {label.tolist()}")
            seen += len(label)
            labels += label.tolist()
        print(f"   epoch {epoch}: {len(labels)} clips, labels in order {labels[:12]}...")
    kin = shardkin.Kinetics(args.out / "shards", 8, split="train", step_between_clips=1)
    print(f"4. the same shards read with torchvision's step 1 (shardkin.Kinetics, map-style): "
          f"{len(kin)} clips cut at read time from the {t['clips']} stored; clip 5 is "
          f"{tuple(kin[5][0].shape)} (T,C,H,W)")
    print("done: see README.md for the sample format and the options.")


if __name__ == "__main__":
    main()
