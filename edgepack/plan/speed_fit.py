"""The speed model's fit: published measurements in, coefficients and their errors out.

rows(): the database (edgepack/data/speed_measurements.json). usable(row): why a row cannot
serve the fit (None when it can): an ambiguous row, a backend edgepack does not plan for
(Metal, Vulkan, ROCm), a CPU that is neither arm64 nor x86_64, a GPU before Volta, two sockets,
a model with linear-attention or convolution layers, a mixture of experts' prompt, a CPU row
without its threads, clock or memory bandwidth. fit(): the
non-negative coefficients that minimise the squared relative error of the predicted time per
token over the usable rows, per (kind, phase). leave_one_device_out(): every usable row
predicted by a fit that did not see its device. transfer(): how much of one device's held-out
error recurs on another device for the same model and quant (the weight a host's measurement
gets in a device prediction, edgepack.plan.speed_calibration). fitted(): the coefficients stored by
tools/speed_fit.py in edgepack/data/speed_fit.json, with the spread of those held-out ratios
(the planner's interval).
"""

from __future__ import annotations

import itertools
import json
import re
from functools import lru_cache
from importlib import resources

from .speed_model import FEATURES, Cluster, Machine, Work, features

DB = "data/speed_measurements.json"
FIT = "data/speed_fit.json"
PLANNED_BACKENDS = {"cpu": "cpu", "cuda": "gpu"}
PRE_VOLTA = re.compile(r"\b(P100|P40|P4|M60|M40|K80|GTX 10\d\d|TITAN Xp?)\b", re.IGNORECASE)
# Layers of the published models (their config.json); the GPU terms need them.
LAYERS = {
    "tinyllama": 22, "llama-2-7b": 32, "llama 7b": 32, "codellama-7b": 32, "openllama 7b": 32,
    "llama-3-8b": 32, "llama-3.1-8b": 32, "llama3.1-8b": 32, "meta-llama-3-8b": 32,
    "llama-3.2-1b": 16, "llama-3.2-3b": 28, "mistral-7b": 32, "qwen2.5-0.5b": 24,
    "qwen2.5-1.5b": 28, "qwen2.5-3b": 36, "qwen2.5-coder-3b": 36, "qwen2.5-coder-7b": 28,
    "qwen2.5-7b": 28, "qwen3-4b": 36, "qwen3-30b-a3b": 48, "qwen3-coder-30b-a3b": 48,
    "gemma-3-1b": 26, "gemma-3-4b": 34, "phi-3-mini": 32, "smollm-135m": 30, "gpt-oss-20b": 24,
    "llama 13b": 40, "mixtral-8x7b": 32, "llama-7b": 32, "gemma-2b": 18, "qwen1-5-0-5b": 24,
    "qwen1.5-0.5b": 24, "phi-4": 40, "llama-3.3-70b": 80,
}  # fmt: skip
BITS = (("f32", 32), ("bf16", 16), ("f16", 16), ("q8", 8), ("q6", 6), ("q5", 5), ("q4", 4),
        ("iq4", 4), ("mxfp4", 4), ("q3", 3), ("q2", 2))  # fmt: skip
BPW = {2: 2.6, 3: 3.5, 4: 4.8, 5: 5.6, 6: 6.56, 8: 8.5, 16: 16.0, 32: 32.0}


def rows() -> list[dict]:
    text = resources.files("edgepack").joinpath(DB).read_text(encoding="utf-8")
    return json.loads(text)["rows"]


def bits(quant: str) -> int | None:
    q = quant.lower().replace("-", "_")
    return next((b for name, b in BITS if q.startswith(name)), None)


def quant_family(quant: str) -> str:
    """llama.cpp's type family of a quantization name: Q4_K_M -> q4_k, Q4_0 -> q4_0."""
    q = quant.lower().replace("-", "_").split()[0]
    match = re.match(r"(iq\d_\w\w|q\d_k|q\d_\d|f16|bf16|f32|mxfp4)", q)
    return match.group(1) if match else q


def layers(model: str) -> int | None:
    m = model.lower().replace("_", "-")
    return next((n for name, n in LAYERS.items() if m.startswith(name)), None)


def device_key(row: dict) -> str:
    """One device, however its rows name it: the GPU, or the CPU model."""
    name = row["gpu"] if PLANNED_BACKENDS.get(row["backend"]) == "gpu" else row["cpu"]
    key = re.sub(r"[^a-z0-9]+", " ", (name or row["device"]).lower()).strip()
    return re.sub(r"^(nvidia |geforce )+", "", key)  # "NVIDIA Tesla T4" is "Tesla T4"


def work(row: dict) -> Work | None:
    b, n = bits(row["quant"]), layers(row["model"])
    if b is None or not row.get("params_b"):
        return None
    share = (row.get("active_params_b") or row["params_b"]) / row["params_b"]
    size = row.get("model_size_gib")
    weights = size * 2**30 if size else row["params_b"] * 1e9 * BPW[b] / 8
    active = (row.get("active_params_b") or row["params_b"]) * 1e9
    return Work(weights * share, 2 * active, n or 0, b, quant_family(row["quant"]))


def machine(row: dict) -> Machine | None:
    kind = PLANNED_BACKENDS.get(row["backend"])
    if kind == "gpu":
        bandwidth, tflops = row.get("gpu_bandwidth_gbs") or 0, row.get("gpu_fp16_tflops") or 0
        return Machine("gpu", bandwidth, gpu_tflops=tflops)
    if kind != "cpu" or not row.get("threads") or not row.get("bandwidth_gbs"):
        return None
    clusters = sorted(row.get("clusters") or [], key=lambda c: -(c.get("ghz") or 0))
    used, left = [], row["threads"]
    for c in clusters:
        if left <= 0:
            break
        if not c.get("ghz"):
            return None
        used.append(Cluster(c["cores"], c["ghz"], tuple(row["isa"])))
        left -= c["cores"]
    if not used:
        return None
    arch = row.get("arch") or "x86_64"
    return Machine("cpu", row["bandwidth_gbs"], arch, threads=row["threads"], clusters=tuple(used))


def usable(row: dict, phase: str) -> str | None:
    """None when the row can serve the fit of this phase, else why not."""
    if row.get("runtime") != "llama.cpp":
        return f"runtime {row.get('runtime')}"
    if row["backend"] not in PLANNED_BACKENDS:
        return f"{row['backend']} backend: edgepack plans CPU and CUDA"
    if row.get("ambiguous"):
        return "ambiguous: " + (row.get("note") or "")[:60]
    if row["backend"] == "cpu" and row.get("arch") not in ("arm64", "x86_64"):
        return f"{row.get('arch')}: edgepack plans arm64 and x86_64 CPUs"
    if phase == "prefill" and row.get("active_params_b"):
        return "a mixture of experts' prompt: routed batches, not modelled"
    if re.match(r"(qwen3\.5|qwen3-next|lfm2)", row["model"].lower()):
        return "linear-attention or convolution layers: not modelled"
    if "two sockets" in (row.get("note") or "").lower() or re.match(r"2 ?x", row.get("cpu") or ""):
        return "two sockets: threads across NUMA nodes, not modelled"
    tps, n = (row["tg_tps"], row["tg_tokens"])
    if phase == "prefill":
        tps, n = row["pp_tps"], row["pp_tokens"]
    if not tps or not n:
        return f"no {phase} figure"
    w, m = work(row), machine(row)
    if w is None:
        return f"unknown quant or size ({row['quant']})"
    if m is None:
        return "threads, clock or memory bandwidth not stated"
    if m.kind == "gpu":
        if PRE_VOLTA.search(row.get("gpu") or ""):
            return "a GPU before Volta (no tensor cores): edgepack plans CUDA GPUs from Volta on"
        if not m.bandwidth_gbs or not w.layers:
            return "GPU bandwidth or the model's layers unknown"
        if phase == "prefill" and not m.gpu_tflops:
            return "GPU tensor TFLOPS unknown"
        if row.get("ngl") is not None and row["ngl"] < w.layers:
            return "not every layer on the GPU"
    return None


def observed_seconds(row: dict, phase: str) -> float:
    return 1.0 / (row["tg_tps"] if phase == "decode" else row["pp_tps"])


def _x(row: dict, phase: str) -> tuple:
    m = machine(row)
    tokens = row["pp_tokens"] if phase == "prefill" else 1
    return features(m.kind, phase, work(row), m, tokens)


def fit(data: list[dict], kind: str, phase: str) -> list[float]:
    """Non-negative least squares on relative error: every subset of the terms is solved and
    the best one whose coefficients are all non-negative is kept (three terms: seven subsets)."""
    import numpy as np

    picked = [r for r in data if machine(r) is not None and machine(r).kind == kind]
    x = np.array([_x(r, phase) for r in picked], dtype=float)
    t = np.array([observed_seconds(r, phase) for r in picked])
    width = len(FEATURES[(kind, phase)])
    if not len(picked):
        return [0.0] * width
    a = x / t[:, None]  # relative error: (x . c) / t - 1
    best, best_err = [0.0] * width, float("inf")
    for size in range(1, width + 1):
        for cols in itertools.combinations(range(width), size):
            coef, *_ = np.linalg.lstsq(a[:, cols], np.ones(len(t)), rcond=None)
            if (coef < 0).any():
                continue
            full = np.zeros(width)
            full[list(cols)] = coef
            err = float(((a @ full - 1) ** 2).sum())
            if err < best_err:
                best, best_err = [float(c) for c in full], err
    return best


def fit_all(data: list[dict]) -> dict:
    out = {}
    for kind, phase in FEATURES:
        subset = [r for r in data if usable(r, phase) is None]
        out[f"{kind}/{phase}"] = fit(subset, kind, phase)
    return out


def predicted_tps(coefficients: dict, row: dict, phase: str) -> float:
    m = machine(row)
    coef = coefficients[f"{m.kind}/{phase}"]
    seconds = sum(c * x for c, x in zip(coef, _x(row, phase), strict=True))
    return 1.0 / seconds if seconds > 0 else float("inf")


def leave_one_device_out(data: list[dict]) -> list[dict]:
    """Each usable row predicted by the fit of every row of other devices."""
    out = []
    for phase in ("decode", "prefill"):
        good = [r for r in data if usable(r, phase) is None]
        for key in sorted({device_key(r) for r in good}):
            rest = [r for r in good if device_key(r) != key]
            for row in (r for r in good if device_key(r) == key):
                kind = machine(row).kind
                coef = {f"{kind}/{phase}": fit(rest, kind, phase)}
                pred = predicted_tps(coef, row, phase)
                published = row["tg_tps"] if phase == "decode" else row["pp_tps"]
                out.append({"id": row["id"], "device": key, "kind": kind, "phase": phase,
                            "predicted": pred, "published": published,
                            "ratio": pred / published})  # fmt: skip
    return out


def spread(held_out: list[dict], kind: str, phase: str) -> dict:
    """Median and worst of max(ratio, 1/ratio), and the 10th and 90th percentiles of the ratio
    (the interval: a prediction p spans p / q90 to p / q10)."""
    import numpy as np

    mine = [h for h in held_out if h["kind"] == kind and h["phase"] == phase]
    r = np.array([h["ratio"] for h in mine])
    if not len(r):
        return {"rows": 0}
    fold = np.maximum(r, 1 / r)
    return {
        "rows": int(len(r)),
        "devices": len({h["device"] for h in mine}),
        "median_x": float(np.median(fold)),
        "worst_x": float(fold.max()),
        "ratio_q10": float(np.quantile(r, 0.1)),
        "ratio_q90": float(np.quantile(r, 0.9)),
    }


def transfer(data: list[dict], held_out: list[dict], kind: str, phase: str) -> dict:
    """The least-squares slope of one device's held-out log error on another's, over every
    pair of devices that measured the same model (layers and parameters) and quant: the share
    of a measured error on one machine that carries over to another, clipped to 0..1."""
    import math

    by_id = {r["id"]: r for r in data}
    groups: dict[tuple, list[tuple[str, float]]] = {}
    for h in held_out:
        if h["kind"] == kind and h["phase"] == phase:
            r = by_id[h["id"]]
            key = (layers(r["model"]), r["params_b"], quant_family(r["quant"]))
            groups.setdefault(key, []).append((h["device"], math.log(h["ratio"])))
    num = den = 0.0
    pairs = 0
    for group in groups.values():
        for (d1, e1), (d2, e2) in itertools.permutations(group, 2):
            if d1 != d2:
                num, den, pairs = num + e1 * e2, den + e1 * e1, pairs + 1
    weight = min(1.0, max(0.0, num / den)) if den else 0.0
    return {"weight": weight, "pairs": pairs}


@lru_cache(maxsize=1)
def fitted() -> dict:
    """{"coefficients": {"cpu/decode": [...], ...}, "spread": {...}} as tools/speed_fit.py
    stored them."""
    text = resources.files("edgepack").joinpath(FIT).read_text(encoding="utf-8")
    return json.loads(text)
