"""Run in its own process by edgepack.export.gguf: llama.cpp's quantizer on one GGUF.

Arguments: SRC DST FTYPE OPTIONS_JSON (token_embedding_type, output_tensor_type, overrides
[[regex, ggml type]], imatrix (.npz), kv [[key, value]], pure). A second quantization in one process
has aborted: one process per call.
"""

from __future__ import annotations

import ctypes
import json
import sys


def main(argv: list[str]) -> int:
    import llama_cpp

    src, dst, ftype, options = argv[0], argv[1], argv[2], json.loads(argv[3])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    keep = []  # everything the C structs point to stays alive until the quantizer returns
    params.pure = bool(options.get("pure"))  # every tensor in the ftype's type, no mixture
    for field in ("token_embedding_type", "output_tensor_type"):
        if options.get(field):
            setattr(params, field, getattr(llama_cpp, "GGML_TYPE_" + options[field].upper()))
    if options.get("overrides"):
        arr = (llama_cpp.llama_model_tensor_override * (len(options["overrides"]) + 1))()
        for i, (pattern, typ) in enumerate(options["overrides"]):
            keep.append(pattern.encode())
            arr[i].pattern = keep[-1]
            arr[i].type = getattr(llama_cpp, "GGML_TYPE_" + typ.upper())
        arr[-1].pattern = None  # terminator
        params.tt_overrides = arr
    if options.get("imatrix"):
        import numpy as np
        with np.load(options["imatrix"]) as data:
            names = sorted(k for k in data.files if not k.startswith("__"))
            arr = (llama_cpp.llama_model_imatrix_data * (len(names) + 1))()
            for i, name in enumerate(names):
                values = np.ascontiguousarray(data[name], dtype=np.float32)
                keep += [values, name.encode()]
                arr[i].name = keep[-1]
                arr[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
                arr[i].size = values.size
        arr[-1].name = None  # terminator
        params.imatrix = arr
    if options.get("kv"):
        arr = (llama_cpp.llama_model_kv_override * (len(options["kv"]) + 1))()
        for i, (key, value) in enumerate(options["kv"]):
            arr[i].key = key.encode()
            if isinstance(value, int):
                arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                arr[i].value.val_i64 = value
            else:
                arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                arr[i].value.val_str = str(value).encode()[:127]
        arr[-1].key = b""  # terminator
        params.kv_overrides = arr
    return 1 if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
