"""Batching clips: :func:`collate` for items, :func:`collate_refs` to read clips straight
into their batch (one read a clip, no stacking copy without a transform)."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from numbers import Number
from typing import Any, Literal

import torch

from ..format.sample import parse_key
from ..store.split import LocalShard
from .device import JpegBatch, join, pack_refs
from .loading import load_clip, read_audio, read_video
from .memory import Alloc, empty, storages
from .records import Array, ClipRef, Pieces, finish_checks

AudioBatching = Literal["pad", "list"]  # zero-padded into one tensor, or a list of clips'


def _same_shapes(shapes: set[tuple[int, ...]]) -> None:
    if len(shapes) > 1:
        raise ValueError(f"cannot batch clips of different shapes {sorted(shapes)}: build the "
                         "shards at one size (width and height) or crop in a transform")


def _memory_order(t: torch.Tensor) -> tuple[int, ...]:
    """The dimensions of ``t`` from the largest stride to the smallest."""
    return tuple(sorted(range(t.dim()), key=lambda d: -t.stride(d)))


def stack(tensors: Sequence[torch.Tensor], alloc: Alloc = empty) -> torch.Tensor:
    """``torch.stack`` into memory from ``alloc`` (by default shared, in a worker).

    Views laid out alike (e.g. crops of ``[T, C, H, W]`` views of ``[T, H, W, C]``
    clips) are stacked in their memory order, a copy of contiguous runs instead of
    a gather, and the batch is returned as the same view of that memory.
    """
    _same_shapes({tuple(t.shape) for t in tensors})
    order = _memory_order(tensors[0])
    if any(_memory_order(t) != order for t in tensors):
        order = tuple(range(tensors[0].dim()))
    inner = [t.permute(order) for t in tensors]
    out = alloc((len(inner), *inner[0].shape), inner[0].dtype)
    torch.stack(inner, out=out)
    back = sorted(range(len(order)), key=lambda d: order[d])
    return out.permute(0, *(d + 1 for d in back))


def pad_audio(audios: Sequence[torch.Tensor], alloc: Alloc = empty
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, C, S]`` (``[B, S]`` for 1-D audio) zero-padded to the most channels and
    samples, and each clip's ``S``."""
    return _padded([tuple(a.shape) for a in audios], alloc, lambda i, box: box.copy_(audios[i]))


def read_sounds(refs: Sequence[ClipRef], audio: AudioBatching, alloc: Alloc
                ) -> tuple[Any, torch.Tensor | None]:
    """The clips' audio batched as :func:`pad_audio` batches it (or listed), each clip
    read into its place in the batch."""
    if audio == "list":
        return [read_audio(r.audio) for r in refs], None
    return _padded([tuple(r.audio.shape) for r in refs], alloc,
                   lambda i, box: read_audio(refs[i].audio, box))


def _padded(shapes: Sequence[tuple[int, ...]], alloc: Alloc,
            fill: Callable[[int, torch.Tensor], Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 ``[B, *the most of each dimension]``, clip ``i``'s leading box written by
    ``fill(i, box)`` and only the rest (its padding) zeroed: the batch is written once,
    not zeroed first; and each clip's last dimension."""
    most = [max(s[d] for s in shapes) for d in range(len(shapes[0]))]
    out = alloc((len(shapes), *most), torch.float32)
    lengths = _tensor([s[-1] for s in shapes], alloc)
    if not out.numel():  # no sound in the batch: nothing to read or zero
        return out, lengths
    for i, (box, shape) in enumerate(zip(out, shapes)):
        for d, n in enumerate(shape):
            if n < most[d]:  # narrow: cheaper than indexing with slices
                box.narrow(d, n, most[d] - n).zero_()
                box = box.narrow(d, 0, n)
        fill(i, box)
    return out, lengths


def _tensor(values: Sequence[Any], alloc: Alloc) -> torch.Tensor:
    """``torch.tensor(values)`` in memory from ``alloc``."""
    t = torch.tensor(values)
    return alloc(t.shape, t.dtype).copy_(t)


def _audio(audios: Sequence[torch.Tensor], audio: AudioBatching,
           alloc: Alloc) -> tuple[Any, torch.Tensor | None]:
    return (list(audios), None) if audio == "list" else pad_audio(audios, alloc)


def collate(samples: Sequence[Any], audio: AudioBatching = "pad", audio_lengths: bool = False,
            alloc: Alloc = empty, video_alloc: Alloc | None = None) -> Any:
    """Batch :class:`ShardDataset` items (tuples or dicts), e.g. as a DataLoader ``collate_fn``.

    Videos (and any other tensors) are stacked; labels and numbers become int64 or
    float tensors; strings stay lists; tuples may have fields after the label (a
    subclass's, such as torchvision's recipe's video index), batched the same way. Audio
    of unequal length: ``audio="pad"`` zero-pads to ``[B, C_max, S_max]`` (dicts' 1-D
    audio to ``[B, S_max]``; dicts also get ``audio_lengths``, tuples get it appended as
    their last element when ``audio_lengths=True``); ``audio="list"`` keeps a list of the
    clips' tensors. ``video_alloc``: memory for tuples' stacked videos, if not ``alloc``.
    Videos left as JPEGs (``decode_device``) are joined into one
    :class:`.device.JpegBatch`.
    """
    if isinstance(samples[0], dict):
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key == "audio" and not isinstance(values[0], JpegBatch):
                batch["audio"], lengths = _audio(values, audio, alloc)
                if lengths is not None:
                    batch["audio_lengths"] = lengths
            else:
                batch[key] = _field(values, alloc)
        return batch
    videos, audios, labels, *more = zip(*samples)  # more: a subclass's own (a video id)
    video = (join(videos, alloc) if isinstance(videos[0], JpegBatch)
             else stack(videos, video_alloc or alloc))
    sound, lengths = _audio(audios, audio, alloc)
    out = (video, sound, _tensor(labels, alloc), *(_field(list(v), alloc) for v in more))
    return out + (lengths,) if audio_lengths and lengths is not None else out


def _field(values: list[Any], alloc: Alloc) -> Any:
    """The items' values of one field, batched: tensors stacked, numbers a tensor, JPEGs
    joined, anything else a list."""
    if isinstance(values[0], JpegBatch):
        return join(values, alloc)
    if isinstance(values[0], torch.Tensor):
        return stack(values, alloc)
    if isinstance(values[0], Number) and not isinstance(values[0], bool):
        return _tensor(values, alloc)
    return values


class ClipBuffers:
    """Per-clip video tensors reused from batch to batch (for transforms)."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._lent: list[torch.Tensor] = []

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        free = self._free.setdefault(shape, [])
        tensor = free.pop() if free else torch.empty(shape, dtype=torch.uint8)
        self._lent.append(tensor)
        return tensor

    def give_back(self) -> None:
        """All tensors taken are free again: their batch has been collated (copied)."""
        for tensor in self._lent:
            self._free[tuple(tensor.shape)].append(tensor)
        self._lent = []


def _reused(buffers: ClipBuffers | None) -> Alloc:
    """Memory for a batch that only the worker reads: ``buffers``' (reused) when given."""
    return empty if buffers is None else lambda shape, dtype: buffers.take(tuple(shape))


def _direct(video: Any) -> bool:
    """Whether a clip's stored frames can be read straight into place (not compressed)."""
    return isinstance(video, Array) or (
        isinstance(video, Pieces) and all(isinstance(p.array, Array) for p in video.parts))


def _scratch(ref: ClipRef, buffers: ClipBuffers | None) -> torch.Tensor | None:
    """A reused tensor to read a clip's stored video into, when it lies in a local file
    (bytes already in memory are converted in place)."""
    video = ref.video
    arrays = [p.array for p in video.parts] if isinstance(video, Pieces) else [video]
    local = _direct(video) and any(isinstance(a.source, LocalShard) for a in arrays)
    return buffers.take(video.shape) if buffers is not None and local else None


def read_videos(refs: Sequence[ClipRef], dtype: torch.dtype, alloc: Alloc = empty,
                buffers: ClipBuffers | None = None) -> torch.Tensor:
    """The clips' videos as one ``[B, T, H, W, C]`` batch of ``dtype``: uint8 read straight
    into place; float32 converted from the stored uint8 into place (one pass), stored
    clips read first into ``buffers``; compressed clips decoded, then copied."""
    if all(_direct(r.video) for r in refs):
        frames = None
        shapes = {r.video.shape for r in refs}
    else:
        frames = [read_video(r.video) for r in refs]
        shapes = {tuple(f.shape) for f in frames}
    _same_shapes(shapes)
    out = alloc((len(refs), *next(iter(shapes))), dtype)
    for i, r in enumerate(refs):
        if frames is not None:
            out[i].copy_(frames[i])
        elif dtype == torch.uint8:
            read_video(r.video, out[i])
        else:
            out[i].copy_(read_video(r.video, _scratch(r, buffers)))
    return out


def collate_refs(ds: Any, refs: Sequence[ClipRef], audio: AudioBatching = "pad",
                 audio_lengths: bool = False, alloc: Alloc = empty,
                 buffers: ClipBuffers | None = None, batch_transform: Any = None,
                 epoch: int = 0, encoded: bool = False, samples: Sequence[Any] | None = None
                 ) -> Any:
    """Read and batch clips as :func:`collate` batches the items of ``ds`` (a
    ``ShardDataset``: its transform, output format, dict choice and video dtype apply).

    Without a transform each video is read straight into its place in the batch
    (stored ``[T, H, W, C]`` layout; the batch is then a permuted view), or for a
    float32 batch converted into it from the stored uint8 (:func:`read_videos`). With
    one, videos are read into ``buffers`` (reused once the batch is made: transforms
    must not keep references to their input), transformed, then stacked. With a
    ``batch_transform`` (tuples of uint8 TCHW videos, see ``make_loader``) the videos are
    read into ``buffers`` as one uint8 batch and the transform writes the batch's video
    (``samples``: what it is told the clips are; their keys by default).
    ``encoded``: jpeg clips are not decoded but packed into a :class:`.device.JpegBatch`.
    Each clip is checked once read (:func:`~.records.finish_checks`: ``Damaged`` if it
    fails).
    """
    if ds.transform is not None:
        items = [ds.sample(load_clip(r, _scratch(r, buffers))) for r in refs]
        return collate(items, audio, audio_lengths, alloc)
    if batch_transform is not None:
        read = read_videos(refs, torch.uint8, _reused(buffers), buffers)
        named = [r.key for r in refs] if samples is None else list(samples)
        video = batch_transform(read.permute(0, 1, 4, 2, 3), named, epoch, alloc)
        if read.untyped_storage().data_ptr() in {s.data_ptr() for s in storages(video)}:
            raise ValueError("batch_transform must return new tensors (from alloc), not its "
                             "input: the input's memory is reused for the next batch")
        return _tuple_batch(video, refs, audio, audio_lengths, alloc)
    video = pack_refs(refs, ds, alloc) if encoded else None
    if video is None:
        video = read_videos(refs, ds.video_dtype, alloc, buffers)  # [B, T, H, W, C]
    if not ds.return_dict:
        video = _permute(video, 0, 1, 4, 2, 3) if ds.output_format == "TCHW" else video
        return _tuple_batch(video, refs, audio, audio_lengths, alloc)
    sounds = [read_audio(r.audio) for r in refs]
    for r in refs:
        finish_checks(r)
    indices = [parse_key(r.key) for r in refs]
    batch = {"video": _permute(video, 0, 4, 1, 2, 3),
             "video_name": [os.path.basename(r.meta["path"]) for r in refs],
             "video_index": _tensor([v for v, _ in indices], alloc),
             "clip_index": _tensor([k for _, k in indices], alloc),
             "aug_index": _tensor([0] * len(refs), alloc),
             "label": _tensor([r.label for r in refs], alloc)}
    batch["audio"], lengths = _audio([s.mean(0) for s in sounds], audio, alloc)
    if lengths is not None:
        batch["audio_lengths"] = lengths
    return batch


def _tuple_batch(video: Any, refs: Sequence[ClipRef], audio: AudioBatching,
                 audio_lengths: bool, alloc: Alloc) -> tuple:
    """``(video, audio, label[, audio_lengths])`` of clips whose video is batched: their
    sound read into the batch, then each clip's check completed."""
    sound, lengths = read_sounds(refs, audio, alloc)
    for r in refs:
        finish_checks(r)
    out = (video, sound, _tensor([r.label for r in refs], alloc))
    return out + (lengths,) if audio_lengths and lengths is not None else out


def _permute(video: Any, *dims: int) -> Any:
    """The batch's video with its dimensions in another order; JPEGs say theirs."""
    return video.permute(*dims) if isinstance(video, torch.Tensor) else video
