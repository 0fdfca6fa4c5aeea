"""ONNX for onnxruntime-genai: its own model builder (`onnxruntime_genai.models.builder`).

The builder writes a decoder graph with onnxruntime-genai's fused operators (GroupQueryAttention,
SkipSimplifiedLayerNormalization, MatMulNBits), genai_config.json and the tokenizer files, from
the Hugging Face directory, in one child process (it imports torch and transformers; a failure
there must not take the build down). Precisions map to its options:
- fp32: `-p fp32`;
- int8: `-p int8` with `shared_embeddings=false` (onnxruntime-genai 0.15.2 writes a shared int8
  embedding that refers to a 4-bit tensor it never wrote, and the model does not load);
- int4: `-p int4` (round-to-nearest, block 32, symmetric; a tied embedding and head share one
  4-bit matrix);
- int4_mixed: `-p int4` with `algo_config=k_quant_mixed` (k-quant int4, the head and the most
  quantization-sensitive MatMuls in int8, as llama.cpp's mixes choose them).
The source's config.json and generation_config.json are copied beside the model, so that the
kit knows the model's end-of-sequence tokens. optimum's ONNX export (the `onnx` format) stays
for encoders and for what the builder does not support.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ..errors import ExportError
from ..model.facts import ModelFacts
from . import weight_types
from .base import Artifact, Progress, check_supported
from .child import last_error, run, version
from .registry import Precision

FORMAT = "onnx-genai"
RUNTIME = "onnxruntime-genai"
BUILDER = "onnxruntime_genai.models.builder"
DIST = "onnxruntime-genai"
OPTIONS = {
    "fp32": ("fp32", []),
    "int8": ("int8", ["shared_embeddings=false"]),
    "int4": ("int4", []),
    "int4_mixed": ("int4", ["algo_config=k_quant_mixed"]),
}
# Measured on the default model (WikiText-2, 4096 tokens) and left out: k_quant for every
# MatMul with the tied embedding sharing the head's 4-bit matrix kept 0.746 (block 32; block 64
# fails in the 0.15.2 builder: "cannot reshape array of size 4320"), below int4's 0.817; the
# builder's accuracy_level 1 (fp32 activations) against the CPU default 4 (int8): 0.749 vs 0.746
SIDE_FILES = ("config.json", "generation_config.json")
BUILD_TIMEOUT_S = 3 * 3600


def check(facts: ModelFacts, precision: Precision) -> None:
    check_supported(facts, FORMAT)
    if facts.kind != "decoder":
        raise ExportError("onnx-genai exports decoders; use --format onnx for an encoder")


def export(
    model_dir: Path,
    facts: ModelFacts,
    precision: Precision,
    out: Path,
    progress: Progress,
    *,
    calibration: str | None = None,
) -> Artifact:
    check(facts, precision)
    model_dir, out = Path(model_dir), Path(out)
    kind, extra = OPTIONS[precision.name]
    progress(f"building the {precision.name} ONNX model with onnxruntime-genai's model builder")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".edgepack-genai-") as cache:
        cmd = [sys.executable, "-m", BUILDER, "-i", str(model_dir), "-o", str(out)]
        cmd += ["-p", kind, "-e", "cpu", "-c", cache]
        if extra:
            cmd += ["--extra_options", *extra]
        proc = run(cmd, BUILD_TIMEOUT_S, "onnxruntime-genai's model builder")
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        raise ExportError(
            f"onnxruntime-genai's model builder failed (exit {proc.returncode}): "
            f"{last_error(proc.stdout + proc.stderr)}"
        )
    for name in SIDE_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    details = {
        "exporter": f"{DIST} {version(DIST)} model builder",
        "builder_precision": kind,
        "builder_options": extra,
        "execution_provider": "cpu",
        "operators": _operators(out / "model.onnx"),
        **weight_types.summary(weight_types.onnx_types(out / "model.onnx")),
        "build_s": round(time.perf_counter() - start, 2),
    }
    return Artifact(FORMAT, precision.name, RUNTIME, out, facts.kind, details)


def _operators(path: Path) -> dict:
    """The graph's weight operators and their bit widths (the graph without its data)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts: Counter = Counter()
    for node in graph.node:
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized", "MatMul", "Gather"):
            bits = next((a.i for a in node.attribute if a.name == "bits"), None)
            counts[f"{node.op_type}{bits or ''}"] += 1
    return dict(sorted(counts.items()))


def builder_architectures() -> list[str]:
    """The architectures the installed builder has a model class for (its create_model's
    `config.architectures[0] == "..."` dispatch), read from its source."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec(BUILDER)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin:
        return []
    text = Path(spec.origin).read_text(encoding="utf-8", errors="replace")
    return sorted(set(re.findall(r'architectures\[0\] == "(\w+)"', text)))
