"""The bundle's runtime check: does this model fit this device and meet its budgets?

    python check.py [--json] [--profile FILE] [--threads N] [--repetitions N]

Runs with the standard library, numpy and the bundle's runtime package only. In order:
1. integrity: every file's size and sha256 against manifest.json (and the manifest against its
   own digest) before anything is loaded; a missing, extra or changed file is an ERROR;
2. in a child process: load the model, reproduce the golden greedy outputs, then measure load
   time, first-token latency for a 128-token prompt and decode tokens/s (warm-up, repetitions,
   p50 and p95); the parent reads the child's peak resident memory from the operating system;
3. compare with the budgets (the manifest's target, or --profile) and report.
Exit codes: 0 PASS, 1 FAIL (a budget or golden output missed), 2 ERROR (missing runtime
package, corrupt or missing file, cannot load).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "manifest.json"
PROMPT_TOKENS = 128
DECODE_TOKENS = 64
GOLDEN_MIN_MATCH = 16  # greedy tokens that must match exactly; later ones may flip on other CPUs
IGNORED = ("__pycache__",)
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


class CheckError(Exception):
    """A reason to stop with exit code 2."""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its own digest field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def load_manifest(root: str) -> dict:
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        raise CheckError(f"{MANIFEST} is missing")
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckError(f"{MANIFEST} is unreadable: {exc}") from None
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise CheckError(f"{MANIFEST} was modified after the build (its digest does not match)")
    return manifest


def verify_files(root: str, manifest: dict) -> int:
    """Sizes and sha256 of every file; nothing missing, nothing extra. Returns total bytes."""
    listed = {f["path"]: f for f in manifest["files"]}
    present = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED]
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel != MANIFEST:
                present.add(rel)
    extra = sorted(present - set(listed))
    if extra:
        raise CheckError(f"extra file not in the manifest: {extra[0]}")
    total = 0
    for rel, entry in sorted(listed.items()):
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            raise CheckError(f"missing file: {rel}")
        size = os.path.getsize(path)
        if size != entry["bytes"]:
            raise CheckError(
                f"file changed: {rel} has {size} bytes, manifest says {entry['bytes']}"
            )
        if sha256_file(path) != entry["sha256"]:
            raise CheckError(f"file changed: {rel} does not match its sha256")
        total += size
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(root: str, manifest: dict, threads: int | None, repetitions: int) -> dict:
    """Runs in the child process: load, golden outputs, latency and speed."""
    sys.path.insert(0, root)
    import devicekit

    runtime = manifest["runtime"]["name"]
    start = time.perf_counter()
    try:
        runner = devicekit.load_runner(runtime, os.path.join(root, "model"), threads=threads)
    except ImportError as exc:
        package = manifest["runtime"]["package"]
        raise CheckError(
            f"runtime package missing: {exc}; pip install -r requirements.txt (needs {package})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any load failure is an ERROR with its reason
        raise CheckError(f"cannot load the model with {runtime}: {exc}") from None
    load_s = time.perf_counter() - start
    result = {"load_s": load_s, "runtime_version": runner.version(), "golden": []}
    if runner.kind == "encoder":
        return result | measure_encoder(runner, manifest, repetitions)

    for golden in manifest["golden"]:
        ids = runner.tokenize(golden["prompt"])
        got = runner.generate(ids, len(golden["tokens"]), stop_at_eos=True).tokens
        need = min(GOLDEN_MIN_MATCH, len(golden["tokens"]))
        match = 0
        for a, b in zip(got, golden["tokens"], strict=False):
            if a != b:
                break
            match += 1
        result["golden"].append(
            {
                "name": golden["name"],
                "tokenized_as_built": ids == golden["prompt_ids"],
                "matched": match,
                "expected": len(golden["tokens"]),
                "need": need,
                "pass": ids == golden["prompt_ids"] and match >= need,
            }
        )

    prompt = prompt_ids(runner)
    runner.generate(prompt, 8, stop_at_eos=False)  # warm-up
    first, decode = [], []
    for _ in range(repetitions):
        gen = runner.generate(prompt, DECODE_TOKENS, stop_at_eos=False)
        first.append(gen.first_token_s * 1000)
        decode.append(gen.decode_tokens_per_s)
    return result | {
        "first_token_ms_p50": percentile(first, 0.5),
        "first_token_ms_p95": percentile(first, 0.95),
        "decode_tokens_per_s_p50": percentile(decode, 0.5),
        # the slow tail of speed is its low percentile: 95 % of runs were at least this fast
        "decode_tokens_per_s_p95": percentile(decode, 0.05),
    }


def measure_encoder(runner, manifest: dict, repetitions: int) -> dict:
    import numpy as np

    result = {"golden": []}
    for golden in manifest["golden"]:
        got = runner.embed([golden["prompt"]])[0]
        want = np.asarray(golden["embedding"], dtype=np.float32)
        cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        result["golden"].append({"name": golden["name"], "cosine": cos, "pass": cos >= 0.999})
    sentence = " ".join(["edge"] * (PROMPT_TOKENS - 2))
    runner.embed([sentence])
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        runner.embed([sentence])
        times.append((time.perf_counter() - start) * 1000)
    return result | {
        "first_token_ms_p50": percentile(times, 0.5),
        "first_token_ms_p95": percentile(times, 0.95),
        "decode_tokens_per_s_p50": None,
        "decode_tokens_per_s_p95": None,
    }


def prompt_ids(runner) -> list[int]:
    """Exactly PROMPT_TOKENS tokens of ordinary text."""
    text = (
        "A field engineer describes the device, the model and the measurements in a short "
        "report so that anyone can repeat them. "
    )
    ids = runner.tokenize(text)
    return (ids * (PROMPT_TOKENS // max(len(ids), 1) + 1))[:PROMPT_TOKENS]


def run_child(threads: int | None, repetitions: int) -> tuple[dict, int]:
    """Measure in a child process; return its report and its peak RSS in bytes (OS accounting)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--repetitions", str(repetitions)]
    if threads:
        cmd += ["--threads", str(threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, capture_output=True, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak < before:
        peak = before
    unit = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckError(f"the measuring process failed (exit {proc.returncode}): {tail}")
    report = json.loads(lines[-1])
    if "error" in report:
        raise CheckError(report["error"])
    return report, peak * unit


def read_budget(manifest: dict, profile_path: str | None) -> dict:
    if not profile_path:
        return manifest["target"]["budget"]
    try:
        with open(profile_path, "rb") as fh:
            data = fh.read()
        if profile_path.endswith(".json"):
            profile = json.loads(data)
        else:
            import tomllib

            profile = tomllib.loads(data.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckError(f"cannot read profile {profile_path}: {exc}") from None
    budget = profile.get("budget") if isinstance(profile, dict) else None
    keys = ("memory_gb", "disk_gb", "first_token_ms", "decode_tokens_per_s", "min_quality")
    for key in keys:
        value = (budget or {}).get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise CheckError(f"profile {profile_path}: budget.{key} must be a positive number")
    return budget


def host() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": ram,
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def judge(manifest: dict, budget: dict, measured: dict, disk: int) -> list[dict]:
    gb = 1e9
    checks = [
        {
            "name": "memory",
            "measured": measured["peak_rss_bytes"],
            "budget": budget["memory_gb"] * gb,
            "unit": "bytes",
            "pass": measured["peak_rss_bytes"] <= budget["memory_gb"] * gb,
        },
        {
            "name": "disk",
            "measured": disk,
            "budget": budget["disk_gb"] * gb,
            "unit": "bytes",
            "pass": disk <= budget["disk_gb"] * gb,
        },
        {
            "name": "first_token_ms",
            "measured": measured["first_token_ms_p50"],
            "budget": budget["first_token_ms"],
            "unit": "ms (p50)",
            "pass": measured["first_token_ms_p50"] <= budget["first_token_ms"],
        },
    ]
    if measured.get("decode_tokens_per_s_p50") is not None:
        checks.append(
            {
                "name": "decode_tokens_per_s",
                "measured": measured["decode_tokens_per_s_p50"],
                "budget": budget["decode_tokens_per_s"],
                "unit": "tokens/s (p50)",
                "pass": measured["decode_tokens_per_s_p50"] >= budget["decode_tokens_per_s"],
            }
        )
    quality = (manifest.get("quality") or {}).get("retention")
    if quality is not None:
        checks.append(
            {
                "name": "quality",
                "measured": quality,
                "budget": budget["min_quality"],
                "unit": "retention (measured at build)",
                "pass": quality >= budget["min_quality"],
            }
        )
    for golden in measured["golden"]:
        checks.append(
            {
                "name": f"golden: {golden['name']}",
                "measured": golden.get("matched", golden.get("cosine")),
                "budget": golden.get("need", 0.999),
                "unit": "tokens matched" if "matched" in golden else "cosine",
                "pass": golden["pass"],
            }
        )
    return checks


def report_text(result: dict) -> str:
    lines = [f"edgepack check: {result['verdict']}  ({result['bundle']})"]
    if "error" in result:
        return "\n".join(lines + [f"ERROR: {result['error']}"])
    for c in result["checks"]:
        mark = "ok  " if c["pass"] else "FAIL"
        lines.append(
            f"  {mark} {c['name']:<28} {fmt(c['measured']):>14}  budget {fmt(c['budget'])}"
            f"  {c['unit']}"
        )
    m, h = result["measured"], result["host"]
    lines.append(
        f"  load {m['load_s']:.2f} s; first token p95 {fmt(m['first_token_ms_p95'])} ms; "
        f"decode p95 {fmt(m['decode_tokens_per_s_p95'])} tok/s"
    )
    lines.append(
        f"  host: {h['cpu']}, {h['cores']} cores, {fmt(h['ram_bytes'])} bytes RAM, "
        f"{h['os']}, {result['runtime']} {m.get('runtime_version')}"
    )
    return "\n".join(lines)


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check this bundle on this device.")
    parser.add_argument("--json", action="store_true", help="print one JSON report")
    parser.add_argument("--profile", help="take the budgets from this profile file instead")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the runtime's)")
    parser.add_argument("--repetitions", type=int, default=5, help="timed runs (default 5)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # the measuring process: integrity was checked by the parent
        try:
            report = measure(HERE, load_manifest(HERE), args.threads, max(1, args.repetitions))
        except CheckError as exc:
            report = {"error": str(exc)}
        print(json.dumps(report))
        return 0

    result = {
        "bundle": HERE,
        "pass": False,
        "verdict": "ERROR",
        "checks": [],
        "measured": {},
        "host": host(),
    }
    try:
        manifest = load_manifest(HERE)
        result["runtime"] = manifest["runtime"]["name"]
        disk = verify_files(HERE, manifest)
        budget = read_budget(manifest, args.profile)
        measured, peak = run_child(args.threads, max(1, args.repetitions))
        measured["peak_rss_bytes"] = peak
        result["measured"] = measured
        result["checks"] = judge(manifest, budget, measured, disk)
        result["pass"] = all(c["pass"] for c in result["checks"])
        result["verdict"] = "PASS" if result["pass"] else "FAIL"
        code = EXIT_PASS if result["pass"] else EXIT_FAIL
    except CheckError as exc:
        result["error"] = str(exc)
        code = EXIT_ERROR
    print(json.dumps(result, indent=2) if args.json else report_text(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
