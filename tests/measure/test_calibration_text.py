"""Calibration text for data-aware quantization: the built-in text and user files, the samples cut
from it, the export cache's keys, and a calibrated OpenVINO int4 export against the data-free
one."""

import pytest

from edgepack.errors import EdgepackError
from edgepack.export.export_cache import entry_name
from edgepack.export.registry import FORMATS
from edgepack.measure import calibration_text as cal
from edgepack.measure.quality import eval_text

# -- unit: the text ------------------------------------------------------------------------------


def _shingles(text: str, n: int = 6) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_builtin_text_is_long_varied_and_not_the_evaluation_text():
    name, text = cal.calibration_text()
    assert name == cal.BUILTIN
    assert 1500 <= len(text.split()) <= 2500
    # prose, dialogue, code, numbers and a chat-formatted exchange
    assert '"' in text and "def " in text and "<|im_start|>assistant" in text
    assert sum(c.isdigit() for c in text) > 200
    # quality is measured on text the calibration never saw
    _, evaluation = eval_text()
    assert not _shingles(text) & _shingles(evaluation)


def test_user_file_is_read_and_checked(tmp_path):
    good = tmp_path / "domain.txt"
    good.write_text("word " * cal.MIN_WORDS, encoding="utf-8")
    assert cal.calibration_text(good) == ("domain.txt", "word " * cal.MIN_WORDS)
    short = tmp_path / "short.txt"
    short.write_text("too few words here", encoding="utf-8")
    with pytest.raises(EdgepackError, match="at least 300 words"):
        cal.calibration_text(short)
    with pytest.raises(EdgepackError, match="cannot read"):
        cal.calibration_text(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 500)
    with pytest.raises(EdgepackError, match="UTF-8"):
        cal.calibration_text(binary)


def test_windows_spread_over_the_text():
    assert cal.windows(1000, 4, 100) == [(0, 100), (300, 400), (600, 700), (900, 1000)]
    assert cal.windows(150, 3, 100) == [(0, 100), (25, 125), (50, 150)]  # overlapping
    assert cal.windows(100, 5, 100) == [(0, 100)]
    assert cal.windows(500, 1, 100) == [(0, 100)]
    with pytest.raises(EdgepackError, match="fewer than one sample"):
        cal.windows(99, 4, 100)


def test_calibration_modes():
    text = "some text"
    assert cal.effective("none", text) is None
    assert cal.effective("optional", None) is None
    assert cal.effective("optional", text) == text
    assert cal.effective("required", text) == text
    assert cal.effective("required", None) == cal.builtin_text()
    assert cal.describe(cal.builtin_text())["text"] == cal.BUILTIN
    assert cal.describe(text) == {"text": "user", "sha256": cal.digest(text), "words": 2}
    for fmt in FORMATS.values():
        for p in fmt.precisions:
            assert p.calibration in ("none", "optional", "required"), (fmt.name, p.name)


def test_cache_keys_separate_calibrated_and_data_free_exports():
    text, other = cal.builtin_text(), "another calibration text " * 100
    # a precision that ignores calibration keeps its plain key whatever text is given
    assert entry_name("openvino", "int8", "none", text) == "openvino-int8"
    plain = entry_name("openvino", "int4", "optional", None)
    calibrated = entry_name("openvino", "int4", "optional", text)
    assert plain == "openvino-int4"
    assert calibrated == f"openvino-int4-cal{cal.digest(text)[:16]}"
    assert entry_name("openvino", "int4", "optional", other) not in (plain, calibrated)
    # a precision that always calibrates is keyed by the built-in text when none is given
    assert entry_name("onnx", "x", "required", None) == entry_name("onnx", "x", "required", text)


def test_mixed_fallbacks_name_4_bit_rows_of_their_format():
    for fmt in FORMATS.values():
        fallbacks = [p for p in fmt.precisions if p.mixed]
        assert fallbacks, f"{fmt.name} has no mixed-precision fallback"
        for p in fallbacks:
            mixed = fmt.precision(p.mixed)
            assert p.bits == 4 and mixed is not None and mixed.name == p.mixed
            assert mixed.loss_7b < p.loss_7b and mixed.block_bpw > p.block_bpw


# -- integration: samples and a calibrated export ----------------------------------------------


@pytest.mark.integration
def test_token_samples_of_the_source_tokenizer(default_model):
    samples = cal.token_samples(default_model, cal.builtin_text(), samples=8, length=64)
    assert len(samples) == 8 and all(len(s) == 64 for s in samples)
    ids = cal.tokenize(default_model, cal.builtin_text())
    assert samples[0] == ids[:64] and samples[-1] == ids[-64:]
    texts = cal.text_samples(default_model, cal.builtin_text(), samples=8, length=64)
    assert len(texts) == 8 and texts[0] and texts[0] in cal.builtin_text()


@pytest.mark.integration
def test_calibrated_openvino_int4_validates_and_lowers_kl(default_model, exports, references):
    from edgepack.bundle.kit import load_runner
    from edgepack.cache import cache_root
    from edgepack.export.export_cache import export_cached
    from edgepack.export.support import inspect_model
    from edgepack.measure.validate import validate

    facts = inspect_model(default_model)
    free = exports.get(default_model, "openvino", "int4")
    calibrated = export_cached(
        default_model,
        facts,
        "openvino",
        "int4",
        cache_root(),
        lambda msg: None,
        calibration=cal.builtin_text(),
    )
    assert calibrated.path != free.path  # separate cache entries
    assert free.details["calibration"] == {"used": False, "method": "data-free"}
    record = calibrated.details["calibration"]
    assert record["used"] and record["text"] == cal.BUILTIN
    assert record["sha256"] == cal.digest(cal.builtin_text())
    assert record["samples"] > 1 and "AWQ" in record["method"]
    assert calibrated.details["awq"] == "data-aware" and calibrated.details["scale_estimation"]

    figures = {}
    for label, artifact in (("data-free", free), ("calibrated", calibrated)):
        runner = load_runner("openvino", artifact.path, threads=2)
        figures[label] = validate(runner, references(default_model), 4)
        del runner
    for label, f in figures.items():
        print(
            f"\nopenvino int4 {label}: top-1 (confident) {f['top1_agreement_confident']}, "
            f"KL {f['kl_divergence_mean']}"
        )
    assert figures["calibrated"]["kl_divergence_mean"] < figures["data-free"]["kl_divergence_mean"]
