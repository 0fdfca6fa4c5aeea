"""Bundles of the real default model: build, host check, verify, and the ways to break them."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.build.conftest import GENEROUS, QUICK_EVAL, profile_file
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

VARIANTS = [("gguf", "q8_0"), ("openvino", "int8"), ("onnx", "int8")]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, generous):
    """One bundle per format, built through the CLI once for this module."""
    out = tmp_path_factory.mktemp("bundles")
    built = {}
    for fmt, precision in VARIANTS:
        result = run_cli(
            "build",
            "--target",
            str(generous),
            "--format",
            fmt,
            "--precision",
            precision,
            *QUICK_EVAL,
            "--out",
            str(out / fmt),
            "--json",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        data = json.loads(result.stdout)
        (bundle,) = data["bundles"]
        assert {"path", "tarball", "target", "format", "precision", "student_layers"} <= set(bundle)
        built[fmt] = bundle | {"stderr": result.stderr}
    return built


@pytest.mark.parametrize("fmt", [v[0] for v in VARIANTS])
def test_libraries_output_stays_off_the_terminal(bundles, fmt):
    """The exporters' and runtimes' own messages go to the log named on stderr (named only when
    it holds anything: exports cached earlier in the run print nothing); the terminal shows
    edgepack's progress, and stdout its JSON (parsed by the fixture). tests/test_liblog.py
    checks what reaches the log."""
    stderr = bundles[fmt]["stderr"]
    named = [ln for ln in stderr.splitlines() if "libraries' messages are in" in ln]
    assert len(named) <= 1
    if named:
        log = Path(named[0].split(" are in ", 1)[1].strip())
        assert log.is_file() and log.stat().st_size > 0
    for noise in ("TracerWarning", "UserWarning", "[INFO]", "[WARNING]", "llama_model_loader"):
        assert noise not in stderr, noise
    assert f"{fmt} " in stderr  # the progress bar


@pytest.mark.parametrize("fmt", [v[0] for v in VARIANTS])
def test_bundle_layout_and_host_check(bundles, fmt):
    b = bundles[fmt]
    root = Path(b["path"])
    names = {p.name for p in root.iterdir()}
    assert {
        "manifest.json",
        "model",
        "check.py",
        "requirements.txt",
        "README.md",
        "devicekit.py",
    } <= names
    manifest = json.loads((root / "manifest.json").read_text())
    for key in (
        "schema_version",
        "edgepack_version",
        "source_model",
        "target",
        "plan",
        "files",
        "runtime",
        "predicted",
        "validation",
        "quality",
        "golden",
        "build_host",
    ):
        assert key in manifest, key
    assert manifest["plan"]["format"] == fmt
    quality = manifest["quality"]
    assert 0.5 < quality["retention"] <= 1.0 and quality["perplexity"] > 1
    assert quality["eval_tokens"] > 100
    assert manifest["target"]["name"] == "generous"
    assert manifest["source_model"]["weights_sha256"]
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]
    assert manifest["build_host"]["host"]["cores"] >= 1
    assert len(manifest["golden"]) == 3 and all(g["tokens"] for g in manifest["golden"])
    for g in manifest["golden"]:
        assert len(g["margins"]) == len(g["tokens"])
    # the manifest names where the bundle was published, never its staging directory
    assert manifest["bundle"]["path"] == str(root.resolve())
    assert manifest["build_host"]["check"]["bundle"] == str(root.resolve())
    assert ".edgepack-staging-" not in (root / "manifest.json").read_text()
    measured = manifest["build_host"]["check"]["measured"]
    assert measured["threads"] == len(os.sched_getaffinity(0))
    assert measured["prompt_tokens_processed"] == [measured["prompt_tokens"]] * 5
    # the laptop has AVX-VNNI, this host AVX2 at most: the device is ranked by its prediction
    assert manifest["device_prediction"]["ranked_by"] == "device prediction"
    # one prediction for the device: the plan's fitted model refined by this host's check,
    # with what calibrated what
    device = manifest["device_prediction"]
    cal = device["calibration"]
    assert cal["runtime"] == manifest["plan"]["runtime"] and cal["host_factor"]["decode"] > 0
    assert cal["device_factor"]["decode"] > 0 and 0 <= cal["weight"]["decode"] <= 1
    low, high = device["decode_tokens_per_s_low"], device["decode_tokens_per_s_high"]
    assert low < device["decode_tokens_per_s"] < high
    # resolved for the laptop: the runtime is pinned, or stated as the device's source build
    install = manifest["runtime"]["install"]
    assert install["platform"].startswith("linux x86_64, glibc 2.39")
    lines = (root / "requirements.txt").read_text().splitlines()
    built = [b["name"] for b in install["source_builds"]]
    assert any(line.startswith(manifest["runtime"]["package"]) for line in lines + built)


@pytest.mark.parametrize("fmt", [v[0] for v in VARIANTS])
def test_task_accuracy_per_category_in_the_runtime(bundles, fmt):
    """--eval-tasks builtin: each format's runner answered the 100 items; the manifest, the
    report and the check judge its task accuracy retention, as the profile's floor says."""
    root = Path(bundles[fmt]["path"])
    manifest = json.loads((root / "manifest.json").read_text())
    tasks = manifest["quality"]["tasks"]
    assert manifest["quality"]["gated_on"] == "tasks" and tasks["task_set"] == "built-in"
    assert tasks["items"] == 100 and 0 < tasks["reference_accuracy"] < 1
    assert 0.5 <= tasks["retention"] <= 1 and tasks["agreement"] >= 0.8  # 8-bit weights
    names = [c["category"] for c in tasks["categories"]]
    assert names == ["completion", "factual", "language", "long-context", "reasoning"]
    assert sum(c["items"] for c in tasks["categories"]) == 100
    (row,) = [c for c in manifest["build_host"]["check"]["checks"] if c["name"] == "quality"]
    assert row["measured"] == tasks["retention"] and "task accuracy retention" in row["unit"]
    report = (root.parent / "report.html").read_text()
    assert "Task accuracy: built-in (100 items)" in report and "long-context" in report


@pytest.mark.parametrize("fmt", [v[0] for v in VARIANTS])
def test_verify_passes_with_generous_budgets(bundles, fmt):
    result = run_cli("verify", bundles[fmt]["tarball"], "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["pass"] is True
    measured = report["measured"]
    for key in (
        "peak_rss_bytes",
        "load_s",
        "first_token_ms_p50",
        "first_token_ms_p95",
        "decode_tokens_per_s_p50",
        "decode_tokens_per_s_p95",
    ):
        assert measured[key] is not None and measured[key] > 0, key
    assert {c["name"] for c in report["checks"]} >= {
        "memory",
        "disk",
        "first_token_ms",
        "decode_tokens_per_s",
    }


@pytest.mark.parametrize("fmt", [v[0] for v in VARIANTS])
@pytest.mark.parametrize(
    "budget,failing",
    [({"memory_gb": 0.001}, "memory"), ({"decode_tokens_per_s": 1000000}, "decode_tokens_per_s")],
    ids=["1MB", "1e6tok/s"],
)
def test_tight_budgets_fail_naming_the_check(bundles, tmp_path, fmt, budget, failing):
    # every other budget generous, the decode floor too: a loaded host must not fail it
    tight = profile_file(tmp_path, "tight", **{**GENEROUS, "decode_tokens_per_s": 0.01, **budget})
    args = ("verify", bundles[fmt]["path"], "--target", str(tight), "--repetitions", "1")
    result = run_cli(*args, "--json")
    assert result.returncode == 1, result.stdout[-2000:]
    report = json.loads(result.stdout)
    assert report["pass"] is False
    failed = [c["name"] for c in report["checks"] if not c["pass"]]
    assert failed == [failing]
    if failing == "memory":  # the text report of the same check, once per format
        text = run_cli(*args)
        assert text.returncode == 1 and f"FAIL {failing}" in text.stdout


def copy_bundle(bundles, tmp_path, fmt="gguf"):
    dest = tmp_path / "copy"
    shutil.copytree(bundles[fmt]["path"], dest)
    return dest


def largest_model_file(root):
    return max(
        (p for p in (root / "model").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )


BLOCKED = ("torch", "transformers", "edgepack", "llama_cpp", "openvino", "onnxruntime")


def blocker_dir(tmp_path, names=BLOCKED):
    """A PYTHONPATH entry that makes these packages unimportable."""
    block = tmp_path / "blocked"
    for name in names:
        (block / name).mkdir(parents=True, exist_ok=True)
        (block / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
    return block


@pytest.mark.parametrize(
    "tamper,named",
    [
        ("flip", "file changed: model/"),
        ("missing", "missing file: model/"),
        ("extra", "extra file not in the manifest: model/notes.txt"),
        ("manifest", "manifest.json was modified"),
    ],
)
def test_broken_bundles_are_errors_before_loading(bundles, tmp_path, tamper, named):
    root = copy_bundle(bundles, tmp_path)
    target = largest_model_file(root)
    if tamper == "flip":
        with open(target, "r+b") as fh:
            fh.seek(target.stat().st_size // 2)
            byte = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([byte[0] ^ 0x01]))
    elif tamper == "missing":
        target.unlink()
    elif tamper == "extra":
        (root / "model" / "notes.txt").write_text("hello")
    else:
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["target"]["budget"]["memory_gb"] = 1000
        (root / "manifest.json").write_text(json.dumps(manifest))
    # the runtime is unimportable: an integrity error must come before any loading
    env = {**os.environ, "PYTHONPATH": str(blocker_dir(tmp_path))}
    result = subprocess.run(
        [sys.executable, str(root / "check.py"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 2, result.stdout
    report = json.loads(result.stdout)
    assert named in report["error"]
    verify = run_cli("verify", str(root))
    assert verify.returncode == 2 and named in verify.stderr
    assert len(verify.stderr.splitlines()) == 1


@pytest.mark.parametrize("fmt", [v[0] for v in VARIANTS])
def test_check_runs_without_edgepack_torch_or_transformers(bundles, tmp_path, fmt):
    block = blocker_dir(tmp_path, ("torch", "transformers", "edgepack", "optimum"))
    env = {**os.environ, "PYTHONPATH": str(block)}
    result = subprocess.run(
        [
            sys.executable,
            str(Path(bundles[fmt]["path"]) / "check.py"),
            "--json",
            "--repetitions",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert json.loads(result.stdout)["pass"]


def test_missing_runtime_is_an_error(bundles, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(blocker_dir(tmp_path, ("llama_cpp",)))}
    result = subprocess.run(
        [sys.executable, str(Path(bundles["gguf"]["path"]) / "check.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 2
    assert "runtime package missing" in result.stdout


@pytest.mark.skipif(not os.path.exists("/usr/bin/time"), reason="GNU time is not installed")
def test_peak_memory_agrees_with_gnu_time(bundles):
    bundle = Path(bundles["gguf"]["path"])
    result = subprocess.run(
        [
            "/usr/bin/time",
            "-v",
            sys.executable,
            str(bundle / "check.py"),
            "--json",
            "--repetitions",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ours = json.loads(result.stdout)["measured"]["peak_rss_bytes"]
    kbytes = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    theirs = kbytes * 1024
    print(f"check.py peak {ours / 1e6:.1f} MB, GNU time {theirs / 1e6:.1f} MB")
    assert abs(ours - theirs) / theirs < 0.30


def test_unsafe_tarball_via_verify(bundles, tmp_path):
    import io
    import tarfile

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(bundles["gguf"]["tarball"]) as src, tarfile.open(evil, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo("x/../../escape.txt")
        info.size = 3
        dst.addfile(info, io.BytesIO(b"bad"))
    result = run_cli("verify", str(evil))
    assert result.returncode == 2
    assert "'..'" in result.stderr
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_killed_build_leaves_no_bundle(bundles, tmp_path, generous):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "edgepack",
        "build",
        "--target",
        str(generous),
        "--format",
        "gguf",
        "--precision",
        "q8_0",
        *QUICK_EVAL,
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline and not list(out.glob(".edgepack-staging-*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.glob(".edgepack-staging-*")), "the build never reached the bundle writer"
    assert not [p for p in out.iterdir() if not p.name.startswith(".edgepack-")]
    # the next build cleans the leftovers up and completes
    result = subprocess.run(
        cmd + ["--no-check"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = {
        Path(bundles["gguf"]["path"]).name,
        Path(bundles["gguf"]["tarball"]).name,
        "report.html",
    }
    assert {p.name for p in out.iterdir()} == expected
