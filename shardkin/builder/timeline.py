"""A video's frame timeline: how many frames it has, at what rate, and which picture each shows.

torchvision 0.28 (``VideoClips`` through TorchCodec) counts a video's frames by a scan of its
packets, one frame *slot* per packet with a timestamp, and takes its fps from the same scan:
``slots / (end - begin)``, where ``begin`` is the smallest packet timestamp and ``end`` the
largest timestamp plus its duration, each converted to seconds as ``pts * num / den`` in
doubles (TorchCodec's ``average_fps`` in its default "exact" mode). That is the
``"torchcodec"`` timeline, the default. Its clips are torchvision 0.28's.

A front-to-back decode can give fewer pictures than slots: MPEG-4 AVIs carry 1-byte packets
that are "not coded" frames (show the previous picture again), and a damaged packet gives no
picture. A slot without a picture of its own *holds* the previous picture, as a player shows
it; :func:`place` finds those slots. Every other slot gets the next decoded picture, so the
pixels are those of a sequential decode.

The ``"pyav"`` timeline is torchvision's former PyAV backend (up to torchvision 0.21, with
which its model zoo was trained): the decoded pictures are the frames, the stream's average
rate is the fps. shardkin builds made before the timeline option followed it.

The scan reads what the container stores, so that the fps is the same whichever FFmpeg
reads it (PyAV bundles FFmpeg 8; torchvision's TorchCodec uses the system's, often 5 to 7):
- AVI stores no presentation timestamps: FFmpeg 5 leaves them unset (TorchCodec then uses the
  decoding timestamp), FFmpeg 8 infers ``dts + 1`` for streams with B-frames. The scan takes
  the decoding timestamp of AVI packets.
- MP4/MOV store each sample's duration (``stts``). With an edit list, FFmpeg 8 gives a short
  last one (e.g. 1 tick) as the usual one; FFmpeg 5 keeps it. Where no frame is reordered
  (pts equal to dts throughout), the stream's duration is the sum of the stored durations, so
  the last sample's stored one is what the others leave of it (measured: FFmpeg 5.1 against
  PyAV's FFmpeg 8 on the real and made test videos; they agree everywhere else).
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from ..format.options import TIMELINES

TORCHCODEC = TIMELINES[0]

# How many pictures past a slot are decoded before the slot is called empty: frames carry
# the timestamp of the packet they came from, and a decoder hands them out up to its reorder
# depth (at most 16 for H.264) away from it.
LOOKAHEAD = 16


@dataclass(frozen=True)
class Scan:
    """What a packet scan of the video stream found (the ``"torchcodec"`` timeline)."""

    slots: list[int | None]  # each slot's packet pts (None: the packet has none), in order
    fps: float | None  # slots / (end - begin) seconds; None when that is not defined
    begin: Fraction  # the first slot's time, seconds
    error: str | None = None  # the scan stopped early (a damaged file): the build then
    # takes the "pyav" timeline for the video, so that no decoded picture is dropped


def _slot_time(packet: av.Packet, by_dts: bool) -> int | None:
    if by_dts and packet.dts is not None:
        return packet.dts
    return packet.pts if packet.pts is not None else packet.dts


def scan(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Scan:
    """Scan the packets of ``stream`` (no decoding) as TorchCodec does; reads ``container``
    to its end (open a separate one to decode)."""
    by_dts = container.format.name == "avi"
    times: list[tuple[int, int, int | None]] = []  # (slot time, packet order, pts)
    ends: list[int] = []  # each packet's slot time + duration
    dts: list[int] = []
    reordered, error = False, None
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # PyAV's end-of-stream marker, not a packet of the file
            if packet.is_discard:
                continue
            t = _slot_time(packet, by_dts)
            if t is None:
                continue
            times.append((t, len(times), packet.pts))
            ends.append(t + packet.duration)
            dts.append(packet.dts if packet.dts is not None else t)
            reordered |= packet.pts != packet.dts
    except (av.FFmpegError, OSError) as e:
        error = f"scan stopped after {len(times)} packets: {e}"
    if (error is None and not reordered and container.format.name.startswith("mov,")
            and stream.duration):
        last = max(range(len(dts)), key=dts.__getitem__, default=None)
        if last is not None:  # the last sample's stored duration (see the module's notes)
            stored = stream.duration - (dts[last] - min(dts))
            if 0 <= stored < ends[last] - times[last][0]:  # shorter: FFmpeg 8 replaced it
                ends[last] = times[last][0] + stored
    times.sort()
    lo, hi = (times[0][0], max(ends)) if times else (None, None)
    tb = stream.time_base
    fps = None
    if times:
        # TorchCodec's ptsToSeconds: double(pts) * num / den, each end on its own
        duration = float(hi) * tb.numerator / tb.denominator - (
            float(lo) * tb.numerator / tb.denominator)
        fps = len(times) / duration if duration > 0 else None
    begin = Fraction(lo) * tb if lo is not None else Fraction(0)
    return Scan([pts for _, _, pts in times], fps, begin, error)


@dataclass
class Placed:
    """A slot's picture: ``frame`` is the decoded frame shown there; ``held`` when the slot
    has none of its own and shows the previous slot's."""

    slot: int
    frame: Any
    held: bool


def place(frames: Iterable[Any], slots: list[int | None] | None,
          lookahead: int = LOOKAHEAD) -> Iterator[Placed]:
    """The decoded ``frames`` (in decoding output order, each with a ``pts``) placed on the
    ``slots`` of a scan (their packets' pts, in order); ``slots=None`` (the ``"pyav"``
    timeline): each frame is the next slot.

    A slot whose packet's timestamp no frame carries holds the previous picture; a frame
    carries the timestamp of the packet it was decoded from, so a slot is called empty only
    once ``lookahead`` pictures past it are decoded (or the frames end). Frames without a
    usable timestamp (none, or none of the slots') fill the next slot. The first picture
    fills a slot before it; pictures beyond the last slot are dropped (the scan is the
    count). When ``frames`` raise (a decode error), the pictures decoded so far fill the next
    slots in order before the error is raised again.
    """
    if slots is None:
        for i, frame in enumerate(frames):
            yield Placed(i, frame, False)
        return
    known = set(slots)
    carried: Counter = Counter()  # pts -> frames decoded from that packet so far
    used: Counter = Counter()  # pts -> slots of that pts given a picture so far
    pending: deque = deque()
    slot, last = 0, None

    def fill(final: bool, holds: bool = True) -> Iterator[Placed]:
        nonlocal slot, last
        while pending and slot < len(slots):
            pts = slots[slot]
            if (not holds or pending[0].pts not in known or carried[pts] > used[pts]
                    or last is None):
                used[pts] += 1
                last = pending.popleft()
                yield Placed(slot, last, False)
            elif final or len(pending) > lookahead:
                yield Placed(slot, last, True)
            else:
                return
            slot += 1

    try:
        for frame in frames:
            pending.append(frame)
            carried[frame.pts] += 1
            yield from fill(False)
    except Exception:
        yield from fill(True, holds=False)
        raise
    yield from fill(True)
    while last is not None and slot < len(slots):  # pictures missing at the end
        yield Placed(slot, last, True)
        slot += 1
