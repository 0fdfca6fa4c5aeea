"""Hidden-size (embedding channel) pruning for `edgepack prune --hidden-ratio`, as Minitron does
it: a channel's importance is the mean magnitude of every RMSNorm's output in that channel (the
inputs of attention and MLP, and of the head) over the calibration tokens; the model keeps its
most important channels in the embedding, every projection that reads or writes the residual
stream, every norm, and the head.

Unlike MLP channels and heads, cutting hidden channels is not the same as silencing them: each
RMSNorm then averages over fewer channels. The pruned model must heal by distillation.
Gemma scales its embeddings by sqrt(hidden_size), so a smaller hidden size would rescale what
it learnt: refused for the Gemma family.
"""

from __future__ import annotations

from ..errors import UnsupportedModelError

NO_HIDDEN_PRUNING = ("gemma", "gemma2", "gemma3_text")


def check_model(model_type: str) -> None:
    if model_type in NO_HIDDEN_PRUNING:
        raise UnsupportedModelError(
            f"--hidden-ratio: {model_type} scales its embeddings by sqrt(hidden_size), which a "
            "smaller hidden size would change; prune its MLP channels and key/value groups only"
        )


def _norms(model) -> list:
    """The RMSNorms whose output is hidden-sized: each layer's two, and the final one."""
    hidden = model.config.hidden_size
    found = []
    for layer in model.model.layers:
        found += [layer.input_layernorm, layer.post_attention_layernorm]
    found.append(model.model.norm)
    for norm in found:
        if tuple(norm.weight.shape) != (hidden,):
            raise UnsupportedModelError(f"a norm of {type(model).__name__} is not hidden-sized")
    return found


def importance(model, samples: list[list[int]]):
    """[hidden] channel importance: the summed mean |output| of every hidden-sized norm."""
    import torch

    score = torch.zeros(model.config.hidden_size, dtype=torch.float64)
    count = 0

    def hook(module, args, output):
        score.add_(output.detach().abs().sum(dim=(0, 1)).double())

    handles = [norm.register_forward_hook(hook) for norm in _norms(model)]
    try:
        with torch.inference_mode():
            for ids in samples:
                model(torch.tensor([ids]))
                count += len(ids)
    finally:
        for h in handles:
            h.remove()
    return (score / count).numpy()


def apply(model, score, keep: int, linear) -> dict:
    """Keep the `keep` most important hidden channels everywhere, in place; `linear` slices an
    nn.Linear (edgepack.prune._linear). Returns the report's figures."""
    import numpy as np
    import torch

    channels = np.sort(np.argsort(-score, kind="stable")[:keep])
    idx = torch.as_tensor(channels)
    config = model.config
    head_dim = getattr(model.model.layers[0].self_attn, "head_dim", None) or (
        config.hidden_size // config.num_attention_heads
    )
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    old = model.get_input_embeddings()
    embed = torch.nn.Embedding(old.num_embeddings, keep, padding_idx=old.padding_idx)
    embed.weight.data = old.weight.data[:, idx].clone()
    model.set_input_embeddings(embed)
    if tied:
        model.get_output_embeddings().weight = embed.weight
    else:
        model.set_output_embeddings(linear(model.get_output_embeddings(), in_idx=idx))
    for norm in _norms(model):
        norm.weight = torch.nn.Parameter(norm.weight.data[idx].clone())
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        a.q_proj, a.k_proj, a.v_proj = (
            linear(p, in_idx=idx) for p in (a.q_proj, a.k_proj, a.v_proj)
        )
        a.o_proj = linear(a.o_proj, out_idx=idx)
        m.gate_proj, m.up_proj = linear(m.gate_proj, in_idx=idx), linear(m.up_proj, in_idx=idx)
        m.down_proj = linear(m.down_proj, out_idx=idx)
    before = config.hidden_size
    config.head_dim = head_dim  # no longer hidden_size / num_attention_heads
    config.hidden_size = keep
    return {
        "before": before,
        "after": keep,
        "importance_kept": float(score[channels].sum() / score.sum()),
    }
