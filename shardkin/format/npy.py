"""npy v1.0 payloads without ``numpy.load``: only plain dtypes, never pickle."""
from __future__ import annotations

import ast
import io
import math
import re

import numpy as np

_DTYPES = {"|u1": np.uint8, "<f4": np.float32, "<i8": np.int64}
_HEADER = re.compile(
    r"\{'descr': '([^']*)', 'fortran_order': (True|False), 'shape': \(([0-9, ]*)\), \} *\n")
# header text -> (dtype, shape): a build's clips share a few headers, parsed once each
_PARSED: dict[bytes, tuple[np.dtype, tuple[int, ...]]] = {}


def encode_npy(array: np.ndarray) -> bytes:
    """npy v1.0 bytes of a uint8, float32 or int64 array."""
    array = np.ascontiguousarray(array)
    if array.dtype.str not in _DTYPES:
        raise TypeError(f"unsupported dtype {array.dtype}")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return b"".join([header.getvalue(), array.reshape(-1).view(np.uint8).data])


def parse_header(head: bytes | bytearray | memoryview) -> tuple[int, np.dtype, tuple[int, ...]]:
    """(data offset, dtype, shape) from the first bytes of an npy v1.0 payload; only the
    dtypes above, C order, never unpickling."""
    head = bytes(head[:4096])
    if head[:8] != b"\x93NUMPY\x01\x00" or len(head) < 10:
        raise ValueError("not an npy v1.0 payload")
    offset = 10 + int.from_bytes(head[8:10], "little")
    if len(head) < offset:
        raise ValueError(f"npy header of {offset} bytes is too long")
    text = head[10:offset]
    parsed = _PARSED.get(text)
    if parsed is None:
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        parsed = _PARSED[text] = _parse_text(text.decode("latin1"))
    return offset, *parsed


def _parse_text(text: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of an npy header's text."""
    canonical = _HEADER.fullmatch(text)  # numpy's own layout: skip the slower parse
    header = ({"descr": canonical[1], "fortran_order": canonical[2] == "True",
               "shape": tuple(int(d) for d in canonical[3].split(",") if d.strip())}
              if canonical else ast.literal_eval(text))
    dtype = _DTYPES.get(header.get("descr")) if isinstance(header, dict) else None
    if dtype is None or header.get("fortran_order"):
        raise ValueError(f"unsupported npy header {header!r}")
    return np.dtype(dtype), tuple(int(d) for d in header["shape"])


def decode_npy(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Array over ``data`` without copying; only uint8/float32/int64, never pickle."""
    offset, dtype, shape = parse_header(data)
    count = math.prod(shape)
    if offset + count * dtype.itemsize != len(data):
        raise ValueError(f"npy payload of {len(data)} bytes does not hold {shape} {dtype}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
