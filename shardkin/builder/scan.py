"""Find the videos of a split: class folders (torchvision's order) or an annotation CSV.

Rules (documented in the README):
- every non-hidden folder directly under ROOT is a split; classes are the sorted
  union of the class folders of all splits, so labels agree across splits;
- videos of a class: ``sorted(os.walk(class_dir))`` then sorted file names, as
  torchvision's ``make_dataset``; a file qualifies when its lowercased name ends
  with ``.EXT`` for one of the extensions; the others are counted per extension.
"""
from __future__ import annotations

import csv
import math
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .source import Root, as_root


@dataclass(frozen=True)
class VideoEntry:
    path: str  # relative to ROOT, '/'-separated
    class_name: str
    label: int
    size: int | None = None  # bytes, when a store's listing gave them


def find_splits(root: Root | str | os.PathLike) -> list[str]:
    """The splits: the folders directly under ``root`` (a folder or a URL), not hidden."""
    root = as_root(root)
    root.check()
    return root.dirs()


def find_classes(root: Root | str | os.PathLike) -> list[str]:
    """Sorted union of the class folders of every split under ``root``."""
    root = as_root(root)
    return sorted({c for split in find_splits(root) for c in root.dirs(split)})


def _extension(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix else "(none)"


def list_tree(
    root: Root | str | os.PathLike, split: str, classes: list[str], extensions: tuple[str, ...]
) -> tuple[list[VideoEntry], Counter, list[dict]]:
    """Videos of ``root/split`` in torchvision's order.

    Returns (videos, files skipped per extension, class folders not in ``classes``).
    """
    root = as_root(root)
    if not root.is_dir(split):
        found = ", ".join(find_splits(root)) or "none"
        raise FileNotFoundError(f"split folder {root.url}/{split} does not exist "
                                f"(splits found: {found})")
    wanted = tuple("." + e.lower().lstrip(".") for e in extensions)
    label_of = {c: i for i, c in enumerate(classes)}
    videos: list[VideoEntry] = []
    other: Counter = Counter()
    unlisted = [
        {"path": f"{split}/{c}", "reason": "class folder not in the class list"}
        for c in root.dirs(split)
        if c not in label_of
    ]
    for cls, files in zip(classes, root.files_in([f"{split}/{c}" for c in classes])):
        for rel, size in files:
            if rel.lower().endswith(wanted):
                videos.append(VideoEntry(rel, cls, label_of[cls], size))
            else:
                other[_extension(rel)] += 1
    return videos, other, unlisted


def read_annotations(
    csv_path: str | os.PathLike, classes: list[str] | None, text: str
) -> tuple[list[VideoEntry], list[str]]:
    """Rows ``path,label`` (or PyTorchVideo's ``path label``); paths relative to ROOT.

    Labels may be class names (label = index in the sorted names, or in ``classes``)
    or integers (kept as given; class names are then the integers as text). ``text``:
    the file's text (``csv_path`` names it in messages). ValueError naming the row for an
    empty label or a path named twice.
    """
    rows: list[tuple[str, str]] = []
    first_row: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line:
            fields = next(csv.reader([line]))
            path, label = ",".join(fields[:-1]).strip(), fields[-1].strip()
        else:
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{csv_path}:{n}: expected 'path,label', got {line!r}")
            path, label = parts
        if n == 1 and (path.lower(), label.lower()) == ("path", "label"):
            continue
        if not label or not path:
            raise ValueError(f"{csv_path}:{n}: empty {'label' if path else 'path'} in {line!r}")
        if path in first_row:
            raise ValueError(f"{csv_path}:{n}: {path} is named again (first on row "
                             f"{first_row[path]}): each video may be listed once")
        first_row[path] = n
        rows.append((path, label))
    if all(label.lstrip("-").isdigit() for _, label in rows):
        top = max((int(label) for _, label in rows), default=-1)
        names = classes or [str(i) for i in range(top + 1)]
        return [VideoEntry(p, names[int(lab)], int(lab)) for p, lab in rows], names
    names = classes or sorted({label for _, label in rows})
    index = {c: i for i, c in enumerate(names)}
    missing = sorted({label for _, label in rows if label not in index})
    if missing:
        raise ValueError(f"{csv_path}: labels not in the class list: {', '.join(missing[:5])}")
    order = sorted(range(len(rows)), key=lambda i: (index[rows[i][1]], rows[i][0]))
    return [VideoEntry(rows[i][0], rows[i][1], index[rows[i][1]]) for i in order], names


def select(
    videos: list[VideoEntry], fraction: float | None, limit: int | None, seed: int
) -> list[VideoEntry]:
    """A seeded subset, in the original order: ``fraction`` of each class, then ``limit`` in all."""
    keep = list(range(len(videos)))
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        by_class: dict[str, list[int]] = {}
        for i in keep:
            by_class.setdefault(videos[i].class_name, []).append(i)
        keep = []
        for cls, idx in by_class.items():
            k = max(1, math.floor(len(idx) * fraction + 0.5))
            keep += random.Random(f"{seed}/fraction/{cls}").sample(idx, k)
        keep.sort()
    if limit is not None and limit < len(keep):
        keep = sorted(random.Random(f"{seed}/limit").sample(keep, limit))
    return [videos[i] for i in keep]
