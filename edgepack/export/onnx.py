"""ONNX for ONNX Runtime: optimum's exporter, then ONNX Runtime's own quantizers.

fp32   the optimum export itself (`text-generation-with-past` for decoders: one model that takes
       and returns the KV cache and also runs the prompt with an empty past;
       `feature-extraction` for encoders).
fp16   onnxruntime.transformers' float16 converter; inputs/outputs (KV cache, logits) in fp16.
int8   8-bit MatMulNBits (`MatMulNBitsQuantizer`, bits=8), asymmetric, per block, with
       accuracy_level 4: int8 compute, activations quantized per block at run time. Measured on
       the default model (ONNX Runtime 1.32, 2 threads): top-1 agreement 0.93, 19 tok/s; the
       same weights with fp32 compute (accuracy_level 0) agree 0.98 but decode at 1.7 tok/s.
       `quantize_dynamic` (per-channel int8 weights, QInt8 or QUInt8 alike) quantizes each
       MatMul's activations per tensor, and the outliers entering down_proj leave only 0.59
       top-1 agreement (0.85 with every down_proj kept fp32), so it is not used.
int4   4-bit MatMulNBits, asymmetric, per block, fp32 compute (agreement 0.69, 15 tok/s).
int8_static  ONNX Runtime's static int8 (`quantize_static`, QDQ): weights per channel in 7 bits
       (reduce_range), activations uint8 per tensor with fixed ranges calibrated (MinMax) on the
       calibration text (the built-in text when none is given), fed to the decoder's prompt pass
       with an empty KV cache. The MLP output projections (the MatMuls reading intermediate_size)
       get int8's 8-bit MatMulNBits instead: a fixed per-tensor range cannot hold the outliers
       entering them. 7-bit weights because x86 CPUs without VNNI (AVX2 alone) multiply uint8 by
       int8 in int16 pairs that saturate (ORT's documented U8S8 caveat): with full 8-bit weights the
       export, which had validated on an earlier build host, agreed 0.20 at confident positions on
       an AVX2-only AMD EPYC. Measured on that EPYC (16 samples of 128 tokens, 2 threads): confident
       top-1 0.964, mean KL 0.096 on the agreement text (int8: 1.0, 0.005), WikiText-2 retention
       0.929 (95 % interval 0.918-0.940; int8: 0.997); earlier, with 8-bit weights on the earlier
       host, 25-31 tok/s (int8: 27). Every projection static (down_proj too) fails validation
       (confident top-1 0.48); int8 activations (QInt8) instead of uint8 keep the QDQ MatMuls
       unfused (3 tok/s); Percentile calibration was worse than MinMax (KL 0.100 vs 0.085, down_proj
       kept fp32).
int4_mixed  int4's MatMulNBits at 4 bits, except the MatMuls of the first and the last block
       and every MLP output projection (the MatMuls reading intermediate_size, where the
       activation outliers are), which get int8's 8-bit MatMulNBits: a second pass of the same
       quantizer on those nodes only.

The block size is the largest of 128, 64, 32 that divides the MatMul input dimensions. The token
embedding Gather (and an output head tied to it, which the export computes from a Transpose of
the embedding) is not a constant MatMul weight and stays fp32.

Every artifact is saved as model.onnx plus its weights in model.onnx_data (ONNX external data,
the name optimum uses), so models over the 2 GB protobuf limit work the same way.

The fp32 optimum export is the slow step (about 20 s of the default model's 22-26 s export): it
is kept for the life of the process that asked for the export, its owner, and reused as the base
of every precision. The export runs in a child process (edgepack.export.isolated), which names
its parent as the owner (OWNER_ENV), so the base outlives each child: one model at a time, in
<edgepack cache>/work/.edgepack-onnx-base-OWNERPID-KEY, written under a temporary name and
renamed when complete; it is deleted when another model's base replaces it and when the owner
exits (this module's exit hook, registered in the owner because it imports this module), and a
killed owner's leftover is removed by the next export.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from ..cache import alive, cache_root, content_key
from ..errors import ExportError, UnsupportedModelError
from ..measure import calibration_text as cal
from ..model.facts import ModelFacts
from .base import Artifact, Progress, check_supported
from .isolated import OWNER_ENV  # the pid whose life keeps the base (default: this process)
from .onnx_quantize import convert_data_free
from .onnx_static import static_int8
from .registry import FORMATS, Precision

FORMAT = "onnx"
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"  # optimum's name for a model's external data
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
CONFIG_FILES = ("config.json", "generation_config.json")
TASKS = {"decoder": "text-generation-with-past", "encoder": "feature-extraction"}
WEIGHT_OPS = ("MatMul", "Gemm", "Gather")
BASE_PREFIX = ".edgepack-onnx-base-"  # + owner pid + model key: the kept fp32 export
BASE_RECORD = "edgepack-base.json"  # in a complete base: how long its export took


def check(facts: ModelFacts, precision: Precision) -> None:
    check_supported(facts, FORMAT)
    fmt = FORMATS[FORMAT]
    if fmt.precision(precision.name) != precision:
        names = ", ".join(p.name for p in fmt.precisions)
        raise UnsupportedModelError(
            f"format onnx has no precision {precision.name}; choose one of {names}"
        )
    if facts.kind not in TASKS:
        raise UnsupportedModelError(
            f"format onnx exports decoders and encoders, not {facts.architecture} ({facts.kind})"
        )
    if precision.name == "int8_static" and facts.kind != "decoder":
        raise UnsupportedModelError(
            f"onnx int8_static calibrates decoders; for {facts.architecture} choose int8"
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
    """`calibration`: the calibration text, for the precisions the registry marks as using one."""
    check(facts, precision)
    model_dir, out = Path(model_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ExportError(f"output directory {out} is not empty; give a new or empty directory")
    start = time.perf_counter()
    base, base_details = _base_export(model_dir, facts, progress)
    try:
        text = cal.effective(precision.calibration, calibration)
        model, details = _convert(base / MODEL_FILE, facts, precision, progress, model_dir, text)
        progress(f"saving {MODEL_FILE} + {DATA_FILE}")
        _save(model, out)
        if precision.bits < 16:
            details["float_weight_nodes"] = _float_weight_nodes(model)
        del model
        _copy_side_files(model_dir, base, out)
    except ExportError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - any library failure becomes one ExportError
        shutil.rmtree(out, ignore_errors=True)
        raise ExportError(
            f"ONNX {precision.name} conversion of {model_dir.name} failed: "
            f"{type(exc).__name__}: {exc}; re-run with the fp32 precision to isolate the step"
        ) from exc
    details = {
        **base_details,
        **details,
        "versions": _versions(),
        "export_s": round(time.perf_counter() - start, 1),
        "files": [MODEL_FILE, DATA_FILE],
    }
    return Artifact(FORMAT, precision.name, "onnxruntime", out, facts.kind, details)


def clear_cache() -> None:
    """Delete the fp32 exports this process owns (also done at process exit)."""
    _remove_bases(os.getpid())


atexit.register(clear_cache)


def _owner() -> int:
    value = os.environ.get(OWNER_ENV, "")
    return int(value) if value.isdigit() else os.getpid()


def _remove_bases(owner: int, keep: Path | None = None) -> None:
    work = cache_root() / "work"
    for path in work.glob(f"{BASE_PREFIX}{owner}-*"):
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


def _base_dir(model_dir: Path) -> Path:
    """Where the owner's base of model_dir lives, under edgepack's cache (the caller's output
    directory may be a staging directory that is removed after each export); leftovers of
    killed owners are removed first."""
    work = cache_root() / "work"
    work.mkdir(parents=True, exist_ok=True)
    for path in work.glob(f"{BASE_PREFIX}*"):
        pid = path.name.removeprefix(BASE_PREFIX).split("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    where = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:8]
    return work / f"{BASE_PREFIX}{_owner()}-{content_key(model_dir)}-{where}"


def _base_export(model_dir: Path, facts: ModelFacts, progress: Progress) -> tuple[Path, dict]:
    """The fp32 optimum export of model_dir, the owner's kept one when it is there."""
    task = TASKS[facts.kind]
    details = {"task": task, "exporter": "optimum.exporters.onnx.main_export"}
    base = _base_dir(model_dir)
    if (base / BASE_RECORD).is_file() and (base / MODEL_FILE).is_file():
        progress(f"reusing this build's fp32 ONNX export of {model_dir.name}")
        seconds = json.loads((base / BASE_RECORD).read_text())["export_s"]
        return base, details | _opset(base / MODEL_FILE) | {
            "base_export_s": seconds,
            "base_reused": True,
        }
    _remove_bases(_owner())  # one model's base at a time
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"{base.name}-partial-", dir=base.parent))
    progress(f"exporting {model_dir.name} to ONNX with optimum ({task}), fp32")
    try:
        from optimum.exporters.onnx import main_export

        main_export(
            str(model_dir),
            output=str(tmp),
            task=task,
            library_name="transformers",
            framework="pt",
            device="cpu",
            dtype="fp32",
            local_files_only=True,
            do_validation=False,  # edgepack validates every artifact against its own reference
            trust_remote_code=facts.remote_code,
        )
    except Exception as exc:  # noqa: BLE001
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(
            f"optimum's ONNX export of {model_dir.name} ({facts.architecture}, task {task}) "
            f"failed: {type(exc).__name__}: {exc}; check that optimum-onnx supports this "
            "architecture (`optimum-cli export onnx --help`)"
        ) from exc
    if not (tmp / MODEL_FILE).is_file():
        produced = ", ".join(sorted(p.name for p in tmp.iterdir()))
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(
            f"optimum's ONNX export of {model_dir.name} wrote no single {MODEL_FILE} "
            f"(it wrote: {produced}); edgepack needs one model with the KV cache in and out"
        )
    seconds = round(time.perf_counter() - start, 1)
    (tmp / BASE_RECORD).write_text(json.dumps({"export_s": seconds}))
    tmp.rename(base)
    details |= {"base_export_s": seconds, "base_reused": False}
    return base, details | _opset(base / MODEL_FILE)


def _convert(
    base_model: Path,
    facts: ModelFacts,
    precision: Precision,
    progress: Progress,
    model_dir: Path,
    text: str | None,
):
    """(ModelProto of the precision, details) from the fp32 base model file."""
    if precision.name == "int8_static":
        return static_int8(base_model, facts, progress, model_dir, text)
    model, details = convert_data_free(base_model, facts, precision, progress)
    details["calibration"] = {"used": False, "method": "data-free"}
    return model, details


def _save(model, out: Path) -> None:
    """model.onnx + model.onnx_data: external data works past protobuf's 2 GB limit."""
    import onnx

    onnx.save_model(
        model,
        str(out / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    data = out / DATA_FILE
    if not data.exists():  # a model without large initializers still gets its (empty) data file
        data.touch()
    data.chmod(0o644)  # onnx creates it owner-only; the bundle's readers need it readable


def _copy_side_files(model_dir: Path, base: Path, out: Path) -> None:
    """Tokenizer files from the source (exactly what the reference used), configs from optimum."""
    tokenizer_dir = model_dir if (model_dir / "tokenizer.json").is_file() else base
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out / name)
    for name in CONFIG_FILES:
        src = base / name if (base / name).is_file() else model_dir / name
        if src.is_file():
            shutil.copyfile(src, out / name)
    if not (out / "tokenizer.json").is_file():
        raise ExportError(
            f"{model_dir} has no tokenizer.json (and optimum wrote none); the ONNX Runtime kit "
            "tokenizes with it: save the model's fast tokenizer into the model directory"
        )


def _opset(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return {"opset": opsets.get("ai.onnx"), "ir_version": model.ir_version}


def _float_weight_nodes(model) -> list[str]:
    """MatMul/Gemm/Gather nodes that still read a float weight matrix (directly or through a
    Transpose of one), i.e. what the quantizer left in floating point."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    weights = {
        init.name
        for init in model.graph.initializer
        if init.data_type in floats and len(init.dims) == 2
    }
    for node in model.graph.node:
        if node.op_type in ("Transpose", "Cast", "Identity") and node.input[0] in weights:
            weights.update(node.output)
    return [
        node.name
        for node in model.graph.node
        if node.op_type in WEIGHT_OPS and any(i in weights for i in node.input)
    ]


def _versions() -> dict:
    versions = {}
    for dist in ("optimum", "optimum-onnx", "onnx", "onnxruntime", "transformers", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions
