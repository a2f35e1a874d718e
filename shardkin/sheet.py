"""``shardkin show``: a contact sheet of random clips, to check frames and labels by eye.

A header line, then a row per clip: its title (label, class name, key, shard) above
a few evenly spaced frames. Clips are drawn with a seed; only the shards holding
them are read, and of those only the chosen samples' payloads.
"""
from __future__ import annotations

import random
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

from .font import HEIGHT, draw_text, text_width
from .sample import LABEL, decode_label
from .codecs import VIDEO_MEMBERS, decode_sample_video
from .shards import shard_url
from .tarread import TarReader, iter_samples, open_shard

MARGIN, GAP, ROW_GAP = 8, 4, 10  # pixels: around the sheet, under titles and between tiles, between rows
TEXT_SCALE = 2
LINE = HEIGHT * TEXT_SCALE  # height of a line of text
TILE_MIN, TILE_MAX = 48, 160  # frames are scaled by whole factors into this height range
BACKGROUND, INK = (24, 24, 24), (235, 235, 235)


@dataclass(frozen=True)
class Clip:
    shard: str
    key: str
    label: int
    length: int  # frames in the clip
    frames: np.ndarray  # the chosen frames, uint8 [K, H, W, 3]


def pick(manifest: dict[str, Any], n: int, seed: int) -> list[tuple[int, int]]:
    """(shard number, sample number in it) of ``n`` clips drawn with ``seed``, in shard order."""
    counts = [s["clips"] for s in manifest["shards"]]
    starts = [0, *accumulate(counts)]
    chosen = sorted(random.Random(seed).sample(range(starts[-1]), min(n, starts[-1])))
    shards = [bisect_right(starts, i) - 1 for i in chosen]  # the last shard starting at or before i
    return [(shard, i - starts[shard]) for shard, i in zip(shards, chosen)]


def frame_positions(length: int, k: int) -> list[int]:
    """``k`` evenly spaced frame numbers of a ``length``-frame clip, first and last included."""
    if length <= k:
        return list(range(length))
    return [round(i * (length - 1) / (k - 1)) for i in range(k)] if k > 1 else [0]


def fit(frame: np.ndarray) -> np.ndarray:
    """``frame`` scaled by a whole factor (block mean down, repeat up) to a readable height."""
    h, w = frame.shape[:2]
    if h > TILE_MAX:
        f = -(-h // TILE_MAX)
        blocks = frame[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f, 3)
        return blocks.mean(axis=(1, 3)).round().astype(np.uint8)
    if h < TILE_MIN:
        f = -(-TILE_MIN // h)
        return frame.repeat(f, axis=0).repeat(f, axis=1)
    return frame


def read_clips(manifest: dict[str, Any], folder: str, picks: list[tuple[int, int]],
               frames: int) -> list[Clip]:
    """The picked samples' labels and ``frames`` evenly spaced frames, reading only their shards."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for shard, i in picks:
        wanted[shard].add(i)
    clips = []
    for shard, indices in sorted(wanted.items()):
        name = manifest["shards"][shard]["name"]
        url = shard_url(folder, name)
        with open_shard(url) as f:
            for _, key, payloads in iter_samples(TarReader(f, url), min(indices), max(indices) + 1,
                                                 load=indices.__contains__,
                                                 wanted=(*VIDEO_MEMBERS, LABEL)):
                if payloads is not None:
                    video = decode_sample_video(payloads)
                    clips.append(Clip(name, key, decode_label(payloads[LABEL]), len(video),
                                      video[frame_positions(len(video), frames)]))
    return clips


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    texts: list[tuple[int, int, str]]  # (y, x, text)
    tiles: list[list[tuple[int, int]]]  # per row, (y, x) of each tile's top left


def layout(header: str, rows: list[tuple[str, list[tuple[int, int]]]]) -> Layout:
    """Where the header, each row's title and each (height, width) tile go."""
    texts, tiles = [(MARGIN, MARGIN, header)], []
    right = MARGIN + text_width(header, TEXT_SCALE)
    y = MARGIN + LINE + ROW_GAP
    for title, shapes in rows:
        texts.append((y, MARGIN, title))
        right = max(right, MARGIN + text_width(title, TEXT_SCALE))
        y += LINE + GAP
        x, row = MARGIN, []
        for h, w in shapes:
            row.append((y, x))
            x += w + GAP
        tiles.append(row)
        right = max(right, x - GAP)
        y += max((h for h, _ in shapes), default=0) + ROW_GAP
    return Layout(right + MARGIN, y - ROW_GAP + MARGIN, texts, tiles)


def compose(header: str, rows: list[tuple[str, list[np.ndarray]]]) -> np.ndarray:
    """uint8 ``[H, W, 3]`` sheet of titled rows of frame tiles."""
    plan = layout(header, [(title, [t.shape[:2] for t in row]) for title, row in rows])
    canvas = np.empty((plan.height, plan.width, 3), np.uint8)
    canvas[:] = BACKGROUND
    for y, x, text in plan.texts:
        draw_text(canvas, text, y, x, INK, TEXT_SCALE)
    for (_, row), places in zip(rows, plan.tiles):
        for tile, (y, x) in zip(row, places):
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return canvas


def title(clip: Clip, classes: list[str]) -> str:
    name = classes[clip.label] if 0 <= clip.label < len(classes) else "(not a class)"
    return f"{clip.label} {name}  {clip.key}  {clip.shard}"


def contact_sheet(manifest: dict[str, Any], folder: str, n: int = 8, seed: int = 0,
                  frames: int = 6) -> np.ndarray:
    """A sheet of ``n`` clips drawn with ``seed``, ``frames`` frames each, sorted by label."""
    picks = pick(manifest, n, seed)
    if not picks:
        raise ValueError(f"split {manifest['split']!r} has no clips to show: "
                         "`shardkin info` says why its videos were left out")
    clips = sorted(read_clips(manifest, folder, picks, frames), key=lambda c: (c.label, c.key))
    shown = ",".join(map(str, frame_positions(clips[0].length, frames)))
    header = (f"{manifest['split']}: {len(clips)} of {manifest['totals']['clips']} clips, "
              f"seed {seed}, frames {shown} of {clips[0].length}")
    return compose(header, [(title(c, manifest["classes"]), [fit(f) for f in c.frames])
                            for c in clips])
