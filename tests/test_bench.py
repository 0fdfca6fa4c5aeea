"""tools/bench.py on a real bundle: fp32 transformers vs raw llama.cpp vs the bundle's runner."""

import importlib.util
import json
import re
import subprocess
import sys
from importlib import resources

import pytest

from tests.conftest import PROFILES, ROOT, run_cli

BENCH = ROOT / "tools" / "bench.py"
TOKENS = 16


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600
    )


def bench_module():
    spec = importlib.util.spec_from_file_location("edgepack_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gguf_bundle(tmp_path_factory):
    """A gguf q8_0 bundle of the default model, built through the CLI with loose budgets."""
    tmp = tmp_path_factory.mktemp("bench")
    text = (PROFILES / "laptop.toml").read_text().replace('name = "laptop"', 'name = "bench"')
    budget = dict(memory_gb=12, disk_gb=100, first_token_ms=120000, decode_tokens_per_s=0.5)
    for key, value in (budget | {"min_quality": 0.5}).items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, flags=re.M)
    profile = tmp / "bench.toml"
    profile.write_text(text)
    args = ["--target", str(profile), "--format", "gguf", "--precision", "q8_0"]
    result = run_cli("build", *args, "--out", str(tmp / "out"), "--no-check", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = json.loads(result.stdout)["bundles"]
    return built["path"]


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    """edgepack's built-in text as a user's --eval-data file (never ../shared in tests); the
    same text as the build's, so the fp32 reference on it comes from the build's cache."""
    path = tmp_path_factory.mktemp("eval") / "eval-copy.txt"
    path.write_text(resources.files("edgepack").joinpath("data/eval.txt").read_text("utf-8"))
    return path


@pytest.mark.integration
def test_bench_compares_fp32_raw_and_runner(gguf_bundle, eval_file):
    args = ["--tokens", str(TOKENS), "--prompt-tokens", "32", "--repetitions", "1"]
    result = bench(gguf_bundle, *args, "--eval-data", str(eval_file), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)  # stdout is one JSON document; progress went to stderr
    assert "[bench]" in result.stderr
    assert doc["settings"]["new_tokens"] == TOKENS
    assert doc["eval"]["name"] == "eval-copy.txt"
    (entry,) = doc["bundles"]
    assert (entry["format"], entry["runtime"]) == ("gguf", "llama.cpp")

    variants = entry["variants"]
    assert set(variants) == {"baseline", "raw", "runner"}
    for key, fig in variants.items():
        print(
            f"{fig['label']}: {fig['decode_tokens_per_s_p50']:.1f} tok/s, first token "
            f"{fig['first_token_ms_p50']:.0f} ms, peak {fig['peak_rss_bytes'] / 1e6:.0f} MB"
        )
        for name in ("decode_tokens_per_s_p50", "first_token_ms_p50", "peak_rss_bytes", "load_s"):
            assert fig[name] > 0, (key, name, fig[name])
        assert len(fig["decode_tokens_per_s"]) == 1
    assert "transformers" in variants["baseline"]["api"]
    assert "llama-cpp-python" in variants["raw"]["api"]
    assert "run_llamacpp.py" in variants["runner"]["api"]
    for key in ("raw", "runner"):
        assert 0 <= variants[key]["same_tokens_as_fp32"] <= TOKENS
    # the fp32 process holds torch and 538 MB of weights; the q8_0 runner holds ~145 MB
    assert variants["runner"]["peak_rss_bytes"] < variants["baseline"]["peak_rss_bytes"]

    quality = entry["quality"]
    assert quality["eval_text"] == "eval-copy.txt"
    assert quality["eval_tokens"] > 0
    assert quality["reference_perplexity"] == pytest.approx(entry["reference"]["perplexity"])
    assert 0.95 < quality["perplexity"] / quality["reference_perplexity"] < 1.1

    ratios = entry["ratios"]
    for name in (
        "runner_decode_vs_fp32",
        "raw_decode_vs_fp32",
        "runner_vs_raw_decode",
        "runner_vs_raw_first_token",
        "runner_peak_rss_vs_fp32",
    ):
        assert ratios[name] > 0, name
    assert ratios["perplexity_vs_fp32"] == pytest.approx(
        quality["perplexity"] / quality["reference_perplexity"]
    )
    assert 3 < ratios["size_reduction"] < 4.5  # q8_0: 8.5 bits per weight against fp32

    text = bench_module().report_text(doc)  # what the text mode prints for this document
    print(text)
    for words in ("transformers fp32", "raw llama-cpp-python", "edgepack runner", "RATIOS"):
        assert words in text
    assert re.search(r"decode vs fp32: runner \d+\.\d\dx", text)
    assert re.search(r"perplexity vs fp32: \d\.\d{4}x", text)


def test_bench_refuses_what_is_not_a_bundle(tmp_path):
    result = bench(str(tmp_path))
    assert result.returncode != 0
    assert "not a bundle directory" in result.stderr
    result = bench(str(tmp_path), "--tokens", "1")
    assert result.returncode == 2 and "--tokens" in result.stderr
