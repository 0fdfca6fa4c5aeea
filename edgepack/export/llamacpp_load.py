"""Run in its own process by edgepack.export.gguf: load an exported GGUF in llama.cpp and
print what the export check needs (vocabulary size, the ids of a probe, the metadata).

Arguments: GGUF ENCODER(0|1). llama.cpp aborts the process on some malformed files.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> None:
    import llama_cpp

    path, encoder = argv[0], argv[1] == "1"
    llm = llama_cpp.Llama(model_path=path, n_ctx=128, embedding=encoder, verbose=False)
    ids = llm.tokenize(b"Hello world", add_bos=encoder, special=False)
    if encoder:
        llm.embed("Hello world")
    else:
        llm.eval(ids)
    print(json.dumps({"n_vocab": llm.n_vocab(), "hello_ids": ids, "metadata": llm.metadata}))


if __name__ == "__main__":
    main(sys.argv[1:])
