"""tools/bench.py on a real bundle: fp32 transformers vs raw llama.cpp vs the bundle's runner
vs the bundle's own check.py, on cold prompts, with every core this process may run on."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from tests.conftest import PROFILES, ROOT, encoder_dir, run_cli

BENCH = ROOT / "tools" / "bench.py"
TOKENS = 16
REPETITIONS = 2


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
    args += ["--eval-tokens", "512"]  # the bench measures quality itself
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
    args = ["--tokens", str(TOKENS), "--prompt-tokens", "32", "--repetitions", str(REPETITIONS)]
    result = bench(gguf_bundle, *args, "--eval-data", str(eval_file), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)  # stdout is one JSON document; progress went to stderr
    assert "[bench]" in result.stderr
    assert doc["settings"]["new_tokens"] == TOKENS
    assert doc["eval"]["name"] == "eval-copy.txt"
    (entry,) = doc["bundles"]
    assert (entry["format"], entry["runtime"]) == ("gguf", "llama.cpp")

    # cold prompts: a warm-up and one per repetition, 32 ids each, no two starting alike
    prompts = entry["prompts"]
    assert prompts["count"] == REPETITIONS + 1 and prompts["lengths"] == [32]
    assert len(set(prompts["first_ids"])) == REPETITIONS + 1

    cores = len(os.sched_getaffinity(0))
    assert doc["settings"]["threads"] == cores

    variants = entry["variants"]
    assert set(variants) == {"baseline", "raw", "runner", "check"}
    for key, fig in variants.items():
        print(
            f"{fig['label']}: {fig['decode_tokens_per_s_p50']:.1f} tok/s, first token "
            f"{fig['first_token_ms_p50']:.0f} ms, peak {fig['peak_rss_bytes'] / 1e6:.0f} MB"
        )
        for name in ("decode_tokens_per_s_p50", "first_token_ms_p50", "peak_rss_bytes", "load_s"):
            assert fig[name] > 0, (key, name, fig[name])
    for key in ("baseline", "raw", "runner"):
        assert len(variants[key]["decode_tokens_per_s"]) == REPETITIONS
    # every variant ran on every allowed core, raw llama-cpp-python for prompt and decode alike
    assert variants["baseline"]["threads"] == cores
    assert variants["raw"]["threads"] == {"n_threads": cores, "n_threads_batch": cores}
    assert variants["runner"]["threads"] == cores
    # the runner and raw llama.cpp processed each whole prompt: nothing came from a cache
    assert variants["runner"]["prompt_tokens_processed"] == [32] * REPETITIONS
    assert variants["raw"]["prompt_tokens_processed"] in ([32] * REPETITIONS, [None] * REPETITIONS)

    # the bundle's own check.py, as it measured itself: its own 128-token cold prompts
    check = variants["check"]
    assert "check.py --json --repetitions 2" in check["api"]
    assert check["threads"] == cores
    assert check["prompt_tokens_processed"] == [128] * REPETITIONS
    assert check["verdict"] in ("PASS", "FAIL")
    assert check["peak_rss_bytes"] < variants["baseline"]["peak_rss_bytes"]
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
        "check_vs_raw_decode",
        "check_vs_raw_first_token",
    ):
        assert ratios[name] > 0, name
    assert ratios["perplexity_vs_fp32"] == pytest.approx(
        quality["perplexity"] / quality["reference_perplexity"]
    )
    assert 3 < ratios["size_reduction"] < 4.5  # q8_0: 8.5 bits per weight against fp32
    assert ratios["check_vs_raw_decode"] == pytest.approx(
        check["decode_tokens_per_s_p50"] / variants["raw"]["decode_tokens_per_s_p50"]
    )

    # before and after calibration: the manifest's prior, this run's calibrated prediction
    cal = entry["calibration"]
    manifest = json.loads((Path(gguf_bundle) / "manifest.json").read_text())
    assert cal["target"] == "bench"
    assert cal["prior"]["decode_tokens_per_s"] == manifest["predicted"]["decode_tokens_per_s"]
    assert cal["measured"]["decode_tokens_per_s"] == check["decode_tokens_per_s_p50"]
    assert cal["measured"]["memory_bytes"] == check["peak_rss_bytes"]
    assert cal["calibrated"]["decode_tokens_per_s"] > 0, cal["calibrated"]
    assert "refined by this host" in cal["calibrated"]["basis"]

    text = bench_module().report_text(doc)  # what the text mode prints for this document
    print(text)
    for words in ("transformers fp32", "raw llama-cpp-python", "edgepack runner", "RATIOS"):
        assert words in text
    assert re.search(r"check vs raw llama-cpp-python: decode \d+\.\d\dx, first token", text)
    assert "BEFORE AND AFTER CALIBRATION for bench" in text
    assert re.search(r"decode vs fp32: runner \d+\.\d\dx", text)
    assert re.search(r"perplexity vs fp32: \d\.\d{4}x", text)


def test_bench_refuses_what_is_not_a_bundle(tmp_path):
    result = bench(str(tmp_path))
    assert result.returncode != 0
    assert "not a bundle directory" in result.stderr
    result = bench(str(tmp_path), "--tokens", "1")
    assert result.returncode == 2 and "--tokens" in result.stderr


def test_cold_prompts_differ_from_their_first_token(tmp_path):
    """Every prompt has the requested length and starts on a token no other prompt starts on,
    even where the text repeats itself (a tokenizer of a real model: all-MiniLM's WordPiece)."""
    bench_mod = bench_module()
    tokenizer = bench_mod.load_tokenizer(encoder_dir())
    text = resources.files("edgepack").joinpath("data/eval.txt").read_text("utf-8")
    prompts = bench_mod.cold_prompts(tokenizer, text, 48, 12)
    assert len(prompts) == 12 and {len(p) for p in prompts} == {48}
    assert len({p[0] for p in prompts}) == 12
    repeated = bench_mod.cold_prompts(tokenizer, "the cat sat on the mat. " * 400, 16, 4)
    assert len({p[0] for p in repeated}) == 4 and {len(p) for p in repeated} == {16}
    with pytest.raises(SystemExit, match="distinct prompts"):
        bench_mod.cold_prompts(tokenizer, "a a a a a a a a a a a a", 4, 3)


def test_threads_default_to_the_cores_this_process_may_run_on():
    """Under a narrowed affinity (as taskset or a container sets it), the default follows the
    affinity, not the machine's core count."""
    cores = sorted(os.sched_getaffinity(0))
    assert bench_module().default_threads() == len(cores)
    code = (
        "import importlib.util, sys; s = importlib.util.spec_from_file_location('b', sys.argv[1]);"
        " m = importlib.util.module_from_spec(s); s.loader.exec_module(m);"
        " print(m.default_threads())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(BENCH)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores[:1]),
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 1
