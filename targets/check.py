"""The bundle's runtime check: does this model fit this device and meet its budgets?

    python check.py [--json] [--profile FILE] [--threads N] [--repetitions N]

Runs with the standard library, numpy and the bundle's runtime package only. In order:
1. integrity: every file's size and sha256 against manifest.json (and the manifest against its
   own digest) before anything is loaded; a missing, extra or changed file is an ERROR;
2. in a child process: load the model, measure load time, first-token latency for a 128-token
   prompt and decode tokens/s (warm-up, repetitions, each on a prompt the runtime has not seen;
   p50 and p95) on every core the process may use; the parent reads the child's peak resident
   memory from the operating system; then, in a second child, the golden outputs teacher-forced
   (see devicekit.golden_check);
3. compare with the budgets (the manifest's target, or --profile) and report.
A bundle planned for a GPU must run on it: on a host where the runtime has no GPU it is an
ERROR naming the GPU build to install (targets/gpu.py), unless --allow-cpu; on the GPU the VRAM
it holds is judged against budget.accelerator_memory_gb.
Exit codes: 0 PASS, 1 FAIL (a budget or golden output missed), 2 ERROR (missing runtime
package, corrupt or missing file, cannot load, no GPU for a GPU bundle).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import manifestkeys as K  # noqa: E402 - the kit's modules beside this file
from measure import DECODE_TOKENS, PROMPT_TOKENS, CheckError, built_for, check_golden, measure  # noqa: E402, F401
from signature import SIGNATURE  # noqa: E402 - model-signing itself is imported only to verify

MANIFEST = "manifest.json"
IGNORED = ("__pycache__", "venv")  # venv: the environment the README makes in the bundle
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
LATENCY = ("first_token_ms", "decode_tokens_per_s")  # the rows the device's speed answers


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its own digest field."""
    body = {k: v for k, v in manifest.items() if k != K.DIGEST}
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
    if manifest.get(K.DIGEST) != manifest_digest(manifest):
        raise CheckError(f"{MANIFEST} was modified after the build (its digest does not match)")
    return manifest


def verify_files(root: str, manifest: dict) -> int:
    """Sizes and sha256 of every file; nothing missing, nothing extra. Returns total bytes."""
    listed = {f["path"]: f for f in manifest[K.FILES]}
    present = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED]
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel not in (MANIFEST, SIGNATURE):  # the signature covers the manifest itself
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


def run_child(
    mode: str, threads: int | None, repetitions: int, allow_cpu: bool = False
) -> tuple[dict, int]:
    """One measuring process (mode "measure" or "golden"); its report and its own peak RSS in
    bytes from the operating system (wait4: this child's rusage alone)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode]
    cmd += ["--repetitions", str(repetitions)] + (["--allow-cpu"] if allow_cpu else [])
    if threads:
        cmd += ["--threads", str(threads)]
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    unit = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines and proc.returncode == -signal.SIGILL:  # the runtime's kernels, not this file
        flags = built_for(load_manifest(HERE))
        raise CheckError(
            "the runtime died of an illegal instruction (SIGILL): this CPU lacks an instruction "
            f"the bundle's runtime was built for ({flags}); rebuild for this CPU's profile"
        )
    if not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckError(f"the measuring process failed (exit {proc.returncode}): {tail}")
    report = json.loads(lines[-1])
    if "error" in report:
        raise CheckError(report["error"])
    return report, usage.ru_maxrss * unit


def read_budget(manifest: dict, profile_path: str | None) -> dict:
    if not profile_path:
        return manifest[K.TARGET]["budget"]
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


def judge(
    manifest: dict, budget: dict, measured: dict, disk: int, emulated: str | None = None
) -> list[dict]:
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
    if measured.get("device") == "gpu":
        vram, limit = measured.get("vram_bytes"), budget.get("accelerator_memory_gb")
        checks.append(
            {
                "name": "vram",
                "measured": vram,
                "budget": limit * gb if limit else None,
                "unit": f"bytes ({measured.get('vram_source')})",
                "pass": vram is not None and limit is not None and vram <= limit * gb,
            }
        )
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
    # a CPU standing in for the GPU (--allow-cpu), or an emulator: its speed is not the device's
    stand_in = measured.get("planned_device") == "gpu" and measured.get("device") != "gpu"
    why = f" under emulation ({emulated})" if emulated else ": this CPU stands in for the GPU"
    for c in checks if stand_in or emulated else []:
        if c["name"] in LATENCY:
            c["judged"] = False
            c["unit"] += f"; not judged{why}"
    figures = manifest.get(K.QUALITY) or {}
    unit = "retention (measured at build)"
    if budget.get("quality_metric", "perplexity") == "tasks":  # the schema's default
        figures = figures.get("tasks") or {"retention": 0.0}  # built without --eval-tasks
        unit = f"task accuracy retention ({figures.get('task_set', 'no tasks')}, measured at build)"
    quality = figures.get("retention")
    if quality is not None:
        checks.append(
            {
                "name": "quality",
                "measured": quality,
                "budget": budget["min_quality"],
                "unit": unit,
                "pass": quality >= budget["min_quality"],
            }
        )
    for golden in measured["golden"]:
        if "cosine" in golden:
            value, need, unit = golden["cosine"], 0.999, "cosine"
        else:
            steps = golden["steps"]
            value, need = steps - len(golden.get("failed_steps", [])), steps
            unit = f"steps kept, teacher-forced ({golden.get('near_ties', 0)} near-ties)"
            if not golden.get("tokenized_as_built", True):
                unit += "; the prompt tokenizes differently from the build"
        checks.append(
            {
                "name": f"golden: {golden['name']}",
                "measured": value,
                "budget": need,
                "unit": unit,
                "pass": golden["pass"],
            }
        )
    return checks


def report_text(result: dict) -> str:
    lines = [f"edgepack check: {result['verdict']}  ({result['bundle']})"]
    if "error" in result:
        return "\n".join(lines + [f"ERROR: {result['error']}"])
    for c in result["checks"]:
        mark = "-   " if not c.get("judged", True) else "ok  " if c["pass"] else "FAIL"
        lines.append(
            f"  {mark} {c['name']:<28} {fmt(c['measured']):>14}  budget {fmt(c['budget'])}"
            f"  {c['unit']}"
        )
    m, h = result["measured"], result["host"]
    if m.get("planned_device") == "gpu" and m.get("device") != "gpu":
        lines.append("  NOTE: planned for a GPU, measured on this host's CPU (--allow-cpu)")
    if result.get("emulated"):
        note = "speed not judged; peak memory includes the emulator's own (an upper bound)"
        lines.append(f"  NOTE: run under emulation ({result['emulated']}): {note}")
    lines.append(
        f"  load {m['load_s']:.2f} s; first token p95 {fmt(m['first_token_ms_p95'])} ms; "
        f"decode p95 {fmt(m['decode_tokens_per_s_p95'])} tok/s; {m.get('threads')} threads"
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
    parser.add_argument(
        "--threads", type=int, help="runtime threads (default: every core this process may use)"
    )
    parser.add_argument("--repetitions", type=int, default=5, help="timed runs (default 5)")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="a bundle planned for a GPU may run on this host's CPU (a smoke test off the "
        "device: its figures are not the GPU's)",
    )
    parser.add_argument(
        "--public-key",
        metavar="PUB",
        help="refuse the bundle unless its model.sig, made with this key's private half, covers "
        "every file (checked before anything else is read)",
    )
    parser.add_argument(
        "--emulated",
        metavar="CPU",
        help="this runs under an emulator of CPU (edgepack verify --emulate): speed is reported, "
        "not judged",
    )
    parser.add_argument("--child", choices=("measure", "golden"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # a measuring process: integrity was checked by the parent
        try:
            manifest = load_manifest(HERE)
            if args.child == "golden":
                report = check_golden(HERE, manifest, args.threads)
            else:
                report = measure(
                    HERE, manifest, args.threads, max(1, args.repetitions), args.allow_cpu
                )
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
    if args.public_key:  # who made the bundle, before anything in it is read
        from signature import SignatureError, verify_bundle

        try:
            verify_bundle(HERE, args.public_key)
        except SignatureError as exc:
            result["error"] = str(exc)
            print(json.dumps(result, indent=2) if args.json else f"edgepack check: {exc}")
            return EXIT_ERROR
        result["signature"] = f"verified with {os.path.abspath(args.public_key)}"
    try:
        manifest = load_manifest(HERE)
        result["runtime"] = manifest[K.RUNTIME]["name"]
        disk = verify_files(HERE, manifest)
        budget = read_budget(manifest, args.profile)
        # the timed run alone sets the peak: the golden check loads the model a second time in
        # a process of its own, as it may hold more (OpenVINO compiles the IR for its logits)
        measured, peak = run_child(
            "measure", args.threads, max(1, args.repetitions), args.allow_cpu
        )
        measured["peak_rss_bytes"] = peak
        golden, _ = run_child("golden", args.threads, 1)
        measured["golden"] = golden["golden"]
        result["measured"] = measured
        result["checks"] = judge(manifest, budget, measured, disk, args.emulated)
        if args.emulated:
            result["emulated"] = args.emulated
        result["pass"] = all(c["pass"] for c in result["checks"] if c.get("judged", True))
        result["verdict"] = "PASS" if result["pass"] else "FAIL"
        code = EXIT_PASS if result["pass"] else EXIT_FAIL
    except CheckError as exc:
        result["error"] = str(exc)
        code = EXIT_ERROR
    print(json.dumps(result, indent=2) if args.json else report_text(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
