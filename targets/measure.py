"""The measuring children of check.py: stdlib, numpy, devicekit and the runtime only.

- measure(): load the model, then a warm-up and timed repetitions of a PROMPT_TOKENS prompt
  + DECODE_TOKENS new tokens, each run on a cold prompt (devicekit.cold_prompts), on every core
  the process may use unless told otherwise; the parent reads this child's peak RSS.
- check_golden(): the build's golden outputs, teacher-forced (devicekit.golden_check), in a
  process of its own so that what it loads does not count in the peak.
"""

from __future__ import annotations

import os
import sys
import time

import gpu
import manifestkeys as K

PROMPT_TOKENS = 128
DECODE_TOKENS = 64


class CheckError(Exception):
    """A reason to stop with exit code 2."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _load(root: str, manifest: dict, threads: int | None):
    sys.path.insert(0, root)
    import devicekit

    runtime = manifest[K.RUNTIME]["name"]
    start = time.perf_counter()
    try:
        settings = manifest[K.RUNTIME].get("settings") or {}
        context = manifest[K.TARGET]["budget"].get("context_tokens")
        if runtime == "llama.cpp" and context:  # it allocates its whole context at load:
            settings = {"n_ctx": int(context), **settings}  # the target's, as planned
        model = os.path.join(root, "model")
        runner = devicekit.load_runner(runtime, model, threads=threads, **settings)
    except ImportError as exc:
        package = manifest[K.RUNTIME]["package"]
        raise CheckError(
            f"runtime package missing: {exc}; pip install -r requirements.txt (needs {package})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any load failure is an ERROR with its reason
        raise CheckError(f"cannot load the model with {runtime}: {exc}") from None
    return devicekit, runner, time.perf_counter() - start


def measure(
    root: str, manifest: dict, threads: int | None, repetitions: int, allow_cpu: bool = False
) -> dict:
    """Runs in the measuring child: load, then latency and speed, as the device will run it.

    Every timed generation (the warm-up too) starts from a prompt of PROMPT_TOKENS ids this
    process has not seen, from an empty KV cache: a runtime that reuses a cached prefix
    (openvino-genai does) would otherwise report a first token several times too fast.

    A bundle planned for a GPU must run on one: a runner on the CPU is an error naming why,
    unless allow_cpu (a smoke test off the device). On the GPU, the VRAM it holds after the
    timed runs is measured (gpu.vram_in_use)."""
    on_gpu = (manifest.get(K.PLAN) or {}).get("device") == "gpu"
    before = gpu.memory_used() if on_gpu else None
    devicekit, runner, load_s = _load(root, manifest, threads)
    device = getattr(runner, "device", "cpu")
    if on_gpu and device != "gpu" and not allow_cpu:
        raise CheckError(gpu.missing_message(manifest, runner))
    result = {
        "load_s": load_s,
        "runtime_version": runner.version(),
        "threads": getattr(runner, "threads", threads),
        "device": device,
        "planned_device": "gpu" if on_gpu else "cpu",
    }
    if getattr(runner, "host_tensors", None):  # expert tensors held in host RAM beside a GPU
        result["host_tensors"] = len(runner.host_tensors)
    if runner.kind == "encoder":
        return result | measure_encoder(runner, repetitions)
    prompts = devicekit.cold_prompts(runner.tokenize, repetitions + 1, PROMPT_TOKENS)
    runner.generate(prompts[0], 8, stop_at_eos=False)  # warm-up
    first, decode, processed = [], [], []
    for prompt in prompts[1:]:
        gen = runner.generate(prompt, DECODE_TOKENS, stop_at_eos=False)
        first.append(gen.first_token_s * 1000)
        decode.append(gen.decode_tokens_per_s)
        processed.append(gen.prompt_tokens_processed)
    if device == "gpu":
        result["vram_bytes"], result["vram_source"] = gpu.vram_in_use(os.getpid(), before)
    return result | {
        "prompt_tokens": PROMPT_TOKENS,
        "prompt_tokens_processed": processed,
        "first_token_ms_p50": percentile(first, 0.5),
        "first_token_ms_p95": percentile(first, 0.95),
        "decode_tokens_per_s_p50": percentile(decode, 0.5),
        # the slow tail of speed is its low percentile: 95 % of runs were at least this fast
        "decode_tokens_per_s_p95": percentile(decode, 0.05),
    }


def built_for(manifest: dict) -> str:
    """The ISA the bundle's runtime was compiled for, as the manifest states it."""
    install = manifest[K.RUNTIME].get("install") or {}
    builds = install.get("prebuilt", []) + install.get("source_builds", [])
    return "; ".join(b["cmake_args"] for b in builds) or "its published wheel's"


def check_golden(root: str, manifest: dict, threads: int | None) -> dict:
    """Runs in the golden child: the build's golden outputs, teacher-forced (devicekit's
    golden_check: clear steps must keep their argmax, near-ties stay within NEAR_TIE)."""
    import numpy as np

    devicekit, runner, _ = _load(root, manifest, threads)
    results = []
    for golden in manifest[K.GOLDEN]:
        if runner.kind == "encoder":
            got = runner.embed([golden["prompt"]])[0]
            want = np.asarray(golden["embedding"], dtype=np.float32)
            cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
            results.append({"name": golden["name"], "cosine": cos, "pass": cos >= 0.999})
            continue
        ids = runner.tokenize(golden["prompt"])
        verdict = {"steps": len(golden["tokens"]), "pass": False}
        if ids == golden["prompt_ids"]:
            logits = runner.logits(list(golden["prompt_ids"]) + list(golden["tokens"]))
            verdict = devicekit.golden_check(logits, golden)
        verdict["tokenized_as_built"] = ids == golden["prompt_ids"]
        verdict["pass"] = verdict["pass"] and verdict["tokenized_as_built"]
        results.append({"name": golden["name"], **verdict})
    return {"golden": results}


def measure_encoder(runner, repetitions: int) -> dict:
    sentence = " ".join(["edge"] * (PROMPT_TOKENS - 2))
    runner.embed([sentence])
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        runner.embed([sentence])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "first_token_ms_p50": percentile(times, 0.5),
        "first_token_ms_p95": percentile(times, 0.95),
        "decode_tokens_per_s_p50": None,
        "decode_tokens_per_s_p95": None,
    }
