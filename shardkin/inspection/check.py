"""The rules of ``shardkin verify``: :class:`SplitCheck` is fed a split's manifest, then
its samples one at a time, the bytes each shard hashed to and ``index.npy``, and
reports each problem as one line that starts with the shard (and key) it is about.
It does no I/O: :func:`~shardkin.inspection.verify.verify_split` reads the split.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..format.audio import AUDIO_MEMBER, decode_audio
from ..format.checks import audio_problem, mismatch, video_problem
from ..format.codecs import JPEG, MEMBER, RAW, decode_sample_video, decode_video
from ..format.jpeg import FRAMES, STACK
from ..format.manifest import Manifest
from ..format.npy import decode_npy
from ..format.sample import LABEL, META, REST, decode_label, decode_meta, parse_key
from ..format.samples import TarSample
from ..format.tar import ShardError

INDEX_PROBLEMS_SHOWN = 5


def _digest(sha256: str | None) -> str:
    return f"sha256 {sha256[:16]}..." if sha256 else "no sha256"


def size_problem(width: int, height: int, options: dict[str, Any]) -> str | None:
    """Why ``width x height`` frames cannot come from these resize options, or None."""
    w, h = options.get("width") or 0, options.get("height") or 0
    short, long = options.get("min_dimension") or 0, options.get("max_dimension") or 0
    if w or h:
        ok = (not w or width == w) and (not h or height == h)
        want = f"width={w or 'any'} height={h or 'any'}"
    elif short and long:
        ok = sorted((width, height)) == sorted((short, long))
        want = f"{long}x{short} or {short}x{long}"
    elif short:
        ok, want = min(width, height) == short, f"short side {short}"
    elif long:
        ok, want = max(width, height) == long, f"long side {long}"
    else:
        return None
    return None if ok else f"frames are {width}x{height}, the resize options give {want}"


class SplitCheck:
    """The rules a split's samples must satisfy; feed it shards in manifest order."""

    def __init__(self, manifest: Manifest,
                 on_problem: Callable[[str], Any] = lambda line: None) -> None:
        self.manifest = manifest
        self.options = manifest.options
        self.audio_codec = self.options.get("audio_codec") or RAW  # older builds: raw
        self._audio = AUDIO_MEMBER.get(self.audio_codec)  # None: no audio member
        self.members = tuple(m for m in (MEMBER[self.options.get("video_codec") or RAW],
                                         self._audio, LABEL, META) if m)
        self._rest = tuple(f"{REST}.{m}" for m in self.members[: 2 if self._audio else 1])
        self.classes = manifest.classes
        self.shards = manifest.shards
        self.videos = {v["video_index"]: v for v in manifest.videos}
        self.problems: list[str] = []
        self._on_problem = on_problem
        self._frames = self.options.get("frames_per_clip")
        # key -> (shard number, offset, length), and its checksum as read
        self._where: dict[str, tuple[int, int, int]] = {}
        self._checksums: dict[str, int] = {}
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
        t, shards = self.manifest.totals, self.shards
        names = [s.name for s in shards]
        for name in sorted({n for n in names if names.count(n) > 1}):
            self.problem("manifest", f"shard {name} is listed twice")
        if len(self.videos) != len(self.manifest.videos):
            self.problem("manifest", "video_index values repeat")
        for what, value in (("clips", sum(s.clips for s in shards)),
                            ("bytes", sum(s.bytes for s in shards)), ("shards", len(shards))):
            if t.get(what) != value:
                self.problem("manifest",
                             f"totals.{what} is {t.get(what)}, its shards add up to {value}")
        per_shard: dict[str, int] = defaultdict(int)
        for v in self.manifest.videos:
            per_shard[v["shard"]] += v["clips"]
            if not 0 <= v["label"] < len(self.classes):
                self.problem("manifest", f"video {v['video_index']} ({v['path']}) has label "
                                         f"{v['label']}, beyond the {len(self.classes)} classes")
        for s in shards:
            if per_shard[s.name] != s.clips:
                self.problem(s.name, f"the manifest says {s.clips} clips, its videos "
                                     f"there add up to {per_shard[s.name]}")

    def sample(self, shard: int, s: TarSample, checksum: int | None = None) -> None:
        """Check one sample of shard number ``shard`` (manifest order)."""
        name = self.shards[shard].name
        where = f"{name} {s.key}"
        if s.key in self._where:
            other = self.shards[self._where[s.key][0]].name
            self.problem(where, f"duplicate key (also in {other})")
            return
        self._where[s.key] = (shard, s.offset, s.length)
        if checksum is not None:
            self._checksums[s.key] = checksum
        counts = Counter(s.extensions)
        for ext in (ext for ext, n in counts.items() if n > 1):
            self.problem(where, f"two {ext} members")
        unknown = [ext for ext in counts if ext not in self.members + self._rest]
        if unknown:
            self.problem(where, f"unknown member(s) {', '.join(unknown)}")
        missing = [ext for ext in self.members if ext not in counts]
        if missing:
            self.problem(where, f"incomplete: no {', '.join(missing)} member")
            return
        try:
            video = decode_sample_video(s.members)
            audio = (decode_audio(self._audio, s.members[self._audio], check_md5=True)
                     if self._audio else np.zeros((1, 0), np.float32))
            label, meta = decode_label(s.members[LABEL]), decode_meta(s.members[META])
            rest = {m: decode_video(m[len(REST) + 1 :], s.members[m]) if i == 0 else
                    decode_audio(m[len(REST) + 1 :], s.members[m], check_md5=True)
                    for i, m in enumerate(self._rest) if m in s.members}
            tail = rest.get(self._rest[0])
            if tail is not None and (tail.shape[1:] != video.shape[1:] or len(tail) != (
                    meta.get(REST) or {}).get("frames")):
                raise ValueError(f"{self._rest[0]} holds {list(tail.shape)}, not the json's "
                                 "rest frames of the clip's size")
        except Exception as e:  # whatever a corrupt payload raises is a finding, not a crash
            self.problem(where, f"undecodable: {type(e).__name__}: {e}")
            return
        self._check_layout(where, s.members)
        try:
            index, clip = parse_key(s.key)
        except ValueError as e:
            self.problem(where, f"not a shardkin sample: {e}")
            return
        if not isinstance(meta, dict):
            self.problem(where, "not a shardkin sample: its json is not an object")
            return
        self._check_contents(where, index, clip, video, audio, label, meta, name)

    def _check_layout(self, where: str, members: dict[str, Any]) -> None:
        """A jpeg member in its format version's layout (one JPEG a clip from version 3)."""
        version = self.manifest.format_version
        want = STACK if version >= 3 else FRAMES
        for m in (MEMBER[JPEG], f"{REST}.{MEMBER[JPEG]}"):
            if m in members and bytes(members[m][:4]) != want:
                self.problem(where, f"{m} is in the layout of format version "
                                    f"{'3' if want == FRAMES else '1-2'}, the build is {version}")

    def _check_contents(self, where: str, vi: int, ci: int, video: np.ndarray, audio: np.ndarray,
                        label: int, meta: dict[str, Any], shard: str) -> None:
        if (meta.get("video_index"), meta.get("clip_index")) != (vi, ci):
            self.problem(where, f"json says video {meta.get('video_index')} clip "
                                f"{meta.get('clip_index')}, the key video {vi} clip {ci}")
        wrong_video = video_problem(video.dtype, video.shape)
        if wrong_video:
            self.problem(where, wrong_video)
        else:
            self._check_frames(where, vi, video.shape)
        wrong_audio = audio_problem(audio.dtype, audio.shape)
        if wrong_audio:
            self.problem(where, wrong_audio)
        elif (self.options.get("audio_channels")
              and audio.shape[0] != self.options["audio_channels"]):
            self.problem(where, f"audio has {audio.shape[0]} channels, "
                                f"audio_channels is {self.options['audio_channels']}")
        if meta.get("audio_codec", RAW) != self.audio_codec:
            self.problem(where, f"json audio_codec {meta.get('audio_codec', RAW)}, "
                                f"the build's is {self.audio_codec}")
        if self.options.get("frame_rate") and meta.get("fps") != self.options["frame_rate"]:
            self.problem(where, f"json fps {meta.get('fps')}, "
                                f"frame_rate is {self.options['frame_rate']}")
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
            self.problem(where, f"json path {meta.get('path')!r}, "
                                f"the manifest's video {vi} is {v['path']!r}")
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
        if size != s.bytes or (s.sha256 and sha256 != s.sha256):
            self.problem(s.name, f"checksum mismatch: {size} bytes, {_digest(sha256)}, "
                                 f"the manifest has {s.bytes} bytes, {_digest(s.sha256)}")
        if error is not None:
            self._unread.add(s.name)
            self.problem(s.name, f"unreadable after {samples} samples: {error}")
        elif samples != s.clips:
            self.problem(s.name, f"{samples} samples, the manifest says {s.clips} clips")

    def shard_missing(self, shard: int, url: str) -> None:
        self._unread.add(self.shards[shard].name)
        self.problem(self.shards[shard].name, f"missing: in the manifest, but {url} does not exist")

    def shard_unlisted(self, name: str) -> None:
        self.problem(name, "on disk but not in the manifest (left from another build? remove it)")

    def file(self, entry: Any, data: bytes | None, url: str) -> bool:
        """Check a file the manifest lists (``index.npy``, the video table) against its size
        and sha256; False when it is missing."""
        if data is None:
            self.problem(entry.name, f"missing: in the manifest, but {url} does not exist")
            return False
        sha = hashlib.sha256(data).hexdigest()
        if (len(data), sha) != (entry.bytes, entry.sha256):
            self.problem(entry.name, f"checksum mismatch: {len(data)} bytes, {_digest(sha)}, "
                                     f"the manifest has {entry.bytes} bytes, "
                                     f"{_digest(entry.sha256)}")
        return True

    def index(self, name: str, data: bytes | None, url: str) -> None:
        """Check ``index.npy``: its bytes, and (all shards read) that each row locates its clip."""
        clips = self.manifest.totals.get("clips")
        if not self.file(self.manifest.index, data, url):
            return
        try:
            rows = decode_npy(data)
        except Exception as e:  # a corrupt file is a finding, whatever it raises
            self.problem(name, f"undecodable: {type(e).__name__}: {e}")
            return
        keys = sorted(self._where)
        if rows.dtype != np.int64 or rows.ndim != 2 or rows.shape not in ((clips, 3), (clips, 4)):
            self.problem(name, f"{rows.dtype} {list(rows.shape)}, expected int64 [{clips}, 4] "
                               "(or [clips, 3] from older builds)")
        elif not self._unread and len(keys) == len(rows):
            want = np.array([self._where[k] for k in keys], np.int64).reshape(-1, 3)
            located = (rows[:, :3] == want).all(axis=1)
            if rows.shape[1] == 4:  # rows that locate their clip: its checksum too
                self._check_sums([k for k, ok in zip(keys, located) if ok], rows[located, 3])
            rows = rows[:, :3]
            bad = np.flatnonzero(~located)
            for i in bad[:INDEX_PROBLEMS_SHOWN]:
                self.problem(name, f"row {i} is {rows[i].tolist()}, clip {keys[i]} is at "
                                   f"{want[i].tolist()} (shard number, offset, length)")
            if len(bad) > INDEX_PROBLEMS_SHOWN:
                self.problem(name, f"... and {len(bad) - INDEX_PROBLEMS_SHOWN} more wrong rows")

    def _check_sums(self, keys: list[str], sums: np.ndarray) -> None:
        """Each clip's bytes against the checksum its index row keeps: names damaged clips."""
        for key, want in zip(keys, sums.tolist()):
            got = self._checksums.get(key)
            if got is not None and got != want:
                shard, offset, length = self._where[key]
                self.problem(f"{self.shards[shard].name} {key}", mismatch(offset, offset + length))

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
                self.problem(where,
                             f"{len(seen)} clips in the shards, the manifest says {v['clips']}")
            else:
                self.problem(where, f"clip indices {seen[:8]}{'...' if len(seen) > 8 else ''} "
                                    f"are not 0..{len(want) - 1} in order")
        return self.problems
