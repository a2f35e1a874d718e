"""``shardkin`` command line."""
from __future__ import annotations

import argparse
import sys

from .info import SHARDS_LISTED
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
    g = p.add_argument_group("frame storage (README: Codecs)")
    g.add_argument("--video-codec", choices=("raw", "zstd", "jpeg"), default="raw",
                   help="raw npy frames (default), lossless zstd of them, or one JPEG per frame")
    g.add_argument("--zstd-level", type=int, default=3, help="zstd level (default 3)")
    g.add_argument("--jpeg-quality", type=int, default=88,
                   help="JPEG quality, 4:4:4 chroma (default 88: frames about 8.5x smaller "
                        "than raw at ~39 dB PSNR on real Kinetics-like clips)")
    g = p.add_argument_group("shards and execution")
    g.add_argument("--shard-size", default="256MB",
                   help="target shard size, e.g. 256MB, 1GiB (default 256MB)")
    g.add_argument("--clips-per-shard", type=int, default=None,
                   help="target clips per shard instead of a size")
    g.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: all cores)")
    g.add_argument("--decode-threads", type=int, default=None,
                   help="FFmpeg threads per worker (default: cores / workers)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="run shard tasks on local processes (default) or a Ray cluster")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT "
                        "(default: start a local Ray)")
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
                video_codec=args.video_codec, zstd_level=args.zstd_level,
                jpeg_quality=args.jpeg_quality,
                workers=args.workers, decode_threads=args.decode_threads,
                overwrite=args.overwrite, progress=not args.quiet, executor=args.executor,
                ray_address=args.ray_address,
            )
            if manifest["totals"]["clips"] == 0:
                empty.append(split)
    except (BuildError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"shardkin build: error: {e}", file=sys.stderr)
        return 2
    if empty:
        print(f"shardkin build: no clip was built for {', '.join(empty)}: see 'skipped' and "
              "'videos' in the manifest for the reasons", file=sys.stderr)
        return 1
    return 0


SOURCE_HELP = ("a build folder (OUT, with --split NAME unless it holds one split), "
               "a split folder (OUT/SPLIT) or a manifest.json")

INFO_HELP = """\
Summarise a built split from its manifest alone (no shard is read): the classes
with their video and clip counts, the shards with their sizes, the build options,
and the videos left out or cut short, grouped by reason.

examples:
  shardkin info shards --split train
  shardkin info shards/val --all-shards
  shardkin info shards/train --json > train-info.json
"""

VERIFY_HELP = """\
Check that a built split is exactly what its manifest says, before training on it.
Each shard is read once, front to back:
  - its size and sha256 must match the manifest (missing shards, and .tar files
    that the manifest does not list, are reported too)
  - it must hold the manifest's number of clips, each sample with video.npy,
    audio.npy, cls and json members and a key found nowhere else
  - video is uint8 [T,H,W,3] with T = frames_per_clip and a size that the resize
    options give (the same for all clips of a video); audio is float32 [C,S]
  - cls == the json label == the manifest's label of the video, and the json class
    is classes[cls]; each video's clips are 0..n-1, in order, in its manifest shard
  - index.npy matches its checksum and each row points at its clip
Each problem is printed on one line that starts with the shard (and sample key).
Exit status: 0 all good, 1 problems found, 2 nothing to verify (no manifest).

examples:
  shardkin verify shards --split train
  shardkin verify shards/val --quiet || echo "do not train on shards/val"
"""

SHOW_HELP = """\
Draw random clips of a built split into a PNG contact sheet: a row per clip, its
label, class name, sample key and shard above a few evenly spaced frames, so you
can see at a glance that frames and labels belong together. The same --seed gives
the same clips; only the shards holding them are read. Frames are enlarged or
reduced by whole factors to a readable height.

examples:
  shardkin show shards --split train -o sheet.png
  shardkin show shards/val -o val.png --n 16 --frames 8 --seed 3
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="OUT[/SPLIT]", help=SOURCE_HELP)
    p.add_argument("--split", default=None,
                   help="split to use when OUT is a build folder (default: its only split)")


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise a built split: classes, shards, options, skips",
                       description=INFO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON, for scripts")
    p.add_argument("--all-shards", action="store_true",
                   help=f"list every shard (default: all if at most {SHARDS_LISTED})")


def _run_info(args: argparse.Namespace) -> int:
    import json

    from .info import format_info, summarize
    from .shards import open_split

    try:
        manifest, folder = open_split(args.source, args.split)
        summary = summarize(manifest)
    except (OSError, ValueError) as e:
        print(f"shardkin info: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1, ensure_ascii=False) if args.json
          else format_info(summary, folder, args.all_shards))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check shard checksums and every sample against the manifest",
                       description=VERIFY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .info import human_bytes
    from .shards import open_split
    from .verify import verify_split

    try:
        manifest, folder = open_split(args.source, args.split)
        problems = verify_split(manifest, folder, progress=not args.quiet, on_problem=tqdm.write)
    except (OSError, ValueError) as e:
        print(f"shardkin verify: error: {e}", file=sys.stderr)
        return 2
    t = manifest["totals"]
    if problems:
        print(f"shardkin verify: {len(problems)} problem(s) in {folder}: do not train on it; "
              "rebuild the split (e.g. into a new OUT) and verify again", file=sys.stderr)
        return 1
    print(f"ok: {folder}: {t['shards']} shards, {t['clips']} clips, {human_bytes(t['bytes'])}: "
          "checksums, samples and labels match the manifest")
    return 0


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw random clips into a PNG contact sheet",
                       description=SHOW_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source(p)
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--n", type=_positive, default=8, help="clips to show, a row each (default 8)")
    p.add_argument("--frames", type=_positive, default=6,
                   help="evenly spaced frames shown per clip (default 6)")
    p.add_argument("--seed", type=int, default=0, help="which clips are drawn (default 0)")


def _run_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .png import encode_png
    from .shards import open_split
    from .sheet import contact_sheet
    from .tarread import ShardError

    try:
        manifest, folder = open_split(args.source, args.split)
        image = contact_sheet(manifest, folder, args.n, args.seed, args.frames)
        Path(args.output).write_bytes(encode_png(image))
    except ShardError as e:
        print(f"shardkin show: error: {e} (`shardkin verify` checks the whole split)",
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"shardkin show: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({image.shape[1]}x{image.shape[0]} pixels)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shardkin", description="Pre-clipped WebDataset shards for video training.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    _add_info(sub)
    _add_verify(sub)
    _add_show(sub)
    args = parser.parse_args(argv)
    return {"build": _run_build, "info": _run_info, "verify": _run_verify,
            "show": _run_show}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
