"""npy v1.0 payloads without ``numpy.load``: only plain dtypes, never pickle."""
from __future__ import annotations

import ast
import io

import numpy as np

_DTYPES = {"|u1": np.uint8, "<f4": np.float32, "<i8": np.int64}


def encode_npy(array: np.ndarray) -> bytes:
    """npy v1.0 bytes of a uint8, float32 or int64 array."""
    array = np.ascontiguousarray(array)
    if array.dtype.str not in _DTYPES:
        raise TypeError(f"unsupported dtype {array.dtype}")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return b"".join([header.getvalue(), array.reshape(-1).view(np.uint8).data])


def decode_npy(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Array over ``data`` without copying; only uint8/float32/int64, never pickle."""
    view = memoryview(data)
    if bytes(view[:8]) != b"\x93NUMPY\x01\x00":
        raise ValueError("not an npy v1.0 payload")
    header_len = int.from_bytes(view[8:10], "little")
    header = ast.literal_eval(bytes(view[10 : 10 + header_len]).decode("latin1"))
    dtype = _DTYPES.get(header.get("descr"))
    if dtype is None or header.get("fortran_order"):
        raise ValueError(f"unsupported npy header {header!r}")
    shape = tuple(int(d) for d in header["shape"])
    count = int(np.prod(shape)) if shape else 1
    array = np.frombuffer(view, dtype=dtype, count=count, offset=10 + header_len)
    return array.reshape(shape)
