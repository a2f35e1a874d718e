"""The jpeg member in other layouts, made from a build's one-JPEG members without
re-encoding, for the benchmarks (``bench_codecs.py``, ``bench_gpu_decode.py``); imports
nothing but the standard library."""
from __future__ import annotations

import struct


def frames_member(stacked: bytes) -> bytes:
    """The one-JPEG-a-frame member (format versions 1-2) of a one-JPEG member, by bytes:
    each frame's scan data under the clip's header with the frame's own height, without
    the restart interval."""
    t, h, w, p = struct.unpack_from("<4I", stacked, 4)
    parts = struct.unpack_from(f"<{2 * p}I", stacked, 20)
    starts = struct.unpack_from(f"<{t}I", stacked, 20 + 8 * p)
    pos, frames, first = 20 + 8 * p + 4 * t, [], 0
    for count, size in zip(parts[::2], parts[1::2]):
        part = stacked[pos : pos + size]
        head = bytearray(part[: starts[first]])
        dri = head.find(b"\xff\xdd")
        if dri >= 0:
            del head[dri : dri + 6]
        sof = head.index(b"\xff\xc0")
        struct.pack_into(">H", head, sof + 5, h)
        ends = [*(s - 2 for s in starts[first + 1 : first + count]), len(part) - 2]
        frames += [bytes(head) + part[s:e] + b"\xff\xd9"
                   for s, e in zip(starts[first : first + count], ends)]
        pos, first = pos + size, first + count
    return struct.pack(f"<4s3I{t}I", b"SKJ1", t, h, w, *map(len, frames)) + b"".join(frames)
