"""The pieces of an arm64 bundle that need no cross compiler and no emulator: which targets are
cross-compiled, a wheel's retagging, what is said where the toolchain is missing, the Debian
release that emulates a profile, and check.py's verdict under emulation.
The cross build and the emulated install and check themselves are tests/bundle/test_emulate.py.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile

import pytest

from edgepack.bundle.crossbuild import _rewrite, needs_cross, toolchain
from edgepack.bundle.emulate_root import EmulationError, suite_for
from edgepack.bundle.install import Resolution, cmake_args
from edgepack.bundle.kit import check_module
from edgepack.device.profiles import load_profile

check = check_module()


def test_only_a_cpu_of_another_arch_is_cross_compiled():
    assert needs_cross(load_profile("edge-4gb"))  # arm64 from this x86_64 host
    assert not needs_cross(load_profile("xeon"))  # this host's arch: the device compiles
    assert not needs_cross(load_profile("t4"))  # a GPU build needs the device's CUDA


def test_the_a76_gets_ggml_own_variant():
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in cmake_args(load_profile("edge-4gb"))


def test_a_missing_cross_compiler_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a host with no compilers at all
    why = toolchain(load_profile("edge-4gb"))
    assert isinstance(why, str) and "apt-get install g++-aarch64-linux-gnu" in why


def _wheel(path, tag="py3-none-linux_x86_64"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
        z.writestr("pkg/lib/libx.so", b"\x7fELF")
        wheel = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n"
        z.writestr("pkg-1.0.dist-info/WHEEL", wheel)
        z.writestr("pkg-1.0.dist-info/RECORD", "pkg-1.0.dist-info/WHEEL,sha256=stale,3\n")


def test_retagging_rewrites_the_tag_and_the_record(tmp_path):
    src, dst = tmp_path / "pkg-1.0-py3-none-linux_x86_64.whl", tmp_path / "out.whl"
    _wheel(src)
    _rewrite(src, dst, "py3-none-manylinux_2_34_aarch64")
    with zipfile.ZipFile(dst) as z:
        wheel = z.read("pkg-1.0.dist-info/WHEEL")
        tags = [ln for ln in wheel.decode().splitlines() if ln.startswith("Tag:")]
        assert tags == ["Tag: py3-none-manylinux_2_34_aarch64"]
        rows = list(csv.reader(io.StringIO(z.read("pkg-1.0.dist-info/RECORD").decode())))
        digest = base64.urlsafe_b64encode(hashlib.sha256(wheel).digest()).rstrip(b"=").decode()
        assert rows[0] == ["pkg-1.0.dist-info/WHEEL", f"sha256={digest}", str(len(wheel))]
        assert z.read("pkg/lib/libx.so") == b"\x7fELF"


def test_the_debian_release_that_emulates_a_profile():
    edge = load_profile("edge-4gb")
    assert suite_for(edge.platform.glibc, edge.platform.python) == "bookworm"
    with pytest.raises(EmulationError, match="no Debian release has glibc 2.35 with Python 3.10"):
        suite_for("2.35", "3.10")


def test_a_prebuilt_wheel_is_recorded_beside_the_source_builds():
    build = {"name": "llama-cpp-python", "version": "0.3.36", "cmake_args": "-DX=1"}
    done = Resolution("linux aarch64", [], [], [{**build, "wheel": "w.whl", "built_with": "g++"}])
    assert done.to_dict()["prebuilt"][0]["wheel"] == "w.whl"
    assert done.to_dict()["source_builds"] == []


def test_speed_is_reported_not_judged_under_emulation():
    budget = {"memory_gb": 3, "disk_gb": 8, "first_token_ms": 100, "decode_tokens_per_s": 5,
              "min_quality": 0.85}  # fmt: skip
    measured = {"peak_rss_bytes": 4e9, "first_token_ms_p50": 9000.0,
                "decode_tokens_per_s_p50": 1.5, "golden": []}  # fmt: skip
    rows = {c["name"]: c for c in check.judge({}, budget, measured, 1, "qemu cortex-a76")}
    for name in ("first_token_ms", "decode_tokens_per_s"):
        assert rows[name]["judged"] is False
        assert "not judged under emulation (qemu cortex-a76)" in rows[name]["unit"]
    assert rows["memory"].get("judged", True) and not rows["memory"]["pass"]  # still judged


def test_a_speed_not_judged_is_marked_so_even_where_it_meets_its_budget():
    budget = {"memory_gb": 3, "disk_gb": 8, "first_token_ms": 100, "decode_tokens_per_s": 5,
              "min_quality": 0.85}  # fmt: skip
    measured = {"peak_rss_bytes": 1e9, "first_token_ms_p50": 9000.0, "first_token_ms_p95": 9e3,
                "decode_tokens_per_s_p50": 6.2, "decode_tokens_per_s_p95": 6.0, "load_s": 1.0,
                "golden": []}  # fmt: skip
    checks = check.judge({}, budget, measured, 1, "qemu cortex-a76")
    host = {"cpu": "aarch64", "cores": 2, "ram_bytes": 1, "os": "Linux"}
    result = {"verdict": "PASS", "bundle": "b", "checks": checks, "measured": measured,
              "host": host, "runtime": "onnxruntime", "emulated": "qemu cortex-a76"}  # fmt: skip
    marks = {ln.split()[1]: ln.split()[0] for ln in check.report_text(result).splitlines()[1:5]}
    speed = {"first_token_ms": "-", "decode_tokens_per_s": "-"}  # unjudged, though 6.2 >= 5
    assert marks == {"memory": "ok", "disk": "ok", **speed}
