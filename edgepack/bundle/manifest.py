"""The manifest of a bundle, typed: every key comes from the kit's manifestkeys (defined once,
read by check.py on the device), and a Manifest round-trips through JSON."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import VerificationError
from .kit import manifest_keys

K = manifest_keys()

_FIELD_KEYS = {  # dataclass field -> manifest key
    "schema_version": K.SCHEMA,
    "edgepack_version": K.EDGEPACK_VERSION,
    "created": K.CREATED,
    "bundle": K.BUNDLE,
    "source_model": K.SOURCE_MODEL,
    "target": K.TARGET,
    "plan": K.PLAN,
    "forced_by_user": K.FORCED,
    "artifact": K.ARTIFACT,
    "runtime": K.RUNTIME,
    "predicted": K.PREDICTED,
    "validation": K.VALIDATION,
    "quality": K.QUALITY,
    "golden": K.GOLDEN,
    "build_host": K.BUILD_HOST,
    "device_prediction": K.DEVICE_PREDICTION,
    "distillation": K.DISTILLATION,
    "candidates_measured": K.CANDIDATES,
    "files": K.FILES,
    "manifest_sha256": K.DIGEST,
}


@dataclass
class Manifest:
    edgepack_version: str
    created: str
    bundle: dict  # {"name": ..., "path": the published directory}
    source_model: dict
    target: dict
    plan: dict
    forced_by_user: bool
    artifact: dict
    runtime: dict
    predicted: dict
    validation: dict
    quality: dict
    golden: list
    build_host: dict  # {"host": ..., "check": ...} or {"skipped": why}
    schema_version: int = K.SCHEMA_VERSION
    device_prediction: dict | None = None
    distillation: dict | None = None
    candidates_measured: list | None = None
    files: list = field(default_factory=list)
    manifest_sha256: str | None = None

    def to_dict(self) -> dict:
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and _FIELD_KEYS[f.name] in K.OPTIONAL:
                continue
            data[_FIELD_KEYS[f.name]] = value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        unknown = sorted(set(data) - set(K.ALL))
        missing = [k for k in K.REQUIRED if k not in data]
        if unknown or missing:
            what = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
            raise VerificationError(f"manifest.json has {what}; rebuild the bundle")
        by_key = {v: k for k, v in _FIELD_KEYS.items()}
        return cls(**{by_key[k]: v for k, v in data.items()})


assert set(_FIELD_KEYS.values()) == set(K.ALL), "every manifest key is a field"
