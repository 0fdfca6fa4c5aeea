"""Benchmark edgepack bundles against what a user would run instead, on this machine.

    .venv/bin/python tools/bench.py BUNDLE [BUNDLE ...] [--tokens N] [--prompt-tokens N]
        [--repetitions N] [--rounds N] [--threads N] [--target NAME|FILE] [--eval-data FILE]
        [--eval-tokens N] [--json] [--save FILE]

For each bundle, on the same prompts, with the same thread count:
  fp32     transformers fp32 eager `generate` on the bundle's source model (greedy): the baseline;
  raw      the runtime's own user-facing API on the bundle's model/ with no edgepack code in the
           loop: llama-cpp-python `Llama`, optimum-intel `OVModelForCausalLM` (with the kit's
           f32 precision hint; and openvino-genai `LLMPipeline`, which the kit's runner wraps),
           optimum `ORTModelForCausalLM`;
  runner   the bundle's own runner (devicekit.load_runner in the bundle), what edgepack ships;
  check    the bundle's own `check.py --json --repetitions N [--threads N]`, run as a device runs
           it: its decode, first token, peak RSS and threads as check.py itself measured them
           (its own cold 128-token prompts, 64 new tokens), set beside raw (check/raw ratios; for
           OpenVINO also against raw openvino-genai's cold first token).
Each variant runs in its own process (runtimes can crash each other, and memory is only
meaningful per process): load, one warm-up, then repetitions; p50 of first-token latency and
decode tokens/s. --rounds N runs the raw, runner and check variants N times, interleaved (round
r starts at the r-th variant), so that a noisy host's drift falls on all of them alike: the p50s
are over every round, and the check and runner ratios to raw are also given round by round.
The child's peak RSS comes from the operating system when it exits (os.wait4: the same
accounting check.py reads, per child).
Cold prompts: the warm-up and every repetition get their own prompt of --prompt-tokens ids, cut
from the evaluation text at different offsets, each starting on a token no other starts on, so
no runtime has seen a prefix of it in that process (openvino-genai reuses the KV cache of a
repeated prefix: ~20 ms instead of ~110 ms for a repeated 128-token prompt). Every variant of a
bundle gets the same list, so the comparison is paired; the prompt tokens each run processed are
reported where the runtime says (openvino-genai's get_num_input_tokens, llama.cpp's n_p_eval).
Threads: every core this process may run on (sched_getaffinity) for every variant, prompt and
decode (llama-cpp-python's n_threads and n_threads_batch); --threads N overrides; --threads 0
leaves each runtime its own default (llama-cpp-python's is half the cores).
Before and after calibration, per bundle: the planner's prior (manifest "predicted"), the
build's calibrated device prediction (manifest "device_prediction"),
edgepack.plan.speed_calibration's prediction from this run's check for --target (default: the
manifest's target), and the check's measurement.
Quality: perplexity, KL and top-1 agreement of the bundle's runner on the evaluation text
against the fp32 reference (edgepack.measure.quality; the raw runtime runs the same artifact, so its
logits and perplexity are the runner's). Evaluation text: --eval-data, else WikiText-2 test from
../shared/data when present, else edgepack's built-in text; its first --eval-tokens tokens
(default 4096, the cap of edgepack.measure.quality).
Tables go to stdout (or one JSON document with --json); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from edgepack.bench.rounds import merge_rounds, ratios, run_child, speed, tree_bytes
from edgepack.bench.tables import report_text

ROOT = Path(__file__).resolve().parent.parent
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "test.txt"
RAW = {  # runtime -> its raw variants: (key in the report, child variant, label)
    "llama.cpp": [("raw", "llama_cpp", "raw llama-cpp-python")],
    "openvino": [
        ("raw", "optimum_ov", "raw optimum-intel OpenVINO"),
        ("raw_genai", "genai", "raw openvino-genai"),
    ],
    "onnxruntime": [("raw", "optimum_ort", "raw optimum ONNX Runtime")],
    "onnxruntime-genai": [("raw", "og", "raw onnxruntime-genai")],
}
N_CTX = 2048  # the llama.cpp kit's context; the raw Llama gets the same KV cache
CHECK_PROMPT = (128, 64)  # check.py's own prompt length and new tokens
THREADS_FROM = (
    "every core this process may run on (sched_getaffinity)",
    "--threads",
    "each runtime's own default",
)


def default_threads() -> int:
    """Every core this process may run on (its CPU affinity), as the kit's runners use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def prepare_eval(path: str | None, max_tokens: int, tokenizer, scratch: Path) -> tuple[dict, str]:
    """The evaluation text, cut after its first max_tokens tokens (so the fp32 reference and the
    runners evaluate the same bounded slice), written where the children read it; and the whole
    text, which the prompts are cut from."""
    from edgepack.measure.quality import MAX_EVAL_TOKENS, eval_text

    if path is None and WIKITEXT.is_file():
        path = WIKITEXT
    name, text = eval_text(path)
    whole = text
    max_tokens = min(max_tokens, MAX_EVAL_TOKENS)
    head = text[: max_tokens * 12]  # ample characters for max_tokens tokens
    enc = tokenizer.encode(head, add_special_tokens=False)
    if len(enc.ids) > max_tokens:
        text = head[: enc.offsets[max_tokens][0]]
    out = scratch / "eval.txt"
    out.write_text(text, encoding="utf-8")
    label = str(path) if path else "edgepack built-in text"
    info = {"name": name, "source": label, "path": str(out), "max_tokens": max_tokens}
    return info, whole


def cold_prompts(tokenizer, text: str, length: int, count: int) -> list[list[int]]:
    """`count` prompts of `length` ids cut from the text at different offsets (`length` apart,
    moved on where a token would start a second prompt): pairwise different from their first
    token on, so no prompt shares a prefix with another and no runtime can reuse a cached one."""
    ids = tokenizer.encode(text[: count * length * 16], add_special_tokens=False).ids
    prompts, firsts, offset = [], set(), 0
    while len(prompts) < count and offset + length <= len(ids):
        if ids[offset] in firsts:
            offset += 1
            continue
        firsts.add(ids[offset])
        prompts.append(ids[offset : offset + length])
        offset += length
    if len(prompts) < count:
        raise SystemExit(
            f"bench: the evaluation text gives {len(prompts)} distinct prompts of {length} "
            f"tokens, {count} are needed (a warm-up and --repetitions); give a longer "
            "--eval-data, or lower --prompt-tokens or --repetitions"
        )
    return prompts


def load_tokenizer(model_dir: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def read_bundle(path: str) -> dict:
    root = Path(path).resolve()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"bench: {path} is not a bundle directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    source = Path(manifest["source_model"]["path"])
    if not (source / "config.json").is_file():
        raise SystemExit(f"bench: the source model of {path} is not on this machine: {source}")
    config = json.loads((source / "config.json").read_text())
    if not str((config.get("architectures") or [""])[0]).endswith("ForCausalLM"):
        raise SystemExit(f"bench: {path} holds an encoder; this benchmark measures generation")
    return {
        "bundle": str(root),
        "name": root.name,
        "format": manifest["artifact"]["format"],
        "precision": manifest["artifact"]["precision"],
        "runtime": manifest["runtime"]["name"],
        "source_model": str(source),
        "source_weights": [source / f for f in manifest["source_model"]["weight_files"]],
        "pad_token_id": config.get("pad_token_id") or config.get("eos_token_id"),
    }


def bench(args) -> dict:
    bundles = [read_bundle(b) for b in args.bundles]
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as scratch:
        return _bench(args, bundles, Path(scratch))


def _bench(args, bundles: list[dict], scratch: Path) -> dict:
    load_before = os.getloadavg()[0]
    threads = args.threads if args.threads is not None else default_threads()
    common = {"tokens": args.tokens, "repetitions": args.repetitions, "threads": threads}
    first = Path(bundles[0]["source_model"])
    tokenizer = load_tokenizer(first)
    evaluation, text = prepare_eval(args.eval_data, args.eval_tokens, tokenizer, scratch)
    references, baselines, prompts, results = {}, {}, {}, []
    for b in bundles:
        source = b["source_model"]
        if source not in prompts:  # one list per source model: every variant runs the same
            tok = load_tokenizer(Path(source))
            prompts[source] = cold_prompts(tok, text, args.prompt_tokens, args.repetitions + 1)
        spec = common | {"prompts": prompts[source], "pad_token_id": b["pad_token_id"]}
        quality_spec = {
            "model_dir": source,
            "eval_path": evaluation["path"],
            "eval_name": evaluation["name"],
            "threads": threads,
        }
        if source not in references:
            log(f"fp32 reference on the evaluation text ({Path(source).name})")
            references[source] = run_child(quality_spec | {"variant": "reference"}, scratch)
            log(f"fp32 transformers generate ({Path(source).name})")
            report = run_child(spec | {"variant": "transformers", "model_dir": source}, scratch)
            baselines[source] = (report["tokens"], speed(report, None))
        base_tokens, base = baselines[source]
        variants = {"baseline": {"label": "transformers fp32 (source model)"} | base}
        model_dir = str(Path(b["bundle"]) / "model")
        kit = {"bundle": b["bundle"], "runtime": b["runtime"]}
        timed = [
            (key, spec | {"variant": variant, "model_dir": model_dir, "n_ctx": N_CTX}, label)
            for key, variant, label in RAW[b["runtime"]]
        ]
        timed.append(("runner", spec | kit | {"variant": "runner"}, "edgepack runner"))
        check = {"variant": "check", "cwd": str(scratch), "threads": args.threads or 0}
        check |= kit | {"repetitions": args.repetitions}
        timed.append(("check", check, "the bundle's check.py"))
        runs = {key: [] for key, _, _ in timed}
        for r in range(args.rounds):  # round r starts at variant r: each takes every place
            for key, child, label in timed[r % len(timed) :] + timed[: r % len(timed)]:
                log(f"{b['name']}: {label}" + (f" (round {r + 1})" if args.rounds > 1 else ""))
                runs[key].append(run_child(child, scratch))
        for key, _, label in timed:
            merged = merge_rounds(runs[key])
            variants[key] = {"label": label} | (
                merged if key == "check" else speed(merged, base_tokens)
            )
            if key.startswith("raw"):
                variants[key]["quality"] = "the runner's: same artifact, same logits"
        check = variants["check"]
        log(f"{b['name']}: before and after calibration")
        calibrate = {"variant": "calibrate", "target": args.target, "measured": check["measured"]}
        calibrated = run_child(kit | calibrate, scratch)
        calibrated.pop("peak_rss_bytes")
        log(f"{b['name']}: quality through the runner")
        quality = run_child(quality_spec | kit | {"variant": "quality"}, scratch)
        quality.pop("peak_rss_bytes")
        size = {
            "source_bytes": sum(p.stat().st_size for p in b["source_weights"]),
            "model_bytes": tree_bytes(Path(model_dir)),
            "bundle_bytes": tree_bytes(Path(b["bundle"])),
        }
        entry = {k: b[k] for k in ("bundle", "name", "format", "precision", "runtime")}
        entry |= {"source_model": source, "size": size, "quality": quality, "variants": variants}
        entry["reference"] = references[source]
        entry["calibration"] = calibrated
        entry["prompts"] = {
            "count": len(prompts[source]),
            "tokens": args.prompt_tokens,
            "first_ids": [ids[0] for ids in prompts[source]],
            "lengths": sorted({len(ids) for ids in prompts[source]}),
        }
        entry["ratios"] = ratios(entry)
        results.append(entry)
    from edgepack.bundle.kit import check_module

    return {
        "host": check_module().host() | {"load_average_1m": [load_before, os.getloadavg()[0]]},
        "settings": {
            "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.tokens,
            "repetitions": args.repetitions,
            "rounds": args.rounds,
            "warmup_new_tokens": 8,
            "threads": threads,
            "threads_from": THREADS_FROM[(args.threads is not None) + (threads == 0)],
            "prompts": "cold: the warm-up and each repetition on its own prompt, pairwise "
            "different from the first token on, the same list for every variant",
            "check_prompt_tokens": CHECK_PROMPT[0],
            "check_new_tokens": CHECK_PROMPT[1],
            "statistic": "p50",
        },
        "eval": {k: v for k, v in evaluation.items() if k != "path"},
        "bundles": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle directories")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run (64)")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (128)")
    parser.add_argument("--repetitions", type=int, default=5, help="timed runs (5)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the raw, runner and check variants this many times, interleaved, each round "
        "starting at the next variant; ratios are also given per round (1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="threads for every variant (default: every core this process may run on; 0: each "
        "runtime's own default)",
    )
    parser.add_argument("--target", help="profile for the calibrated prediction (manifest's)")
    parser.add_argument("--eval-data", help="evaluation text (default: WikiText-2 or built-in)")
    parser.add_argument("--eval-tokens", type=int, default=4096, help="tokens of it (4096)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--save", metavar="FILE", help="also write the JSON document to FILE")
    args = parser.parse_args(argv)
    for name in ("tokens", "prompt_tokens", "repetitions", "rounds", "eval_tokens"):
        if getattr(args, name) < (2 if name == "tokens" else 1):
            parser.error(f"--{name.replace('_', '-')} is too small")
    if args.prompt_tokens + args.tokens > N_CTX:
        parser.error(f"--prompt-tokens + --tokens must fit the runners' context of {N_CTX}")
    started = time.perf_counter()
    result = bench(args)
    result["wall_s"] = time.perf_counter() - started
    log(f"done in {result['wall_s']:.0f} s")
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) + "\n" if args.json else report_text(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
