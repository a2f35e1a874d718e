"""The official Kinetics download, as it comes: a split folder of
``{youtube_id}_{time_start:06}_{time_end:06}.mp4`` files and the annotation CSV with the
header ``label,youtube_id,time_start,time_end,split[,is_cc]`` (the CVDF archives that
torchvision's ``Kinetics(download=True)`` also fetches).

torchvision's ``_make_ds_structure`` moves each listed file into a class folder named by
:func:`class_folder` (creating a folder for every label of the CSV), then its ``Kinetics``
takes the classes as the sorted folder names and each class's videos in sorted order.
:func:`arrange` gives the same classes, labels and order without moving anything, for a
flat split folder, one already arranged by class, or one half-arranged (an interrupted
``_make_ds_structure``). What the CSV names but the folder lacks (videos taken down from
YouTube: 3-5% of a split) is ``missing``; files the CSV does not name are ``unlisted``; a
row naming a video named before is a ``duplicate`` (the first row's label is kept, as
torchvision keeps the file where the first row moved it).
"""
from __future__ import annotations

import csv
from typing import NamedTuple

from .scan import VideoEntry

REQUIRED = ("label", "youtube_id", "time_start", "time_end")
OPTIONAL = ("split", "is_cc")
HEADER = "label,youtube_id,time_start,time_end,split[,is_cc]"


class Row(NamedTuple):
    line: int  # 1-based line of the CSV
    label: str
    file: str  # the video's file name


def class_folder(label: str) -> str:
    """The class folder torchvision's ``_make_ds_structure`` moves a label's videos into."""
    return label.replace(" ", "_").replace("'", "").replace("(", "").replace(")", "")


def file_name(youtube_id: str, start: int, end: int) -> str:
    """The official file name of a video: ``{youtube_id}_{start:06}_{end:06}.mp4``."""
    return f"{youtube_id}_{start:06}_{end:06}.mp4"


def _first_row(text: str) -> tuple[int, str] | None:
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            return n, line
    return None


def is_official(text: str, where: str) -> bool:
    """Whether the CSV ``text`` is the official kind, told by its header. A first row of
    three or more fields, two of them official column names, must be the whole official
    header: ValueError naming the row otherwise (a misspelt column, the test split's CSV,
    which has no labels)."""
    first = _first_row(text)
    if first is None:
        return False
    n, line = first
    columns = [c.strip().lower() for c in next(csv.reader([line]))]
    if len(columns) < 3 or len(set(columns) & {*REQUIRED, *OPTIONAL}) < 2:
        return False  # `path,label` rows (a path may hold commas)
    lacking = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in (*REQUIRED, *OPTIONAL)]
    if lacking or unknown or len(set(columns)) != len(columns):
        why = "; ".join([f"no {', '.join(lacking)} column" if lacking else "",
                         f"unknown column {', '.join(map(repr, unknown))}" if unknown else "",
                         "a column named twice" if len(set(columns)) != len(columns) else ""])
        hint = (" (the test split's CSV has no labels: it cannot be built with labels)"
                if lacking == ["label"] else "")
        raise ValueError(f"{where}:{n}: unknown header {line.strip()!r}: {why.strip('; ')}; "
                         f"the official Kinetics CSV has the header {HEADER}, other CSVs "
                         f"are rows of path,label{hint}")
    return True


def read_rows(text: str, where: str) -> list[Row]:
    """The rows of an official CSV; ValueError naming the row for an empty label or
    YouTube id, a time that is not a whole number, or a wrong number of fields."""
    first = _first_row(text)
    header_line, header = first
    columns = [c.strip().lower() for c in next(csv.reader([header]))]
    at = {c: columns.index(c) for c in REQUIRED}
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if n <= header_line or not line.strip():
            continue
        fields = next(csv.reader([line]))
        if len(fields) != len(columns):
            raise ValueError(f"{where}:{n}: {len(fields)} fields where the header has "
                             f"{len(columns)}: {line.strip()!r}")
        label, youtube_id = fields[at["label"]].strip(), fields[at["youtube_id"]].strip()
        if not label:
            raise ValueError(f"{where}:{n}: empty label in {line.strip()!r}")
        if not youtube_id:
            raise ValueError(f"{where}:{n}: empty youtube_id in {line.strip()!r}")
        try:
            start, end = int(fields[at["time_start"]]), int(fields[at["time_end"]])
        except ValueError:
            raise ValueError(f"{where}:{n}: time_start and time_end must be whole numbers "
                             f"of seconds: {line.strip()!r}") from None
        rows.append(Row(n, label, file_name(youtube_id, start, end)))
    return rows


def arrange(rows: list[Row], files: list[tuple[str, int | None]], split: str,
            classes: list[str] | None = None) -> dict:
    """The videos of an official split as torchvision's arrangement gives them.

    ``files``: every file under the split folder, as (path relative to ROOT, size). A
    row's video is ``split/NAME`` (flat) or ``split/CLASS/NAME`` (arranged), with CLASS
    its :func:`class_folder`. Classes are ``classes`` if given (``--classes-from``), else
    the sorted class folders of every label of the CSV. Returns ``videos`` (by class,
    then file name), ``classes``, ``missing``, ``unlisted`` and ``duplicates``.
    """
    names = sorted({class_folder(r.label) for r in rows})
    classes = list(classes) if classes is not None else names
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in names if c not in index]
    if unknown:
        raise ValueError(f"labels not in the class list: {', '.join(unknown[:5])}")
    found = dict(files)
    used: set[str] = set()
    first: dict[str, Row] = {}
    videos, missing, duplicates = [], [], []
    for row in rows:
        cls = class_folder(row.label)
        flat, arranged = f"{split}/{row.file}", f"{split}/{cls}/{row.file}"
        if row.file in first:
            earlier = first[row.file]
            duplicates.append({"row": row.line, "path": flat, "class": cls,
                               "first_row": earlier.line,
                               "first_class": class_folder(earlier.label)})
            continue
        first[row.file] = row
        # torchvision moves a flat file over an arranged one: the flat one is the video
        path = next((p for p in (flat, arranged) if p in found), None)
        if path is None:
            missing.append({"row": row.line, "path": flat, "class": cls})
            continue
        used.add(path)
        videos.append(VideoEntry(path, cls, index[cls], found[path]))
    videos.sort(key=lambda v: (v.label, v.path.rsplit("/", 1)[-1]))
    return {"videos": videos, "classes": classes, "missing": missing,
            "unlisted": [p for p, _ in files if p not in used], "duplicates": duplicates}
