"""``shardkin`` command line."""
from __future__ import annotations

import argparse
import sys

from .scan import DEFAULT_EXTENSIONS

BUILD_HELP = """\
Turn ROOT/<split>/<class>/<video> into pre-clipped WebDataset shards:
OUT/<split>/<split>-000000.tar ... plus OUT/<split>/manifest.json.

Clips follow torchvision.datasets.Kinetics exactly: each video is decoded once,
front to back; with --frame-rate it is resampled first; clip k holds
--frames-per-clip frames starting at k * --step-between-clips.

examples:
  shardkin build k400 shards --split train,val --frames-per-clip 16 \\
      --step-between-clips 16 --frame-rate 15 --min-dimension 128
  shardkin build k400 mini --split train --classes abseiling,archery --fraction 0.2
  shardkin build videos shards --split train --annotations train.csv

Re-running the same command after an interruption resumes it (finished shards are
kept, the result is byte-identical); other options over an existing build need
--overwrite. Labels are the index of the class in the sorted union of the class
folders of all splits (so they agree across splits), or of --classes-from's list.
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build clip shards from a video tree",
                       description=BUILD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="dataset root holding <split>/<class>/<video> folders")
    p.add_argument("out", help="output folder; each split goes to OUT/<split>/")
    p.add_argument("--split", type=_csv, default=None,
                   help="split(s) to build, comma-separated (default: every folder under ROOT)")
    g = p.add_argument_group("clips (torchvision's VideoClips)")
    g.add_argument("--frames-per-clip", type=int, default=16, help="frames in a clip (default 16)")
    g.add_argument("--step-between-clips", type=int, default=None,
                   help="frames between clip starts, after resampling "
                        "(default: --frames-per-clip, i.e. no overlap; torchvision's default is 1)")
    g.add_argument("--frame-rate", type=float, default=None,
                   help="resample every video to this many frames per second first")
    g = p.add_argument_group("resize at build time (torchvision's _video_* arguments)")
    g.add_argument("--width", type=int, default=0, help="output width (alone: keeps aspect)")
    g.add_argument("--height", type=int, default=0, help="output height (alone: keeps aspect)")
    g.add_argument("--min-dimension", type=int, default=0, help="short side, keeps aspect")
    g.add_argument("--max-dimension", type=int, default=0, help="long side, keeps aspect")
    g = p.add_argument_group("audio")
    g.add_argument("--audio-rate", type=int, default=0, help="resample audio to this rate (Hz)")
    g.add_argument("--audio-channels", type=int, default=0, help="mix audio to this many channels")
    g = p.add_argument_group("which videos")
    g.add_argument("--extensions", type=_csv, default=list(DEFAULT_EXTENSIONS),
                   help=f"video file extensions (default {','.join(DEFAULT_EXTENSIONS)})")
    g.add_argument("--classes", type=_csv, default=None,
                   help="build only these classes (labels then index this sorted list)")
    g.add_argument("--classes-from", default=None,
                   help="reuse the class list of another build (its OUT, split folder or "
                        "manifest.json) or of a text file with one class per line")
    g.add_argument("--annotations", default=None,
                   help="CSV of 'path,label' rows (paths relative to ROOT) instead of class folders")
    g.add_argument("--fraction", type=float, default=None,
                   help="keep this fraction of the videos of each class (seeded)")
    g.add_argument("--limit", type=int, default=None, help="keep this many videos in all (seeded)")
    g.add_argument("--seed", type=int, default=0, help="seed for subsets and shard order (default 0)")
    g = p.add_argument_group("shards and execution")
    g.add_argument("--shard-size", default="256MB",
                   help="target shard size, e.g. 256MB, 1GiB (default 256MB)")
    g.add_argument("--clips-per-shard", type=int, default=None,
                   help="target clips per shard instead of a size")
    g.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: all cores)")
    g.add_argument("--decode-threads", type=int, default=None,
                   help="FFmpeg threads per worker (default: cores / workers)")
    g.add_argument("--overwrite", action="store_true", help="replace a build made with other options")
    g.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def _run_build(args: argparse.Namespace) -> int:
    from .builder import BuildError, build
    from .scan import find_splits

    try:
        splits = args.split or ([] if args.annotations else find_splits(args.root))
        if not splits:
            raise BuildError("no split to build: pass --split NAME" if args.annotations
                             else f"no split folders under {args.root}")
        if args.annotations and len(splits) != 1:
            raise BuildError("--annotations builds one split: pass --split NAME")
        empty = []
        for split in splits:
            manifest = build(
                args.root, args.out, split=split, frames_per_clip=args.frames_per_clip,
                step_between_clips=args.step_between_clips, frame_rate=args.frame_rate,
                width=args.width, height=args.height, min_dimension=args.min_dimension,
                max_dimension=args.max_dimension, audio_rate=args.audio_rate,
                audio_channels=args.audio_channels, extensions=args.extensions,
                classes=args.classes, classes_from=args.classes_from,
                annotations=args.annotations, fraction=args.fraction, limit=args.limit,
                seed=args.seed, shard_size=args.shard_size, clips_per_shard=args.clips_per_shard,
                workers=args.workers, decode_threads=args.decode_threads,
                overwrite=args.overwrite, progress=not args.quiet,
            )
            if manifest["totals"]["clips"] == 0:
                empty.append(split)
    except (BuildError, FileNotFoundError, ValueError) as e:
        print(f"shardkin build: error: {e}", file=sys.stderr)
        return 2
    if empty:
        print(f"shardkin build: no clip was built for {', '.join(empty)}: see 'skipped' and "
              "'videos' in the manifest for the reasons", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shardkin", description="Pre-clipped WebDataset shards for video training.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    args = parser.parse_args(argv)
    return {"build": _run_build}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
