"""Tiny random checkpoints, one per architecture edgepack claims, made at test time.

Each is a 2-layer model from transformers' own config class, randomly initialised (seeded),
with a real tokenizer: the default model's byte-level BPE, or Gemma 3's SentencePiece model
where the converter needs a tokenizer.model (Phi-3). A wider initialisation than the default
gives the random model confident next-token predictions, so that validation has positions to
compare at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

COMMON = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention
    "max_position_embeddings": 2048,
    "initializer_range": 0.1,
    "tie_word_embeddings": False,
}
# model type -> (config class, its own keys, tokenizer source: "bpe" or "spm")
ARCHITECTURES = {
    "llama": ("LlamaConfig", {}, "bpe"),
    "mistral": ("MistralConfig", {"sliding_window": None}, "bpe"),
    "qwen2": ("Qwen2Config", {"use_sliding_window": False}, "bpe"),
    "qwen3": ("Qwen3Config", {"head_dim": 16, "use_sliding_window": False}, "bpe"),
    # + PHI3_TOKENS; over Gemma's 262k vocabulary a wider initialisation keeps predictions sharp
    "phi3": (
        "Phi3Config",
        {"pad_token_id": 0, "sliding_window": None, "initializer_range": 0.3},
        "spm",
    ),
    "mixtral": ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2}, "bpe"),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        {
            "head_dim": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 64,
            "decoder_sparse_step": 1,
            "use_sliding_window": False,
        },
        "bpe",
    ),
}
# llama.cpp's Phi-3 vocabulary sets attributes on these Phi-3 tokens (llama-vocab.cpp)
PHI3_TOKENS = ["<s>", "<|endoftext|>", "<|end|>"]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
)


def make_tiny(
    model_type: str,
    out: Path,
    bpe_dir: Path,
    spm_dir: Path | None = None,
    init: float | None = None,
) -> Path:
    """A 2-layer random `model_type` checkpoint in `out`, with the tokenizer of bpe_dir (the
    default model) or spm_dir (Gemma 3's SentencePiece model); `init`: another initialiser
    range (0.02, transformers' default, makes a flat model: no confident prediction)."""
    import torch
    import transformers

    class_name, own, tokenizer = ARCHITECTURES[model_type]
    source = bpe_dir if tokenizer == "bpe" else spm_dir
    if source is None:
        raise ValueError(f"{model_type} needs a SentencePiece tokenizer directory")
    tok = transformers.AutoTokenizer.from_pretrained(source)
    if model_type == "phi3":
        tok.add_special_tokens({"additional_special_tokens": PHI3_TOKENS})
    config = getattr(transformers, class_name)(
        **(COMMON | own | ({"initializer_range": init} if init else {})),
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    if model_type == "phi3":
        tok.save_pretrained(str(out))
        return out
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    return out


def tiny_causal_lm(model_type="llama", layers=6, **extra):
    """A tiny random causal LM in memory (vocabulary 64, hidden 16), for the training code."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        **extra,
    )
    return AutoModelForCausalLM.from_config(config).eval()
