"""``shardkin info``: what a built split holds, from its manifest alone (no shard is read)."""
from __future__ import annotations

import re
from typing import Any

from ..format.manifest import Manifest
from ..format.options import older_options

SHARDS_LISTED = 10  # shards listed by default; the rest are summarised


def reason_group(reason: str | None) -> str:
    """What a reason is about, for grouping: the text before its first colon, numbers as N
    (``'decode error after 12 frames: ...'`` -> ``'decode error after N frames'``)."""
    return re.sub(r"\d+", "N", (reason or "unknown").split(":")[0]).strip()


def summarize(manifest: Manifest) -> dict[str, Any]:
    """Per-class counts, shards, options and left-out videos grouped by reason (JSON-ready);
    ``manifest`` must be parsed whole (not its head only)."""
    classes = [{"label": i, "class": name, "videos": 0, "clips": 0, "too_short": 0}
               for i, name in enumerate(manifest.classes)]
    groups: dict[tuple[str, str], list[str]] = {}
    for s in manifest.skipped:
        groups.setdefault(("skipped", reason_group(s["reason"])), []).append(s["path"])
    for v in manifest.videos:
        if not 0 <= v["label"] < len(classes):
            raise ValueError(f"the manifest gives {v['path']} label {v['label']}, beyond its "
                             f"{len(classes)} classes: run `shardkin verify` and rebuild")
        row = classes[v["label"]]
        if v["clips"]:
            row["videos"] += 1
            row["clips"] += v["clips"]
        else:
            row["too_short"] += 1
        if v["status"] != "ok":
            groups.setdefault((v["status"], reason_group(v["reason"])), []).append(v["path"])
    left_out = [{"status": status, "reason": reason, "count": len(paths), "paths": paths}
                for (status, reason), paths in sorted(groups.items(), key=lambda g: -len(g[1]))]
    return {
        "split": manifest.split,
        "totals": manifest.totals,
        "format_version": manifest.format_version,
        "options": {**older_options(), **manifest.options},  # older builds: what they did
        "classes": classes,
        "shards": [{"name": s.name, "clips": s.clips, "bytes": s.bytes} for s in manifest.shards],
        "left_out": left_out,
        "skipped_extensions": manifest.skipped_extensions,
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def _table(header: tuple[str, ...], rows: list[tuple], right: set[int]) -> list[str]:
    cells = [tuple(map(str, r)) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in cells]


def format_info(summary: dict[str, Any], where: str, all_shards: bool = False) -> str:
    """The summary as text: totals, options, the class table, shards, what was left out."""
    t, shards = summary["totals"], summary["shards"]
    lines = [f"split {summary['split']}  ({where})",
             f"  {len(summary['classes'])} classes, {t['videos']} videos "
             f"({t['partial']} partial, {t['too_short']} too short), {t['clips']} clips, "
             f"{t['shards']} shards, {human_bytes(t['bytes'])}, format version "
             f"{summary['format_version']}", "", "options"]
    lines += [f"  {k}: {'-' if v is None else ','.join(v) if isinstance(v, list) else v}"
              for k, v in sorted(summary["options"].items())]
    lines += ["", *_table(("label", "class", "videos", "clips", "too short"),
                          [(c["label"], c["class"], c["videos"], c["clips"], c["too_short"])
                           for c in summary["classes"]], {0, 2, 3, 4})]
    listed = shards if all_shards or len(shards) <= SHARDS_LISTED else shards[: SHARDS_LISTED // 2]
    lines += ["", *_table(("shard", "clips", "size"),
                          [(s["name"], s["clips"], human_bytes(s["bytes"])) for s in listed],
                          {1, 2})]
    if len(listed) < len(shards):
        clips, sizes = [s["clips"] for s in shards], [s["bytes"] for s in shards]
        lines.append(f"... {len(shards) - len(listed)} more (--all-shards lists them): clips "
                     f"{min(clips)}..{max(clips)}, size {human_bytes(min(sizes))}.."
                     f"{human_bytes(max(sizes))} a shard")
    if summary["left_out"]:
        lines += ["", "videos left out or cut short, by reason"]
        for g in summary["left_out"]:
            more = f" (+{g['count'] - 3} more)" if g["count"] > 3 else ""
            lines.append(f"  {g['status']}: {g['reason']}: {g['count']}  "
                         f"e.g. {', '.join(g['paths'][:3])}{more}")
    if summary["skipped_extensions"]:
        other = ", ".join(f"{ext} {n}" for ext, n in summary["skipped_extensions"].items())
        lines += ["", f"files not read for their extension: {other}"]
    return "\n".join(lines)
