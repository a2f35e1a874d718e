"""``shardkin`` command line."""
from __future__ import annotations

import argparse
import signal
import sys

from .inspection.info import SHARDS_LISTED

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
  shardkin build s3://bucket/k700 s3://bucket/k700-shards --split train
  shardkin build k400 shards --split train --annotations k400/annotations/train.csv
      (the official download: k400/train/ID_START_END.mp4, not arranged by class)

ROOT and OUT may be folders or fsspec URLs (s3://, gs://, ...; credentials and
endpoint from the environment, e.g. AWS_ENDPOINT_URL). Re-running the same command
after an interruption resumes it (finished shards are kept, the result is
byte-identical); other options over an existing build need --overwrite. However the
build is stopped (Ctrl-C, SIGTERM: exit status 130 or 143; kill -9), its worker
processes, and a local Ray cluster it started, end with it. Labels are the index of
the class in the sorted union of the class folders of all splits (so they agree across
splits), or of --classes-from's list. Frames and fps are torchvision 0.28's
(--timeline torchcodec, the default).
"""


def _add_build(sub: argparse._SubParsersAction) -> None:
    from .format.flags import comma_list, command_line

    p = sub.add_parser("build", help="build clip shards from a video tree",
                       description=BUILD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="dataset root holding <split>/<class>/<video> folders (or, with "
                   "an official Kinetics CSV as --annotations, <split>/<video>): a folder or "
                   "an fsspec URL such as s3://bucket/k700")
    p.add_argument("out", help="output folder; each split goes to OUT/<split>/")
    p.add_argument("--split", type=comma_list, default=None,
                   help="split(s) to build, comma-separated (default: every folder under ROOT)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in command_line():  # one per build option, made from its field
        if flag.title not in groups:
            groups[flag.title] = p.add_argument_group(flag.title)
        groups[flag.title].add_argument(flag.flag, dest=flag.dest, **flag.kwargs)


def _run_build(args: argparse.Namespace) -> int:
    from .builder import BuildError
    from .builder.lifecycle import stop_on_signals, stopping_signal

    try:
        with stop_on_signals():
            empty = _build_splits(args)
    except (BuildError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"shardkin build: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (lifecycle.BuildInterrupted)
        signum = stopping_signal(e)
        print(f"shardkin build: stopped by {signal.Signals(signum).name}; its workers are "
              "stopped and the lock released, finished shards are kept: run the same command "
              "again to resume", file=sys.stderr)
        return 128 + signum
    if empty:
        print(f"shardkin build: no clip was built for {', '.join(empty)}: see 'skipped' and "
              "'videos' in the manifest for the reasons", file=sys.stderr)
        return 1
    return 0


def _build_splits(args: argparse.Namespace) -> list[str]:
    """Build each split asked for; returns those that got no clip."""
    from .builder import BuildError, build
    from .builder.scan import find_splits
    from .format.flags import command_line

    options = {flag.dest: getattr(args, flag.dest) for flag in command_line()}
    splits = args.split or ([] if args.annotations else find_splits(args.root))
    if not splits:
        raise BuildError("no split to build: pass --split NAME" if args.annotations
                         else f"no split folders under {args.root}")
    if args.annotations and len(splits) != 1:
        raise BuildError("--annotations builds one split: pass --split NAME")
    empty = []
    for split in splits:
        manifest = build(args.root, args.out, split=split, **options)
        if manifest["totals"]["clips"] == 0:
            empty.append(split)
    return empty


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
  - it must hold the manifest's number of clips, each sample with the members of
    the build's codecs (video.npy, video.npy.zst or video.jpgs; audio.npy,
    audio.flac or, with --audio-codec none, no audio member; contiguous builds
    may add rest.* members), cls and json, and a key found nowhere else; every
    member decodes
  - video is uint8 [T,H,W,3] with T = frames_per_clip and a size that the resize
    options give (the same for all clips of a video); audio is float32 [C,S]
  - cls == the json label == the manifest's label of the video, and the json class
    is classes[cls]; each video's clips are 0..n-1, in order, in its manifest shard
  - index.npy matches its checksum, each row points at its clip, and each clip's
    bytes match the checksum its row keeps (the readers check this too, as they read)
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
reduced by whole factors to a readable height. Needs Pillow:
pip install 'shardkin[inspect]'.

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

    from .inspection.info import format_info, summarize
    from .store.split import open_split

    try:
        split = open_split(args.source, args.split, head=False, strict_split=True)
        summary = summarize(split.manifest)
    except (OSError, ValueError, ImportError) as e:
        print(f"shardkin info: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1, ensure_ascii=False) if args.json
          else format_info(summary, split.folder.url, args.all_shards))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check shard checksums and every sample against the manifest",
                       description=VERIFY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .inspection.info import human_bytes
    from .inspection.verify import verify_split
    from .store.split import open_split

    try:
        split = open_split(args.source, args.split, head=False, strict_split=True)
        problems = verify_split(split, progress=not args.quiet, on_problem=tqdm.write)
    except (OSError, ValueError, ImportError) as e:
        print(f"shardkin verify: error: {e}", file=sys.stderr)
        return 2
    t, folder = split.manifest.totals, split.folder.url
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
    from .format.tar import ShardError
    from .inspection.sheet import contact_sheet
    from .store.split import open_split

    try:
        split = open_split(args.source, args.split, strict_split=True)
        image = contact_sheet(split, args.n, args.seed, args.frames)
        image.save(args.output, format="PNG")
    except ShardError as e:
        print(f"shardkin show: error: {e} (`shardkin verify` checks the whole split)",
              file=sys.stderr)
        return 2
    except (OSError, ValueError, ImportError) as e:  # ImportError: Pillow (or fsspec) missing
        print(f"shardkin show: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({image.width}x{image.height} pixels)")
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
