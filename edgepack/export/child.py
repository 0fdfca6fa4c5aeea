"""Running an exporter's tools as child processes (llama.cpp's for GGUF, onnxruntime-genai's
builder): the run, the line of its log that says what went wrong, and the installed version of
a distribution."""

from __future__ import annotations

import os
import re
import subprocess

from ..errors import ExportError


def run(cmd: list[str], timeout: int, what: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ExportError(f"{what} did not finish within {timeout} s") from None
    except OSError as exc:
        raise ExportError(f"{what} could not be started: {exc}") from None


def last_error(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"error|exception|abort|terminate|not supported|failed", line, re.I):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(dist)
    except PackageNotFoundError:
        raise ExportError(
            f"{dist} is not installed; install it (pip install {dist}) to export this format"
        ) from None
