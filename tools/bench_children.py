"""The measuring processes of tools/bench.py: one variant per process, one JSON line on stdout.

    python tools/bench_children.py SPEC.json

SPEC holds "variant" and what it needs (bundle, model_dir, prompts, tokens, repetitions, threads,
eval text). A speed variant loads its model, generates greedily from prompts[0] (the warm-up),
then `tokens` new tokens from each of prompts[1:], one repetition each: cold prompts (see
tools/bench.py), and the raw llama.cpp context is reset before every run. Per repetition: the
first-token latency (prompt processing up to the first new token), decode speed (the tokens after
the first / their time) and the prompt tokens processed where the runtime says (openvino-genai's
get_num_input_tokens, llama.cpp's n_p_eval, the kit's Generation); and the load time and the
threads as the runtime reports them. threads 0 leaves each runtime its own default. The parent
reads each process's peak RSS from the operating system when it exits.

Variants:
  transformers   the source model, transformers fp32 eager `generate` (greedy)
  llama_cpp      llama-cpp-python `Llama.generate` on model/model.gguf (greedy sampler)
  optimum_ov     optimum-intel `OVModelForCausalLM.generate` on model/ (f32 precision hint)
  genai          openvino-genai `LLMPipeline.generate` on model/ (f32 precision hint)
  optimum_ort    optimum `ORTModelForCausalLM.generate` on model/model.onnx
  runner         the bundle's own kit: devicekit.load_runner(...).generate, as check.py runs it
  check          the bundle's own check.py --json, as a device runs it (its own figures)
  calibrate      the planner's prior, the manifest's and edgepack.plan.speed_calibration's
                 device prediction
  reference      the fp32 PyTorch reference on the evaluation text (edgepack.measure.quality,
                 cached)
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
    """Warm-up on prompts[0], then repetition i on prompts[i] of
    generate(prompt, n) -> (first_token_s, decode_tokens_per_s, tokens, prompt_tokens_processed)."""
    prompts = spec["prompts"]
    if len(prompts) != spec["repetitions"] + 1:
        raise ValueError(f"{len(prompts)} prompts for 1 warm-up + {spec['repetitions']} runs")
    start = time.perf_counter()
    generate(prompts[0], min(WARMUP_TOKENS, spec["tokens"]))
    warmup_s = time.perf_counter() - start
    first, decode, processed, tokens = [], [], [], []
    for prompt in prompts[1:]:
        first_s, tps, tokens, fed = generate(prompt, spec["tokens"])
        if len(tokens) != spec["tokens"]:
            raise RuntimeError(f"generated {len(tokens)} tokens, asked for {spec['tokens']}")
        first.append(first_s * 1000)
        decode.append(tps)
        processed.append(fed)
    return {
        "warmup_s": warmup_s,
        "first_token_ms": first,
        "decode_tokens_per_s": decode,
        "prompt_tokens_processed": processed,
        "tokens": tokens,  # the last repetition's: the same prompt in every variant
    }


def _torch_threads(spec: dict) -> int:
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    return torch.get_num_threads()


def hf_generate(model, spec: dict):
    """A generate(prompt, n) over a transformers-style model, timed by a streamer: generate()
    hands the streamer the prompt first, then every new token as soon as it is chosen. Each call
    starts without a cache (generate() makes a new one), so a prompt is processed whole."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def generate(prompt: list[int], n: int):
        ids = torch.tensor([prompt], dtype=torch.long)
        clock = Clock()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
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
        return first, decode, tokens, None

    return generate


def transformers_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    threads = _torch_threads(spec)
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"], dtype=torch.float32, attn_implementation="eager"
    ).eval()
    load_s = time.perf_counter() - start
    api = f"transformers {transformers.__version__} fp32 eager generate (torch {torch.__version__})"
    figures = {"api": api, "load_s": load_s, "threads": threads}
    return figures | timed_runs(hf_generate(model, spec), spec)


def llama_cpp_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import llama_cpp

    kwargs = {"n_threads": spec["threads"], "n_threads_batch": spec["threads"]}
    llm = llama_cpp.Llama(
        model_path=os.path.join(spec["model_dir"], "model.gguf"),
        n_ctx=spec["n_ctx"],
        verbose=False,
        **(kwargs if spec["threads"] else {}),  # 0: llama-cpp-python's default, half the cores
    )
    load_s = time.perf_counter() - start
    perf = getattr(llama_cpp, "llama_perf_context", None)

    def generate(prompt: list[int], n: int):
        # nothing carries over: reset() forgets the evaluated tokens, so Llama.generate finds no
        # prefix to keep (the prompts also differ from their first token) and eval() drops the
        # KV cache from position 0
        llm.reset()
        if perf is not None:
            llama_cpp.llama_perf_context_reset(llm.ctx)
        tokens, times = [], []
        start = time.perf_counter()
        for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            times.append(time.perf_counter())
            tokens.append(int(token))
            if len(tokens) == n:
                break
        fed = int(perf(llm.ctx).n_p_eval) if perf is not None else None
        decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return times[0] - start, decode, tokens, fed

    api = f"llama-cpp-python {llama_cpp.__version__} Llama.generate (greedy)"
    threads = {"n_threads": llm.n_threads, "n_threads_batch": llm.n_threads_batch}
    figures = {"api": api, "load_s": load_s, "threads": threads}
    return figures | timed_runs(generate, spec)


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
    runs = timed_runs(hf_generate(model, spec), spec)
    try:  # as the compiled model reports it (0: the plugin decides per stream)
        threads = int(model.request.get_compiled_model().get_property("INFERENCE_NUM_THREADS"))
    except Exception:  # noqa: BLE001 - optimum's internals vary by version
        threads = spec["threads"] or None
    return {"api": api, "load_s": load_s, "threads": threads} | runs


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

    def generate(prompt: list[int], n: int):
        gen = og.GenerationConfig()
        gen.max_new_tokens = n
        gen.ignore_eos = True
        result = pipe.generate(ov.Tensor(np.asarray([prompt], dtype=np.int64)), gen)
        metrics = result.perf_metrics
        tpot_ms = metrics.get_tpot().mean
        tokens = [int(t) for t in result.tokens[0]]
        # the prompt tokens genai fed the model: fewer than the prompt when it reused a prefix
        fed = int(metrics.get_num_input_tokens())
        return metrics.get_ttft().mean / 1000, 1000 / tpot_ms, tokens, fed

    api = f"openvino-genai {og.__version__} LLMPipeline.generate (perf_metrics TTFT, TPOT)"
    figures = {"api": api, "load_s": load_s, "threads": spec["threads"] or None}
    return figures | timed_runs(generate, spec)


def og_variant(spec: dict) -> dict:
    """onnxruntime-genai's own loop, as its examples run it: append the prompt, then
    generate_next_token until the length (greedy search options, its own argmax)."""
    start = time.perf_counter()  # load_s: imports and model load
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(spec["model_dir"])
    if spec["threads"]:
        options = {"intra_op_num_threads": spec["threads"]}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    load_s = time.perf_counter() - start

    def generate(prompt: list[int], n: int):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + n, do_sample=False)
        generator = og.Generator(model, params)
        begin = time.perf_counter()
        generator.append_tokens(np.asarray([prompt], dtype=np.int32))
        generator.generate_next_token()
        first = time.perf_counter() - begin
        tokens = [int(generator.get_next_tokens()[0])]
        begin = time.perf_counter()
        while len(tokens) < n:
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        rest = time.perf_counter() - begin
        return first, (len(tokens) - 1) / rest if rest > 0 else 0.0, tokens, len(prompt)

    api = f"onnxruntime-genai {og.__version__} Generator.generate_next_token"
    figures = {"api": api, "load_s": load_s, "threads": spec["threads"] or None}
    return figures | timed_runs(generate, spec)


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
    figures = {"api": api, "load_s": load_s, "threads": spec["threads"] or None}
    return figures | timed_runs(hf_generate(model, spec), spec)


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

    def generate(prompt: list[int], n: int):
        gen = runner.generate(prompt, n, stop_at_eos=False)
        fed = getattr(gen, "prompt_tokens_processed", None)
        return gen.first_token_s, gen.decode_tokens_per_s, gen.tokens, fed

    module = sys.modules["devicekit"].RUNNERS[spec["runtime"]]
    api = f"the bundle's {module}.py via devicekit.load_runner ({runner.version()})"
    figures = {"api": api, "load_s": load_s, "threads": getattr(runner, "threads", None)}
    return figures | timed_runs(generate, spec)


def _eval_reference(spec: dict):
    from pathlib import Path

    from edgepack.cache import cache_root
    from edgepack.measure.quality import cached_reference_eval

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
    from edgepack.measure.quality import measure

    ref = _eval_reference(spec)  # cached by the reference process: no torch here
    start = time.perf_counter()
    quality = measure(_kit_runner(spec), ref).to_dict()
    return quality | {"seconds": time.perf_counter() - start}


def check_variant(spec: dict) -> dict:
    """The bundle's own check.py with this python, from outside the bundle, as a device runs it:
    its figures as check.py measured them (a FAIL against the budgets is still a figure)."""
    import subprocess

    cmd = [sys.executable, os.path.join(spec["bundle"], "check.py"), "--json"]
    cmd += ["--repetitions", str(spec["repetitions"])]
    cmd += ["--threads", str(spec["threads"])] if spec["threads"] else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=spec["cwd"])
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {}
    m = {k: v for k, v in (report.get("measured") or {}).items() if k != "golden"}
    if proc.returncode not in (0, 1) or "decode_tokens_per_s_p50" not in m:
        why = report.get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"check.py exited {proc.returncode}: {why}")
    shown = " ".join(["check.py", *cmd[2:]])
    return {
        "api": f"{shown} ({report['runtime']} {m.get('runtime_version')}): {report['verdict']}",
        "decode_tokens_per_s_p50": m["decode_tokens_per_s_p50"],
        "first_token_ms_p50": m["first_token_ms_p50"],
        "peak_rss_bytes": m["peak_rss_bytes"],  # check.py's measuring child, not this process
        "load_s": m["load_s"],
        "warmup_s": 0.0,  # check.py does not report its warm-up apart
        "threads": m.get("threads"),
        "prompt_tokens": m.get("prompt_tokens"),
        "prompt_tokens_processed": m.get("prompt_tokens_processed") or [],
        "verdict": report["verdict"],
        "measured": m,
    }


def calibrate_variant(spec: dict) -> dict:
    """Before and after calibration for one bundle and target (spec "target": a profile name or
    file; None: the manifest's): the planner's prior, the build's calibrated device prediction,
    edgepack.plan.speed_calibration's prediction from spec "measured" (a check's figures; this
    host's bandwidth probe runs here) and that measurement."""
    with open(os.path.join(spec["bundle"], "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    keys = ("decode_tokens_per_s", "first_token_ms", "memory_bytes")
    m = spec["measured"]
    out = {
        "target": manifest["target"]["name"],
        "prior": {k: manifest["predicted"].get(k) for k in keys} | {"source": "manifest"},
        "build": None,
        "measured": {
            "decode_tokens_per_s": m["decode_tokens_per_s_p50"],
            "first_token_ms": m["first_token_ms_p50"],
            "memory_bytes": m["peak_rss_bytes"],
        },
    }
    try:
        out |= _calibrated(spec, manifest, keys)
    except Exception as exc:  # noqa: BLE001 - recorded and printed with its reason
        out["calibrated"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    if out["target"] == manifest["target"]["name"] and manifest.get("device_prediction"):
        dev = manifest["device_prediction"]
        out["build"] = {k: dev.get(k) for k in (*keys[:2], "basis")}
    return out


def _calibrated(spec: dict, manifest: dict, keys: tuple) -> dict:
    from edgepack.device.profiles import load_profile, parse_profile
    from edgepack.export.registry import FORMATS
    from edgepack.export.support import inspect_model
    from edgepack.plan.planner import Candidate, Prediction, predict
    from edgepack.plan.speed_calibration import device_prediction, host_machine

    facts = inspect_model(manifest["source_model"]["path"])
    if spec.get("target"):
        profile = load_profile(spec["target"])
    else:
        profile = parse_profile(manifest["target"], source="the bundle's manifest")
    c = manifest["plan"]  # rebuilt as edgepack.plan.planner.Plan.from_dict does
    fields = {**c, "predicted": Prediction(**c["predicted"])}
    fields |= {"reasons": tuple(c["reasons"]), "violations": tuple(c["violations"])}
    candidate = Candidate(**fields)
    host = host_machine()
    cal = device_prediction(facts, profile, candidate, spec["measured"], host)
    out = {"calibrated": {k: cal.get(k) for k in (*keys[:2], "basis", "ranked_by")}}
    out |= {"host": host, "target": profile.name}
    if profile.name != manifest["target"]["name"]:  # another target: the planner's prior for it
        fmt = FORMATS[candidate.format]
        prior = predict(
            facts,
            profile,
            fmt,
            fmt.precision(candidate.precision),
            candidate.student_layers,
            candidate.device == "gpu",
        )
        out["prior"] = {k: getattr(prior, k) for k in keys} | {"source": "planner"}
    return out


VARIANTS = {
    "transformers": transformers_variant,
    "llama_cpp": llama_cpp_variant,
    "optimum_ov": optimum_ov_variant,
    "genai": genai_variant,
    "optimum_ort": optimum_ort_variant,
    "og": og_variant,
    "runner": runner_variant,
    "reference": reference_variant,
    "quality": quality_variant,
    "check": check_variant,
    "calibrate": calibrate_variant,
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
