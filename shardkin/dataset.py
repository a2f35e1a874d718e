"""``ShardDataset``: clips of a shardkin build as an iterable PyTorch dataset.

How an epoch is cut (all pure functions of the manifest, ``seed`` and ``epoch``):

1. The shard order is shuffled with ``(seed, epoch)``; all clips in that order form
   one sequence of ``M`` clips (counts from the manifest, nothing is scanned).
2. Rank ``r`` of ``W`` takes the contiguous slice of ``n = M // W`` clips starting at
   ``r * n`` (at most ``W - 1`` clips an epoch are left out, a different few each
   epoch). With ``drop_remainder=False``, ``n = ceil(M / W)`` and the slices wrap
   around, so every clip is seen and at most ``W - 1`` are seen twice.
3. DataLoader worker ``w`` of ``K`` takes the ``w``-th of ``K`` near-equal contiguous
   parts of the rank's slice; every rank splits the same ``n`` the same way, so
   all ranks yield the same number of samples and batches.
4. A worker deals its part out, in whole shards, to ``interleave`` lanes read side
   by side (halving shards only when the part has too few, never below
   ``shuffle_buffer // 8`` clips): each next clip comes from a lane drawn at random
   in proportion to what it has left, into a shuffle buffer of ``shuffle_buffer``
   clips that hands out a random one. Clips of one video, stored together, so come
   out far apart.

Every random draw depends only on ``(seed, epoch, rank, worker, num_workers)``
and the counts, never on the data, so the order of an epoch is reproducible and
a resumed epoch replays the draws over headers alone, reading no skipped payload.

Reading: lanes walk their shards by tar headers, reading only each payload's npy
header, so the shuffle buffer holds clip locations (a few hundred bytes each), not
pixels; a clip's arrays are read when it leaves the buffer, with one positioned read
straight into their destination (the batch, with :func:`shardkin.make_loader`).
Compressed video members (``zstd``, ``jpeg`` codecs) wait in the buffer compressed
and are decoded when read.

Memory: the buffer is nearly free, so the default 1024 costs about 1 MB a worker;
clips are read only into the batches (see :mod:`shardkin.loader`). Each worker keeps
open the shards its buffered clips lie in (``interleave`` at a time, a few more
briefly). At the defaults, on Kinetics-like data (18 clips a video stored
together), about 1% of consecutive clips come from the same video and runs are at
most 3 long.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import warnings
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .cache import CacheWriter, ShardCache
from .codecs import VIDEO_MEMBERS, decode_video, video_member
from .items import check_output_format, make_item
from .manifest import INDEX, MANIFEST, locate_manifest, manifest_head
from .npy import decode_npy, parse_header
from .plan import parse_size
from .remote import RangeStream
from .sample import AUDIO, LABEL, META, VIDEO, decode_label, decode_meta
from .storage import Folder, is_url
from .tarread import BLOCK, Deferred, ShardError, TarReader, iter_samples

T = TypeVar("T")
STATE_VERSION = 1
_HINT = ("rebuild it (re-run the same `shardkin build`, which rewrites missing or changed "
         "shards) or pass on_error='skip' to skip unreadable clips")


@dataclass(frozen=True)
class Span:
    """Samples ``start <= i < stop`` of shard number ``shard`` (manifest order)."""

    shard: int
    start: int
    stop: int


def per_rank(total: int, world_size: int, drop_remainder: bool = True) -> int:
    """Clips each rank gets in an epoch."""
    return total // world_size if drop_remainder else -(-total // world_size)


def split_sizes(n: int, parts: int) -> list[int]:
    """``n`` cut into ``parts`` sizes differing by at most one, larger first."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    order = list(range(num_shards))
    if shuffle:
        random.Random(f"shardkin/{seed}/{epoch}/shards").shuffle(order)
    return order


def spans(clips: Sequence[int], order: Sequence[int], start: int, count: int) -> list[Span]:
    """Positions ``start .. start + count`` of the epoch sequence (wrapping) as shard spans."""
    total = sum(clips)
    ends = list(itertools.accumulate(clips[s] for s in order))
    out: list[Span] = []
    pos, left = start % total, count
    while left:
        k = bisect_right(ends, pos)
        first = ends[k] - clips[order[k]]
        take = min(left, ends[k] - pos)
        out.append(Span(order[k], pos - first, pos - first + take))
        pos, left = (pos + take) % total, left - take
    return out


def split_pieces(pieces: list[Span], count: int, min_size: int = 1) -> list[Span]:
    """Halve the largest spans until there are ``count``, none under ``min_size``."""
    pieces = list(pieces)
    while pieces and len(pieces) < count:
        i = max(range(len(pieces)), key=lambda j: pieces[j].stop - pieces[j].start)
        s = pieces[i]
        if s.stop - s.start < 2 * min_size:
            break
        mid = (s.start + s.stop) // 2
        pieces[i : i + 1] = [Span(s.shard, s.start, mid), Span(s.shard, mid, s.stop)]
    return pieces


def worker_lanes(
    clips: Sequence[int], *, seed: int, epoch: int, rank: int, world_size: int, worker: int,
    num_workers: int, interleave: int, shuffle: bool = True, drop_remainder: bool = True,
    min_lane: int = 1,
) -> list[list[Span]]:
    """The lanes (lists of spans) one DataLoader worker of one rank reads in an epoch.

    The worker's part of the epoch is dealt out to the lanes in whole shards, so
    a lane starts mid-shard (walking headers to get there) only at the ends of the
    part or where shards are split to make ``interleave`` lanes, into pieces of at
    least ``min_lane`` clips.
    """
    n = per_rank(sum(clips), world_size, drop_remainder)
    sizes = split_sizes(n, num_workers)
    order = shard_order(len(clips), seed, epoch, shuffle)
    part = spans(clips, order, rank * n + sum(sizes[:worker]), sizes[worker])
    pieces = split_pieces(part, interleave, min_lane)
    return [pieces[lane::interleave] for lane in range(min(interleave, len(pieces)))]


def mix(lanes: Sequence[Iterator[T]], lengths: Sequence[int], rng: random.Random,
        buffer_size: int) -> Iterator[T]:
    """Interleave lanes at random, then shuffle through a buffer of ``buffer_size``.

    Each read takes lane ``l`` with probability ``left[l] / total left``. The buffer
    starts handing out items once it holds ``buffer_size // 8`` and grows by one an
    item up to ``buffer_size``. Draws depend on ``lengths`` and ``rng`` only.
    """
    left = list(lengths)
    total = sum(left)
    buf: list[T] = []
    target = max(1, buffer_size // 8)
    while total or buf:
        while total and len(buf) < target:
            r, lane = rng.randrange(total), 0
            while r >= left[lane]:
                r -= left[lane]
                lane += 1
            buf.append(next(lanes[lane]))
            left[lane] -= 1
            total -= 1
        i = rng.randrange(len(buf))
        buf[i], buf[-1] = buf[-1], buf[i]
        yield buf.pop()
        target = min(buffer_size, target + 1)


class Array(NamedTuple):
    """An npy array left in its shard (or in the member's bytes, when streamed from
    object storage), to be read straight into its destination."""

    shard: "_OpenShard | bytearray"
    offset: int  # of the array data in the file (or the bytes)
    dtype: torch.dtype
    shape: tuple[int, ...]


class Encoded(NamedTuple):
    """A compressed video member (zstd, jpeg), decoded when its clip is read."""

    member: str
    data: bytearray
    where: str  # shard and sample, for errors


class Record(NamedTuple):
    """A clip in the shuffle buffer: where its arrays are, and its small members."""

    video: Array | Encoded  # uint8 [T, H, W, 3] once read
    audio: Array  # float32 [C, S]
    label: int
    key: str
    meta: dict[str, Any] | None


class Clip(NamedTuple):
    """One clip, read."""

    video: torch.Tensor  # uint8 [T, H, W, 3]
    audio: torch.Tensor  # float32 [C, S]
    label: int
    key: str
    meta: dict[str, Any] | None


class _OpenShard:
    """A shard file, open while clips read from it wait in the shuffle buffer."""

    def __init__(self, path: str, file: BinaryIO | None = None) -> None:
        self.path, self.file = path, None
        self.file = open(path, "rb", buffering=0) if file is None else file

    def __del__(self) -> None:
        if self.file is not None:
            self.file.close()


_TORCH = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32}


def npy_layout(head: bytes, size: int) -> tuple[int, torch.dtype, tuple[int, ...]]:
    """(data offset, dtype, shape) of an npy payload of ``size`` bytes from its first bytes."""
    offset, dtype, shape = parse_header(head)
    if dtype not in _TORCH:
        raise ValueError(f"unsupported npy dtype {dtype}")
    if offset + math.prod(shape) * dtype.itemsize != size:
        raise ValueError(f"npy payload of {size} bytes does not hold {shape} {dtype}")
    return offset, _TORCH[dtype], shape


def read_array(array: Array, out: torch.Tensor | None = None) -> torch.Tensor:
    """``array`` read into ``out`` (contiguous, of its shape) or a new tensor: one read."""
    out = torch.empty(array.shape, dtype=array.dtype) if out is None else out
    if not out.is_contiguous():
        raise ValueError("read_array needs a contiguous destination")
    view = memoryview(out.numpy().reshape(-1).view(np.uint8))
    if isinstance(array.shard, bytearray):  # streamed: already in memory
        view[:] = memoryview(array.shard)[array.offset : array.offset + len(view)]
        return out
    fd, done = array.shard.file.fileno(), 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], array.offset + done)
        if not got:
            raise ShardError(f"{array.shard.path}: truncated at byte {array.offset + done} while "
                             "reading a clip: the shard changed during the epoch")
        done += got
    return out


def read_video(video: Array | Encoded, out: torch.Tensor | None = None) -> torch.Tensor:
    """A clip's frames, uint8 ``[T, H, W, 3]``, read (or decoded) into ``out`` if given."""
    if isinstance(video, Array):
        return read_array(video, out)
    try:
        array = decode_video(video.member, video.data)
    except Exception as e:  # any decoder failure on a damaged member
        raise ShardError(f"{video.where}: corrupt {video.member} member "
                         f"({type(e).__name__}: {e}): {_HINT}") from None
    frames = torch.from_numpy(array if array.flags.writeable else array.copy())
    if frames.dim() != 4 or frames.shape[3] != 3:
        raise ShardError(f"{video.where}: corrupt {video.member} member (frames of shape "
                         f"{tuple(frames.shape)}): {_HINT}")
    return frames if out is None else out.copy_(frames)


def read_clip(record: Record, video: torch.Tensor | None = None) -> Clip:
    """The clip of ``record``, its video read into ``video`` when given."""
    return Clip(read_video(record.video, video), read_array(record.audio), record.label,
                record.key, record.meta)




class _Resume(NamedTuple):
    epoch: int
    num_workers: int
    delivered: tuple[int, ...]


_DELIVERED = object()  # a resumed epoch's clip handed out before the restart
_BAD = object()  # an unreadable clip (on_error="skip")


def worker_id() -> tuple[int, int]:
    """(worker, num_workers) of the current DataLoader worker; (0, 1) outside workers."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _dist_rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset):
    """Shuffled clips of a shardkin build, split exactly across ranks and workers.

    ``source``: a build folder (with ``split``), a split folder, or a
    ``manifest.json``; local, or a URL on object storage (``s3://``, ``gs://``,
    ``https://``, any fsspec URL; ``storage_options`` go to fsspec); or shard
    paths or URLs (a list, or a brace pattern ``.../train-{000000..000009}.tar``)
    of one split folder, whose manifest gives their clip counts. Items are like
    ``torchvision.datasets.Kinetics``: ``(video, audio, label)`` with ``video`` a
    uint8 tensor ``[T, C, H, W]`` (``output_format="TCHW"``, a permuted view) or
    ``[T, H, W, C]`` (``"THWC"``), ``audio`` float32 ``[C, S]``, ``label`` an int;
    ``transform`` is applied to ``video``. ``return_dict=True`` gives PyTorchVideo's
    dict instead (``video`` ``[C, T, H, W]``, ``audio``, ``label``, ``video_name``,
    ``video_index``, ``clip_index``), ``transform`` applied to the dict.

    ``rank``/``world_size`` default to ``torch.distributed``'s when it is
    initialised, else 0 and 1. ``len(ds)`` is the exact number of clips this rank
    yields an epoch, whatever the number of DataLoader workers (module docstring:
    how the epoch is cut, what is dropped or repeated, memory). Call
    :meth:`set_epoch` before each epoch; it reaches persistent workers too.

    ``on_error="raise"`` (default) stops at a truncated or corrupt shard or
    sample with :class:`ShardError`; ``"skip"`` warns and hands out, in place of
    each unreadable clip, a repeat of a readable one from the same worker, so
    every rank keeps the same count (no DDP hang). Damage found only when a clip
    is read (a compressed member that does not decode, a shard changed during the
    epoch) raises in both modes.

    Object storage: each lane streams its shard range in range requests of up to
    8 MiB, one ahead in flight; a failed read (connection reset, 5xx, timeout) is
    retried from its first byte with exponential backoff, ``attempts`` times, then
    raises :class:`ShardError` naming the shard and range. Streamed clips wait in the
    shuffle buffer with their bytes (about ``shuffle_buffer`` clips' worth a
    worker). ``cache_dir`` keeps the shards read on local disk (by sha256, verified,
    at most ``cache_size`` bytes, least recently used removed first, shared by all
    processes of the machine); later epochs read them like local files.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        split: str | None = "train",
        *,
        shuffle: bool = True,
        seed: int = 0,
        output_format: str = "TCHW",
        transform: Callable[[Any], Any] | None = None,
        return_dict: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        drop_remainder: bool = True,
        shuffle_buffer: int = 1024,
        interleave: int = 32,
        on_error: str = "raise",
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_size: str | int = "100GB",
        attempts: int = 5,
    ) -> None:
        check_output_format(output_format)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if shuffle_buffer < 1 or interleave < 1:
            raise ValueError("shuffle_buffer and interleave must be >= 1")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (torch.distributed's)")
        rank, world_size = (rank, world_size) if rank is not None else _dist_rank()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range(world_size={world_size})")
        folder, name, chosen = _locate(source, split, storage_options, attempts)
        where = folder.path(name)
        manifest = manifest_head(folder.read_bytes(name).decode("utf-8"), where)
        self.split = manifest["split"]
        self.classes: list[str] = manifest["classes"]
        shards = _choose(manifest["shards"], chosen, where)
        self._folder = folder
        self._all_names = [s["name"] for s in manifest["shards"]]  # index.npy numbers these
        self._names = [s["name"] for s in shards]
        self._paths = [folder.path(n) for n in self._names]
        self._clips = [int(s["clips"]) for s in shards]
        self._bytes = [int(s["bytes"]) for s in shards]
        self._sha256 = [s.get("sha256") for s in shards]
        self._starts: dict[int, np.ndarray] | None = None  # sample offsets, remote only
        self.cache = (ShardCache(cache_dir, parse_size(cache_size))
                      if cache_dir is not None and folder.remote else None)
        if cache_dir is not None and not folder.remote:
            warnings.warn(f"shardkin: {where} is local: its shards are read in place, "
                          "cache_dir is not used", stacklevel=2)
        self.total_clips = sum(self._clips)
        if per_rank(self.total_clips, world_size, drop_remainder) == 0:
            raise ValueError(f"{where} holds {self.total_clips} clips, fewer than world_size="
                             f"{world_size}: use fewer ranks or a larger dataset")
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.output_format, self.transform, self.return_dict = output_format, transform, return_dict
        self.drop_remainder, self.on_error = drop_remainder, on_error
        self.shuffle_buffer = shuffle_buffer if shuffle else 1
        self.interleave = interleave if shuffle else 1
        self._wanted = (*VIDEO_MEMBERS, AUDIO, LABEL, META) if return_dict else (
            *VIDEO_MEMBERS, AUDIO, LABEL)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._resume: _Resume | None = None
        self._progress: _Resume | None = None

    # -- epochs and resume ---------------------------------------------------------

    def __len__(self) -> int:
        return per_rank(self.total_clips, self.world_size, self.drop_remainder)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order (seen by persistent workers too); drops a resume for another."""
        self._epoch[0] = int(epoch)
        if self._resume is not None and self._resume.epoch != epoch:
            self._resume = None

    def _identity(self) -> dict[str, Any]:
        shards = json.dumps([[os.path.basename(p), c] for p, c in zip(self._paths, self._clips)])
        return {"version": STATE_VERSION, "shards": hashlib.sha256(shards.encode()).hexdigest(),
                "seed": self.seed, "shuffle": self.shuffle, "world_size": self.world_size,
                "drop_remainder": self.drop_remainder, "shuffle_buffer": self.shuffle_buffer,
                "interleave": self.interleave}

    def make_state(self, epoch: int, num_workers: int, delivered: Sequence[int]) -> dict[str, Any]:
        """A resumable state: clips of ``epoch`` each worker has handed out."""
        return {**self._identity(), "epoch": epoch, "num_workers": num_workers,
                "delivered": list(delivered)}

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch being iterated in this process (or num_workers=0).

        With DataLoader workers, take the state from :func:`shardkin.make_loader`'s
        loader instead: this process does not see what workers hand out.
        """
        for p in (self._resume, self._progress):
            if p is not None and p.epoch == self.epoch:
                return self.make_state(p.epoch, p.num_workers, p.delivered)
        return self.make_state(self.epoch, 1, [0])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue ``state``'s epoch where it stopped (same world size and workers)."""
        mine = self._identity()
        diff = sorted(k for k in mine if state.get(k) != mine[k])
        if diff:
            shown = ", ".join(f"{k}: saved {state.get(k)!r}, now {mine[k]!r}" for k in diff)
            raise ValueError(f"cannot resume: the state was taken with other settings ({shown}); "
                             "resume with the same dataset, options and world size")
        self._resume = _Resume(int(state["epoch"]), int(state["num_workers"]),
                               tuple(int(d) for d in state["delivered"]))
        self._epoch[0] = self._resume.epoch

    def _take_resume(self, epoch: int, worker: int, num_workers: int) -> int:
        """Clips this worker already handed out this epoch; consumes the resume."""
        resume, self._resume = self._resume, None
        if resume is None or resume.epoch != epoch:
            return 0
        if resume.num_workers != num_workers:
            raise ValueError(f"cannot resume: the state was taken with {resume.num_workers} "
                             f"worker(s), this loader has {num_workers}; use the same num_workers")
        return resume.delivered[worker]

    # -- reading -------------------------------------------------------------------

    def lanes(self, epoch: int, worker: int, num_workers: int) -> list[list[Span]]:
        return worker_lanes(self._clips, seed=self.seed, epoch=epoch, rank=self.rank,
                            world_size=self.world_size, worker=worker, num_workers=num_workers,
                            interleave=self.interleave, shuffle=self.shuffle,
                            drop_remainder=self.drop_remainder,
                            min_lane=max(1, self.shuffle_buffer // 8))

    def stream(self, worker: int, num_workers: int) -> Iterator[tuple[Record, bool]]:
        """This worker's clips for the current epoch, as ``(record, is_substitute)``;
        read them with :func:`read_clip`."""
        epoch = self.epoch
        skip = self._take_resume(epoch, worker, num_workers)
        lanes = self.lanes(epoch, worker, num_workers)
        lengths = [sum(s.stop - s.start for s in lane) for lane in lanes]
        seed = f"shardkin/{self.seed}/{epoch}/{self.rank}/{worker}/{num_workers}"
        done: set[tuple[int, int]] = set()
        if skip:  # replay the draws over positions only
            positions = [zip(itertools.repeat(lane), range(n)) for lane, n in enumerate(lengths)]
            done = set(itertools.islice(
                mix(positions, lengths, random.Random(seed), self.shuffle_buffer), skip))
        readers = [self._read_lane(lane, spans, done) for lane, spans in enumerate(lanes)]
        items = mix(readers, lengths, random.Random(seed), self.shuffle_buffer)
        for _ in range(skip):
            if next(items) is not _DELIVERED:
                raise RuntimeError("shardkin: resume replay diverged")  # a bug, not bad data
        yield from _substitute(items)

    def _read_lane(self, lane: int, lane_spans: list[Span],
                   done: set[tuple[int, int]]) -> Iterator[Any]:
        """Records (or ``_DELIVERED``/``_BAD``) of one lane's positions, in order."""
        k = 0
        for span in lane_spans:
            n = span.stop - span.start
            base = k - span.start
            if done and all((lane, base + i) in done for i in range(span.start, span.stop)):
                yield from itertools.repeat(_DELIVERED, n)
                k += n
                continue
            path = self._paths[span.shard]
            got, streamed = 0, None
            try:
                shard, streamed, first = self._open(span)
                reader = TarReader(shard.file if streamed is None else streamed.stream, path)
                if reader.size is not None and reader.size != self._bytes[span.shard]:
                    raise reader.error(f"has {reader.size} bytes, the manifest says "
                                       f"{self._bytes[span.shard]} (truncated or replaced)", 0)
                for _, key, payloads in iter_samples(
                        reader, span.start - first, span.stop - first,
                        lambda i: (lane, base + first + i) not in done, self._wanted,
                        defer=(VIDEO, AUDIO) if streamed is None else ()):
                    got += 1
                    item = _DELIVERED if payloads is None else self._record(
                        reader, shard, key, payloads)
                    if got == n and streamed is not None:  # mix() draws no further
                        streamed.finish()
                    yield item
            except (ShardError, OSError) as e:
                error = str(e) if path in str(e) else f"{path}: {type(e).__name__}: {e}"
                if self.on_error == "raise":
                    raise ShardError(f"{error}: {_HINT}") from e
                warnings.warn(f"shardkin: skipping {n - got} clip(s): {error}", stacklevel=2)
                yield from itertools.repeat(_BAD, n - got)
            finally:
                if streamed is not None:
                    streamed.close()
            k += n

    def _open(self, span: Span) -> tuple[_OpenShard | None, "_Streamed | None", int]:
        """How to read ``span``: a local (or cached) shard file, or a stream of its byte
        range; and the number of the sample the stream starts at."""
        s = span.shard
        if not self._folder.remote:
            return _OpenShard(self._paths[s]), None, 0
        cached = self.cache and self.cache.open(self._sha256[s], self._bytes[s])
        if cached:
            return _OpenShard(self._paths[s], cached), None, 0
        # With a cache, the first process to claim the shard streams all of it, walking to
        # the span and fetching the rest once the span is read, and caches it.
        writer = self.cache.writer(self._sha256[s], self._bytes[s]) if (
            self.cache and self._sha256[s]) else None
        whole = writer is not None or (span.start == 0 and span.stop == self._clips[s])
        starts = None if whole else self._sample_starts(s)
        first = 0 if starts is None else span.start
        start = 0 if starts is None else int(starts[span.start])
        end = (self._bytes[s] if starts is None or span.stop == self._clips[s]
               else int(starts[span.stop]) + BLOCK)  # the next header ends the last sample
        stream = RangeStream(self._folder, self._names[s], start, end, sink=writer)
        return None, _Streamed(stream, writer), first

    def _sample_starts(self, shard: int) -> np.ndarray | None:
        """Byte offsets of the samples of ``shard``, from ``index.npy`` (fetched once a
        process); None for builds without one (then streams walk from the start)."""
        if self._starts is None:
            try:
                index = decode_npy(self._folder.read_bytes(INDEX))
            except FileNotFoundError:
                self._starts = {}
                return None
            index = index[np.lexsort((index[:, 1], index[:, 0]))]
            bounds = np.searchsorted(index[:, 0], np.arange(len(self._all_names) + 1))
            mine = {n: i for i, n in enumerate(self._names)}
            self._starts = {mine[n]: index[bounds[k] : bounds[k + 1], 1]
                            for k, n in enumerate(self._all_names) if n in mine}
        return self._starts.get(shard)

    def _record(self, reader: TarReader, shard: _OpenShard, key: str,
                payloads: dict[str, Any]) -> Any:
        try:
            member = video_member(payloads)
            video = (self._array(shard, payloads[VIDEO]) if member == VIDEO
                     else Encoded(member, payloads[member], f"{reader.source}: sample {key}"))
            audio = self._array(shard, payloads[AUDIO])
            if isinstance(video, Array) and (video.dtype != torch.uint8 or len(video.shape) != 4
                                             or video.shape[3] != 3):
                raise ValueError(f"video is {video.dtype} {video.shape}, not uint8 [T,H,W,3]")
            if audio.dtype != torch.float32 or len(audio.shape) != 2:
                raise ValueError(f"audio is {audio.dtype} {audio.shape}, not float32 [C,S]")
            meta = decode_meta(payloads[META]) if META in payloads else None
            return Record(video, audio, decode_label(payloads[LABEL]), key, meta)
        except ValueError as e:  # also bad UTF-8 and JSON
            error = reader.error(f"corrupt sample {key}: {e}")
        if self.on_error == "raise":
            raise ShardError(f"{error}: {_HINT}")
        warnings.warn(f"shardkin: skipping a clip: {error}", stacklevel=2)
        return _BAD

    @staticmethod
    def _array(shard: _OpenShard | None, part: Deferred | bytearray) -> Array:
        if isinstance(part, bytearray):  # streamed: the member's bytes
            offset, dtype, shape = npy_layout(part, len(part))
            return Array(part, offset, dtype, shape)
        offset, dtype, shape = npy_layout(part.head, part.size)
        return Array(shard, part.offset + offset, dtype, shape)

    def sample(self, clip: Clip) -> Any:
        """The user-facing item for ``clip`` (tuple or dict), transform applied."""
        return make_item(clip.video, clip.audio, clip.label, clip.key,
                         clip.meta["path"] if clip.meta else None, self.output_format,
                         self.transform, self.return_dict)

    def __iter__(self) -> Iterator[Any]:
        worker, num_workers = worker_id()
        epoch = self.epoch
        pending = self._resume
        delivered = [0] * num_workers
        if pending is not None and pending.epoch == epoch and pending.num_workers == num_workers:
            delivered = list(pending.delivered)
        for record, _ in self.stream(worker, num_workers):
            clip = read_clip(record)
            delivered[worker] += 1
            self._progress = _Resume(epoch, num_workers, tuple(delivered))
            yield self.sample(clip)


class _Streamed:
    """A shard's byte range streaming from object storage; a whole shard is cached
    as it streams when the dataset has a cache."""

    def __init__(self, stream: RangeStream, writer: CacheWriter | None) -> None:
        self.stream, self.writer = stream, writer

    def finish(self) -> None:
        """The reader is done: complete and publish the cached copy."""
        if self.writer is not None:
            self.stream.drain()
            self.writer.commit()
            self.writer = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        self.stream.close()


def _locate(source: Any, split: str | None, storage_options: dict[str, Any] | None,
            attempts: int) -> tuple[Folder, str, list[str] | None]:
    """(folder, manifest name, names of the shards chosen or None for all) of a source."""
    if isinstance(source, (list, tuple)) or os.fspath(source).endswith(".tar"):
        from braceexpand import braceexpand

        urls = ([os.fspath(u) for u in source] if isinstance(source, (list, tuple))
                else list(braceexpand(os.fspath(source))))
        heads = {u.rstrip("/").rpartition("/")[0] if is_url(u) else os.path.dirname(u) or "."
                 for u in urls}
        if len(heads) != 1:
            raise ValueError(f"shards must all be in one split folder (with its manifest); "
                             f"these are in {', '.join(sorted(heads))}")
        folder = Folder(heads.pop(), storage_options, attempts)
        if not folder.exists(MANIFEST):
            raise FileNotFoundError(f"no shardkin manifest at {folder.path(MANIFEST)}: shards "
                                    "are read with the manifest of their split folder")
        return folder, MANIFEST, [u.rstrip("/").rpartition("/")[2] for u in urls]
    folder, name = locate_manifest(source, split, storage_options, attempts)
    return folder, name, None


def _choose(shards: list[dict[str, Any]], chosen: list[str] | None,
            where: str) -> list[dict[str, Any]]:
    """The manifest entries of the shards ``chosen`` (all when None), in manifest order."""
    if chosen is None:
        return shards
    unknown = sorted(set(chosen) - {s["name"] for s in shards})
    if unknown:
        raise ValueError(f"{where} lists no shard {', '.join(unknown)}")
    keep = set(chosen)
    return [s for s in shards if s["name"] in keep]


def _substitute(items: Iterator[Any]) -> Iterator[tuple[Record, bool]]:
    """Replace each ``_BAD`` with the nearest earlier (else later) readable clip."""
    last: Record | None = None
    pending = 0
    for item in items:
        if item is _BAD:
            if last is None:
                pending += 1
            else:
                yield last, True
            continue
        last = item
        yield from itertools.repeat((item, True), pending)
        pending = 0
        yield item, False
    if pending:
        raise ShardError(f"none of this worker's {pending} clip(s) could be read, so none can "
                         "stand in for them; see the warnings above and rebuild the shards")
