"""The measuring processes of tools/bench.py: one variant per process, one JSON line on stdout.

    python -m edgepack.bench.child SPEC.json

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
import sys

from .bundle_runs import (
    calibrate_variant,
    check_variant,
    quality_variant,
    reference_variant,
    runner_variant,
)
from .plain_runtimes import (
    genai_variant,
    llama_cpp_variant,
    og_variant,
    optimum_ort_variant,
    optimum_ov_variant,
    transformers_variant,
)


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    try:
        result = VARIANTS[spec["variant"]](spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent with its type
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0


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
