"""Device profiles: hardware facts and budgets, as data, validated by one schema.

Built-in profiles are the TOML files of profiles/ (shipped in the package as
edgepack/builtin_profiles); `--target` takes a built-in name or a path to a .toml or .json file
of the same schema.
"""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from ..errors import ProfileError

RUNTIMES = ("llama.cpp", "openvino", "onnxruntime", "onnxruntime-genai")
ISA_FEATURES = {
    "x86_64": ("sse4_2", "avx2", "avx512", "avx512_vnni", "avx_vnni", "amx"),
    "arm64": ("neon", "dotprod", "fp16", "i8mm", "sve"),
}

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0)]


def _array(value: object) -> object:
    """TOML and JSON arrays arrive as lists; the frozen profile keeps tuples."""
    return tuple(value) if isinstance(value, list) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Hardware(_Strict):
    arch: Literal["x86_64", "arm64"]
    cpu: str
    cores: PositiveInt
    clock_ghz: Positive
    ram_gb: Positive
    memory_bandwidth_gbs: Positive
    isa: Annotated[tuple[str, ...], BeforeValidator(_array)]

    @model_validator(mode="after")
    def _isa_matches_arch(self) -> Hardware:
        known = ISA_FEATURES[self.arch]
        for feature in self.isa:
            if feature not in known:
                raise ValueError(
                    f"isa feature {feature!r} is not one of {self.arch}'s: {', '.join(known)}"
                )
        return self


class Platform(_Strict):
    """What the device installs into: its OS, its C library and its Python (requirements are
    resolved for these at build time, edgepack.bundle.install)."""

    os: Literal["linux"] = "linux"
    glibc: Annotated[str, Field(pattern=r"^2\.[0-9]+$")] = "2.31"  # Debian 11 / Ubuntu 20.04
    python: Annotated[str, Field(pattern=r"^3\.[0-9]+$")] = "3.11"


class NoAccelerator(_Strict):
    kind: Literal["none"]


class GpuAccelerator(_Strict):
    kind: Literal["nvidia-gpu"]
    name: str
    vram_gb: Positive
    memory_bandwidth_gbs: Positive
    fp16_tflops: Positive
    int8_tops: Positive
    fp16: bool
    int8: bool


Accelerator = Annotated[NoAccelerator | GpuAccelerator, Field(discriminator="kind")]


class Budget(_Strict):
    memory_gb: Positive
    accelerator_memory_gb: Positive | None = None
    disk_gb: Positive
    context_tokens: PositiveInt
    first_token_ms: Positive
    decode_tokens_per_s: Positive
    min_quality: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    # what min_quality judges: perplexity retention on the evaluation text, or the retention
    # of task accuracy on the build's --eval-tasks (edgepack.measure.task_scoring)
    quality_metric: Literal["perplexity", "tasks"] = "perplexity"


class Cost(_Strict):
    """What running the device costs: an hourly price, the offer it is for, and its source
    (cost per generated token follows from the predicted speed: edgepack.plan.cost)."""

    hourly_usd: Positive
    instance: str
    source: str


class Runtimes(_Strict):
    prefer: Annotated[
        tuple[Literal["llama.cpp", "openvino", "onnxruntime", "onnxruntime-genai"], ...],
        BeforeValidator(_array),
        Field(min_length=1),
    ]

    @model_validator(mode="after")
    def _unique(self) -> Runtimes:
        if len(set(self.prefer)) != len(self.prefer):
            raise ValueError("a runtime is listed twice")
        return self


class Profile(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    description: str
    objective: Literal["quality", "speed", "size"]
    # retentions within this of the best count as equal; the rest of the objective decides
    quality_tolerance: Annotated[float, Field(ge=0, le=0.2, allow_inf_nan=False)] = 0.01
    hardware: Hardware
    platform: Platform = Platform()
    accelerator: Accelerator
    budget: Budget
    runtimes: Runtimes
    cost: Cost | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        hw, budget = self.hardware, self.budget
        if budget.memory_gb > hw.ram_gb:
            raise ValueError(
                f"budget.memory_gb ({budget.memory_gb}) is above hardware.ram_gb ({hw.ram_gb})"
            )
        if isinstance(self.accelerator, GpuAccelerator):
            if budget.accelerator_memory_gb is None:
                raise ValueError("budget.accelerator_memory_gb is required with an accelerator")
            if budget.accelerator_memory_gb > self.accelerator.vram_gb:
                raise ValueError(
                    f"budget.accelerator_memory_gb ({budget.accelerator_memory_gb}) is above "
                    f"accelerator.vram_gb ({self.accelerator.vram_gb})"
                )
        elif budget.accelerator_memory_gb is not None:
            raise ValueError("budget.accelerator_memory_gb is set but accelerator.kind is 'none'")
        return self

    @property
    def gpu(self) -> GpuAccelerator | None:
        return self.accelerator if isinstance(self.accelerator, GpuAccelerator) else None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def builtin_names() -> list[str]:
    root = resources.files("edgepack").joinpath("builtin_profiles")
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def builtin_profiles() -> list[Profile]:
    return [load_profile(name) for name in builtin_names()]


def load_profile(target: str) -> Profile:
    """A built-in profile by name, or a profile file (.toml or .json) by path."""
    path = Path(target)
    if path.suffix in (".toml", ".json") or path.exists() or "/" in target:
        if not path.is_file():
            raise ProfileError(f"profile file {target} does not exist")
        return parse_profile(path.read_bytes(), source=str(path), is_json=path.suffix == ".json")
    if target not in builtin_names():
        raise ProfileError(
            f"unknown target {target!r}; built-in targets: {', '.join(builtin_names())}, "
            "or give the path of a .toml profile file"
        )
    data = (
        resources.files("edgepack")
        .joinpath("builtin_profiles")
        .joinpath(f"{target}.toml")
        .read_bytes()
    )
    return parse_profile(data, source=f"built-in profile {target}")


def parse_profile(data: bytes | dict, source: str, is_json: bool = False) -> Profile:
    if isinstance(data, dict):
        raw = data
    else:
        try:
            text = data.decode("utf-8")
            raw = json.loads(text) if is_json else tomllib.loads(text)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            kind = "JSON" if is_json else "TOML"
            raise ProfileError(f"{source}: not valid {kind}: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: a profile must be a table of keys")
    try:
        return Profile.model_validate(raw)
    except PydanticValidationError as exc:
        raise ProfileError(f"{source}: {_describe(exc)}") from None


def _describe(exc: PydanticValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] == "missing":
            problems.append(f"{loc}: missing required key")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
        elif isinstance(value, float) and math.isnan(value):
            problems.append(f"{loc}: NaN is not a number it can use")
        elif isinstance(value, (dict, list)):
            problems.append(f"{loc}: {message}" if loc else message)
        elif loc:
            problems.append(f"{loc}: {message} (got {value!r})")
        else:
            problems.append(message)
    return "; ".join(problems)


def _is_union_tag(part: object) -> bool:
    return part in ("none", "nvidia-gpu")
