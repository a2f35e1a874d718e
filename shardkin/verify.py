"""``shardkin verify``: every shard's bytes and every sample checked against the manifest.

:class:`SplitCheck` holds the rules and is fed one sample at a time (no I/O);
:func:`verify_split` reads each shard once, front to back, through
:func:`~shardkin.tarread.open_shard`, hashing the bytes as the tar reader walks them.
Each problem is one line that starts with the shard (and key) it is about.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
from tqdm import tqdm

from . import codecs
from .npy import decode_npy
from .sample import AUDIO, LABEL, META, decode_label, decode_meta, split_member
from .codecs import decode_sample_video
from .shards import shard_url
from .storage import Folder
from .tarread import BLOCK, ShardError, TarReader, open_shard

INDEX_PROBLEMS_SHOWN = 5


@dataclass
class RawSample:
    """The members of one sample as read, with where it lies in its shard."""

    key: str
    offset: int  # byte offset of its first header
    length: int = 0  # bytes of its headers and padded data
    members: dict[str, bytearray] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)


def read_samples(reader: TarReader) -> Iterator[RawSample]:
    """Every sample of a shard, all members read; consecutive members sharing a key form one.

    Unlike :func:`~shardkin.tarread.iter_samples` an incomplete sample is yielded as it
    is, so that the check can name it and go on with the rest of the shard.
    """
    sample: RawSample | None = None
    end = 0  # where the next header starts
    member = reader.next()
    while member is not None:
        key, ext = split_member(member.name)
        if sample is None or key != sample.key:
            if sample is not None:
                yield sample
            sample = RawSample(key, end)
        if ext in sample.members:
            sample.duplicates.append(ext)
        sample.members[ext] = reader.read()
        end = member.offset + member.size + (-member.size % BLOCK)
        sample.length = end - sample.offset
        member = reader.next()
    if sample is not None:
        yield sample


class HashingFile:
    """A file read front to back through sha256; not seekable, so every byte passes here."""

    def __init__(self, f: BinaryIO, on_read: Callable[[int], Any] = lambda n: None) -> None:
        self._f, self._on_read = f, on_read
        self.sha256 = hashlib.sha256()
        self.size = 0

    def seekable(self) -> bool:
        return False

    def _saw(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        self.size += len(data)
        self._on_read(len(data))

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._saw(data)
        return data

    def readinto(self, buffer: bytearray) -> int:
        n = self._f.readinto(buffer) or 0
        self._saw(memoryview(buffer)[:n])
        return n

    def drain(self) -> None:
        """Read (and hash) the rest of the file."""
        while self.read(1 << 20):
            pass


def size_problem(width: int, height: int, options: dict[str, Any]) -> str | None:
    """Why ``width x height`` frames cannot come from these resize options, or None."""
    w, h = options.get("width") or 0, options.get("height") or 0
    short, long = options.get("min_dimension") or 0, options.get("max_dimension") or 0
    if w or h:
        ok = (not w or width == w) and (not h or height == h)
        want = f"width={w or 'any'} height={h or 'any'}"
    elif short and long:
        ok, want = sorted((width, height)) == sorted((short, long)), f"{long}x{short} or {short}x{long}"
    elif short:
        ok, want = min(width, height) == short, f"short side {short}"
    elif long:
        ok, want = max(width, height) == long, f"long side {long}"
    else:
        return None
    return None if ok else f"frames are {width}x{height}, the resize options give {want}"


class SplitCheck:
    """The rules a split's samples must satisfy; feed it shards in manifest order."""

    def __init__(self, manifest: dict[str, Any],
                 on_problem: Callable[[str], Any] = lambda line: None) -> None:
        self.manifest = manifest
        self.options = manifest.get("options") or {}
        self._members = (codecs.MEMBER[self.options.get("video_codec") or codecs.RAW], AUDIO, LABEL, META)
        self.classes = manifest["classes"]
        self.shards = manifest["shards"]
        self.videos = {v["video_index"]: v for v in manifest["videos"]}
        self.problems: list[str] = []
        self._on_problem = on_problem
        self._frames = self.options.get("frames_per_clip")
        self._where: dict[str, tuple[int, int, int]] = {}  # key -> (shard number, offset, length)
        self._clips: dict[int, list[int]] = defaultdict(list)  # video -> clip indices as read
        self._sizes: dict[int, tuple[int, int]] = {}  # video -> (width, height) of its frames
        self._unread: set[str] = set()  # shards not read to the end
        self._check_manifest()

    def problem(self, where: str, what: str) -> None:
        line = f"{where}: {what}"
        self.problems.append(line)
        self._on_problem(line)

    def _check_manifest(self) -> None:
        """The manifest against itself: totals, shard clip counts, labels."""
        t, shards = self.manifest["totals"], self.shards
        names = [s["name"] for s in shards]
        for name in sorted({n for n in names if names.count(n) > 1}):
            self.problem("manifest", f"shard {name} is listed twice")
        if len(self.videos) != len(self.manifest["videos"]):
            self.problem("manifest", "video_index values repeat")
        for what, value in (("clips", sum(s["clips"] for s in shards)),
                            ("bytes", sum(s["bytes"] for s in shards)), ("shards", len(shards))):
            if t.get(what) != value:
                self.problem("manifest", f"totals.{what} is {t.get(what)}, its shards add up to {value}")
        per_shard: dict[str, int] = defaultdict(int)
        for v in self.manifest["videos"]:
            per_shard[v["shard"]] += v["clips"]
            if not 0 <= v["label"] < len(self.classes):
                self.problem("manifest", f"video {v['video_index']} ({v['path']}) has label "
                                         f"{v['label']}, beyond the {len(self.classes)} classes")
        for s in shards:
            if per_shard[s["name"]] != s["clips"]:
                self.problem(s["name"], f"the manifest says {s['clips']} clips, its videos "
                                        f"there add up to {per_shard[s['name']]}")

    def sample(self, shard: int, s: RawSample) -> None:
        """Check one sample of shard number ``shard`` (manifest order)."""
        name = self.shards[shard]["name"]
        where = f"{name} {s.key}"
        if s.key in self._where:
            self.problem(where, f"duplicate key (also in {self.shards[self._where[s.key][0]]['name']})")
            return
        self._where[s.key] = (shard, s.offset, s.length)
        for ext in s.duplicates:
            self.problem(where, f"two {ext} members")
        missing = [ext for ext in self._members if ext not in s.members]
        unknown = [ext for ext in s.members if ext not in self._members]
        if unknown:
            self.problem(where, f"unknown member(s) {', '.join(unknown)}")
        if missing:
            self.problem(where, f"incomplete: no {', '.join(missing)} member")
            return
        try:
            video, audio = decode_sample_video(s.members), decode_npy(s.members[AUDIO])
            label, meta = decode_label(s.members[LABEL]), decode_meta(s.members[META])
        except Exception as e:  # whatever a corrupt payload raises is a finding, not a crash
            self.problem(where, f"undecodable: {type(e).__name__}: {e}")
            return
        index, _, clip = s.key.partition("_")
        if not (index.isdigit() and clip.isdigit()) or not isinstance(meta, dict):
            self.problem(where, "not a shardkin sample (key is not VIDEO_CLIP or json is not an object)")
            return
        self._check_contents(where, int(index), int(clip), video, audio, label, meta, name)

    def _check_contents(self, where: str, vi: int, ci: int, video: np.ndarray, audio: np.ndarray,
                        label: int, meta: dict[str, Any], shard: str) -> None:
        if (meta.get("video_index"), meta.get("clip_index")) != (vi, ci):
            self.problem(where, f"json says video {meta.get('video_index')} clip "
                                f"{meta.get('clip_index')}, the key video {vi} clip {ci}")
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[3] != 3:
            self.problem(where, f"video is {video.dtype} {list(video.shape)}, not uint8 [T,H,W,3]")
        else:
            self._check_frames(where, vi, video.shape)
        if audio.dtype != np.float32 or audio.ndim != 2:
            self.problem(where, f"audio is {audio.dtype} {list(audio.shape)}, not float32 [C,S]")
        elif self.options.get("audio_channels") and audio.shape[0] != self.options["audio_channels"]:
            self.problem(where, f"audio has {audio.shape[0]} channels, "
                                f"audio_channels is {self.options['audio_channels']}")
        if self.options.get("frame_rate") and meta.get("fps") != self.options["frame_rate"]:
            self.problem(where, f"json fps {meta.get('fps')}, frame_rate is {self.options['frame_rate']}")
        if not 0 <= label < len(self.classes):
            self.problem(where, f"cls {label} is beyond the {len(self.classes)} classes")
        elif meta.get("class") != self.classes[label]:
            self.problem(where, f"json class {meta.get('class')!r}, but cls {label} is "
                                f"{self.classes[label]!r}")
        v = self.videos.get(vi)
        if v is None:
            self.problem(where, f"video {vi} is not in the manifest")
            return
        if not label == meta.get("label") == v["label"]:
            self.problem(where, f"label mismatch: cls {label}, json {meta.get('label')}, "
                                f"manifest {v['label']} for {v['path']}")
        if meta.get("path") != v["path"]:
            self.problem(where, f"json path {meta.get('path')!r}, the manifest's video {vi} is {v['path']!r}")
        if v["shard"] != shard:
            self.problem(where, f"the manifest puts video {vi} in {v['shard'] or 'no shard'}")
        self._clips[vi].append(ci)

    def _check_frames(self, where: str, vi: int, shape: tuple[int, ...]) -> None:
        frames, height, width = shape[:3]
        if self._frames is None:  # no frames_per_clip option: all clips must agree
            self._frames = frames
        if frames != self._frames:
            self.problem(where, f"{frames} frames, frames_per_clip is {self._frames}")
        wrong = size_problem(width, height, self.options)
        if wrong:
            self.problem(where, wrong)
        first = self._sizes.setdefault(vi, (width, height))
        if first != (width, height):
            self.problem(where, f"frames are {width}x{height}, the first clip of video {vi} "
                                f"has {first[0]}x{first[1]}")

    def shard_read(self, shard: int, samples: int, size: int, sha256: str,
                   error: ShardError | None = None) -> None:
        """After reading shard number ``shard``: its bytes and, if read to the end, its count."""
        s = self.shards[shard]
        if (size, sha256) != (s["bytes"], s["sha256"]):
            self.problem(s["name"], f"checksum mismatch: {size} bytes, sha256 {sha256[:16]}..., "
                                    f"the manifest has {s['bytes']} bytes, sha256 {s['sha256'][:16]}...")
        if error is not None:
            self._unread.add(s["name"])
            self.problem(s["name"], f"unreadable after {samples} samples: {error}")
        elif samples != s["clips"]:
            self.problem(s["name"], f"{samples} samples, the manifest says {s['clips']} clips")

    def shard_missing(self, shard: int, url: str) -> None:
        self._unread.add(self.shards[shard]["name"])
        self.problem(self.shards[shard]["name"], f"missing: in the manifest, but {url} does not exist")

    def shard_unlisted(self, name: str) -> None:
        self.problem(name, "on disk but not in the manifest (left from another build? remove it)")

    def index(self, name: str, data: bytes | None, url: str) -> None:
        """Check ``index.npy``: its bytes, and (all shards read) that each row locates its clip."""
        entry = self.manifest["index"]
        if data is None:
            self.problem(name, f"missing: in the manifest, but {url} does not exist")
            return
        sha = hashlib.sha256(data).hexdigest()
        if (len(data), sha) != (entry["bytes"], entry["sha256"]):
            self.problem(name, f"checksum mismatch: {len(data)} bytes, sha256 {sha[:16]}..., the "
                               f"manifest has {entry['bytes']} bytes, sha256 {entry['sha256'][:16]}...")
        try:
            rows = decode_npy(data)
        except Exception as e:  # a corrupt file is a finding, whatever it raises
            self.problem(name, f"undecodable: {type(e).__name__}: {e}")
            return
        keys = sorted(self._where)
        if rows.dtype != np.int64 or rows.shape != (self.manifest["totals"]["clips"], 3):
            self.problem(name, f"{rows.dtype} {list(rows.shape)}, expected int64 "
                               f"[{self.manifest['totals']['clips']}, 3]")
        elif not self._unread and len(keys) == len(rows):
            want = np.array([self._where[k] for k in keys], np.int64).reshape(-1, 3)
            bad = np.flatnonzero((rows != want).any(axis=1))
            for i in bad[:INDEX_PROBLEMS_SHOWN]:
                self.problem(name, f"row {i} is {rows[i].tolist()}, clip {keys[i]} is at "
                                   f"{want[i].tolist()} (shard number, offset, length)")
            if len(bad) > INDEX_PROBLEMS_SHOWN:
                self.problem(name, f"... and {len(bad) - INDEX_PROBLEMS_SHOWN} more wrong rows")

    def finish(self) -> list[str]:
        """Check every video's clips (0..n-1, in order) against the manifest; all problems."""
        for vi, v in sorted(self.videos.items()):
            if v["shard"] in self._unread:
                continue
            seen, want = self._clips.get(vi, []), list(range(v["clips"]))
            if seen == want:
                continue
            where = f"{v['shard'] or 'manifest'} video {vi} ({v['path']})"
            if len(seen) != len(want):
                self.problem(where, f"{len(seen)} clips in the shards, the manifest says {v['clips']}")
            else:
                self.problem(where, f"clip indices {seen[:8]}{'...' if len(seen) > 8 else ''} "
                                    f"are not 0..{len(want) - 1} in order")
        return self.problems


def shards_on_disk(folder: str) -> list[str]:
    """Names of the tar files in a split folder or URL prefix."""
    return [name for name in Folder(folder).names() if name.endswith(".tar")]


def _read_whole(url: str) -> bytes | None:
    try:
        with open_shard(url) as f:
            return f.read()
    except FileNotFoundError:
        return None


def verify_split(manifest: dict[str, Any], folder: str, progress: bool = True,
                 on_problem: Callable[[str], Any] = lambda line: None) -> list[str]:
    """Every problem found in the split of ``manifest`` whose files are in ``folder``."""
    check = SplitCheck(manifest, on_problem)
    bar = tqdm(total=sum(s["bytes"] for s in manifest["shards"]), desc="verify", unit="B",
               unit_scale=True, unit_divisor=1024, disable=not progress)
    for n, entry in enumerate(manifest["shards"]):
        url = shard_url(folder, entry["name"])
        try:
            f = open_shard(url)
        except FileNotFoundError:
            check.shard_missing(n, url)
            continue
        with f:
            hashed = HashingFile(f, bar.update)
            samples, error = 0, None
            try:
                for sample in read_samples(TarReader(hashed, url)):
                    check.sample(n, sample)
                    samples += 1
            except ShardError as e:
                error = e
            hashed.drain()
        check.shard_read(n, samples, hashed.size, hashed.sha256.hexdigest(), error)
    bar.close()
    listed = {s["name"] for s in manifest["shards"]}
    for name in shards_on_disk(folder):
        if name not in listed:
            check.shard_unlisted(name)
    if manifest.get("index"):
        url = shard_url(folder, manifest["index"]["name"])
        check.index(manifest["index"]["name"], _read_whole(url), url)
    return check.finish()
