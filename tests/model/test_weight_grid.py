"""Telling weights already on a quantization grid (a dequantized GGUF) from continuous ones."""

import json
import struct

import numpy as np
import pytest

from edgepack.model.facts import ModelFacts
from edgepack.model.weight_grid import block_levels, describe, tensor_grid_bits, weight_grid

RNG = np.random.default_rng(7)
WEIGHTS = RNG.normal(0, 0.02, (256, 1024)).astype(np.float32)


def on_grid(w, bits, block=32, symmetric=False):
    """What dequantizing a GGUF block type writes: scale * q (+ min) per block of a row."""
    b = w.reshape(w.shape[0], -1, block).astype(np.float64)
    if symmetric:
        scale = np.abs(b).max(-1, keepdims=True) / (2 ** (bits - 1) - 1)
        out = np.round(b / scale) * scale
    else:
        low = b.min(-1, keepdims=True)
        scale = (b.max(-1, keepdims=True) - low) / (2**bits - 1)
        out = np.round((b - low) / scale) * scale + low
    return out.reshape(w.shape).astype(np.float32)


def bf16(w):
    """Round float32 to bfloat16 (nearest), kept as float32 values."""
    return ((w.view(np.uint32) + 0x8000) & 0xFFFF0000).view(np.float32)


def test_block_levels():
    assert block_levels(np.full(16, 0.5)) == 1
    assert block_levels(0.1 * np.arange(16) - 0.3) == 16
    assert block_levels(np.array([0.0, 0.3, 0.5, 1.0])) == 11  # steps of 0.1, gaps of 3, 2, 5
    assert block_levels(WEIGHTS[0, :16]) == 0


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_continuous_weights_are_on_no_grid(dtype):
    for w in (WEIGHTS, RNG.uniform(-0.1, 0.1, WEIGHTS.shape).astype(np.float32)):
        stored = {"F32": w, "F16": w.astype(np.float16), "BF16": bf16(w)}[dtype]
        assert tensor_grid_bits(stored, dtype) == 0


@pytest.mark.parametrize(
    "bits, block, symmetric, dtypes",
    [
        (4, 32, False, ("F32", "F16", "BF16")),  # Q4_1
        (4, 32, True, ("F32", "F16", "BF16")),  # Q4_0
        (3, 32, False, ("F32", "BF16")),
        (5, 32, True, ("F32", "F16")),  # Q5_0
        (6, 16, True, ("F32",)),  # Q6_K's sub-blocks (in fp16, told in some samples only)
        (8, 32, True, ("F32",)),  # Q8_0
    ],
)
def test_grids_are_told_with_their_bits(bits, block, symmetric, dtypes):
    w = on_grid(WEIGHTS, bits, block, symmetric)
    for dtype in dtypes:
        stored = {"F32": w, "F16": w.astype(np.float16), "BF16": bf16(w)}[dtype]
        assert tensor_grid_bits(stored, dtype) == bits, dtype


def _write(path, tensors: dict):
    """A safetensors file; bf16 tensors are given as float32 and stored truncated."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = (array.view(np.uint32) >> 16).astype("<u2") if dtype == "BF16" else array
        data = np.ascontiguousarray(raw).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape)}
        header[name]["data_offsets"] = [offset, offset + len(data)]
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_a_directory_reports_the_share_on_each_grid(tmp_path):
    grid = on_grid(WEIGHTS, 4)
    _write(
        tmp_path / "model-00001-of-00002.safetensors",
        {"a.weight": ("F32", grid), "norm.weight": ("F32", WEIGHTS[0])},
    )
    _write(
        tmp_path / "model-00002-of-00002.safetensors",
        {"b.weight": ("BF16", bf16(WEIGHTS)), "c.weight": ("BF16", bf16(grid))},
    )
    found = weight_grid(tmp_path)
    assert found["tensors"] == 3  # the 1-D norm is skipped
    assert found["shares"] == {0: pytest.approx(1 / 3, abs=1e-3), 4: pytest.approx(2 / 3, abs=1e-3)}


def test_describe_and_the_facts_round_trip():
    assert describe(()) is None
    line = describe(((4, 0.79), (8, 0.21)))
    assert "4-bit 79%, 8-bit 21%" in line and "at 4 bits or more" in line
    fields = {k: 1 for k in ModelFacts.__dataclass_fields__}
    fields |= {"path": None, "architecture": "A", "model_type": "llama", "kind": "decoder"}
    fields |= {"parameters_source": "config", "dtype": "float32", "weights": "none"}
    fields |= {"tie_word_embeddings": False, "formats": (), "unsupported": ()}
    fields |= {"remote_code": False, "weight_grid": ((4, 0.79), (8, 0.21))}
    facts = ModelFacts(**fields)
    assert facts.to_dict()["weight_grid"] == {"4": 0.79, "8": 0.21}
    assert ModelFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


@pytest.mark.integration
def test_the_embedded_models_are_dequantized_ggufs(default_model, gemma3_model):
    from edgepack.export.support import inspect_model

    # SmolLM2-135M from a Q4_1 GGUF: the blocks' matrices on 4 bits, the embedding on 8
    shares = dict(inspect_model(default_model).weight_grid)
    assert shares == {4: pytest.approx(0.79, abs=0.01), 8: pytest.approx(0.21, abs=0.01)}
    # Gemma-3-270M from Q4_K_M: q8_0 embedding, q5_0 rows of 640, q4_K / q6_K ffn_down
    shares = dict(inspect_model(gemma3_model).weight_grid)
    assert set(shares) == {4, 5, 6, 8} and shares[8] == pytest.approx(0.63, abs=0.01)
