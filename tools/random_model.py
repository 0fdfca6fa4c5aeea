"""Random Llama-shaped checkpoints of a given size, written tensor by tensor (bf16 safetensors).

    .venv/bin/python tools/random_model.py --shape 1b --out DIR

The shapes (SHAPES) are Llama's: 1b and 3b as TinyLlama- and Llama-3.2-3B-like stacks, 7b as
Llama-2-7B, over the default model's byte-level BPE tokenizer (its 49,152 tokens are the
vocabulary). The config comes from transformers' LlamaConfig; the weights are drawn one tensor
at a time (normal, std = INIT_STD; norms at 1) and written in shards of SHARD_BYTES,
so that making a 7B checkpoint holds one tensor, not the model. Seeded: the same shape gives
the same bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

SHAPES = {
    # name: hidden, layers, intermediate, heads, kv heads
    "tiny": (256, 2, 512, 4, 2),
    "1b": (2048, 16, 8192, 32, 8),
    "3b": (3072, 28, 8192, 24, 8),
    "7b": (4096, 32, 11008, 32, 32),
}
SHARD_BYTES = 2 * 10**9
# transformers' default initialisation (0.02) makes a deep random model chaotic under rounding:
# at the 3b shape its f16 GGUF kept top-1 agreement 0.903 with the bf16 reference (relative
# logit error 0.045), its q4_k_m 0.07 (0.761), as unrelated as a wrong model. A narrower one
# keeps attention near uniform and SiLU near linear, and the logits flat: validation then
# judges the logits (edgepack.measure.validate), as for the tests' flat tiny models.
INIT_STD = 0.006
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def config(shape: str, vocab: int, bos: int, eos: int):
    from transformers import LlamaConfig

    hidden, layers, inter, heads, kv = SHAPES[shape]
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=bos,
        eos_token_id=eos,
        torch_dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
        initializer_range=INIT_STD,
    )


def tensor_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Every weight's name and shape, from the model built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def make(shape: str, out: Path, seed: int = 0, log=print) -> Path:
    """Write the random checkpoint of `shape` to out (replaced if it exists); return out."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from edgepack.model.default import default_model_dir

    source = default_model_dir(progress=False)
    src = json.loads((source / "config.json").read_text())
    cfg = config(shape, src["vocab_size"], src["bos_token_id"], src["eos_token_id"])
    shapes = tensor_shapes(cfg)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, out / name)
    gen = torch.Generator().manual_seed(seed)
    names: list[list[str]] = []  # each shard's tensor names, for the index
    current: dict = {}
    size = total = 0
    for name, dims in shapes.items():
        nbytes = 2 * int(torch.Size(dims).numel())
        if current and size + nbytes > SHARD_BYTES:
            names.append(_write(current, out, len(names) + 1, save_file))
            current, size = {}, 0
        if name.endswith("norm.weight"):
            t = torch.ones(dims, dtype=torch.bfloat16)
        else:
            t = torch.empty(dims, dtype=torch.float32)
            t.normal_(0.0, cfg.initializer_range, generator=gen)
            t = t.to(torch.bfloat16)
        current[name] = t
        size, total = size + nbytes, total + nbytes
    names.append(_write(current, out, len(names) + 1, save_file))
    _index(out, names, total)
    params = sum(torch.Size(d).numel() for d in shapes.values())
    log(f"{shape}: {params:,} parameters, {total / 1e9:.2f} GB of bf16 in {len(names)} shards")
    return out


def _write(tensors: dict, out: Path, number: int, save_file) -> list[str]:
    save_file(tensors, str(out / f"model-{number:05d}.safetensors"), metadata={"format": "pt"})
    return list(tensors)


def _index(out: Path, names: list[list[str]], total: int) -> None:
    """Shards renamed model-i-of-n, and the index transformers and the converters read."""
    files = {}
    for i, shard in enumerate(names, 1):
        final = f"model-{i:05d}-of-{len(names):05d}.safetensors"
        (out / f"model-{i:05d}.safetensors").rename(out / final)
        files.update({name: final for name in shard})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(files.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make(args.shape, args.out, args.seed, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
