"""Measure the students' quality priors (edgepack/plan/students.py MEASURED) on the default model.

For each student: make it with edgepack's own commands (prune + distill --student for width,
distill --layers for depth), heal it for --steps steps of 4 x 256 tokens of the built-in
training text, build it as GGUF q8_0 with 2048 scored WikiText-2 tokens and the built-in tasks,
and print the share of block parameters kept, the retention against the teacher's fp32
perplexity (with its interval) and the task accuracy. Each student takes ~7 min on a 2-core CPU
at 40 steps; run nothing else meanwhile.

    .venv/bin/python tools/student_priors.py --work /tmp/priors [--steps 40] [--only w25,d24]
        [--generate N]

--generate N adds N tokens of the teacher's own sampled answers to the training text (distill
--generate), to see whether more text raises a student.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDENTS = {  # name: the commands' arguments
    "w25": ("width", 0.25),
    "w50": ("width", 0.5),
    "d24": ("depth", 24),
    "d19": ("depth", 19),
}
PROFILE = """name = "priors"
description = "any host: the floor is all but zero, the figures are what matter"
objective = "quality"
[hardware]
arch = "x86_64"
cpu = "x86"
cores = 2
clock_ghz = 2.0
ram_gb = 24
memory_bandwidth_gbs = 30
isa = ["avx2"]
[accelerator]
kind = "none"
[budget]
memory_gb = 20
disk_gb = 20
context_tokens = 2048
first_token_ms = 100000
decode_tokens_per_s = 0.1
min_quality = 0.001
[runtimes]
prefer = ["llama.cpp"]
"""


def edgepack(*args: str, log: Path) -> dict:
    with open(log, "w") as err:
        done = subprocess.run(
            [sys.executable, "-m", "edgepack", *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
        )
    if done.returncode:
        sys.exit(f"edgepack {args[0]} failed (exit {done.returncode}); see {log}")
    return json.loads(done.stdout)


def measure(name: str, work: Path, steps: int, generate: int = 0) -> dict:
    kind, value = STUDENTS[name]
    student = work / name
    heal = ["--steps", str(steps), "--batch", "4", "--seq-len", "256", "--out", str(student)]
    heal += ["--generate", str(generate)] if generate else []
    if not (student / "distill_report.json").is_file():
        if kind == "width":
            pruned = work / f"{name}-pruned"
            if not (pruned / "prune_report.json").is_file():
                prune = ["--ratio", str(value), "--out", str(pruned)]
                edgepack("prune", *prune, log=work / f"{name}-prune.log")
            edgepack("distill", "--student", str(pruned), *heal, log=work / f"{name}-distill.log")
        else:
            edgepack("distill", "--layers", str(value), *heal, log=work / f"{name}-distill.log")
    profile = work / "priors.toml"
    profile.write_text(PROFILE)
    built = edgepack(
        "build", "--model", str(student), "--target", str(profile), "--format", "gguf",
        "--precision", "q8_0", "--candidates", "1", "--eval-tokens", "2048", "--eval-tasks",
        "builtin", "--no-resolve", "--no-check", "--out", str(work / f"{name}-bundle"),
        log=work / f"{name}-build.log",
    )  # fmt: skip
    manifest = json.loads((Path(built["bundles"][0]["path"]) / "manifest.json").read_text())
    row = {"student": name, "kind": kind, "value": value, "steps": steps, "generate": generate}
    return {**row, **_figures(manifest)}


def _figures(manifest: dict) -> dict:
    """The student's figures; its share of the teacher's block parameters from the parameter
    counts (a depth or width student loses block parameters only)."""
    from edgepack.export.support import inspect_model

    q = manifest["quality"]
    teacher = inspect_model(Path(manifest["distillation"]["teacher"]))
    parameters = manifest["source_model"]["num_parameters"]
    removed = teacher.num_parameters - parameters
    return {
        "parameters": parameters,
        "block_share": round((teacher.layer_parameters - removed) / teacher.layer_parameters, 4),
        "perplexity": round(q["perplexity"], 2),
        "teacher_perplexity": round(q["reference_perplexity"], 2),
        "retention": round(q["retention"], 3),
        "interval": [round(q["retention_low"], 3), round(q["retention_high"], 3)],
        "tasks_accuracy": (q.get("tasks") or {}).get("accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--only", default=",".join(STUDENTS))
    parser.add_argument("--generate", type=int, default=0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [measure(name, args.work, args.steps, args.generate) for name in args.only.split(",")]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
