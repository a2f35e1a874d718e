"""The short table a build prints when it ends."""
from __future__ import annotations

from collections import Counter

# an official Kinetics CSV's build: videos it names that are not there, files it does not
# name, rows naming a video again
LAYOUT_ROWS = (("missing", "videos in the CSV, missing"), ("unlisted", "files not in the CSV"),
               ("duplicates", "CSV rows repeated"))


def summary(manifest: dict, seconds: float) -> str:
    """A short table of what a build made and left out."""
    t = manifest["totals"]
    reasons = Counter(s["reason"].split(":")[0] for s in manifest["skipped"])
    rows = [
        ("split", manifest["split"]),
        ("classes", len(manifest["classes"])),
        ("videos with clips", t["videos"] - t["too_short"]),
        ("  of which partial", t["partial"]),
        ("  sound cut short", t.get("audio_errors", 0)),
        ("videos too short", t["too_short"]),
        ("frames held", f"{t.get('held', 0)} (no picture of their own: the previous shown)"),
        ("videos skipped", t["skipped"]),
        *((f"  {r}", n) for r, n in reasons.most_common()),
        ("files of other types", t["skipped_extensions"]),
        *((label, t[key]) for key, label in LAYOUT_ROWS if key in t),
        ("clips", t["clips"]),
        ("shards", t["shards"]),
        ("size", f"{t['bytes'] / 1e9:.3f} GB"),
        ("time", f"{seconds:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
