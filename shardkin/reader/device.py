"""JPEG clips decoded a batch at a time on a device (``decode_device``), not in the workers.

With ``make_loader(ds, ..., decode_device="cuda")`` the DataLoader workers read a jpeg
build's clips as usual (same epochs, picks, windows, checksums, resume) but never decode
them: :func:`pack_refs` copies the clips' JPEGs, cut to the frames each clip needs, into
one byte buffer a batch with their offsets (:class:`JpegBatch`, pinned by the
DataLoader when ``pin_memory``), and the main process decodes the whole batch at once
(:func:`decode_batch`): on CUDA with nvJPEG through ``torchvision.io.decode_jpeg`` (a
list of tensors: one batched call; torchvision is imported only there), on the CPU with
libjpeg-turbo, the workers' own decoder. Audio and labels are batched as usual.

Datasets made with ``decode_device`` hand out such a one-clip batch as an item's video,
which :func:`shardkin.reader.collate` joins; a loop of one's own then calls
:func:`decode_batch`. Clips of raw or zstd builds are read (decoded) in the workers as
usual and only moved to the device.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ..format import jpeg
from ..format.codecs import MEMBER
from ..format.sample import REST
from ..format.tar import ShardError
from .loading import decoded, load_clip, read_audio
from .memory import Alloc, empty
from .records import (
    HINT,
    ClipRef,
    Encoded,
    LoadedClip,
    Pieces,
    finish_checks,
)

_JPEG = MEMBER["jpeg"]
_LAYOUTS = {"TCHW": (0, 1, 2, 3, 4), "THWC": (0, 1, 3, 4, 2), "CTHW": (0, 2, 1, 3, 4)}
_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}


class JpegBatch(NamedTuple):
    """Clips' JPEGs, not decoded: the video of a batch (or, one clip, of an item) made
    with ``decode_device``. :func:`decode_batch` turns it into the video a batch has
    without it: ``[B, T, C, H, W]`` uint8 for tuples (``layout`` says which)."""

    data: torch.Tensor  # uint8 [N]: the JPEGs one after another
    offsets: torch.Tensor  # int64 [n + 1]: where each JPEG starts, then N
    runs: torch.Tensor  # int64 [n, 4]: each JPEG's clip, first frame, frames, rows a frame
    size: torch.Tensor  # int64 [4]: clips, frames, height, width
    layout: str  # a decoded clip's dimensions: "TCHW", "THWC" or "CTHW" (dicts)
    dtype: str  # "uint8" or "float32" (values 0..255)
    where: list[str]  # each clip's shard and sample, for errors


def check_decode_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device``; ValueError for one JPEG batches cannot be decoded on."""
    if device is None:
        return None
    device = torch.device(device)
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"decode_device must be a CUDA device or 'cpu', got {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"decode_device={str(device)!r}, but torch sees no CUDA device: pass "
                         "decode_device=None to decode in the DataLoader workers (or 'cpu' "
                         "to decode whole batches in the main process, to check a pipeline)")
    return device


def loader_decode_device(dataset: Any, device: str | torch.device | None,
                         transform: Callable[[torch.Tensor], Any] | None,
                         batch_transform: Any = None) -> torch.device | None:
    """A loader's decode device: its own, else the dataset's; they must agree, and go with
    ``device_transform`` and without ``batch_transform`` (both loaders check here)."""
    mine, theirs = check_decode_device(device), getattr(dataset, "decode_device", None)
    if mine is not None and theirs is not None and mine != theirs:
        raise ValueError(f"decode_device={str(mine)!r}, but the dataset decodes on {theirs}")
    chosen = mine or theirs
    check_no_transform(getattr(dataset, "transform", None), chosen)
    if transform is not None and chosen is None:
        raise ValueError("device_transform is applied after decode_device's decoding: give "
                         "decode_device too (or apply it to the batches yourself)")
    if batch_transform is not None and chosen is not None:
        raise ValueError("batch_transform crops decoded clips in the workers, and with "
                         "decode_device they hand on undecoded JPEGs: give the preset as "
                         "device_transform instead (the whole preset, on the device)")
    return chosen


def check_no_transform(transform: Any, device: torch.device | None) -> None:
    if device is not None and transform is not None:
        raise ValueError("a transform runs per clip on decoded frames, and with decode_device "
                         "the frames are decoded after batching: transform the decoded batch "
                         "instead (make_loader's device_transform)")


def _runs(video: Any) -> tuple[tuple[int, int, int], list[jpeg.Run]] | None:
    """A jpeg clip's (T, H, W) and JPEGs holding its frames; None for other codecs."""
    pieces = video.parts if isinstance(video, Pieces) else [(video, 0, None)]
    if not all(isinstance(p[0], Encoded) and p[0].member.removeprefix(f"{REST}.") == _JPEG
               for p in pieces):
        return None
    runs, frames, shape = [], 0, None
    for encoded, start, stop in pieces:
        (t, h, w), part = decoded(encoded, lambda _, data, a=start, b=stop: jpeg.runs(data, a, b))
        runs += [r._replace(first=r.first + frames) for r in part]
        frames += (t if stop is None else stop) - start
        shape = shape or (h, w)
    return (frames, *shape), runs


def pack_refs(refs: Sequence[ClipRef], ds: Any, alloc: Alloc = empty) -> JpegBatch | None:
    """The clips' JPEGs in one buffer from ``alloc`` (cut to their frames), laid out and
    typed as ``ds`` hands out its videos; None unless every clip is jpeg."""
    clips = [_runs(r.video) for r in refs]
    if any(c is None for c in clips):
        return None
    layout = "CTHW" if ds.return_dict else ds.output_format
    return _pack(clips, [_where(r.video) for r in refs], layout,
                 str(ds.video_dtype).removeprefix("torch."), alloc)


def _where(video: Any) -> str:
    encoded = video.parts[0].array if isinstance(video, Pieces) else video
    return f"{encoded.where} at byte {encoded.offset}"


def _pack(clips: Sequence[Any], where: list[str], layout: str, dtype: str,
          alloc: Alloc) -> JpegBatch:
    shapes = {shape for shape, _ in clips}
    if len(shapes) > 1:
        raise ValueError(f"cannot batch clips of different shapes {sorted(shapes)}: build the "
                         "shards at one size (width and height)")
    runs = [(i, r.first, r.frames, r.rows) for i, (_, rs) in enumerate(clips) for r in rs]
    images = [np.frombuffer(r.data, np.uint8) for _, rs in clips for r in rs]
    ends = np.cumsum([0] + [len(a) for a in images])
    data = alloc((int(ends[-1]),), torch.uint8)
    buffer = data.numpy()
    for a, start in zip(images, ends.tolist()):
        buffer[start : start + len(a)] = a
    size = [len(clips), *next(iter(shapes))]
    tensors = [_tensor(x, alloc) for x in (ends, np.array(runs, np.int64).reshape(-1, 4), size)]
    return JpegBatch(data, *tensors, layout=layout, dtype=dtype, where=where)


def _tensor(values: Any, alloc: Alloc) -> torch.Tensor:
    array = np.asarray(values, np.int64)
    return alloc(array.shape, torch.int64).copy_(torch.from_numpy(array))


def join(batches: Sequence[JpegBatch], alloc: Alloc = empty) -> JpegBatch:
    """One batch of the clips of ``batches`` (items' one-clip batches), in order."""
    clips, where = [], []
    for b in batches:
        ends, runs = b.offsets.tolist(), b.runs.tolist()
        per_clip: list[list[jpeg.Run]] = [[] for _ in range(int(b.size[0]))]
        for (clip, first, frames, rows), lo, hi in zip(runs, ends, ends[1:]):
            per_clip[clip].append(jpeg.Run(b.data[lo:hi].numpy(), first, frames, rows))
        clips += [(tuple(b.size[1:].tolist()), rs) for rs in per_clip]
        where += b.where
    return _pack(clips, where, batches[0].layout, batches[0].dtype, alloc)


def read_clip(ref: ClipRef, ds: Any) -> LoadedClip:
    """The clip of ``ref`` as ``ds`` hands it out: read by :func:`.loading.load_clip`, or
    with ``ds.decode_device`` a jpeg clip's video left as its JPEGs (a one-clip batch)."""
    video = pack_refs([ref], ds) if getattr(ds, "decode_device", None) is not None else None
    if video is None:
        return load_clip(ref)
    clip = LoadedClip(video, read_audio(ref.audio), ref.label, ref.key, ref.meta)
    finish_checks(ref)  # the JPEGs' bytes as the build wrote them (Damaged if not)
    return clip


def decode_batch(batch: Any, device: str | torch.device,
                 transform: Callable[[torch.Tensor], Any] | None = None) -> Any:
    """``batch`` (a tuple, a dict or a :class:`JpegBatch`) with its video on ``device``:
    JPEGs decoded there (all at once on CUDA), else the tensor moved (raw and zstd builds,
    ``non_blocking``). Decoded videos are what the batch's dataset hands out without
    ``decode_device``; ``transform`` is then applied to the video (e.g. a batched preset
    on the GPU). Other members stay as they are (on the CPU)."""
    device = check_decode_device(device)
    if isinstance(batch, JpegBatch) or isinstance(batch, torch.Tensor):
        return _video(batch, device, transform)
    if isinstance(batch, dict):
        return {**batch, "video": _video(batch["video"], device, transform)}
    rest = [_video(batch[0], device, transform), *batch[1:]]
    return rest if isinstance(batch, list) else tuple(rest)


def _video(video: Any, device: torch.device,
           transform: Callable[[torch.Tensor], Any] | None) -> Any:
    if isinstance(video, JpegBatch):
        out = decode_jpegs(video, device).permute(_LAYOUTS[video.layout])
        out = out.to(_DTYPES[video.dtype])
    else:
        out = video.to(device, non_blocking=True)
    return out if transform is None else transform(out)


def decode_jpegs(batch: JpegBatch, device: torch.device) -> torch.Tensor:
    """uint8 ``[B, T, C, H, W]`` on ``device`` (contiguous on CUDA; on the CPU a view of
    ``[B, T, H, W, C]``, as the workers' batches are)."""
    b, t, h, w = batch.size.tolist()
    ends, runs = batch.offsets.tolist(), batch.runs.tolist()
    images = [batch.data[lo:hi] for lo, hi in zip(ends, ends[1:])]
    if device.type == "cuda":
        return _on_cuda(images, runs, (b, t, h, w), device, batch.where)
    out = torch.empty((b, t, h, w, 3), dtype=torch.uint8)
    for image, (clip, first, frames, rows) in zip(images, runs):
        try:
            jpeg.decode_run(jpeg.Run(image.numpy(), first, frames, rows), h, w,
                            out[clip, first : first + frames].numpy())
        except ValueError as e:
            raise ShardError(f"{batch.where[clip]}: its JPEG does not decode ({e}): {HINT}"
                             ) from None
    return out.permute(0, 1, 4, 2, 3)


def _on_cuda(images: list[torch.Tensor], runs: list[list[int]], size: tuple[int, ...],
             device: torch.device, where: list[str]) -> torch.Tensor:
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        raise ImportError("decode_device='cuda' decodes with nvJPEG through torchvision: "
                          "pip install torchvision (the build matching your torch)") from None
    try:
        decoded = decode_jpeg(images, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:  # name the clip: decode them one by one
        for image, (clip, *_) in zip(images, runs):
            try:
                decode_jpeg(image, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                raise ShardError(f"{where[clip]}: its JPEG does not decode on {device} ({e}): "
                                 f"{HINT}") from None
        raise
    b, t, h, w = size
    if runs == [[clip, 0, t, h] for clip in range(b)]:  # a JPEG a clip, no padding: 2 kernels
        return torch.stack(decoded).view(b, 3, t, h, w).transpose(1, 2).contiguous()
    out = torch.empty((b, t, 3, h, w), dtype=torch.uint8, device=device)
    for image, (clip, first, frames, rows) in zip(decoded, runs):
        out[clip, first : first + frames] = image.view(3, frames, rows, w)[:, :, :h].transpose(0, 1)
    return out
