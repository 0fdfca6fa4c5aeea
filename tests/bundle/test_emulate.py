"""arm64 bundles as an edge-4gb board installs and checks them, under qemu-user.

The default model built for edge-4gb with --wheels: llama-cpp-python cross-compiled for the
Cortex-A76 into the wheelhouse, the bundle installed in an arm64 Debian bookworm root with no
compiler and no network, and its check passed through the NEON kernels (golden outputs kept,
memory judged, speed reported). The same bundle on an emulated Cortex-A72, which lacks the
dot-product instructions it was built for, fails in one line. An onnx-genai int4 bundle does the
same with onnxruntime-genai's and onnxruntime's own aarch64 wheels (onnxruntime reads the
emulated device's /proc/cpuinfo: the host's x86 one crashed it).

The root and the cross-built wheel stay in the user's cache (tests/conftest.py, MACHINE_CACHES):
only a fresh machine makes them (about 4 and 4 minutes on 2 cores). `make test` runs this file
in a group of its own (`make test-emulation`), on every core.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.emulation,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot, mounts and binfmt_misc need root"),
]


def _build(out: Path, fmt: str, precision: str) -> Path:
    r = run_cli(
        "build", "--target", "edge-4gb", "--format", fmt, "--precision", precision,
        "--candidates", "1", "--eval-tokens", "1024", "--wheels", "--no-check",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return Path(json.loads(r.stdout)["bundles"][0]["path"])


@pytest.fixture(scope="module")
def gguf_bundle(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("arm64"), "gguf", "q4_k_m")


def _passes_under_emulation(bundle: Path) -> dict:
    r = run_cli("verify", str(bundle), "--emulate", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["verdict"] == "PASS", (report.get("error"), r.stderr)
    rows = {c["name"]: c for c in report["checks"]}
    assert report["host"]["machine"] == "aarch64"  # the device's kernels, not this host's
    assert report["emulation"]["cpu"] == "cortex-a76"  # the profile's core
    for name in ("first_token_ms", "decode_tokens_per_s"):
        assert rows[name]["judged"] is False and "under emulation" in rows[name]["unit"]
    assert rows["memory"].get("judged", True) and rows["memory"]["pass"]
    golden = [c for name, c in rows.items() if name.startswith("golden: ")]
    assert golden and all(c["pass"] for c in golden)
    return report


def test_a_gguf_bundle_installs_offline_and_passes_on_an_emulated_a76(gguf_bundle):
    manifest = json.loads((gguf_bundle / "manifest.json").read_text())
    install = manifest["runtime"]["install"]
    assert install["source_builds"] == []  # nothing left to compile on the device
    (built,) = install["prebuilt"]
    assert built["name"] == "llama-cpp-python" and built["wheel"].endswith("_aarch64.whl")
    assert "armv8.2-a+dotprod+fp16" in built["cmake_args"]
    wheelhouse = {p.name for p in (gguf_bundle / "wheelhouse").iterdir()}
    assert built["wheel"] in wheelhouse and not any(n.endswith(".tar.gz") for n in wheelhouse)
    assert "compiled on the device" not in (gguf_bundle / "README.md").read_text()
    report = _passes_under_emulation(gguf_bundle)
    assert any("Successfully installed" in line for line in report["emulation"]["install_log_tail"])


def test_a_dotprod_build_fails_in_one_line_on_a_core_without_it(gguf_bundle):
    r = run_cli("verify", str(gguf_bundle), "--emulate", "--emulate-cpu", "cortex-a72")
    assert r.returncode == 2, r.stdout[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "illegal instruction (SIGILL)" in lines[0], r.stderr[-2000:]
    assert "armv8.2-a+dotprod+fp16" in lines[0] and "core dumped" not in r.stderr + r.stdout


def test_the_emulated_a76_shows_the_profiles_core_and_isa_to_its_programs():
    from edgepack.bundle.emulate_cpu import cpuinfo
    from edgepack.bundle.emulate_root import ensure_root
    from edgepack.cache import cache_root
    from edgepack.device.cpuinfo import cpu_model, isa_features, parse_cpuinfo
    from edgepack.device.profiles import load_profile

    profile = load_profile("edge-4gb")
    text = cpuinfo(ensure_root("bookworm", cache_root()), "cortex-a76", 2)
    processors, extra = parse_cpuinfo(text)  # as `edgepack profile --detect` reads a board
    assert cpu_model("arm64", processors, extra) == "2x Cortex-A76"
    assert set(isa_features("arm64", processors[0]["Features"])) == set(profile.hardware.isa)
    a72 = parse_cpuinfo(cpuinfo(ensure_root("bookworm", cache_root()), "cortex-a72", 1))[0]
    assert isa_features("arm64", a72[0]["Features"]) == ("neon",)  # no dotprod, no fp16


def test_an_onnx_genai_bundle_passes_on_an_emulated_a76(tmp_path):
    bundle = _build(tmp_path, "onnx-genai", "int4_mixed")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"]["install"]["prebuilt"] == []  # published aarch64 wheels
    report = _passes_under_emulation(bundle)
    assert report["runtime"] == "onnxruntime-genai"


def test_an_x86_bundle_is_refused_in_one_line(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "check.py").write_text("")
    manifest = {"target": {"hardware": {"arch": "x86_64"}}}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("verify", str(bundle), "--emulate")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "runs arm64 bundles" in r.stderr
