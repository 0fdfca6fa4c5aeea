"""`edgepack prune`: width pruning by activation importance, as Minitron ranks it.

On calibration text (the built-in text, or --calibration FILE), forward hooks read, in every
decoder layer:
- each MLP channel's importance: the mean magnitude of its activation, the input of down_proj
  (act(gate) * up), over every calibration token;
- each attention head's importance: the mean L2 norm of its output, the input of o_proj, over
  the tokens; a key/value group's is the sum of its query heads'.
Every layer then keeps its most important channels (the same number in each layer: the model
keeps one `intermediate_size`, so every exporter reads it) and, with --kv-groups N, its N most
important key/value groups with their query heads (head_dim unchanged, written into the
config). With --hidden-ratio R the hidden size loses its R least important channels too
(edgepack.compress.prune_hidden; Llama, Mistral and Qwen layouts). Weights are sliced, never
retrained: the pruned model heals by distillation from the original
(`edgepack distill --teacher ORIGINAL --student PRUNED`).

The output is a Hugging Face directory (config, safetensors, the source's tokenizer files) and
prune_report.json: what was removed from each layer and why (the importance kept and cut), the
parameters before and after, and the calibration text.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from ..errors import EdgepackError, UnsupportedModelError
from ..plan.students import PRUNABLE
from .student_report import PRUNE_REPORT

REPORT_FILE = PRUNE_REPORT
SCHEMA_VERSION = 1
SUPPORTED = PRUNABLE  # decoder layers with separate gate/up/down and q/k/v/o projections
DEFAULT_RATIO = 0.25
CALIBRATION_SAMPLES, CALIBRATION_TOKENS = 32, 256
# weights, config, and reports of what the source was made from (a distilled student's
# distill_report.json would name a teacher the pruned model never had)
_NOT_COPIED = re.compile(
    r"^(config\.json|generation_config\.json|.*\.(safetensors|bin|pt|pth|gguf)|.*\.index\.json|"
    r"distill_report\.json|prune_report\.json|\..*)$"
)


def check_options(ratio: float, kv_groups: int | None, hidden_ratio: float = 0.0) -> None:
    if not 0 <= hidden_ratio < 1:
        raise EdgepackError(
            f"--hidden-ratio {hidden_ratio} is out of range: give the share of hidden channels "
            "to remove, from 0 (none) to below 1, e.g. 0.25"
        )
    if not 0 <= ratio < 1:
        raise EdgepackError(
            f"--ratio {ratio} is out of range: give the share of MLP channels to remove, "
            "from 0 (none) to below 1, e.g. 0.25"
        )
    if kv_groups is not None and kv_groups < 1:
        raise EdgepackError(f"--kv-groups {kv_groups} is out of range: keep at least 1 group")


def prune(
    model_dir: Path,
    out: Path,
    ratio: float = DEFAULT_RATIO,
    kv_groups: int | None = None,
    calibration: Path | None = None,
    progress=lambda message: None,
    hidden_ratio: float = 0.0,
) -> dict:
    """Prune model_dir into out (new or empty); returns the report."""
    from ..measure.calibration_text import calibration_text, token_samples
    from . import prune_hidden

    model_dir, out = Path(model_dir), Path(out)
    check_options(ratio, kv_groups, hidden_ratio)
    config = json.loads((model_dir / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise UnsupportedModelError(
            f"edgepack prune supports decoders with separate q/k/v/o and gate/up/down "
            f"projections ({', '.join(SUPPORTED)}), not {model_type!r}"
        )
    if hidden_ratio:
        prune_hidden.check_model(model_type)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgepackError(f"--out {out} is not empty; choose a new or empty directory")
    groups = config.get("num_key_value_heads") or config["num_attention_heads"]
    if kv_groups is not None and kv_groups > groups:
        raise EdgepackError(
            f"--kv-groups {kv_groups} is more than the model's {groups} key/value groups; "
            f"choose 1..{groups}"
        )
    name, text = calibration_text(calibration)
    started = time.monotonic()
    progress(f"tokenizing the calibration text ({name})")
    samples = token_samples(model_dir, text, CALIBRATION_SAMPLES, CALIBRATION_TOKENS)
    progress(f"loading {model_dir}")
    model = _load(model_dir)
    progress(f"measuring activations on {sum(map(len, samples))} calibration tokens")
    mlp, heads = importance(model, samples)
    hidden_score = prune_hidden.importance(model, samples) if hidden_ratio else None
    keep_channels = max(1, round(mlp.shape[1] * (1 - ratio)))
    before = sum(p.numel() for p in model.parameters())
    layers = apply(model, mlp, heads, keep_channels, kv_groups)
    hidden = {"before": model.config.hidden_size, "after": model.config.hidden_size}
    if hidden_score is not None:
        keep_hidden = max(1, round(len(hidden_score) * (1 - hidden_ratio)))
        hidden = prune_hidden.apply(model, hidden_score, keep_hidden, _linear)
    after = sum(p.numel() for p in model.parameters())
    progress(f"writing {out}")
    report = {
        "schema_version": SCHEMA_VERSION,
        "source": {"path": str(model_dir.resolve()), "model_type": model_type},
        "method": "width pruning by activation importance (Minitron): MLP channels by mean "
        "|act(gate) * up|, key/value groups by the summed mean L2 norm of their query heads' "
        "outputs, hidden channels by the summed mean |output| of the RMSNorms, over the "
        "calibration tokens; weights sliced, not retrained",
        "calibration": {"text": name, "samples": len(samples), "tokens": sum(map(len, samples))},
        "ratio": ratio,
        "intermediate_size": {"before": int(mlp.shape[1]), "after": keep_channels},
        "kv_groups": {"before": groups, "after": kv_groups or groups},
        "hidden_ratio": hidden_ratio,
        "hidden_size": hidden,
        "parameters": {"before": before, "after": after, "kept": after / before},
        "layers": layers,
        "heal": f"edgepack distill --teacher {model_dir} --student {out} --out HEALED",
        "wall_s": round(time.monotonic() - started, 1),
    }
    _save(model, model_dir, out, report)
    return report


def _load(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def decoder_layers(model) -> list:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise UnsupportedModelError(
            f"cannot find the decoder layers of {type(model).__name__} (model.layers)"
        )
    return list(layers)


def importance(model, samples: list[list[int]]):
    """([layers, channels] MLP channel importance, [layers, heads] head importance)."""
    import torch

    layers = decoder_layers(model)
    attn = layers[0].self_attn
    n_heads = model.config.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or model.config.hidden_size // n_heads
    channels = torch.zeros(len(layers), layers[0].mlp.down_proj.in_features, dtype=torch.float64)
    heads = torch.zeros(len(layers), n_heads, dtype=torch.float64)
    count = [0]

    def on_mlp(i):
        def hook(module, args):
            channels[i] += args[0].detach().abs().sum(dim=(0, 1)).double()

        return hook

    def on_attn(i):
        def hook(module, args):
            x = args[0].detach()
            per_head = x.reshape(*x.shape[:-1], n_heads, head_dim).norm(dim=-1)
            heads[i] += per_head.sum(dim=(0, 1)).double()

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(on_mlp(i)))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(on_attn(i)))
    try:
        with torch.inference_mode():
            for ids in samples:
                model(torch.tensor([ids]))
                count[0] += len(ids)
    finally:
        for h in handles:
            h.remove()
    return (channels / count[0]).numpy(), (heads / count[0]).numpy()


def apply(model, mlp, heads, keep_channels: int, kv_groups: int | None) -> list[dict]:
    """Slice every layer's weights to its most important channels and groups, in place, and
    set the config to match; returns what each layer kept and cut."""
    import numpy as np
    import torch

    config = model.config
    n_heads = config.num_attention_heads
    groups = getattr(config, "num_key_value_heads", None) or n_heads
    per_group = n_heads // groups
    head_dim = getattr(decoder_layers(model)[0].self_attn, "head_dim", None) or (
        config.hidden_size // n_heads
    )
    rows = []
    for i, layer in enumerate(decoder_layers(model)):
        channels = np.sort(np.argsort(-mlp[i], kind="stable")[:keep_channels])
        kept = torch.as_tensor(channels)
        m = layer.mlp
        m.gate_proj = _linear(m.gate_proj, out_idx=kept)
        m.up_proj = _linear(m.up_proj, out_idx=kept)
        m.down_proj = _linear(m.down_proj, in_idx=kept)
        row = {
            "layer": i,
            "mlp_channels_kept": int(len(channels)),
            "mlp_importance_kept": float(mlp[i][channels].sum() / mlp[i].sum()),
        }
        if kv_groups is not None and kv_groups < groups:
            score = heads[i].reshape(groups, per_group).sum(axis=1)
            keep_groups = np.sort(np.argsort(-score, kind="stable")[:kv_groups])
            q_heads = [g * per_group + h for g in keep_groups for h in range(per_group)]
            q_rows = _rows(q_heads, head_dim)
            kv_rows = _rows(keep_groups, head_dim)
            a = layer.self_attn
            a.q_proj = _linear(a.q_proj, out_idx=q_rows)
            a.k_proj = _linear(a.k_proj, out_idx=kv_rows)
            a.v_proj = _linear(a.v_proj, out_idx=kv_rows)
            a.o_proj = _linear(a.o_proj, in_idx=q_rows)
            for attr in ("num_heads", "num_key_value_heads"):  # older attention classes
                if hasattr(a, attr):
                    setattr(a, attr, len(q_heads) if attr == "num_heads" else kv_groups)
            row |= {
                "kv_groups_kept": [int(g) for g in keep_groups],
                "head_importance_kept": float(score[keep_groups].sum() / score.sum()),
            }
        rows.append(row)
    config.intermediate_size = keep_channels
    if kv_groups is not None and kv_groups < groups:
        config.head_dim = head_dim
        config.num_attention_heads = kv_groups * per_group
        config.num_key_value_heads = kv_groups
    return rows


def _rows(heads, head_dim: int):
    import torch

    return torch.as_tensor([h * head_dim + d for h in heads for d in range(head_dim)])


def _linear(layer, out_idx=None, in_idx=None):
    """A copy of nn.Linear `layer` with only the given output rows / input columns."""
    import torch

    weight, bias = layer.weight.data, layer.bias.data if layer.bias is not None else None
    if out_idx is not None:
        weight = weight[out_idx]
        bias = bias[out_idx] if bias is not None else None
    if in_idx is not None:
        weight = weight[:, in_idx]
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    new.weight.data = weight.clone()
    if bias is not None:
        new.bias.data = bias.clone()
    return new


def _save(model, model_dir: Path, out: Path, report: dict) -> None:
    """The pruned model as a Hugging Face directory, written beside `out` and renamed."""
    from transformers import AutoModelForCausalLM

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.pruning"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for item in model_dir.iterdir():
            if item.is_file() and not _NOT_COPIED.match(item.name):
                shutil.copy2(item, tmp / item.name)
        model.save_pretrained(tmp, safe_serialization=True)
        # the saved directory must load as it is (its config matches its weights)
        AutoModelForCausalLM.from_pretrained(tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty: checked before any work
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
