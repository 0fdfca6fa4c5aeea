"""What a bundle installs on its device: platform tags, CMAKE_ARGS, pip's failures as one line,
the candidates kept where a runtime does not install (no network), and, in the integration
tier, real resolutions against the package index."""

import pytest

from edgepack.bundle.install import (
    InstallError,
    cmake_args,
    keep_installable,
    no_wheel_message,
    platform_tags,
    requirements,
    resolve,
)
from edgepack.device.profiles import load_profile, parse_profile
from edgepack.export.support import inspect_model
from edgepack.plan.planner import plan
from tests.conftest import PROFILES, config_dir


def test_builtin_platforms_and_the_default():
    edge = load_profile("edge-4gb")
    assert (edge.platform.glibc, edge.platform.python) == ("2.36", "3.11")
    text = (PROFILES / "laptop.toml").read_text()
    start, end = text.index("[platform]"), text.index("[accelerator]")
    custom = parse_profile((text[:start] + text[end:]).encode(), "mine.toml")
    assert (custom.platform.os, custom.platform.glibc, custom.platform.python) == (
        "linux",
        "2.31",
        "3.11",
    )
    with pytest.raises(Exception, match="glibc"):
        parse_profile(text.replace('glibc = "2.39"', 'glibc = "two"').encode(), "bad.toml")


def test_platform_tags_cover_every_older_glibc():
    tags = platform_tags(load_profile("edge-4gb"))
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_28_aarch64" in tags
    assert tags[-1] == "manylinux2014_aarch64" and not any("x86_64" in t for t in tags)
    x86 = platform_tags(load_profile("xeon"))
    assert x86[0] == "manylinux_2_39_x86_64" and "manylinux1_x86_64" in x86


def test_cmake_args_follow_the_device_not_this_host():
    assert cmake_args(load_profile("t4")) == "-DGGML_CUDA=on"
    assert "GGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in cmake_args(load_profile("edge-4gb"))
    xeon = cmake_args(load_profile("xeon"))
    assert "-DGGML_NATIVE=OFF" in xeon and "-DGGML_AMX_INT8=ON" in xeon


def test_runtime_packages_are_pinned_helpers_capped():
    wanted, builds = requirements("onnxruntime")
    assert any(w.startswith("onnxruntime==") for w in wanted)
    assert any(w.startswith("numpy<=") for w in wanted)
    wanted, builds = requirements("llama.cpp")
    assert [b["name"] for b in builds] == ["llama-cpp-python"]
    assert not any(w.startswith("llama-cpp-python") for w in wanted)  # its deps are resolved
    assert any(w.lower().startswith("jinja2") for w in wanted)


def test_pips_failure_is_one_line_naming_the_newest_with_a_wheel():
    stderr = (
        "ERROR: Could not find a version that satisfies the requirement "
        "onnxruntime-genai==0.15.2 (from versions: 0.16.0, 0.17.1, 0.18.0)\n"
        "ERROR: No matching distribution found for onnxruntime-genai==0.15.2\n"
    )
    message = no_wheel_message(stderr, "linux aarch64, glibc 2.36, CPython 3.11")
    assert message.endswith("the newest with one is onnxruntime-genai==0.18.0")
    none = no_wheel_message(stderr.replace("0.16.0, 0.17.1, 0.18.0", "none"), "x")
    assert "in any version" in none and "\n" not in none


def test_a_runtime_that_does_not_install_gives_way_to_the_next(tmp_path):
    profile = load_profile("xeon")
    p = plan(inspect_model(config_dir("smollm2-135m")), profile)
    ranked = [c for c in p.candidates if c.feasible and not c.is_student]
    first = ranked[0]
    error = InstallError(f"{first.runtime} does not install on xeon: no wheel")
    others = {c.runtime for c in ranked} - {first.runtime}
    resolutions = {("xeon", first.runtime): error}
    resolutions |= {("xeon", r): object() for r in others}  # these resolved
    said = []
    kept = keep_installable(profile, p, ranked[:2], False, tmp_path, resolutions, said.append)
    assert len(kept) == 2 and all(c.runtime != first.runtime for c in kept)
    assert kept == [c for c in ranked if c.runtime != first.runtime][:2]
    with pytest.raises(InstallError, match="does not install"):  # forced: the error stands
        keep_installable(profile, p, [first], True, tmp_path, resolutions, said.append)


@pytest.mark.integration
def test_edge_4gb_resolves_aarch64_wheels_and_states_the_source_build(tmp_path):
    profile = load_profile("edge-4gb")
    resolution = resolve(profile, "llama.cpp", tmp_path)
    assert resolution.source_builds[0]["name"] == "llama-cpp-python"
    numpy = next(p for p in resolution.packages if p["name"] == "numpy")
    assert "aarch64" in numpy["url"] and numpy["url"].endswith(".whl")
    onnx = resolve(profile, "onnxruntime", tmp_path)
    assert any(p["name"] == "onnxruntime" and "aarch64" in p["url"] for p in onnx.packages)
    assert (tmp_path / "requirements").is_dir()  # cached for the next build


@pytest.mark.integration
def test_a_python_without_wheels_is_an_error_naming_the_newest(tmp_path):
    text = (PROFILES / "t4.toml").read_text().replace('python = "3.12"', 'python = "3.9"')
    profile = parse_profile(text.encode(), "old.toml")
    with pytest.raises(InstallError, match=r"onnxruntime==\S+ has no wheel .*newest with one"):
        resolve(profile, "onnxruntime", tmp_path)


@pytest.mark.integration
def test_a_wheels_bundle_installs_offline_and_passes_its_check(tmp_path):
    """The README's commands on a device without the internet: this host, as a profile (its
    glibc and Python), a venv in the bundle, pip with the wheelhouse alone, then check.py."""
    import json
    import os
    import platform
    import subprocess
    import sys

    from tests.conftest import run_cli

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    text = (PROFILES / "laptop.toml").read_text().replace('name = "laptop"', 'name = "here"')
    text = text.replace('glibc = "2.39"', f'glibc = "{platform.libc_ver()[1]}"')
    (tmp_path / "here.toml").write_text(text.replace('python = "3.12"', f'python = "{python}"'))
    r = run_cli(
        "build", "--target", str(tmp_path / "here.toml"), "--format", "onnx", "--precision",
        "int8", "--candidates", "1", "--eval-tokens", "1024", "--wheels", "--no-check",
        "--out", str(tmp_path / "out"), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    bundle = json.loads(r.stdout)["bundles"][0]["path"]
    lines = open(f"{bundle}/requirements.txt").read().splitlines()
    assert lines and all("--hash=sha256:" in line for line in lines)
    manifest = json.loads(open(f"{bundle}/manifest.json").read())
    assert any(f["path"].startswith("wheelhouse/") for f in manifest["files"])
    # no index, no find-links but the bundle's: pip's own configuration is left out
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    subprocess.run([sys.executable, "-m", "venv", "venv"], cwd=bundle, check=True)
    install = subprocess.run(
        ["venv/bin/pip", "install", "--no-index", "--find-links", "wheelhouse",
         "--require-hashes", "-r", "requirements.txt"],
        cwd=bundle, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    readme = open(f"{bundle}/README.md").read()
    assert "--no-index --find-links wheelhouse --require-hashes" in readme
    check = subprocess.run(
        ["venv/bin/python", "check.py", "--json"], cwd=bundle, capture_output=True, text=True
    )
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["pass"], (report, check.stderr[-2000:])
