"""What a build costs the build host, per stage: wall time and peak memory of every process.

    .venv/bin/python tools/build_memory.py --shape 1b [--candidates FMT:PREC,...]
        [--eval-tokens N] [--work DIR] [--json FILE]
    .venv/bin/python tools/build_memory.py --from FILE      # the table of a saved --json run

A random Llama-shaped checkpoint of the shape (tools/random_model.py: bf16 safetensors, made
tensor by tensor) is built with `edgepack build --target PROFILE --format F --precision P
--candidates 1` once per candidate. PROFILE is the laptop's with this host's RAM and budgets a
2-core build host meets for a 7B model (BUDGET: a quality floor of 0.5, since a random model's
retention says nothing and a miss would bring in a second candidate; 20 GB; 2048 tokens of
context; a first token within 2 minutes and 0.2 tokens/s): the check then judges the bundle's
integrity, golden outputs, quality and memory against its prediction, not a laptop's speed.
The candidates share one new cache: the first build also computes the reference, later ones
reuse it, as a second build would. A checkpoint already in --work is reused.

While a build runs, every process of its tree is sampled every SAMPLE_S seconds from /proc:
the tree's summed resident memory (VmRSS, file-backed pages of mmapped weights included, as
GNU time counts them) and each child's own high-water mark (VmHWM, which sampling cannot
miss). A page two processes share (a forked child's, a file both map) counts in each one's
VmRSS, so the tree's proportional set size (Pss from /proc/PID/smaps_rollup, each shared page
divided among its sharers) is summed beside it, and the JSON keeps the processes of each
stage's peak sample. The stage is what the build last said on stderr (STAGES); the reference is
everything before the first export. For each stage it prints the wall seconds, the peak of the
tree (and of its Pss), that peak against the checkpoint's bf16 bytes, and the process that held
the most, with its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.2
CANDIDATES = "gguf:q4_k_m,openvino:int8,onnx:int8"
# the build's own words on stderr -> the stage they begin (the first match wins)
STAGES = (
    (r"converting .* to an f16 GGUF", "export: convert"),
    (r"importance matrix", "export: imatrix"),
    (r"exporting", "export"),
    (r"validating against", "validate"),
    (r"measuring quality", "quality"),
    (r"writing the bundle", "bundle"),
    (r"running the bundle's check", "check"),
    (r", done\s*$", "publish"),  # the chosen bundle's manifest, rename and tarball
)
QUANTIZE = re.compile(r"quantiz|compressing weights|llama-quantize|NNCF", re.I)


def log(message: str) -> None:
    print(f"[build_memory] {message}", file=sys.stderr, flush=True)


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(root: int) -> dict[int, str]:
    """root and its descendants: pid -> a short name (the script or program it runs)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        found[pid] = _name(pid)
        todo.extend(parents.get(pid, []))
    return found


def _name(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in args if a]
    if not words:
        return "?"
    if "-m" in words[:3]:
        return words[words.index("-m") + 1]
    scripts = [w for w in words[1:3] if w.endswith(".py")]
    return Path(scripts[0] if scripts else words[0]).name


class Sampler:
    """Samples a process tree while it runs; set_stage() files later samples under a new stage."""

    def __init__(self, pid: int):
        self.pid, self.stage, self.began = pid, "reference", time.monotonic()
        self.stages: dict[str, dict] = {}
        self._enter("reference")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _enter(self, stage: str) -> None:
        now = time.monotonic()
        if self.stages:
            self.stages[self.stage]["wall_s"] += now - self.began
        self.stage, self.began = stage, now
        self.stages.setdefault(
            stage,
            {
                "wall_s": 0.0,
                "tree_peak_bytes": 0,
                "tree_pss_peak_bytes": 0,
                "tree_at_peak": [],
                "process": "",
                "process_peak_bytes": 0,
            },
        )

    def set_stage(self, stage: str) -> None:
        if stage != self.stage:
            self._enter(stage)

    def _run(self) -> None:
        while not self.done.is_set():
            record = self.stages[self.stage]
            total = pss = 0
            members = []
            for pid, name in _tree(self.pid).items():
                status = _status(pid)
                total += status.get("VmRSS", 0)
                pss += _pss(pid)
                members.append([name, pid, status.get("VmRSS", 0)])
                # a child's own high-water mark belongs to the stage it ran in; the build's own
                # process keeps its mark for life, so its current RSS is what a stage shows
                own = status.get("VmHWM" if pid != self.pid else "VmRSS", 0)
                if own > record["process_peak_bytes"]:
                    record["process"], record["process_peak_bytes"] = name, own
            if total > record["tree_peak_bytes"]:
                record["tree_peak_bytes"], record["tree_at_peak"] = total, members
            record["tree_pss_peak_bytes"] = max(record["tree_pss_peak_bytes"], pss)
            self.done.wait(SAMPLE_S)

    def stop(self) -> dict[str, dict]:
        self.done.set()
        self.thread.join()
        self._enter("end")
        self.stages.pop("end")
        return self.stages


def stage_of(line: str) -> str | None:
    for pattern, stage in STAGES:
        if re.search(pattern, line):
            if stage == "export" and QUANTIZE.search(line):
                return "export: quantize"
            return stage
    if QUANTIZE.search(line):
        return "export: quantize"
    return None


BUDGET = {
    "ram_gb": 24,
    "memory_gb": 20,
    "disk_gb": 60,
    "context_tokens": 2048,
    "first_token_ms": 120000,
    "decode_tokens_per_s": 0.2,
    "min_quality": 0.5,
}


def profile(work: Path) -> Path:
    """The laptop profile with BUDGET's values."""
    text = (ROOT / "edgepack" / "builtin_profiles" / "laptop.toml").read_text()
    text = re.sub(r"(?m)^name = .*$", 'name = "build-host"', text)
    for key, value in BUDGET.items():
        text = re.sub(rf"(?m)^{key} = [^\n]*", f"{key} = {value}", text)
    path = work / "build-host.toml"
    path.write_text(text)
    return path


def build(model: Path, candidate: str, work: Path, eval_tokens: int, logfile):
    fmt, precision = candidate.split(":")
    cache, out = work / "cache", work / "out"
    cmd = [
        sys.executable, "-m", "edgepack.cli.main", "build", "--model", str(model),
        "--target", str(profile(work)), "--format", fmt, "--precision", precision,
        "--candidates", "1", "--eval-tokens", str(eval_tokens), "--out", str(out), "--json",
    ]  # fmt: skip
    env = {**os.environ, "EDGEPACK_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = Sampler(proc.pid)
    buffer = ""
    stdout = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)
    reader.start()
    # what is there, as soon as it is there (a read of N characters would wait for N)
    while data := os.read(proc.stderr.fileno(), 65536):
        chunk = data.decode(errors="replace")
        logfile.write(chunk)
        logfile.flush()
        buffer += chunk
        *lines, buffer = re.split(r"[\r\n]", buffer)
        # tqdm begins each refresh with "\r" and ends it with nothing: the text after the last
        # separator is already the bar's current line
        for line in [*lines, buffer]:
            stage = stage_of(line)
            if stage:
                sampler.set_stage(stage)
    code = proc.wait()
    reader.join()
    stages = sampler.stop()
    result = {"candidate": candidate, "exit": code, "wall_s": time.monotonic() - started}
    result["stages"] = stages
    if code == 0:
        bundle = json.loads(stdout[0])["bundles"][0]
        result["check"] = {k: bundle.get(k) for k in ("check", "predicted")}
    return result


def _gb(value: int | None) -> str:
    return f"{value / 1e9:.2f}" if value else "-"


def table(doc: dict) -> str:
    bf16 = doc["bf16_bytes"]
    lines = [
        f"{doc['shape']}: {doc['parameters']:,} parameters, bf16 checkpoint {bf16 / 1e9:.2f} GB; "
        f"host {doc['host_ram_bytes'] / 1e9:.1f} GB RAM, {doc['cores']} cores",
        f"{'candidate':<18}{'stage':<18}{'wall s':>8}{'peak GB':>9}{'x bf16':>8}{'pss GB':>8}  "
        "largest process (its peak GB)",
    ]
    materialise = doc.get("materialise")
    if materialise:
        lines.append(
            f"{'-':<18}{'materialise':<18}{materialise['wall_s']:>8.0f}"
            f"{materialise['peak_bytes'] / 1e9:>9.2f}{materialise['peak_bytes'] / bf16:>8.2f}"
            f"{'':>8}  random_model"
        )
    for run in doc["runs"]:
        for stage, r in run["stages"].items():
            lines.append(
                f"{run['candidate']:<18}{stage:<18}{r['wall_s']:>8.0f}"
                f"{r['tree_peak_bytes'] / 1e9:>9.2f}{r['tree_peak_bytes'] / bf16:>8.2f}"
                f"{_gb(r.get('tree_pss_peak_bytes')):>8}  "
                f"{r['process']} ({r['process_peak_bytes'] / 1e9:.2f})"
            )
        verdict = (run.get("check") or {}).get("check", {}) or {}
        lines.append(
            f"{run['candidate']:<18}{'(whole build)':<18}{run['wall_s']:>8.0f}"
            f"{'':>17}  exit {run['exit']}, check {verdict.get('verdict', '-')}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1b")
    parser.add_argument("--candidates", default=CANDIDATES, help=f"({CANDIDATES})")
    parser.add_argument("--eval-tokens", type=int, default=512)
    parser.add_argument("--work", type=Path, help="where the checkpoint, caches and bundles go")
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument("--from", dest="saved", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    if args.saved:
        print(table(json.loads(args.saved.read_text())))
        return 0
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools"))
    import random_model

    work = args.work or Path(tempfile.mkdtemp(prefix="edgepack-build-memory-"))
    model = work / f"random-{args.shape}"
    started = time.monotonic()
    materialise = None  # a checkpoint made by an earlier run is reused
    if not (model / "model.safetensors.index.json").is_file():
        random_model.make(args.shape, model, log=log)
        peak = _status(os.getpid())["VmHWM"]
        materialise = {"wall_s": time.monotonic() - started, "peak_bytes": peak}
    from edgepack.model.facts import read_facts

    facts = read_facts(model)
    bf16 = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    doc = {
        "shape": args.shape, "parameters": facts.num_parameters, "bf16_bytes": bf16,
        "host_ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "cores": os.cpu_count(), "eval_tokens": args.eval_tokens, "materialise": materialise,
        "runs": [],
    }  # fmt: skip
    for candidate in args.candidates.split(","):
        log(f"building {candidate} (the build's log: {work / 'build.log'})")
        with open(work / "build.log", "a") as logfile:
            run = build(model, candidate, work, args.eval_tokens, logfile)
        doc["runs"].append(run)
        print(table({**doc, "runs": [run], "materialise": None}).split("\n", 2)[2], flush=True)
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
