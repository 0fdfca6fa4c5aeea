"""A safetensors file's header, read and checked against the file's size (the format:
8 bytes of little-endian length, a JSON object of tensors, then their data)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

MAX_HEADER_BYTES = 100_000_000
SAFETENSORS_DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}


@dataclass(frozen=True)
class Tensor:
    dtype: str  # the header's code: F32, BF16, ...
    shape: tuple[int, ...]
    offset: int  # where its data starts in the file


def read(file: Path) -> dict[str, Tensor]:
    """{tensor name: Tensor} of a safetensors file; a ModelError names what is malformed."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ModelError(f"{file} is truncated: no safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length == 0 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise ModelError(
                f"{file} has a malformed safetensors header (declares {length} bytes, file has "
                f"{size}); re-download or re-save the weights"
            )
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{file} has a malformed safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{file} has a malformed safetensors header (not an object)")
    data_size = size - 8 - length
    tensors: dict[str, Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            _, item = SAFETENSORS_DTYPES[entry["dtype"]]
            dims = tuple(int(d) for d in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{file}: tensor {name!r} has a malformed header entry") from None
        n = 1
        for d in dims:
            n *= d
        if (
            any(d < 0 for d in dims)
            or not 0 <= start <= end <= data_size
            or end - start != n * item
        ):
            raise ModelError(
                f"{file}: tensor {name!r} points outside the file or has the wrong size; "
                "the file is truncated or corrupt"
            )
        tensors[name] = Tensor(entry["dtype"], dims, 8 + length + start)
    return tensors
