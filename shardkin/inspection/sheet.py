"""``shardkin show``: a contact sheet of random clips, to check frames and labels by eye.

A header line, then a row per clip: its title (label, class name, key, shard) above
a few evenly spaced frames. Clips are drawn with a seed; only the shards holding
them are read, and of those only the chosen samples' payloads. The sheet is drawn
with Pillow (``pip install 'shardkin[inspect]'``), imported only when it is drawn.
"""
from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np

from ..format.codecs import VIDEO_MEMBERS, decode_sample_video
from ..format.manifest import ShardInfo
from ..format.sample import LABEL, decode_label
from ..store.fetch import has_checksums, walk
from ..store.split import Split

if TYPE_CHECKING:
    from PIL.Image import Image

# pixels: around the sheet, under titles and between tiles, between rows
MARGIN, GAP, ROW_GAP = 8, 4, 10
FONT_SIZE = 14  # pixels: Pillow's default font, scalable since Pillow 10.1
TILE_MIN, TILE_MAX = 48, 160  # frames are scaled by whole factors into this height range
BACKGROUND, INK = (24, 24, 24), (235, 235, 235)
INSTALL_HINT = "pip install 'shardkin[inspect]'"


def _pillow() -> Any:
    """The ``PIL`` package, with a hint to install it if it is missing."""
    try:
        import PIL.Image
        import PIL.ImageDraw
        import PIL.ImageFont
    except ImportError:
        raise ImportError(f"shardkin show draws with Pillow: {INSTALL_HINT}") from None
    return PIL


@dataclass(frozen=True)
class ShownClip:
    shard: str
    key: str
    label: int
    length: int  # frames in the clip
    frames: np.ndarray  # the chosen frames, uint8 [K, H, W, 3]


def pick(shards: Sequence[ShardInfo], n: int, seed: int) -> list[tuple[int, int]]:
    """(shard number, sample number in it) of ``n`` clips drawn with ``seed``, in shard order."""
    starts = [0, *accumulate(s.clips for s in shards)]
    chosen = sorted(random.Random(seed).sample(range(starts[-1]), min(n, starts[-1])))
    # the last shard starting at or before i
    numbers = [bisect_right(starts, i) - 1 for i in chosen]
    return [(shard, i - starts[shard]) for shard, i in zip(numbers, chosen)]


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


def read_clips(split: Split, picks: list[tuple[int, int]], frames: int) -> list[ShownClip]:
    """The picked samples' labels and ``frames`` evenly spaced frames, reading only their
    shards (and of a remote shard, only the byte range from the first pick to the last),
    each checked against its checksum (ShardError if damaged)."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for shard, i in picks:
        wanted[shard].add(i)
    clips = []
    verify = has_checksums(split)
    for shard, indices in sorted(wanted.items()):
        name = split.shards[shard].name
        for s, _ in walk(split, shard, min(indices), max(indices) + 1, indices.__contains__,
                         (*VIDEO_MEMBERS, LABEL), verify=verify):
            if s.members is not None:
                if s.check is not None:
                    s.check.raise_error()
                video = decode_sample_video(s.members)
                clips.append(ShownClip(name, s.key, decode_label(s.members[LABEL]), len(video),
                                       video[frame_positions(len(video), frames)]))
    return clips


def compose(header: str, rows: list[tuple[str, list[np.ndarray]]]) -> Image:
    """An RGB image of the header line, then per row its title above its frame tiles."""
    pil = _pillow()
    font = pil.ImageFont.load_default(size=FONT_SIZE)
    line = sum(font.getmetrics())  # ascent + descent: the height of a line of text
    texts, tiles = [(MARGIN, header)], []  # (y, text), (y, x, tile)
    y, right = MARGIN + line + ROW_GAP, 0
    for title, row in rows:
        texts.append((y, title))
        y += line + GAP
        x = MARGIN
        for tile in row:
            tiles.append((y, x, tile))
            x += tile.shape[1] + GAP
        right = max(right, x - GAP)
        y += max((tile.shape[0] for tile in row), default=0) + ROW_GAP
    right = max(right, *(MARGIN + math.ceil(font.getlength(text)) for _, text in texts))
    image = pil.Image.new("RGB", (right + MARGIN, y - ROW_GAP + MARGIN), BACKGROUND)
    draw = pil.ImageDraw.Draw(image)
    for ty, text in texts:
        draw.text((MARGIN, ty), text, fill=INK, font=font)
    for ty, tx, tile in tiles:
        image.paste(pil.Image.fromarray(np.ascontiguousarray(tile)), (tx, ty))
    return image


def title(clip: ShownClip, classes: list[str]) -> str:
    name = classes[clip.label] if 0 <= clip.label < len(classes) else "(not a class)"
    return f"{clip.label} {name}  {clip.key}  {clip.shard}"


def contact_sheet(split: Split, n: int = 8, seed: int = 0, frames: int = 6) -> Image:
    """A sheet of ``n`` clips of ``split``'s shards drawn with ``seed``, ``frames`` frames
    each, sorted by label."""
    _pillow()  # missing: say so before reading any shard
    picks = pick(split.shards, n, seed)
    if not picks:
        raise ValueError(f"split {split.manifest.split!r} has no clips to show: "
                         "`shardkin info` says why its videos were left out")
    clips = sorted(read_clips(split, picks, frames), key=lambda c: (c.label, c.key))
    shown = ",".join(map(str, frame_positions(clips[0].length, frames)))
    header = (f"{split.manifest.split}: {len(clips)} of {sum(s.clips for s in split.shards)} "
              f"clips, seed {seed}, frames {shown} of {clips[0].length}")
    return compose(header, [(title(c, split.manifest.classes), [fit(f) for f in c.frames])
                            for c in clips])
