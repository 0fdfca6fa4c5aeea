"""The profile schema: built-ins load, bad files are refused with the key named."""

import copy
import json
import math
import re

import pytest

from edgepack.device.profiles import builtin_names, load_profile, parse_profile
from edgepack.errors import ProfileError
from tests.conftest import PROFILES


def test_builtins_are_the_four_devices():
    assert builtin_names() == ["edge-4gb", "laptop", "t4", "xeon"]
    for name in builtin_names():
        profile = load_profile(name)
        assert profile.name == name
        assert profile.budget.memory_gb <= profile.hardware.ram_gb


def test_every_number_in_a_builtin_profile_is_justified():
    for path in PROFILES.glob("*.toml"):
        for line in path.read_text().splitlines():
            if re.match(r"^\w+\s*=\s*[-\d.]+", line):
                assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, (path.name, line)


def test_t4_has_a_gpu_and_others_do_not():
    assert load_profile("t4").gpu.vram_gb == 16
    assert load_profile("t4").gpu.fp16
    for name in ("edge-4gb", "xeon", "laptop"):
        assert load_profile(name).gpu is None


def test_profile_file_by_path_and_json(tmp_path):
    text = (PROFILES / "laptop.toml").read_text().replace('name = "laptop"', 'name = "mine"')
    (tmp_path / "mine.toml").write_text(text)
    assert load_profile(str(tmp_path / "mine.toml")).name == "mine"
    data = load_profile("laptop").to_dict()
    (tmp_path / "mine.json").write_text(json.dumps(data))
    assert load_profile(str(tmp_path / "mine.json")) == load_profile("laptop")


def test_round_trip_through_dict():
    for name in builtin_names():
        profile = load_profile(name)
        assert parse_profile(profile.to_dict(), source="x") == profile


def test_unknown_target_names_the_choices():
    with pytest.raises(ProfileError, match="built-in targets: edge-4gb, laptop, t4, xeon"):
        load_profile("raspberry")


def test_missing_profile_file():
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile("/nonexistent/profile.toml")


def test_invalid_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(bad))


def _set(section, key, value):
    def mutate(raw):
        (raw[section] if section else raw)[key] = value

    return mutate


def _drop(section, key):
    def mutate(raw):
        del (raw[section] if section else raw)[key]

    return mutate


BAD = [
    ("unknown key", _set("budget", "memroy_gb", 3), "budget.memroy_gb: unknown key"),
    ("unknown top key", _set(None, "colour", "red"), "colour: unknown key"),
    ("missing key", _drop("budget", "disk_gb"), "budget.disk_gb: missing required key"),
    ("missing section", _drop(None, "runtimes"), "runtimes: missing required key"),
    ("string for int", _set("hardware", "cores", "8"), "hardware.cores"),
    ("float for int", _set("hardware", "cores", 8.5), "hardware.cores"),
    ("bool for int", _set("hardware", "cores", True), "hardware.cores"),
    ("zero", _set("budget", "context_tokens", 0), "budget.context_tokens"),
    ("negative", _set("budget", "memory_gb", -1.0), "budget.memory_gb"),
    ("nan", _set("budget", "memory_gb", math.nan), "budget.memory_gb"),
    ("inf", _set("budget", "decode_tokens_per_s", math.inf), "budget.decode_tokens_per_s"),
    ("memory above RAM", _set("budget", "memory_gb", 64), "budget.memory_gb (64"),
    ("VRAM budget above VRAM", _set("budget", "accelerator_memory_gb", 20), "accelerator.vram_gb"),
    ("quality above 1", _set("budget", "min_quality", 1.5), "budget.min_quality"),
    ("unknown runtime", _set("runtimes", "prefer", ["tensorrt"]), "runtimes.prefer"),
    ("no runtimes", _set("runtimes", "prefer", []), "runtimes.prefer"),
    ("runtime twice", _set("runtimes", "prefer", ["llama.cpp", "llama.cpp"]), "listed twice"),
    ("bad objective", _set(None, "objective", "fast"), "objective"),
    ("arm feature on x86", _set("hardware", "isa", ["neon"]), "isa feature 'neon'"),
    ("bad arch", _set("hardware", "arch", "riscv"), "hardware.arch"),
    ("accelerator key missing", lambda r: r["accelerator"].pop("vram_gb"), "accelerator.vram_gb"),
    ("unknown accelerator", lambda r: r["accelerator"].update(kind="tpu"), "accelerator"),
    ("bad name", _set(None, "name", "My Box!"), "name"),
]


@pytest.mark.parametrize("label,mutate,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_profiles_are_refused_naming_the_key(t4_raw, label, mutate, expected):
    raw = copy.deepcopy(t4_raw)
    mutate(raw)
    with pytest.raises(ProfileError) as info:
        parse_profile(raw, source="my.toml")
    message = str(info.value)
    assert message.startswith("my.toml: ")
    assert expected in message
    assert "\n" not in message


def test_gpu_budget_without_gpu_is_refused():
    raw = load_profile("xeon").to_dict()
    raw["budget"]["accelerator_memory_gb"] = 4
    with pytest.raises(ProfileError, match="accelerator.kind is 'none'"):
        parse_profile(raw, source="x")


def test_gpu_without_gpu_budget_is_refused(t4_raw):
    del t4_raw["budget"]["accelerator_memory_gb"]
    with pytest.raises(ProfileError, match="accelerator_memory_gb is required"):
        parse_profile(t4_raw, source="x")
