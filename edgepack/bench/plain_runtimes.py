"""The plain tools, each through its own API and no edgepack code: transformers (the fp32
source), llama-cpp-python, optimum-intel and openvino-genai, optimum's ONNX Runtime model and
onnxruntime-genai. Each variant loads its model and times greedy generation on cold prompts."""

from __future__ import annotations

import json
import os
import time

from .timed import hf_generate, timed_runs, torch_threads


def transformers_variant(spec: dict) -> dict:
    start = time.perf_counter()  # load_s: imports and model load
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    threads = torch_threads(spec)
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
        use_mmap=False,  # read into memory, as the bundle's runner does on a CPU
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

    torch_threads(spec)
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

    torch_threads(spec)
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
