"""What building a candidate costs the build host: the peak memory of its stages (pure).

A build holds at most one heavy thing at a time (edgepack.build.pipeline): the PyTorch
reference, then the exporter's child processes, then the artifact in its runtime for
validation and quality, then the bundle's check in a child. Its peak is the largest stage,
each being the build's own process (PROCESS_BYTES: Python with torch, transformers and the
runtimes imported) plus what that stage holds:
- reference: the model in its reference dtype (edgepack.model.facts.reference_dtype) and one
  chunk's activations and logits;
- export, per format: GGUF's converter reads tensors lazily, its importance matrix and
  quantizer mmap the f16 GGUF (2 bytes a parameter); OpenVINO and ONNX hold the PyTorch model
  and the graph they trace from it (EXPORT_BYTES_PER_PARAMETER);
- validate and quality: the artifact in its runtime, as the plan predicts it on the device;
- check: the same, in the check's own process.
The factors are measured by tools/build_memory.py on random Llama-shaped 1B and 3B checkpoints
(the README's table); the prediction is a sum, not a fit, so that a new format's stage shows up
as a new term.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.facts import reference_dtype

GB = 1e9
PROCESS_BYTES = 0.9e9  # the build's own process before any model (tools/build_memory.py, 1B)
CHILD_BYTES = 0.35e9  # a child's Python with its library (llama_cpp, gguf) imported
# validation and quality: the reference's arrays and the runner's logits beside the artifact
# (measured: 1B GGUF q4_k_m 2.19 GB, 7B 6.47 GB, against the process and the runtime's 1.80, 6.32)
MEASURE_BYTES = 0.3e9
CHUNK_TOKENS = 512  # the longest input a reference evaluates at once (probes, eval chunks)
# what an export holds per parameter of the exported model, besides the build's process
# (tools/build_memory.py on a random 1B model: 1.17B parameters, a 2.35 GB bf16 checkpoint)
EXPORT_BYTES_PER_PARAMETER = {
    # the f16 GGUF, mmapped by the importance matrix (its process 2.50 GB) and the quantizer
    "gguf": 2.0,
    # optimum-intel loads the checkpoint in bf16 and traces it, NNCF compresses the graph
    # (its child process 4.13 GB; 8.97 and 9.65 GB in two runs of a 3B model)
    "openvino": 3.3,
    # optimum's ONNX exporter traces the model in float32 and serialises it, then ONNX
    # Runtime's quantizer loads the fp32 graph (its child process 11.77 GB)
    "onnx": 10.0,
    # onnxruntime-genai's model builder holds the PyTorch model and, to quantize, the whole
    # float32 graph (ir.to_proto before ONNX Runtime's MatMulNBits quantizer): its child process
    # 11.37 GB for int4, the build's tree 12.17 GB
    "onnx-genai": 9.4,
}


@dataclass(frozen=True)
class BuildCost:
    peak_bytes: int
    stage: str  # the stage that reaches the peak
    stages: dict  # stage -> bytes
    disk_bytes: int = 0  # what the build writes: export, bundle, tarball, GGUF's f16 base


def build_disk_bytes(fmt: str, parameters: int, artifact_bytes: int) -> int:
    """The export in the cache, the staged bundle, its tarball (at most the bundle: weights
    barely compress), and for GGUF the f16 base converted first (edgepack.build.space checks
    the same sums, less what the cache already holds, against the free space)."""
    return int(3 * artifact_bytes + (2 * parameters if fmt == "gguf" else 0))


def reference_bytes(parameters: int, hidden: int, vocab: int) -> int:
    """The reference stage: the model in its dtype, a chunk's hidden states and logits."""
    per = 4 if reference_dtype(parameters) == "float32" else 2
    activations = CHUNK_TOKENS * (16 * hidden + 2 * vocab) * 4
    return int(PROCESS_BYTES + per * parameters + activations)


def build_cost(
    fmt: str,
    teacher_parameters: int,
    parameters: int,
    hidden: int,
    vocab: int,
    runtime: int,
    artifact_bytes: int = 0,
) -> BuildCost:
    """The build's peak on its host for a candidate of `parameters` (a student's, or the
    model's) judged against a reference of `teacher_parameters`; runtime: the plan's predicted
    memory of the artifact in its runtime."""
    export = EXPORT_BYTES_PER_PARAMETER.get(fmt, 6.0) * parameters + CHILD_BYTES
    stages = {
        "reference": reference_bytes(teacher_parameters, hidden, vocab),
        "export": int(PROCESS_BYTES + export),
        # one compiled copy of the artifact at a time (the OpenVINO runner drops its compiled
        # IR before genai's pipeline compiles its own: both together took the 1B int8 build's
        # quality stage to 5.39 GB, one at a time 3.53 GB)
        "validate and quality": int(PROCESS_BYTES + runtime + MEASURE_BYTES),
        "check": int(PROCESS_BYTES + runtime + CHILD_BYTES),
    }
    stage = max(stages, key=stages.get)
    disk = build_disk_bytes(fmt, parameters, artifact_bytes)
    return BuildCost(stages[stage], stage, stages, disk)
