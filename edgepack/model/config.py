"""A model's shape and parameter count from its config.json alone. Pure: no I/O, no backends.

Every value is validated before any arithmetic: sizes are positive integers within bounds no
published model comes near, the heads divide the hidden size (where no head_dim is given) and
the KV heads divide the heads. A bad value is a ModelError naming the config key.

Mixture-of-experts configs (Mixtral, Qwen3-MoE) count every routed expert, the routers and the
dense layers a config keeps (Qwen3-MoE's mlp_only_layers and decoder_sparse_step);
`experts_per_token` of `num_experts` are active for each token. Sliding-window attention
(Gemma 2/3, Mistral v0.1, Phi-3) is recorded as the window and the number of layers using it.
"""

from __future__ import annotations

from ..errors import ModelError, UnsupportedModelError

# The model types edgepack claims: each has a test that builds a checkpoint of it in every
# format its exporter supports and checks the bundle (tests/export/test_architectures.py; the
# default model for llama, Gemma-3-270M for gemma3_text, all-MiniLM-L6-v2 for bert)
DECODERS = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "phi3", "gemma3_text"}
)
ENCODERS = frozenset({"bert"})

# Upper bounds, far above any published model (the largest have ~128 layers, hidden 18k,
# 256 experts, vocabularies of 262k and 10M positions), so that a typo cannot make the planner
# loop or overflow.
BOUNDS = {
    "num_layers": 1024,
    "hidden_size": 131_072,
    "intermediate_size": 1_048_576,
    "num_attention_heads": 4096,
    "num_key_value_heads": 4096,
    "head_dim": 4096,
    "vocab_size": 4_194_304,
    "max_position_embeddings": 1 << 26,
    "num_experts": 4096,
    "experts_per_token": 4096,
    "expert_intermediate_size": 1_048_576,
    "sliding_window": 1 << 26,
}
# config keys each shape field is read from, first present wins
KEYS = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_attention_heads": ("num_attention_heads", "n_head", "n_heads"),
    "num_key_value_heads": ("num_key_value_heads", "num_kv_heads"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "head_dim": ("head_dim",),
    "vocab_size": ("vocab_size",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts"),
    "experts_per_token": ("num_experts_per_tok", "moe_top_k"),
    "expert_intermediate_size": ("moe_intermediate_size",),
    "sliding_window": ("sliding_window",),
}
MOE_TYPES = frozenset({"mixtral", "qwen3_moe"})
# models whose every layer attends within `sliding_window` when the config sets one
ALL_LAYERS_SLIDE = frozenset({"mistral", "mixtral", "phi3", "starcoder2"})


def shape_from_config(config: dict, where) -> dict:
    """The shape fields of ModelFacts, validated, or a ModelError naming the bad key."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ModelError(f"{where} has no model_type")
    archs = config.get("architectures") or []
    architecture = archs[0] if archs and isinstance(archs[0], str) else model_type
    if model_type in ENCODERS:
        kind = "encoder"
    elif model_type in DECODERS:
        kind = "decoder"
    else:
        raise UnsupportedModelError(
            f"{architecture} (model_type {model_type}) is not a model edgepack can package; "
            f"supported model types: {', '.join(sorted(DECODERS | ENCODERS))}"
        )

    def value(field: str, required: bool = True) -> int | None:
        for key in KEYS[field]:
            raw = config.get(key)
            if raw is None:
                continue
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise ModelError(f"{where}: {key} must be a positive integer, got {raw!r}")
            low = 0 if field in ("max_position_embeddings", "sliding_window") else 1
            if not low <= raw <= BOUNDS[field]:
                raise ModelError(
                    f"{where}: {key} is {raw:,}; edgepack reads {low} to {BOUNDS[field]:,} "
                    "there: correct config.json"
                )
            return raw
        if required:
            raise ModelError(
                f"{where} lacks {KEYS[field][0]}, which edgepack needs to size the model"
            )
        return None

    hidden = value("hidden_size")
    heads = value("num_attention_heads")
    kv_heads = value("num_key_value_heads", required=False) or heads
    head_dim = value("head_dim", required=False)
    if head_dim is None:
        if hidden % heads:
            raise ModelError(
                f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads "
                f"{heads}, and no head_dim is given: correct config.json"
            )
        head_dim = hidden // heads
    if heads % kv_heads:
        raise ModelError(
            f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads "
            f"{kv_heads}: correct config.json"
        )
    shape = {
        "architecture": architecture,
        "model_type": model_type,
        "kind": kind,
        "num_layers": value("num_layers"),
        "hidden_size": hidden,
        "intermediate_size": value("intermediate_size", required=False) or 4 * hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": value("vocab_size"),
        "max_position_embeddings": value("max_position_embeddings", required=False) or 0,
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", kind != "encoder")),
    }
    if model_type in ENCODERS:
        shape["tie_word_embeddings"] = False  # encoders export without a language-model head
    shape.update(_experts(config, model_type, shape, value))
    shape.update(_sliding(config, model_type, shape["num_layers"], value))
    return shape


def _experts(config: dict, model_type: str, shape: dict, value) -> dict:
    if model_type not in MOE_TYPES:
        return {"num_experts": 0, "experts_per_token": 0}
    experts = value("num_experts")
    per_token = value("experts_per_token")
    value("expert_intermediate_size", required=False)  # validated here, read when counting
    if per_token > experts:
        raise ModelError(
            f"num_experts_per_tok {per_token} exceeds the {experts} experts: correct config.json"
        )
    return {"num_experts": experts, "experts_per_token": per_token}


def moe_layers(config: dict, model_type: str, num_layers: int) -> list[bool]:
    """Which layers route to experts (the others keep a dense MLP of intermediate_size)."""
    if model_type == "mixtral":
        return [True] * num_layers
    step = config.get("decoder_sparse_step") or 1
    dense = set(config.get("mlp_only_layers") or ())
    if not isinstance(step, int) or step < 1:
        raise ModelError(f"decoder_sparse_step must be a positive integer, got {step!r}")
    return [i not in dense and (i + 1) % step == 0 for i in range(num_layers)]


def _sliding(config: dict, model_type: str, num_layers: int, value) -> dict:
    window = value("sliding_window", required=False) or 0
    layer_types = config.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == num_layers:
        sliding = sum(1 for t in layer_types if t == "sliding_attention")
    elif model_type.startswith("gemma3"):
        pattern = config.get("sliding_window_pattern") or 6  # 5 local layers, then 1 global
        sliding = num_layers - num_layers // pattern if isinstance(pattern, int) else 0
    elif model_type == "gemma2":
        sliding = (num_layers + 1) // 2  # even layers attend locally
    elif model_type in ALL_LAYERS_SLIDE:
        sliding = num_layers
    else:
        sliding = 0  # Qwen's use_sliding_window is off in every published config
    if not window or (model_type.startswith("qwen") and not config.get("use_sliding_window")):
        window, sliding = 0, 0
    return {"sliding_window": window, "sliding_layers": sliding if window else 0}


def count_from_config(shape: dict, config: dict) -> dict:
    """Parameter counts of a standard transformer from its config (no weights present)."""
    h, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    head_dim = shape["head_dim"]
    q_dim = shape["num_attention_heads"] * head_dim
    kv_dim = shape["num_key_value_heads"] * head_dim
    model_type = shape["model_type"]
    embedding = vocab * h
    experts = 0
    if model_type in ENCODERS:
        # biased q/k/v/o and a two-matrix MLP, two LayerNorms with bias
        attention = 4 * (h * h + h)
        mlp = h * inter + inter + inter * h + h
        layers = (attention + mlp + 4 * h) * shape["num_layers"]
        other = shape["max_position_embeddings"] * h
        other += config.get("type_vocab_size", 0) * h + 2 * h + h * h + h  # LN + pooler
    else:
        qkv_bias = model_type == "qwen2" or config.get("attention_bias")
        bias = (q_dim + 2 * kv_dim) if qkv_bias else 0
        attention = h * q_dim + 2 * h * kv_dim + q_dim * h + bias
        norms = 4 * h if model_type in ("gemma2", "gemma3_text") else 2 * h
        if model_type in ("qwen3", "qwen3_moe", "gemma3_text"):
            norms += 2 * head_dim  # q_norm and k_norm
        dense_mlp = 3 * h * inter  # gated MLP: gate, up, down
        layers = 0
        if model_type in MOE_TYPES:
            expert_inter = _expert_inter(config, inter)
            per_expert = 3 * h * expert_inter
            for routed in moe_layers(config, model_type, shape["num_layers"]):
                if routed:
                    experts += shape["num_experts"] * per_expert
                    layers += attention + norms + h * shape["num_experts"]  # + the router
                else:
                    layers += attention + norms + dense_mlp
            layers += experts
        else:
            layers = (attention + dense_mlp + norms) * shape["num_layers"]
        other = h  # final norm
    head = 0 if shape["tie_word_embeddings"] else vocab * h
    return {
        "num_parameters": embedding + head + layers + other,
        "embedding_parameters": embedding,
        "head_parameters": head,
        "layer_parameters": layers,
        "expert_parameters": experts,
    }


def _expert_inter(config: dict, inter: int) -> int:
    """An expert's intermediate size (shape_from_config validated it); Mixtral's experts are
    MLPs of intermediate_size."""
    return config.get("moe_intermediate_size") or inter
