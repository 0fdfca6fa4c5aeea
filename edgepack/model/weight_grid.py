"""Whether a checkpoint's weights already lie on a quantization grid.

A Hugging Face directory made by dequantizing a GGUF (as transformers' `gguf_file=` loading and
edgepack's own embedded models do) holds fp32 numbers, but every block of them is still one of a
few levels: `scale * q + min` for the block's integers q. Quantizing such a model again to a
scheme that can land on the same levels costs almost nothing, so retention measured against it
says little about what that scheme costs on the original weights. Measured: the embedded default
model is SmolLM2-135M dequantized from Q4_1, and ONNX Runtime's HQQ 4-bit (block 32, a float
zero point) rebuilds its down_proj weights with a relative error of 0.2 % (round-to-nearest with
an integer zero point: 8.1 %); with the head in 8 bits and the embedding in fp32, WikiText-2
retention 0.999 (round-to-nearest, int8 activations: 0.818). On Gemma-3-270M, from Q4_K_M (most rows
on 5- and 8-bit grids, which 4 bits cannot land on), the same pair keeps 0.725 and 0.684.

The test, per block of 16 consecutive weights along a row (GGUF's blocks run along the input
dimension, the last one of a Hugging Face weight, and their sub-blocks are 16 or 32 long): the
block's distinct values must be integer multiples of one step apart, with at most 256 levels
between the smallest and the largest. Continuous weights fail it (fp32 differences are not
multiples of one step; bf16 ones span thousands of steps). A tensor is on a grid when at least
90 % of its sampled blocks are; its bits are those of the 90th percentile of their levels.
Stored as fp32 (what dequantizing writes) a grid of up to 8 bits is told; as fp16, up to 5 bits;
as bf16, up to 4 (tests/model/test_weight_grid.py): the storage's rounding blurs finer ones.
Reads 48 blocks per tensor, in runs of 8 side by side, with plain reads (a memory map's pages
would count in the caller's resident memory): a few pages per tensor, never a whole checkpoint.
numpy and the header reader (edgepack.model.safetensors_header) only.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import ModelError
from . import safetensors_header

BLOCK = 16
BLOCKS_PER_TENSOR = 48
RUN = 8  # of them side by side in a row (a cold 6.2 GB bf16 checkpoint, 198 matrices: 0.36 s)
MIN_ELEMENTS = 1 << 16  # smaller tensors (norms, biases) say nothing and are skipped
ON_GRID = 0.9  # share of a tensor's sampled blocks that must be on a grid
MAX_LEVELS = 256
TOLERANCE = 0.03  # of a step, beside the storage type's own rounding
# storage type -> (its relative rounding, the most levels a grid may have): a bf16 block that
# spans more than 32 of its own steps is too blurred to be told from continuous weights
_STORAGE = {"F32": (2.0**-24, MAX_LEVELS), "F16": (2.0**-11, MAX_LEVELS), "BF16": (2.0**-8, 32)}
_DIVISORS = (1, 2, 3, 4, 5)  # the smallest difference may span a few steps
_NUMPY = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def block_levels(values, eps: float = 2.0**-24, max_levels: int = MAX_LEVELS) -> int:
    """Levels of the grid a block's values lie on (from the smallest to the largest value), or
    0 when they lie on none of at most `max_levels` levels (1 for a constant block). `eps`: the
    relative rounding of the storage type, which moves a grid's values off it."""
    import numpy as np

    unique = np.unique(np.asarray(values, dtype=np.float64))
    if len(unique) < 2:
        return 1
    span = unique[-1] - unique[0]
    for divisor in _DIVISORS:
        first = np.diff(unique).min() / divisor
        if span / first > max_levels - 0.5:
            return 0
        k = np.round((unique - unique[0]) / first)
        design = np.stack([np.ones_like(k), k], axis=1)
        (origin, step), *_ = np.linalg.lstsq(design, unique, rcond=None)
        if step <= 0:
            continue
        off = np.abs(unique - (origin + step * k)) / step
        if np.all(off <= TOLERANCE + eps * np.abs(unique) / step):
            return int(k[-1]) + 1
    return 0


def tensor_grid_bits(
    matrix, dtype: str = "F32", blocks: int = BLOCKS_PER_TENSOR, seed: int = 0
) -> int:
    """The bits of the grid a 2-D float array stored as `dtype` (a safetensors dtype) lies on, 0
    when it lies on none."""
    import numpy as np

    rows, cols = matrix.shape
    if cols < BLOCK:
        return 0
    rng = np.random.default_rng(seed)
    levels = []
    run = min(RUN, cols // BLOCK)  # consecutive blocks read at once: one page, not `run`
    for _ in range(max(1, blocks // run)):
        row = int(rng.integers(rows))
        first = int(rng.integers(cols // BLOCK - run + 1)) * BLOCK
        values = np.asarray(matrix[row, first : first + run * BLOCK])
        for block in values.reshape(run, BLOCK):
            levels.append(block_levels(block, *_STORAGE[dtype]))
    on_grid = [n for n in levels if n > 1]
    informative = [n for n in levels if n != 1]
    if not informative or len(on_grid) < ON_GRID * len(informative):
        return 0
    worst = sorted(on_grid)[min(len(on_grid) - 1, int(0.9 * len(on_grid)))]
    return max(1, math.ceil(math.log2(worst)))


def weight_grid(model_dir: str | Path) -> dict:
    """{"shares": {bits: share of the sampled weights, 0 for continuous ones}, "tensors": how
    many were sampled} for a directory of safetensors files (headers already checked)."""
    counts: dict[int, int] = {}
    tensors = 0
    try:
        for file in sorted(Path(model_dir).glob("*.safetensors")):
            for name, dtype, matrix in _matrices(file):
                bits = tensor_grid_bits(matrix, dtype, seed=_seed(name))
                counts[bits] = counts.get(bits, 0) + matrix.size
                tensors += 1
    except (OSError, ValueError, ModelError):
        return {"shares": {}, "tensors": 0}  # unreadable weights are read_facts' to report
    total = sum(counts.values()) or 1
    shares = {bits: round(n / total, 4) for bits, n in sorted(counts.items())}
    return {"shares": shares, "tensors": tensors}


def describe(grid: tuple[tuple[int, float], ...]) -> str | None:
    """One line for weights on grids ((bits, share), ... as ModelFacts.weight_grid holds them),
    None for continuous ones."""
    if not grid:
        return None
    shares = ", ".join(f"{bits}-bit {share:.0%}" for bits, share in grid)
    finest = min(bits for bits, _ in grid)
    return (
        f"already on quantization grids ({shares}): a dequantized quantized checkpoint; an "
        f"export at {finest} bits or more can land on the same values, so its retention "
        "against this model understates what it would cost on the original weights"
    )


def _matrices(file: Path):
    """(name, dtype, a 2-D array read as floats) for each large 2-D float tensor: rows are read
    from the file when sliced (reads, not a memory map, whose mapped pages would count in the
    process's resident memory)."""
    tensors = safetensors_header.read(file)
    with open(file, "rb") as fh:
        for name, tensor in tensors.items():
            shape = tensor.shape
            if tensor.dtype not in _NUMPY or len(shape) != 2 or shape[0] * shape[1] < MIN_ELEMENTS:
                continue
            yield name, tensor.dtype, _Rows(fh, tensor.offset, shape, tensor.dtype)


class _Rows:
    """A stored 2-D tensor whose `[row, a:b]` slices are read from the file as float32."""

    def __init__(self, fh, offset: int, shape: tuple[int, int], dtype: str):
        self.fh, self.offset, self.shape, self.dtype = fh, offset, shape, dtype
        self.size = shape[0] * shape[1]

    def __getitem__(self, index):
        import numpy as np

        row, cols = index
        item = np.dtype(_NUMPY[self.dtype])
        self.fh.seek(self.offset + (row * self.shape[1] + cols.start) * item.itemsize)
        count = cols.stop - cols.start
        raw = np.frombuffer(self.fh.read(count * item.itemsize), dtype=item, count=count)
        if self.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)


def _seed(name: str) -> int:
    return sum(name.encode()) % 1000
