"""Size against quality: every candidate's weight bytes, bits per weight and retention.

    .venv/bin/python tools/quant_table.py [--model DIR] [--candidates FMT:PREC,...]
        [--eval-tokens N] [--calibration FILE] [--json FILE]
    .venv/bin/python tools/quant_table.py --from FILE     # the table of a saved --json run

Each candidate is exported (or taken from edgepack's export cache, $EDGEPACK_CACHE), loaded
through the on-device runner (what bundles run) and scored on WikiText-2 (--eval-tokens scored
tokens, 4096 by default, as a build does). For each: the model's weight files in MB, bits per
weight (8 x bytes / parameters), how much smaller than the same parameters in fp32, retention
with its 95 % interval, the KL divergence to the fp32 reference, the export's seconds (its
calibration's where data-aware) and the weight types the export wrote. The two lines of issue
22 are marked: >= 80 % smaller at >= 0.98 retention, >= 85 % smaller at >= 0.963.
Tables go to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgepack.export.base import size_figures  # noqa: E402
from edgepack.measure import quality as q  # noqa: E402

CANDIDATES = (
    "gguf:q8_0,gguf:q5_k_m,gguf:q4_k_m,gguf:q4_1,gguf:iq4_nl,gguf:bpw4.80,"
    "openvino:int8,openvino:int4_mixed,openvino:int4_g32,openvino:int4_all,"
    "onnx-genai:int8,onnx-genai:int4_mixed,onnx-genai:int4"
)
LINES = ((0.80, 0.98), (0.85, 0.963))  # (smaller than fp32, retention) the issue asks for


def log(message: str) -> None:
    print(f"[quant_table] {message}", file=sys.stderr, flush=True)


def types_of(details: dict) -> str:
    """The weight types an export reports, most weights first where it counts them."""
    params = details.get("weight_type_params")
    if params:  # parameters per stored type
        total = sum(params.values()) or 1
        return " ".join(f"{k} {v / total:.1%}" for k, v in params.items())
    types = details.get("tensor_types") or details.get("operators") or {}
    return " ".join(f"{k}:{v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1])) or "-"


def seconds_of(details: dict) -> str:
    keys = ("imatrix_s", "compress_s", "quantize_s", "build_s", "export_s")
    cal = details.get("calibration") or {}
    parts = [f"{k[:-2]} {cal[k]:.0f}" for k in keys if isinstance(cal.get(k), (int, float))]
    parts += [
        f"{k[:-2]} {details[k]:.0f}" for k in keys if isinstance(details.get(k), (int, float))
    ]
    return ", ".join(parts) or "-"


def marks(row: dict) -> str:
    hit = [
        f">={smaller:.0%}@{floor}"
        for smaller, floor in LINES
        if row["smaller_than_fp32"] >= smaller and row["retention"] >= floor
    ]
    return " ".join(hit) or "-"


def table(rows: list[dict]) -> str:
    head = (
        f"{'candidate':<26}{'MB':>8}{'bpw':>7}{'smaller':>9}{'retention':>11}"
        f"{'95% interval':>17}{'KL':>8}  lines      seconds / types"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['label']:<26}{r['weights_bytes'] / 1e6:>8.1f}{r['bits_per_weight']:>7.2f}"
            f"{r['smaller_than_fp32']:>9.1%}{r['retention']:>11.4f}"
            f"   [{r['retention_low']:.3f}, {r['retention_high']:.3f}]"
            f"{r['kl_divergence_mean']:>8.4f}  {marks(r):<10} {r['seconds']}"
        )
        lines.append(f"{'':<26}{r['types']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: the embedded one)")
    parser.add_argument("--candidates", default=CANDIDATES, help=f"({CANDIDATES})")
    parser.add_argument("--eval-tokens", type=int, default=q.EVAL_SCORED_TOKENS)
    parser.add_argument("--calibration", type=Path, help="calibration text (default: built-in)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures")
    parser.add_argument("--from", dest="saved", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    if args.saved:
        print(table(json.loads(args.saved.read_text())["rows"]))
        return 0

    from edgepack.bundle.kit import load_runner
    from edgepack.cache import cache_root
    from edgepack.export.export_cache import export_cached
    from edgepack.export.support import inspect_model
    from edgepack.measure import calibration_text as cal
    from edgepack.model.default import default_model_dir

    model_dir = args.model or default_model_dir()
    facts, cache = inspect_model(model_dir), cache_root()
    calibration = cal.calibration_text(args.calibration)[1] if args.calibration else None
    name, text = q.eval_text(None)
    ref = q.cached_reference_eval(model_dir, name, text, cache, scored_tokens=args.eval_tokens)
    log(f"{model_dir.name}: {facts.num_parameters:,} parameters, ppl {ref.perplexity:.3f}")
    rows = []
    for pick in args.candidates.split(","):
        fmt, precision = pick.split(":")
        label = f"{fmt} {precision}"
        try:
            started = time.perf_counter()
            artifact = export_cached(model_dir, facts, fmt, precision, cache, log, calibration)
            export_s = time.perf_counter() - started
            runner = load_runner(artifact.runtime, artifact.path)
            log(f"{label}: scoring {len(ref.chunks)} chunks")
            figures = q.summarize(q.score_chunks(runner, ref), ref).to_dict()
            del runner
        except Exception as exc:  # noqa: BLE001 - one candidate's failure is a row, not the end
            log(f"{label}: {type(exc).__name__}: {exc}")
            continue
        row = {
            "label": label,
            **size_figures(artifact.weights_bytes(), facts.num_parameters),
            **{k: figures[k] for k in ("retention", "retention_low", "retention_high")},
            "kl_divergence_mean": figures["kl_divergence_mean"],
            "perplexity": figures["perplexity"],
            "types": types_of(artifact.details),
            "seconds": seconds_of(artifact.details) + f" (this run {export_s:.0f})",
            "details": artifact.details,
        }
        rows.append(row)
        print(table([row]).split("\n", 1)[1], flush=True)
        if args.json:
            doc = {"model": str(model_dir), "eval_tokens": args.eval_tokens, "rows": rows}
            args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
