"""What a bundle installs on its device: platform tags, CMAKE_ARGS, pip's failures as one line,
the candidates kept where a runtime does not install (no network), and, in the integration
tier, real resolutions against the package index."""

import pytest

from edgepack.install import (
    InstallError,
    cmake_args,
    keep_installable,
    no_wheel_message,
    platform_tags,
    requirements,
    resolve,
)
from edgepack.model import inspect_model
from edgepack.planner import plan
from edgepack.profiles import load_profile, parse_profile
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
    assert "GGML_CPU_ARM_ARCH=armv8.2-a+dotprod" in cmake_args(load_profile("edge-4gb"))
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
    ranked = [c for c in p.candidates if c.feasible and not c.student_layers]
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
