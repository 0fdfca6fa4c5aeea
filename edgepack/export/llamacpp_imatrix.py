"""Run in its own process by edgepack.export.gguf: an importance matrix of an f16 GGUF.

Arguments: GGUF SAMPLES_JSON OUT_NPZ; prints a JSON summary as its last line.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

import numpy as np

# llama-imatrix's collection (tools/imatrix/imatrix.cpp, collect_imatrix) through llama.cpp's
# eval callback: per block weight, the sum of squared F32 input activations per input column
# and the number of rows (tokens) seen. Saved as mean = sum / count, what llama-quantize
# passes to the quantizer.
MAX_DIMS, MAX_SRC, MAX_OP_PARAMS, MAX_NAME = 4, 10, 64, 64  # ggml.h
GGML_TYPE_F32 = 0
# the output head's matrix: its own, or the token embedding a tied head reads
OUTPUT_NAMES = ("output.weight", "token_embd.weight")


class Tensor(ctypes.Structure):  # ggml.h struct ggml_tensor
    pass


Tensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * MAX_DIMS),
    ("nb", ctypes.c_size_t * MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(Tensor) * MAX_SRC),
    ("view_src", ctypes.POINTER(Tensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


def bind(lib) -> None:
    """Argument and result types of the ggml functions the callback calls."""
    for fn, restype, argtypes in (
        ("ggml_get_name", ctypes.c_void_p, [ctypes.c_void_p]),
        ("ggml_op_desc", ctypes.c_char_p, [ctypes.c_void_p]),
        ("ggml_nbytes", ctypes.c_size_t, [ctypes.c_void_p]),
        ("ggml_nelements", ctypes.c_int64, [ctypes.c_void_p]),
        ("ggml_get_data", ctypes.c_void_p, [ctypes.c_void_p]),
        ("ggml_tensor_overhead", ctypes.c_size_t, []),
        ("ggml_backend_tensor_get", None, [ctypes.c_void_p] * 2 + [ctypes.c_size_t] * 2),
    ):
        f = getattr(lib, fn)
        f.restype, f.argtypes = restype, argtypes


def main(gguf_path: str, samples_path: str, out_path: str) -> None:
    import llama_cpp
    from llama_cpp import _ggml

    lib = _ggml.libggml
    bind(lib)
    sums, counts, state = {}, {}, {"checked": False, "error": None, "mul_mat": None}
    if lib.ggml_tensor_overhead() != ctypes.sizeof(Tensor) + 32:  # + sizeof(struct ggml_object)
        overhead = lib.ggml_tensor_overhead()
        state["error"] = f"ggml_tensor_overhead {overhead} != {ctypes.sizeof(Tensor) + 32}"

    def layout_ok(addr, t):
        return (
            lib.ggml_get_name(addr) == addr + Tensor.name.offset
            and (lib.ggml_get_data(addr) or 0) == (t.data or 0)
            and lib.ggml_nelements(addr) == int(np.prod([t.ne[i] for i in range(MAX_DIMS)]))
        )


    def collect(ptr, ask, user_data):
        try:
            if state["error"]:
                return False
            addr = ctypes.cast(ptr, ctypes.c_void_p).value
            t = ctypes.cast(ptr, ctypes.POINTER(Tensor)).contents
            if not state["checked"]:
                if not layout_ok(addr, t):
                    state["error"] = "ggml_tensor layout differs from ggml.h as mirrored"
                    return False
                state["checked"] = True
            if state["mul_mat"] is None:
                if lib.ggml_op_desc(addr) != b"MUL_MAT":
                    return False
                state["mul_mat"] = t.op
            if t.op != state["mul_mat"] or not t.src[0] or not t.src[1]:
                return False
            w, x = t.src[0].contents, t.src[1].contents
            name = w.name.decode(errors="replace")
            if ask:  # as llama-imatrix --process-output: block weights and the output head
                # (token_embd.weight when tied), F32 inputs, batches of 16+ rows
                wanted = name.startswith("blk.") or name in OUTPUT_NAMES
                return wanted and x.type == GGML_TYPE_F32 and x.ne[1] >= 16
            x_addr = ctypes.addressof(x)
            if not layout_ok(x_addr, x):
                state["error"] = "ggml_tensor layout differs for " + name
                return False
            size = lib.ggml_nbytes(x_addr)
            buf = (ctypes.c_char * size)()
            lib.ggml_backend_tensor_get(x_addr, buf, 0, size)
            rows = np.lib.stride_tricks.as_strided(
                np.frombuffer(buf, np.float32),
                shape=tuple(x.ne[i] for i in reversed(range(MAX_DIMS))),
                strides=tuple(x.nb[i] for i in reversed(range(MAX_DIMS))),
            ).reshape(-1, x.ne[0]).astype(np.float64)
            sums[name] = sums.get(name, 0.0) + (rows * rows).sum(0)
            counts[name] = counts.get(name, 0) + rows.shape[0]
            return True
        except Exception as exc:  # a callback must not raise into C
            state["error"] = f"{type(exc).__name__}: {exc}"
            return False

    callback = llama_cpp.ggml_backend_sched_eval_callback(collect)
    with open(samples_path) as fh:
        samples = json.load(fh)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(
        gguf_path.encode(), llama_cpp.llama_model_default_params()
    )
    if not model:
        sys.exit("llama.cpp could not load " + gguf_path)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = max(len(s) for s in samples)
    cparams.n_threads = cparams.n_threads_batch = os.cpu_count() or 1
    cparams.cb_eval = callback
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    start = time.perf_counter()
    for sample in samples:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        batch = llama_cpp.llama_batch_init(len(sample), 0, 1)
        for i, token in enumerate(sample):  # every position outputs: the last block sees all rows
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(sample)
        rc = llama_cpp.llama_decode(ctx, batch)
        llama_cpp.llama_batch_free(batch)
        if rc != 0:
            sys.exit(f"llama_decode failed with {rc}")
        if state["error"]:
            sys.exit("importance matrix collection failed: " + state["error"])
    if not sums:
        sys.exit("importance matrix collection saw no block MUL_MAT")
    np.savez(out_path, **{k: (sums[k] / counts[k]).astype(np.float32) for k in sums})
    summary = {
        "entries": len(sums),
        "names": sorted(sums),
        "rows_min": min(counts.values()),
        "collect_s": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:4])
