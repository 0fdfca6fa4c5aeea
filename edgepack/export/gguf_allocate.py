"""A size target for GGUF: per-tensor types chosen to meet bits per weight at the least error.

Like llama-quantize's `--target-bpw`: every weight matrix (the token embedding and the output
head included) may take one of LADDER's block-32 types, which fit rows of any multiple of 32.
1. The f16 base is quantized once per ladder type by llama.cpp's own quantizer (`pure`, with the
   importance matrix), so each tensor's candidate bytes and values are what the final file holds.
2. Each tensor's error in each type is measured against the f16 weights: the squared rounding
   error of every column weighted by the importance matrix (the mean squared activation that
   column multiplies), i.e. the expected squared change of the matrix's output on the
   calibration text. A matrix without importance data (the token embedding of an untied model)
   weighs its columns equally, at the median of the others' mean importance.
3. Greedy descent: every tensor starts in the largest type; the step that saves the most bytes
   per unit of added error is taken until the whole file fits `target_bpw` x parameters / 8.
The chosen type of every tensor reaches the quantizer as an exact-name override.
"""

from __future__ import annotations

import heapq
import re
import time
from pathlib import Path

import numpy as np

from .base import Progress

# llama.cpp's block-32 types (edgepack.export.gguf.FTYPES names them), smallest first
LADDER = ("iq4_nl", "q4_1", "q5_1", "q8_0")


def allocate(
    base: Path,
    imatrix: Path | None,
    target_bpw: float,
    parameters: int,
    work: Path,
    quantize,
    progress: Progress,
) -> dict:
    """The per-tensor types meeting target_bpw. `quantize(src, dst, type, options)` runs
    llama.cpp's quantizer; the ladder's files are written to `work` and deleted after reading."""
    from gguf import GGUFReader

    start = time.perf_counter()
    base_tensors = {t.name: t for t in GGUFReader(base).tensors}
    importance = _importance(imatrix)
    # a matrix without importance data weighs its columns equally, at the median importance
    unweighted = float(np.median([v.mean() for v in importance.values()])) if importance else 1.0
    sizes: dict[str, dict[str, int]] = {}
    errors: dict[str, dict[str, float]] = {}
    fixed = None
    for typ in LADDER:
        path = work / f"ladder-{typ}.gguf"
        options = {"pure": True, "token_embedding_type": typ, "output_tensor_type": typ}
        if imatrix is not None:
            options["imatrix"] = str(imatrix)
        progress(f"size target {target_bpw:g} bpw: measuring every tensor's error as {typ}")
        quantize(base, path, typ, options)
        reader = GGUFReader(path)
        quantized = 0
        for t in reader.tensors:
            if t.tensor_type.name.lower() != typ:
                continue  # norms and biases stay f32 in every file
            quantized += int(t.n_bytes)
            sizes.setdefault(t.name, {})[typ] = int(t.n_bytes)
            weights = importance.get(t.name)
            error = _error(base_tensors[t.name], t, weights, unweighted)
            errors.setdefault(t.name, {})[typ] = error
        if fixed is None:
            fixed = path.stat().st_size - quantized
        del reader
        path.unlink()
    budget = int(target_bpw * parameters / 8) - fixed
    types, total = _descend(sizes, errors, budget)
    achieved = 8 * (total + fixed) / max(parameters, 1)
    return {
        "target_bpw": target_bpw,
        "bpw": round(achieved, 3),
        "met": total <= budget,
        "types": types,
        "ladder": list(LADDER),
        "sensitivity": "importance-weighted squared rounding error per tensor",
        "allocate_s": round(time.perf_counter() - start, 1),
    }


def overrides(types: dict[str, str]) -> list[list[str]]:
    """Exact-name tensor overrides for the quantizer (tt_overrides: regex, first match)."""
    return [[f"^{re.escape(name)}$", typ] for name, typ in sorted(types.items())]


def _importance(imatrix: Path | None) -> dict[str, np.ndarray]:
    if imatrix is None:
        return {}
    with np.load(imatrix) as data:
        return {k: np.asarray(data[k], dtype=np.float64) for k in data.files}


def _error(base, quantized, weights: np.ndarray | None, unweighted: float) -> float:
    """The squared rounding error of every column weighted by its importance; `unweighted`
    for every column where the matrix has no importance data of its width."""
    from gguf.quants import dequantize

    w = dequantize(base.data, base.tensor_type).astype(np.float32)
    q = dequantize(quantized.data, quantized.tensor_type).astype(np.float32)
    cols = w.shape[-1]
    sq = ((w - q).reshape(-1, cols).astype(np.float64) ** 2).sum(0)
    if weights is None or weights.size != cols:
        return float(sq.sum()) * unweighted
    return float((sq * weights).sum())


def _descend(sizes: dict, errors: dict, budget: int) -> tuple[dict[str, str], int]:
    """Greedy: from every tensor in its largest type, take the cheapest step down (added error
    per byte saved) until the total fits the budget."""
    order = list(LADDER)
    level = {name: len(order) - 1 for name in sizes}
    total = sum(sizes[name][order[-1]] for name in sizes)
    heap = []

    def push(name: str) -> None:
        i = level[name]
        if i == 0:
            return
        hi, lo = order[i], order[i - 1]
        saved = sizes[name][hi] - sizes[name][lo]
        added = max(errors[name][lo] - errors[name][hi], 0.0)
        if saved > 0:
            heapq.heappush(heap, (added / saved, name, i))

    for name in sizes:
        push(name)
    while total > budget and heap:
        _, name, i = heapq.heappop(heap)
        if level[name] != i:
            continue
        total -= sizes[name][order[i]] - sizes[name][order[i - 1]]
        level[name] = i - 1
        push(name)
    # the last step may have saved more than needed: spend what is left on the steps up that
    # remove the most error per byte and still fit
    ups = []
    for name, i in level.items():
        if i + 1 < len(order):
            hi, lo = order[i + 1], order[i]
            cost = sizes[name][hi] - sizes[name][lo]
            gain = max(errors[name][lo] - errors[name][hi], 0.0)
            ups.append((-gain / max(cost, 1), cost, name))
    for _, cost, name in sorted(ups):
        if total + cost <= budget:
            total += cost
            level[name] += 1
    return {name: order[i] for name, i in level.items()}, total
