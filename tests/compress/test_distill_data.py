"""Distillation's training text: the built-in text, user files read in chunks, and text the
teacher generates (training only, never held out)."""

import pytest

from edgepack.compress.distill_data import add_generated, generate_text, load_text
from tests.tiny import tiny_causal_lm


@pytest.fixture(scope="module")
def tokenizer(default_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model)


def test_builtin_text_windows_and_held_out_split(tokenizer):
    text = load_text(tokenizer, [], 128)
    n = len(text.train) + len(text.held_out)
    assert text.files[0]["tokens"] > 8000 and n == (text.files[0]["tokens"] + 1) // 128
    assert len(text.held_out) == round(n * 0.1) and text.train.shape[1] == 128


def test_builtin_train_text_is_not_the_evaluation_text():
    from importlib import resources

    data = resources.files("edgepack").joinpath("data")
    train = data.joinpath("train.txt").read_text()
    assert len(train.split()) > 5000
    for other in ("eval.txt", "calibration.txt"):
        lines = {x for x in data.joinpath(other).read_text().splitlines() if len(x) > 40}
        assert not lines & set(train.splitlines()), other


def test_large_files_are_read_in_chunks(tokenizer, tmp_path, monkeypatch):
    import edgepack.compress.distill_data as dd

    lines = [f"Line {i} of a long file, about item number {i * 7}." for i in range(400)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "b.txt").write_text("A second, shorter document.\n" * 50)
    whole = load_text(tokenizer, [tmp_path / "a.txt", tmp_path / "b.txt"], 32)
    monkeypatch.setattr(dd, "CHUNK_CHARS", 100)
    chunked = load_text(tokenizer, [tmp_path / "a.txt", tmp_path / "b.txt"], 32)
    assert [f["tokens"] for f in chunked.files] == [f["tokens"] for f in whole.files]
    assert (chunked.train == whole.train).all()


def test_generated_text_is_training_only(tokenizer):
    import torch

    torch.manual_seed(0)
    teacher = tiny_causal_lm(layers=2)
    teacher.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    sample = generate_text(teacher, tokenizer, 24, batch=2)
    assert len(tokenizer(sample)["input_ids"]) >= 24
    text = load_text(tokenizer, [], 16)
    more = add_generated(text, tokenizer, sample)
    assert more.generated_tokens >= 24 and (more.held_out == text.held_out).all()
    assert len(more.train) > len(text.train)
