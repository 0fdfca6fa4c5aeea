"""Predicted against measured peak memory for every registry row of a model.

    .venv/bin/python tools/memory_bench.py [--model PATH | --tiny-llama DIR] [--rows F:P,...]
        [--out DIR] [--rebuild] [--json] [--save FILE]

For every row of edgepack.export.registry.FORMATS that runs on a CPU (a GPU-only row is listed
as not measurable here), in turn, one process at a time:
  1. build its bundle: `edgepack build --format F --precision P --target GENEROUS --candidates 1
     --no-check --json`, GENEROUS being the laptop profile with budgets nothing misses and the
     context the check's runtime holds (below). Exports are cached under $EDGEPACK_CACHE, and the
     bundle is kept under --out, so a second run only re-runs the checks (--rebuild builds again);
  2. run the bundle's own `check.py --json` in a fresh process: its measured peak RSS is the
     measuring child's own ru_maxrss (load, warm-up, repetitions of a 128-token cold prompt plus
     64 new tokens; the golden check runs in another child and does not count);
  3. predict the same process with edgepack.memory.resident() and print both.

Context: the prediction is for what the check's runtime holds, not for a profile. llama.cpp
preallocates its whole context, n_ctx = min(2048, the trained context) in the kit's runner;
openvino-genai and ONNX Runtime grow the KV cache with the tokens, at most 128 + 64 in the
check. (The planner predicts for the profile's context_tokens instead.)

--tiny-llama DIR makes (once) a random 4-layer Llama with transformers' config classes and the
default model's tokenizer files, and measures it: a second model to test the fit on.
Progress goes to stderr; the table (or one JSON document with --json) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("EDGEPACK_CACHE", "/tmp/edgepack-test-cache")

from edgepack.bundle.kit import check_module, kit_dir  # noqa: E402
from edgepack.device.cpuinfo import detect_cpu  # noqa: E402
from edgepack.export.registry import FORMATS, RUNTIMES  # noqa: E402
from edgepack.export.support import inspect_model  # noqa: E402
from edgepack.plan import memory  # noqa: E402 - after the environment is set

MB = 1e6
TOLERANCE = 0.10  # the goal: every row within 10 % of its measurement
BUDGET = {  # generous budgets: no row is refused, so every row is built and checked
    "memory_gb": 8,
    "disk_gb": 50,
    "first_token_ms": 1e6,
    "decode_tokens_per_s": 0.1,
    "min_quality": 0.01,
}
WEIGHT_SUFFIXES = (".gguf", ".bin", ".onnx", ".onnx_data", ".data")


def log(message: str) -> None:
    print(f"[memory-bench] {message}", file=sys.stderr, flush=True)


def check_context(runtime: str, facts) -> int:
    """The tokens whose KV cache the bundle's check holds in this runtime."""
    if RUNTIMES[runtime].kv_preallocated:
        sys.path.insert(0, str(kit_dir()))
        import run_llamacpp  # the kit's runner: its n_ctx rule

        trained = facts.max_position_embeddings
        return min(run_llamacpp.CONTEXT_TOKENS, trained) if trained else run_llamacpp.CONTEXT_TOKENS
    check = check_module()
    return check.PROMPT_TOKENS + check.DECODE_TOKENS


def profile_text(context: int) -> str:
    text = (ROOT / "profiles" / "laptop.toml").read_text()
    text = text.replace('name = "laptop"', 'name = "memory-bench"')
    for key, value in {**BUDGET, "context_tokens": context}.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value:g} ", text, flags=re.M)
    return text


def rows(selected: str | None) -> list[tuple[str, str]]:
    everything = [(f.name, p.name) for f in FORMATS.values() for p in f.precisions]
    if not selected:
        return everything
    wanted = [tuple(item.split(":", 1)) for item in selected.split(",")]
    unknown = [w for w in wanted if w not in everything]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; rows: {everything}")
    return wanted


def build(model: Path, fmt: str, precision: str, context: int, dest: Path, rebuild: bool) -> Path:
    """The row's bundle under dest, built once (again with rebuild)."""
    record = dest / "bundle.json"
    if record.is_file() and not rebuild:
        path = Path(json.loads(record.read_text())["path"])
        if (path / "manifest.json").is_file():
            return path
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    profile = dest / "memory-bench.toml"
    profile.write_text(profile_text(context))
    cmd = [sys.executable, "-m", "edgepack", "build", "--model", str(model)]
    cmd += ["--format", fmt, "--precision", precision, "--target", str(profile)]
    cmd += ["--out", str(dest / "bundles"), "--candidates", "1", "--no-check", "--json"]
    log(f"building {fmt} {precision}: {' '.join(cmd[1:])}")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        # the CLI's one-line error is its last line (notes and progress come before it)
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"build of {fmt} {precision} failed: {last[-2000:]}")
    (bundle,) = json.loads(done.stdout)["bundles"]
    record.write_text(json.dumps(bundle))
    return Path(bundle["path"])


def check(bundle: Path) -> dict:
    """The bundle's own check.py --json in a fresh process (exit 0 PASS or 1 FAIL both report)."""
    cmd = [sys.executable, str(bundle / "check.py"), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=bundle, timeout=1800)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"check.py printed no report: {done.stderr.strip()[-2000:]}") from None
    if done.returncode not in (0, 1) or "peak_rss_bytes" not in report.get("measured", {}):
        raise RuntimeError(f"check.py: {report.get('error') or done.stderr.strip()[-2000:]}")
    return report


BASELINES = {  # runtime -> (imports, the tokenizer, what the kit loads after the tokenizer)
    "llama.cpp": (
        "import llama_cpp; llama_cpp.llama_backend_init()",
        "p = llama_cpp.llama_model_default_params(); p.vocab_only = True; "
        "kept = llama_cpp.llama_model_load_from_file("
        "os.path.join(MODEL, 'model.gguf').encode(), p)",
        "",
    ),
    "openvino": (
        "import openvino, openvino_genai; openvino.Core()",
        "kept = devicekit.HFTokenizer(MODEL)",
        "also = openvino_genai.Tokenizer(MODEL)",  # compiles the tokenizer models: the CPU plugin
    ),
    "onnxruntime": ("import onnxruntime", "kept = devicekit.HFTokenizer(MODEL)", ""),
    "onnxruntime-genai": (
        "import onnxruntime_genai",
        "kept = devicekit.HFTokenizer(MODEL)",
        "",
    ),
}
STATUS = (
    "def rss(key):\n"
    "    with open('/proc/self/status') as fh:\n"
    "        return int(dict(ln.split(':', 1) for ln in fh)[key].split()[0]) * 1024\n"
)


def baseline(runtime: str, bundle: Path) -> dict:
    """A fresh process that does what the bundle's measuring child does before it loads a model,
    in the kit's order: imports (check.py's modules, numpy, devicekit, the runtime), the
    tokenizer, then what the runner loads after it. The fixed overhead is its peak RSS before
    the tokenizer plus what came after; the tokenizer's tables are what the tokenizer added."""
    setup, tokenizer, after = BASELINES[runtime]
    code = (
        f"{STATUS}import os, sys, json, hashlib, subprocess, tempfile, argparse, platform, time\n"
        f"sys.path.insert(0, {str(bundle)!r}); MODEL = {str(bundle / 'model')!r}\n"
        f"import numpy, devicekit, manifestkeys\n{setup}\n"
        "fixed, before = rss('VmHWM'), rss('VmRSS')\n"
        f"{tokenizer}\n"
        "tokenized = rss('VmRSS')\n"
        f"{after}\n"
        "print(json.dumps({'overhead': fixed + rss('VmRSS') - tokenized,"
        " 'tokenizer': tokenized - before}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"baseline of {runtime} failed: {done.stderr[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baselines(results: list[dict], facts) -> list[dict]:
    """Each runtime's fixed overhead and tokenizer tables, measured next to the model's figures
    (on the first bundle of that runtime that was checked)."""
    rows, seen = [], set()
    for r in results:
        if "bundle" not in r or r["runtime"] in seen:
            continue
        seen.add(r["runtime"])
        measured = baseline(r["runtime"], Path(r["bundle"]))
        rows.append(
            {
                "runtime": r["runtime"],
                "overhead_bytes": RUNTIMES[r["runtime"]].overhead_bytes,
                "measured_overhead_bytes": measured["overhead"],
                "tokenizer_bytes": int(memory.tokenizer_bytes(r["runtime"], facts)),
                "measured_tokenizer_bytes": measured["tokenizer"],
            }
        )
    return rows


def overhead_table(rows: list[dict]) -> str:
    lines = [
        "Fixed overhead (Runtime.overhead_bytes: peak RSS of a fresh process importing numpy, "
        "the kit and the runtime, no model) and tokenizer tables (memory.tokenizer_bytes: what "
        "loading the tokenizer added)",
        "",
        "| runtime | overhead | measured | tokenizer | measured |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['runtime']} | {r['overhead_bytes'] / MB:.0f} MB | "
            f"{r['measured_overhead_bytes'] / MB:.0f} MB | {r['tokenizer_bytes'] / MB:.1f} MB | "
            f"{r['measured_tokenizer_bytes'] / MB:.1f} MB |"
        )
    return "\n".join(lines)


def weight_file_bytes(bundle: Path) -> int:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return sum(
        f["bytes"]
        for f in manifest["files"]
        if f["path"].startswith("model/") and f["path"].endswith(WEIGHT_SUFFIXES)
    )


def measure_row(
    model: Path, facts, fmt: str, precision_name: str, out: Path, rebuild: bool, isa: tuple
):
    """isa: this host's CPU features, which decide the weights llama.cpp repacks here."""
    form = FORMATS[fmt]
    precision = form.precision(precision_name)
    runtime = RUNTIMES[form.runtime]
    row = {"format": fmt, "precision": precision_name, "runtime": runtime.name}
    if "cpu" not in precision.devices:
        return row | {"note": "GPU only: not measurable on a CPU host"}
    context = check_context(runtime.name, facts)
    predicted = memory.resident(facts, precision, None, runtime, "cpu", context, isa=isa)
    row |= {"context_tokens": context, "predicted": predicted.to_dict()}
    try:
        dest = out / f"{fmt}-{precision_name}"
        bundle = build(model, fmt, precision_name, context, dest, rebuild)
        log(f"checking {fmt} {precision_name}: {bundle}/check.py --json")
        report = check(bundle)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return row | {"error": str(exc)}
    measured = report["measured"]["peak_rss_bytes"]
    ratio = predicted.total_bytes / measured
    return row | {
        "bundle": str(bundle),
        "weight_file_bytes": weight_file_bytes(bundle),
        "measured_peak_rss_bytes": measured,
        "ratio": round(ratio, 3),
        "within": abs(ratio - 1) <= TOLERANCE,
        "host_check_verdict": report.get("verdict"),
    }


def table(model: Path, results: list[dict]) -> str:
    head = (
        f"Peak RSS of check.py's measuring process, predicted by edgepack.memory.resident() for "
        f"the context the check's runtime holds\n(llama.cpp: its preallocated n_ctx; "
        f"openvino-genai and ONNX Runtime: the 128 + 64 tokens of a timed run). Model: {model}\n"
        "MB = 1e6 bytes; predicted = weights held + KV cache + buffers + overhead\n\n"
    )
    cols = (
        "| row | ctx | file | weights held | KV | buffers | overhead | predicted | measured "
        "| ratio | within 10 % |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- |\n"
    )
    lines = []
    for r in results:
        name = f"{r['format']} {r['precision']}"
        if "note" in r:
            lines.append(f"| {name} | | | | | | | | | | {r['note']} |")
            continue
        p = r["predicted"]
        terms = (
            f"{p['weights_held_bytes'] / MB:.0f} | {p['kv_cache_bytes'] / MB:.1f} | "
            f"{p['buffers_bytes'] / MB:.0f} | {p['overhead_bytes'] / MB:.0f} | "
            f"{p['total_bytes'] / MB:.0f}"
        )
        if "error" in r:
            error = r["error"].replace("\n", " ")[:200]
            lines.append(f"| {name} | {r['context_tokens']} | | {terms} | | | error: {error} |")
            continue
        ok = "yes" if r["within"] else "NO"
        lines.append(
            f"| {name} | {r['context_tokens']} | {r['weight_file_bytes'] / MB:.0f} | {terms} | "
            f"{r['measured_peak_rss_bytes'] / MB:.0f} | {r['ratio']:.3f} | {ok} |"
        )
    measured = [r for r in results if "ratio" in r]
    tail = f"\n{sum(r['within'] for r in measured)} of {len(measured)} measured rows within 10 %"
    return head + cols + "\n".join(lines) + tail


TINY_LLAMA = {  # a random Llama small enough to export in seconds, with the default tokenizer
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,  # the default model's tokenizer: every id it makes is an embedding row
    "max_position_embeddings": 2048,
    # weights wide enough that next-token logits have clear winners: the build validates a
    # variant by top-1 agreement where the reference is confident, which the default 0.02 never is
    "initializer_range": 0.1,
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)


def tiny_llama(dest: Path) -> Path:
    """A random 4-layer Llama (seed 0) saved with save_pretrained, the default model's tokenizer
    files beside it (made once)."""
    if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
        return dest
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgepack.model.default import default_model_dir

    torch.manual_seed(0)
    source = default_model_dir(progress=False)
    config = LlamaConfig(**TINY_LLAMA, bos_token_id=1, eos_token_id=2)
    work = Path(tempfile.mkdtemp(prefix="tiny-llama-", dir=dest.parent))
    LlamaForCausalLM(config).save_pretrained(work)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, work / name)
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory (default: the embedded default model)")
    parser.add_argument("--tiny-llama", metavar="DIR", help="make and measure a tiny random Llama")
    parser.add_argument("--rows", help="FORMAT:PRECISION,... (default: every registry row)")
    parser.add_argument("--out", default="/tmp/edgepack-memory-bench", help="bundles kept here")
    parser.add_argument("--rebuild", action="store_true", help="build the bundles again")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--save", help="also write the JSON results to this file")
    args = parser.parse_args(argv)

    if args.tiny_llama:
        model = tiny_llama(Path(args.tiny_llama).resolve())
    elif args.model:
        model = Path(args.model).resolve()
    else:
        from edgepack.model.default import default_model_dir

        model = default_model_dir(progress=False)
    facts = inspect_model(model)
    out = Path(args.out) / model.name
    results = []
    isa = detect_cpu(None).isa
    for fmt, precision in rows(args.rows):
        if fmt not in facts.formats:
            continue
        results.append(measure_row(model, facts, fmt, precision, out, args.rebuild, isa))
        r = results[-1]
        if "ratio" in r:
            log(
                f"{fmt} {precision}: predicted {r['predicted']['total_bytes'] / MB:.0f} MB, "
                f"measured {r['measured_peak_rss_bytes'] / MB:.0f} MB, ratio {r['ratio']:.3f}"
            )
        elif "error" in r:
            log(f"{fmt} {precision}: {r['error']}")
    overheads = baselines(results, facts)
    document = {"model": str(model), "tolerance": TOLERANCE, "rows": results}
    document["overheads"] = overheads
    if args.save:
        Path(args.save).write_text(json.dumps(document, indent=2))
    text = table(model, results) + "\n\n" + overhead_table(overheads)
    print(json.dumps(document, indent=2) if args.json else text)
    measured = [r for r in results if "ratio" in r]
    failed = any("error" in r for r in results)
    return 0 if measured and not failed and all(r["within"] for r in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
