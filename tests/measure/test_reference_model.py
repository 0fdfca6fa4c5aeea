"""Which dtype a reference runs in, and where that shows (no backend)."""

import io
import json

import numpy as np

from edgepack.measure import reference as r
from edgepack.measure.reference_model import key_suffix, reference_dtype
from edgepack.model.facts import FP32_REFERENCE_MAX_BYTES


def test_small_models_keep_an_fp32_reference_large_ones_run_in_bf16():
    assert reference_dtype(134_515_008) == "float32"  # the default model
    assert reference_dtype(268_098_176) == "float32"  # Gemma-3-270M
    assert reference_dtype(FP32_REFERENCE_MAX_BYTES // 4) == "float32"
    assert reference_dtype(FP32_REFERENCE_MAX_BYTES // 4 + 1) == "bfloat16"
    assert reference_dtype(6_738_415_616) == "bfloat16"  # a 7B model: 27 GB in fp32


def test_the_cache_name_changes_only_for_bf16():
    assert key_suffix("float32") == ""  # references cached before keep their names
    assert key_suffix("bfloat16") == "-bfloat16"


def test_a_saved_reference_keeps_its_dtype_and_an_older_one_reads_as_fp32(tmp_path):
    empty = np.zeros((0,), dtype=np.float32)
    ref = r.Reference({"a": [1]}, [[1]], [np.ones((1, 4))], [1], empty, empty, [], empty, [0])
    ref.dtype = "bfloat16"
    file = tmp_path / "ref.npz"
    data = io.BytesIO()
    r._save(ref, data)
    file.write_bytes(data.getvalue())
    assert r._load(file).dtype == "bfloat16"
    # a reference cached before the dtype was recorded: its meta has no "dtype"
    with np.load(file) as saved:
        arrays = {k: saved[k] for k in saved.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    del meta["dtype"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(file, **arrays)
    assert r._load(file).dtype == "float32"
