"""An exporter that loads the model in its own process, run in a child process instead.

optimum's OpenVINO and ONNX exporters load the PyTorch model, trace it and compress the graph in
the process that calls them; the memory they take is not all given back to the system after
they return (the allocator keeps it), and the build then loads the artifact in its runtime
beside it. Run in a child, the export's memory goes with the child (tools/build_memory.py shows
the stages), and the build's own process never holds a model it does not need.

The child (`python -m edgepack.export.isolated SPEC`) runs the same exporter module and writes,
on a pipe of its own, JSON lines: {"progress": text} for each step, then {"artifact": ...} or
{"error": [class name, message]}. Its standard output and error are the parent's (the log file
while edgepack.liblog holds them). An EdgepackError in the child is raised again in the parent
with its class and message; anything else becomes an ExportError naming the child's last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from .. import errors
from ..errors import EdgepackError, ExportError
from ..model.facts import ModelFacts
from .base import Artifact, Progress, exporter

IN_CHILD = frozenset({"openvino", "onnx"})  # exporters that would load the model in-process
# the pid of the process the child exports for: what an exporter keeps between exports (ONNX's
# fp32 base) lives as long as that process, not as long as one child
OWNER_ENV = "EDGEPACK_EXPORT_OWNER"


def export(
    format_name: str,
    model_dir: Path,
    facts: ModelFacts,
    precision_name: str,
    out: Path,
    progress: Progress,
    calibration: str | None = None,
    with_calibration: bool = False,
) -> Artifact:
    """format_name's export of model_dir into out, run in a child process. The exporter module
    is imported here too, so that its exit hook removes what it keeps for this process."""
    exporter(format_name)
    with tempfile.TemporaryDirectory(prefix="edgepack-export-") as tmp:
        spec = {
            "format": format_name,
            "model_dir": str(model_dir),
            "facts": facts.to_dict(),
            "precision": precision_name,
            "out": str(out),
            "with_calibration": with_calibration,
            "calibration": None,
        }
        if calibration is not None:
            (Path(tmp) / "calibration.txt").write_text(calibration, encoding="utf-8")
            spec["calibration"] = str(Path(tmp) / "calibration.txt")
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        read, write = os.pipe()
        cmd = [sys.executable, "-m", "edgepack.export.isolated", str(Path(tmp) / "spec.json")]
        env = {**os.environ, "EDGEPACK_EXPORT_FD": str(write), OWNER_ENV: str(os.getpid())}
        try:
            proc = subprocess.Popen(cmd, pass_fds=(write,), env=env)
        finally:
            os.close(write)
        result = None
        try:
            with os.fdopen(read, encoding="utf-8") as messages:
                for line in messages:
                    message = json.loads(line)
                    if "progress" in message:
                        progress(message["progress"])
                    else:
                        result = message
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if result is not None and "artifact" in result:
        return Artifact(path=Path(out), **result["artifact"])
    if result is not None and "error" in result:
        kind, message = result["error"]
        cls = getattr(errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, EdgepackError):
            raise cls(message)
        raise ExportError(f"the {format_name} export failed: {kind}: {message}")
    raise ExportError(
        f"the {format_name} export's process ended with status {code} before it finished "
        "(killed for memory?); its output is in the log"
    )


def _child(spec_path: str) -> int:
    from .registry import resolve

    channel = os.fdopen(int(os.environ["EDGEPACK_EXPORT_FD"]), "w", buffering=1, encoding="utf-8")

    def send(message: dict) -> None:
        channel.write(json.dumps(message, default=str) + "\n")

    spec = json.loads(Path(spec_path).read_text())
    try:
        _, precision = resolve(spec["format"], spec["precision"])
        facts = ModelFacts.from_dict(spec["facts"])
        kwargs = {}
        if spec["with_calibration"]:
            text = spec["calibration"]
            kwargs["calibration"] = Path(text).read_text(encoding="utf-8") if text else None
        artifact = exporter(spec["format"]).export(
            Path(spec["model_dir"]),
            facts,
            precision,
            Path(spec["out"]),
            lambda step: send({"progress": step}),
            **kwargs,
        )
        fields = ("format", "precision", "runtime", "kind", "details")
        send({"artifact": {k: getattr(artifact, k) for k in fields}})
        return 0
    except EdgepackError as exc:
        send({"error": [type(exc).__name__, str(exc)]})
        return 1
    except Exception as exc:  # noqa: BLE001 - reported to the parent, with the traceback logged
        traceback.print_exc()
        send({"error": [type(exc).__name__, str(exc)[:500]]})
        return 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
