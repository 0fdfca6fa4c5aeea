"""The measuring processes of tools/bench.py: one variant per process, one JSON line on stdout.

    python tools/bench_children.py SPEC.json

SPEC holds "variant" and what it needs (bundle, model_dir, prompt ids, tokens, repetitions,
threads, eval text). Every speed variant loads its model, runs one warm-up generation, then
`repetitions` greedy generations of exactly `tokens` new tokens from the same prompt ids, and
reports the load time, the first-token latency (prompt processing up to the first new token) and
the decode speed (the tokens after the first / their time) of each repetition. The parent reads
the process's peak RSS from the operating system when it exits.

Variants:
  transformers   the source model, transformers fp32 eager `generate` (greedy)
  llama_cpp      llama-cpp-python `Llama.generate` on model/model.gguf (greedy sampler)
  optimum_ov     optimum-intel `OVModelForCausalLM.generate` on model/ (f32 precision hint)
  genai          openvino-genai `LLMPipeline.generate` on model/ (f32 precision hint)
  optimum_ort    optimum `ORTModelForCausalLM.generate` on model/model.onnx
  runner         the bundle's own kit: devicekit.load_runner(...).generate, as check.py runs it
  reference      the fp32 PyTorch reference on the evaluation text (edgepack.quality, cached)
  quality        perplexity / KL / top-1 of the bundle's runner on the evaluation text
"""

from __future__ import annotations

import json
import os
import sys
import time

WARMUP_TOKENS = 8


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        result = VARIANTS[spec["variant"]](spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent with its type
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0


def timed_runs(generate, spec: dict) -> dict:
    """Warm-up, then repetitions of generate(n) -> (first_token_s, decode_tokens_per_s, tokens)."""
    start = time.perf_counter()
    generate(min(WARMUP_TOKENS, spec["tokens"]))
    warmup_s = time.perf_counter() - start
    first, decode, tokens = [], [], []
    for _ in range(spec["repetitions"]):
        first_s, tps, tokens = generate(spec["tokens"])
        if len(tokens) != spec["tokens"]:
            raise RuntimeError(f"generated {len(tokens)} tokens, asked for {spec['tokens']}")
        first.append(first_s * 1000)
        decode.append(tps)
    return {
        "warmup_s": warmup_s,
        "first_token_ms": first,
        "decode_tokens_per_s": decode,
        "tokens": tokens,
    }


def _torch_threads(spec: dict) -> None:
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])


def hf_generate(model, spec: dict):
    """A generate(n) over a transformers-style model, timed by a streamer: generate() hands the
    streamer the prompt first, then every new token as soon as it is chosen."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    ids = torch.tensor([spec["prompt_ids"]], dtype=torch.long)
    mask = torch.ones_like(ids)

    def generate(n: int):
        clock = Clock()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                num_beams=1,
                streamer=clock,
                pad_token_id=spec.get("pad_token_id"),
            )
        tokens = out[0, ids.shape[1] :].tolist()
        times = clock.times[1:]  # [0] is the prompt, handed over before any compute
        first = times[0] - start
        decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return first, decode, tokens

    return generate


def transformers_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    _torch_threads(spec)
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"], dtype=torch.float32, attn_implementation="eager"
    ).eval()
    load_s = time.perf_counter() - start
    api = f"transformers {transformers.__version__} fp32 eager generate (torch {torch.__version__})"
    return {"api": api, "load_s": load_s} | timed_runs(hf_generate(model, spec), spec)


def llama_cpp_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import llama_cpp

    kwargs = {"n_threads": spec["threads"], "n_threads_batch": spec["threads"]}
    llm = llama_cpp.Llama(
        model_path=os.path.join(spec["model_dir"], "model.gguf"),
        n_ctx=spec["n_ctx"],
        verbose=False,
        **(kwargs if spec["threads"] else {}),
    )
    load_s = time.perf_counter() - start

    def generate(n: int):
        llm.reset()  # no reuse of the previous run's prompt from the KV cache
        tokens, times = [], []
        start = time.perf_counter()
        for token in llm.generate(spec["prompt_ids"], top_k=1, temp=0.0, repeat_penalty=1.0):
            times.append(time.perf_counter())
            tokens.append(int(token))
            if len(tokens) == n:
                break
        decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return times[0] - start, decode, tokens

    api = f"llama-cpp-python {llama_cpp.__version__} Llama.generate (greedy)"
    return {"api": api, "load_s": load_s} | timed_runs(generate, spec)


def optimum_ov_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import openvino
    from optimum.intel import OVModelForCausalLM

    _torch_threads(spec)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if spec["threads"]:
        config["INFERENCE_NUM_THREADS"] = str(spec["threads"])
    model = OVModelForCausalLM.from_pretrained(spec["model_dir"], device="CPU", ov_config=config)
    load_s = time.perf_counter() - start
    api = f"optimum-intel OVModelForCausalLM.generate (OpenVINO {openvino.__version__})"
    return {"api": api, "load_s": load_s} | timed_runs(hf_generate(model, spec), spec)


def genai_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if spec["threads"]:
        config["INFERENCE_NUM_THREADS"] = spec["threads"]
    pipe = og.LLMPipeline(spec["model_dir"], "CPU", **config)
    load_s = time.perf_counter() - start
    prompt = ov.Tensor(np.asarray([spec["prompt_ids"]], dtype=np.int64))

    def generate(n: int):
        gen = og.GenerationConfig()
        gen.max_new_tokens = n
        gen.ignore_eos = True
        result = pipe.generate(prompt, gen)
        metrics = result.perf_metrics
        tpot_ms = metrics.get_tpot().mean
        return metrics.get_ttft().mean / 1000, 1000 / tpot_ms, [int(t) for t in result.tokens[0]]

    api = f"openvino-genai {og.__version__} LLMPipeline.generate (perf_metrics TTFT, TPOT)"
    return {"api": api, "load_s": load_s} | timed_runs(generate, spec)


def optimum_ort_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCausalLM

    _torch_threads(spec)
    options = ort.SessionOptions()
    if spec["threads"]:
        options.intra_op_num_threads = spec["threads"]
    model = ORTModelForCausalLM.from_pretrained(
        spec["model_dir"],
        file_name="model.onnx",
        use_cache=True,
        provider="CPUExecutionProvider",
        session_options=options,
    )
    load_s = time.perf_counter() - start
    api = f"optimum ORTModelForCausalLM.generate (ONNX Runtime {ort.__version__})"
    return {"api": api, "load_s": load_s} | timed_runs(hf_generate(model, spec), spec)


def _kit_runner(spec: dict):
    """The bundle's own runner, imported from the bundle directory (no edgepack code)."""
    sys.path.insert(0, spec["bundle"])
    import devicekit

    model_dir = os.path.join(spec["bundle"], "model")
    return devicekit.load_runner(spec["runtime"], model_dir, threads=spec["threads"] or None)


def runner_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    runner = _kit_runner(spec)
    load_s = time.perf_counter() - start

    def generate(n: int):
        gen = runner.generate(spec["prompt_ids"], n, stop_at_eos=False)
        return gen.first_token_s, gen.decode_tokens_per_s, gen.tokens

    module = sys.modules["devicekit"].RUNNERS[spec["runtime"]]
    api = f"the bundle's {module}.py via devicekit.load_runner ({runner.version()})"
    return {"api": api, "load_s": load_s} | timed_runs(generate, spec)


def _eval_reference(spec: dict):
    from pathlib import Path

    from edgepack.demo import cache_root
    from edgepack.quality import cached_reference_eval

    with open(spec["eval_path"], encoding="utf-8") as fh:
        text = fh.read()
    return cached_reference_eval(Path(spec["model_dir"]), spec["eval_name"], text, cache_root())


def reference_variant(spec: dict) -> dict:
    _torch_threads(spec)
    start = time.perf_counter()
    ref = _eval_reference(spec)
    return {
        "perplexity": ref.perplexity,
        "eval_tokens": len(ref.ids),
        "scored_tokens": int(ref.logprobs.shape[0]),
        "chunks": len(ref.chunks),
        "seconds": time.perf_counter() - start,
    }


def quality_variant(spec: dict) -> dict:
    from edgepack.quality import measure

    ref = _eval_reference(spec)  # cached by the reference process: no torch here
    start = time.perf_counter()
    quality = measure(_kit_runner(spec), ref).to_dict()
    return quality | {"seconds": time.perf_counter() - start}


VARIANTS = {
    "transformers": transformers_variant,
    "llama_cpp": llama_cpp_variant,
    "optimum_ov": optimum_ov_variant,
    "genai": genai_variant,
    "optimum_ort": optimum_ort_variant,
    "runner": runner_variant,
    "reference": reference_variant,
    "quality": quality_variant,
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
