"""Retention against evaluation size: the curve behind edgepack.measure.quality.EVAL_SCORED_TOKENS.

    .venv/bin/python tools/eval_curve.py [--model DIR] [--candidates FMT:PREC,...]
        [--sizes N,N,...] [--eval-data FILE] [--kl-check CHUNKS] [--json FILE]
    .venv/bin/python tools/eval_curve.py --from FILE     # the tables of a saved --json run

Each candidate is exported (or taken from edgepack's export cache, $EDGEPACK_CACHE), loaded
through the on-device runner (edgepack.kit.load_runner, what bundles run) and scored once on
the largest size; the figures at each smaller size are those of the first chunks, which is what
a measurement at that size would see (chunks are evaluated from an empty context, in order).
For every size: retention, its 95 % bootstrap interval, and the seconds the candidate took
(runner forward passes and scoring). Then two sizes: the smallest from which on every
candidate's retention stays within --tolerance (0.005) of its value at the largest size, and
the smallest from which on every candidate's 95 % interval holds that value.

--kl-check N compares, on the first N chunks, the exact KL divergence (from the fp32
reference's full distribution) with the top-k approximation edgepack stores, for several k.
Tables go to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgepack.measure import estimators as est
from edgepack.measure import quality as q  # noqa: E402

CANDIDATES = "openvino:int4,openvino:int4_mixed,gguf:q4_0,gguf:q4_k_m,onnx:int4,gguf:q8_0"
SIZES = "512,1024,2048,4096,8192,16384,32768"
KS = (64, 256, 1024)


def log(message: str) -> None:
    print(f"[eval_curve] {message}", file=sys.stderr, flush=True)


def curve(runner, ref, sizes: list[int]) -> list[dict]:
    """The candidate's figures at each size (a prefix of the same scores)."""
    per_chunk = est.tokens_for(1) // 2
    scores = q.score_chunks(runner, ref)
    rows = []
    for size in sizes:
        n = -(-size // per_chunk)
        figures = q.summarize(scores, ref, upto=n).to_dict()
        rows.append({"size": size, "seconds": float(scores.seconds[:n].sum())} | figures)
    return rows


def reference_logprobs(model_dir: Path, ref, n_chunks: int) -> list:
    """The fp32 reference's full log-probabilities at the scored positions of the first chunks."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for start, end in ref.chunks[:n_chunks]:
            logits = model(torch.tensor([ref.ids[start:end]])).logits[0].float().numpy()
            out.append(est.log_softmax(logits[est.scored(start, end)]).astype(np.float32))
    return out


def kl_check(runner, ref, full: list) -> dict:
    """Mean exact KL, and the relative error of each stored form: the top k tokens with the
    tail as one bin (k in KS), and edgepack's top TOP_K with TAIL_SAMPLES tail samples."""
    forms = [f"top {k}, one tail bin" for k in KS]
    forms.append(f"top {est.TOP_K} + {q.TAIL_SAMPLES} tail samples")
    exact, sums, n = 0.0, dict.fromkeys(forms, 0.0), 0
    for i, ((start, end), logp) in enumerate(zip(ref.chunks, full, strict=False)):
        logits = np.asarray(runner.logits(ref.ids[start:end]))
        logq = est.log_softmax(logits[est.scored(start, end)])
        p = logp.astype(np.float64)
        exact += float((np.exp(p) * (p - logq)).sum())
        for k, form in zip(KS, forms, strict=False):
            sums[form] += float(est.kl_estimate(*est.top_k(p, k), logq).sum())
        top = est.top_k(p, est.TOP_K)
        tail = est.tail_sample(p, top[0], q.TAIL_SAMPLES, np.random.default_rng([est.SEED, i]))
        sums[forms[-1]] += float(est.kl_estimate(*top, logq, *tail).sum())
        n += len(p)
    return {
        "tokens": n,
        "kl_exact": exact / n,
        "forms": {f: {"kl": v / n, "rel_error": v / exact - 1} for f, v in sums.items()},
    }


def stable_size(curves: dict, sizes: list[int], tolerance: float) -> int | None:
    """The smallest size from which on every candidate stays within tolerance of its value at
    the largest size (None: only the largest itself)."""
    for i, size in enumerate(sizes[:-1]):
        if all(
            abs(row["retention"] - rows[-1]["retention"]) <= tolerance
            for rows in curves.values()
            for row in rows[i:]
        ):
            return size
    return None


def covered_size(curves: dict, sizes: list[int]) -> int | None:
    """The smallest size from which on every candidate's 95 % interval holds its retention at
    the largest size: where the interval the gate reads is honest about that value."""
    for i, size in enumerate(sizes[:-1]):
        if all(
            row["retention_low"] <= rows[-1]["retention"] <= row["retention_high"]
            for rows in curves.values()
            for row in rows[i:-1]
        ):
            return size
    return None


def table(label: str, rows: list[dict]) -> str:
    last = rows[-1]["retention"]
    lines = [
        f"{label}",
        "  scored tokens  chunks  retention  95% interval       vs largest  ppl      s",
    ]
    for r in rows:
        lines.append(
            f"  {r['size']:>13}  {r['eval_chunks']:>6}  {r['retention']:.4f}     "
            f"[{r['retention_low']:.4f}, {r['retention_high']:.4f}]  "
            f"{r['retention'] - last:+.4f}     {r['perplexity']:<7.3f}  {r['seconds']:.1f}"
        )
    return "\n".join(lines)


def summary(doc: dict, tolerance: float) -> None:
    """The two sizes the curve suggests, and the KL check."""
    sizes, curves = doc["sizes"], doc["curves"]
    stable, covered = stable_size(curves, sizes, tolerance), covered_size(curves, sizes)
    largest = sizes[-1]
    print(
        f"within +-{tolerance} of the retention at {largest} from: "
        f"{stable or 'no smaller size'}; interval holding the retention at {largest} from: "
        f"{covered or 'no smaller size'}"
    )
    for label, c in doc.get("kl_check", {}).items():
        if "forms" not in c:  # a run saved before the tail samples
            continue
        errors = "; ".join(f"{f} {v['rel_error']:+.2%}" for f, v in c["forms"].items())
        print(f"KL {label}: exact {c['kl_exact']:.4f} on {c['tokens']} tokens; {errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: the embedded one)")
    parser.add_argument("--candidates", default=CANDIDATES, help=f"({CANDIDATES})")
    parser.add_argument("--sizes", default=SIZES, help=f"scored tokens ({SIZES})")
    parser.add_argument("--eval-data", type=Path, help="evaluation text (default: WikiText-2)")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--kl-check", type=int, default=0, metavar="CHUNKS")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures")
    parser.add_argument(
        "--from",
        dest="saved",
        type=Path,
        metavar="FILE",
        help="print the tables of a --json file instead of measuring",
    )
    args = parser.parse_args(argv)
    if args.saved:
        doc = json.loads(args.saved.read_text())
        for label, rows in doc["curves"].items():
            print(table(label, rows), "\n")
        summary(doc, args.tolerance)
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    picks = [tuple(c.split(":")) for c in args.candidates.split(",")]

    from edgepack.bundle.kit import load_runner
    from edgepack.cache import cache_root
    from edgepack.export.export_cache import export_cached
    from edgepack.export.support import inspect_model
    from edgepack.model.default import default_model_dir

    model_dir = args.model or default_model_dir()
    facts, cache = inspect_model(model_dir), cache_root()
    name, text = q.eval_text(args.eval_data)
    started = time.perf_counter()
    ref = q.cached_reference_eval(model_dir, name, text, cache, scored_tokens=sizes[-1])
    log(
        f"reference: {ref.scored_tokens} scored tokens of {name} in {len(ref.chunks)} chunks, "
        f"perplexity {ref.perplexity:.3f} ({time.perf_counter() - started:.0f} s)"
    )
    full = reference_logprobs(model_dir, ref, args.kl_check) if args.kl_check else []
    results, checks = {}, {}
    for fmt, precision in picks:
        label = f"{fmt} {precision}"
        artifact = export_cached(model_dir, facts, fmt, precision, cache, log)
        runner = load_runner(artifact.runtime, artifact.path)
        log(f"{label}: scoring {len(ref.chunks)} chunks")
        results[label] = curve(runner, ref, sizes)
        print(table(label, results[label]), "\n", flush=True)
        if args.json:  # what is measured so far survives an interruption
            args.json.write_text(json.dumps({"sizes": sizes, "curves": results}, indent=2))
        if full:
            checks[label] = kl_check(runner, ref, full)
        del runner
    doc = {"eval_text": name, "sizes": sizes, "curves": results, "kl_check": checks}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    summary(doc, args.tolerance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
