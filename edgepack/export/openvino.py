"""OpenVINO IR: optimum-intel's exporter, weights compressed by NNCF through optimum-intel.

The same two steps `optimum-cli export openvino --weight-format ...` runs: `main_export` writes a
stateful IR (the KV cache lives in the model's state variables) plus the OpenVINO tokenizer and
detokenizer IRs into a sibling temp dir, then optimum-intel's quantize step compresses the weights
with NNCF in place; the finished files are moved into `out`.

Precisions: fp16 (weights stored in fp16, decompressed at run time), int8 (per-channel,
asymmetric), int4 (asymmetric, groups along the input dimension), int4_sym, int4_mixed (int4
asymmetric for MIXED_RATIO of the weights, the layers NNCF ranks most sensitive in int8), and
the always data-aware int4_g32 (groups of 32) and int4_all (groups of 32, every layer: the
embedding and the head too). For int4 the group size is the largest of 128, 64, 32 (GROUPS: a
row's own) that divides every compressed input dimension; the embedding and the output head
stay in NNCF's backup precision (int8 asymmetric, per channel) unless all_layers; the share of
4-bit weights is `ratio` (1.0 by default).

4-bit weights without a calibration text: data-free AWQ rescales the MLP weights first (scales
from per-column weight magnitudes), and int4_mixed ranks layers by their weight quantization
error. With a calibration text (edgepack.measure.calibration_text): data-aware AWQ and scale
estimation from the activations on that text, and int4_mixed ranks layers by the Hessian of their
inputs (SENSITIVITY, passed: NNCF's default with data is max_activation_variance). GPTQ on top
of scale estimation took 6 minutes more on the default model and kept less (int4_all, group 64:
0.775 against 0.792). Every artifact records which in details["calibration"].

fp16 artifacts should run with INFERENCE_PRECISION_HINT=f32 on CPUs with bf16 (the kit's runner
does): the CPU plugin's bf16 default moves this model's logits by ~1 and flips near-ties.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from ..errors import ExportError, UnsupportedModelError
from ..measure import calibration_text as cal
from ..model.facts import ModelFacts
from . import weight_types
from .base import Artifact, Progress, check_supported
from .registry import FORMATS, Precision

FORMAT = "openvino"
RUNTIME = "openvino"
DEFAULT_RATIO = 1.0  # share of the ratio-defining weights in 4 bits; the rest in backup precision
BACKUP_PRECISION = "int8_asym"  # NNCF's default, stated so the manifest says it
# Data-free AWQ (scales from per-column weight magnitudes; no calibration data). On the default
# model it cut the mean KL divergence to the fp32 reference on the agreement text from 0.326 to
# 0.239 (int4_asym g64) and from 0.323 to 0.243 (int4_sym), for ~5 s more export time.
INT4_AWQ = True
GROUP_SIZES = (128, 64, 32)
MIXED_RATIO = 0.8  # int4_mixed: share of the ratio-defining weights in int4, the rest int8
# calibration samples (windows of the calibration text, in the source tokenizer's tokens)
CALIBRATION_SAMPLES = 32
CALIBRATION_TOKENS = 128

# precision name -> (NNCF mode, bits, symmetric); None bits = fp16 storage, no NNCF
_MODES = {
    "fp16": ("fp16", None, None),
    "int8": ("int8_asym", 8, False),
    "int4": ("int4_asym", 4, False),
    "int4_sym": ("int4_sym", 4, True),
    "int4_mixed": ("int4_asym", 4, False),
    "int4_g32": ("int4_asym", 4, False),
    "int4_all": ("int4_asym", 4, False),
}
# 4-bit precisions that compress every layer (NNCF's all_layers: the token embedding and the
# output head too, a tied pair once)
ALL_LAYERS = frozenset({"int4_all"})
# 4-bit precisions with a group size of their own (the largest of GROUP_SIZES otherwise). On
# the default model, data-aware, group 32 kept 0.908 of WikiText-2 perplexity where group 64
# kept 0.863 with 20 % of the weights in int8 (int4_mixed); all layers 0.824 against 0.792
GROUPS = {"int4_g32": (32,), "int4_all": (32,)}
# with a calibration text, how int4/int8 are assigned where ratio < 1 (NNCF's default with a
# dataset is max_activation_variance; the Hessian of the layer inputs is stated here)
SENSITIVITY = "hessian_input_activation"
_DECODER_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "config.json",
    "generation_config.json",
)
_ENCODER_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "config.json",
)


def int4_group_size(*dims: int, sizes: tuple[int, ...] = GROUP_SIZES) -> int | None:
    """The largest of `sizes` (128, 64, 32) that divides every dimension, or None."""
    for size in sizes:
        if all(d % size == 0 for d in dims):
            return size
    return None


def compressed_dims(facts: ModelFacts) -> tuple[int, ...]:
    """Input dimensions of the linear weights that int4 compresses in groups.

    q/k/v, gate/up (or an encoder's intermediate dense) read hidden_size, the attention output
    reads heads x head_dim, the down projection reads intermediate_size. The embedding and the
    output head are per-channel in the backup precision and need no group.
    """
    return (
        facts.hidden_size,
        facts.num_attention_heads * facts.head_dim,
        facts.intermediate_size,
    )


def _mode(precision: Precision) -> tuple[str, int | None, bool | None]:
    mode = _MODES.get(precision.name)
    if mode is None or FORMATS[FORMAT].precision(precision.name) is None:
        raise UnsupportedModelError(
            f"format {FORMAT} has no precision {precision.name!r}; choose one of "
            f"{', '.join(_MODES)}"
        )
    return mode


def check(facts: ModelFacts, precision: Precision) -> None:
    check_supported(facts, FORMAT)
    _, bits, _ = _mode(precision)
    sizes = GROUPS.get(precision.name, GROUP_SIZES)
    if bits == 4 and int4_group_size(*compressed_dims(facts), sizes=sizes) is None:
        raise UnsupportedModelError(
            f"OpenVINO int4 needs weight input dimensions divisible by 32; {facts.architecture} "
            f"has {', '.join(map(str, compressed_dims(facts)))}: choose int8 or fp16"
        )


def export(
    model_dir: Path,
    facts: ModelFacts,
    precision: Precision,
    out: Path,
    progress: Progress,
    *,
    ratio: float | None = None,
    calibration: str | None = None,
) -> Artifact:
    """`ratio`: share of int4 weights (default 1.0, MIXED_RATIO for int4_mixed); `calibration`:
    the calibration text, used by the 4-bit precisions (data-aware AWQ + scale estimation)."""
    check(facts, precision)
    mode, bits, sym = _mode(precision)
    if ratio is None:
        ratio = MIXED_RATIO if precision.name == "int4_mixed" else DEFAULT_RATIO
    all_layers = precision.name in ALL_LAYERS
    if bits == 4 and not 0.0 < ratio <= 1.0:
        raise ExportError(f"int4 ratio must be in (0, 1], got {ratio}: pass e.g. ratio=0.8")
    sizes = GROUPS.get(precision.name, GROUP_SIZES)
    group_size = int4_group_size(*compressed_dims(facts), sizes=sizes) if bits == 4 else None
    decoder = facts.kind == "decoder"
    text = cal.effective(precision.calibration, calibration)
    if text is not None and not decoder:
        text = None  # optimum-intel calibrates decoders from text; encoders stay data-free
    calibration_record = {"used": False, "method": "data-free"}
    task = "text-generation-with-past" if decoder else "feature-extraction"
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"output directory {out} is not empty: give a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)

    try:
        from optimum.exporters.openvino.__main__ import _main_quantize, main_export
        from optimum.intel.openvino.configuration import OVConfig, OVWeightQuantizationConfig
    except ImportError as exc:
        raise ExportError(
            f"optimum-intel's OpenVINO exporter is not importable ({exc}); install "
            "optimum-intel[openvino] and nncf"
        ) from None

    qconfig = None
    if bits == 8:
        qconfig = OVWeightQuantizationConfig(bits=8, sym=False)  # per-channel, asymmetric
    elif bits == 4:
        data = {}
        if text is not None:
            progress("cutting the calibration text into samples")
            samples = cal.text_samples(model_dir, text, CALIBRATION_SAMPLES, CALIBRATION_TOKENS)
            data = {
                "dataset": samples,
                "tokenizer": str(model_dir),
                "num_samples": len(samples),
                "scale_estimation": True,
            }
            method = "NNCF data-aware AWQ + scale estimation"
            if ratio < 1.0:
                data["sensitivity_metric"] = SENSITIVITY
                method += f", int4/int8 assignment by {SENSITIVITY}"
            calibration_record = {
                "used": True,
                **cal.describe(text),
                "samples": len(samples),
                "sample_tokens": CALIBRATION_TOKENS,
                "method": method,
            }
        elif ratio < 1.0:
            calibration_record["method"] = (
                "data-free (AWQ from weight magnitudes; int4/int8 assignment by "
                "weight_quantization_error)"
            )
        qconfig = OVWeightQuantizationConfig(
            bits=4,
            sym=sym,
            group_size=group_size,
            ratio=ratio,
            backup_precision=BACKUP_PRECISION,
            quant_method="awq" if INT4_AWQ else "default",
            all_layers=all_layers,
            **data,
        )
    ov_config = OVConfig(dtype="fp16") if qconfig is None else OVConfig(quantization_config=qconfig)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    timings = {}
    try:
        progress(f"exporting {facts.architecture} to OpenVINO IR ({task}, stateful)")
        start = time.perf_counter()
        try:
            main_export(
                str(model_dir),
                output=tmp,
                task=task,
                ov_config=ov_config,
                stateful=decoder,
                convert_tokenizer=True,
                library_name="transformers",
                local_files_only=True,
                trust_remote_code=facts.remote_code,
            )
        except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one message
            raise ExportError(
                f"optimum-intel could not export {facts.architecture} to OpenVINO IR: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        timings["export_s"] = round(time.perf_counter() - start, 1)
        if qconfig is not None:
            what = mode
            if bits == 4:
                what += f", group {group_size}, ratio {ratio}"
                what += ", all layers" if all_layers else ""
                if INT4_AWQ:
                    what += ", data-aware AWQ" if text is not None else ", data-free AWQ"
                if text is not None:
                    what += ", scale estimation"
            progress(f"compressing weights with NNCF ({what})")
            start = time.perf_counter()
            try:
                _main_quantize(
                    str(model_dir),
                    task=task,
                    library_name="transformers",
                    quantization_config=qconfig,
                    output=str(tmp),
                    cache_dir=None,
                    trust_remote_code=facts.remote_code,
                )
            except Exception as exc:  # noqa: BLE001
                raise ExportError(
                    f"NNCF weight compression ({mode}) failed: {type(exc).__name__}: {exc}"
                ) from exc
            timings["compress_s"] = round(time.perf_counter() - start, 1)
        if decoder and not (tmp / "generation_config.json").exists():
            _write_generation_config(model_dir, tmp, facts.remote_code)
        _scrub_openvino_config(tmp / "openvino_config.json")
        required = _DECODER_FILES if decoder else _ENCODER_FILES
        missing = [name for name in required if not (tmp / name).is_file()]
        if missing:
            raise ExportError(
                f"the OpenVINO export lacks {', '.join(missing)}: the tokenizer conversion needs "
                "openvino-tokenizers and a fast tokenizer (tokenizer.json) in the model directory"
            )
        out.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            shutil.move(str(item), str(out / item.name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    details = {
        "tool": "optimum-intel main_export + NNCF weight compression",
        "task": task,
        "stateful": decoder,
        "mode": mode,
        "group_size": group_size if bits == 4 else (-1 if bits == 8 else None),
        "ratio": ratio if bits == 4 else (1.0 if bits == 8 else None),
        "backup_precision": BACKUP_PRECISION if bits == 4 else None,
        "all_layers": all_layers,
        "awq": _awq(bits, text),
        "scale_estimation": text is not None if bits == 4 else None,
        "calibration": calibration_record,
        **weight_types.summary(weight_types.openvino_types(out / "openvino_model.xml")),
        "versions": _versions(),
        **timings,
    }
    return Artifact(FORMAT, precision.name, RUNTIME, out, facts.kind, details)


def _awq(bits: int, text: str | None) -> str | None:
    if bits != 4 or not INT4_AWQ:
        return None
    return "data-aware" if text is not None else "data-free"


def _write_generation_config(model_dir: Path, out: Path, remote_code: bool) -> None:
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=remote_code)
    GenerationConfig.from_model_config(config).save_pretrained(out)


def _scrub_openvino_config(path: Path) -> None:
    """optimum-intel records the build host's model path as the quantization tokenizer: drop it."""
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    qc = data.get("quantization_config")
    if isinstance(qc, dict) and qc.get("tokenizer"):
        qc["tokenizer"] = None
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _versions() -> dict:
    versions = {}
    for package in ("optimum-intel", "openvino", "openvino-tokenizers", "nncf", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
