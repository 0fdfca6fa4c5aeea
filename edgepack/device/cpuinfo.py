"""The CPU of a machine from /proc/cpuinfo and sysfs, for `edgepack targets --detect`.

The parsers are pure functions of text, tested on excerpts of other machines (x86 and arm64);
detect_cpu() reads this machine's files and applies them.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProfileError

ISA_FLAGS = {  # profile ISA name -> the /proc/cpuinfo flags that show it (any one of them)
    "x86_64": {"sse4_2": ("sse4_2",), "avx2": ("avx2",), "avx512": ("avx512f",),
               "avx512_vnni": ("avx512_vnni",), "avx_vnni": ("avx_vnni",),
               "amx": ("amx_tile", "amx_int8")},
    "arm64": {"neon": ("asimd", "neon"), "dotprod": ("asimddp",),
              "fp16": ("asimdhp", "fphp"), "i8mm": ("i8mm",),
              "sve": ("sve",)},
}  # fmt: skip
# ("CPU implementer", "CPU part") of /proc/cpuinfo on arm64 -> core name, as lscpu names them
ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4D): "Cortex-A715",
    (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD4F): "Neoverse-V2", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4", (0x41, 0xD84): "Neoverse-V3",
    (0x4E, 0x004): "NVIDIA Carmel", (0xC0, 0xAC3): "Ampere-1", (0xC0, 0xAC4): "Ampere-1a",
    (0x46, 0x001): "A64FX",
}  # fmt: skip


@dataclass(frozen=True)
class Cpu:
    arch: str  # x86_64 | arm64
    model: str  # as the operating system names it
    clock_ghz: float
    clock_source: str  # where the clock came from, for the profile's comment
    isa: tuple[str, ...]


def normalize_arch(machine: str) -> str:
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
    if machine.lower() not in arch:
        raise ProfileError(f"this machine's architecture {machine!r} is not one edgepack plans "
                           "for (x86_64, arm64); write a profile file by hand")  # fmt: skip
    return arch[machine.lower()]


def parse_cpuinfo(text: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """/proc/cpuinfo -> (one dict per processor, the machine-wide keys such as arm's Model)."""
    processors, extra = [], {}
    for block in re.split(r"\n\s*\n", text):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        if "processor" in entry and entry["processor"].isdigit():
            processors.append(entry)
        else:
            extra.update(entry)
    return processors, extra


def isa_features(arch: str, flags: str) -> tuple[str, ...]:
    """A cpuinfo "flags" (x86) or "Features" (arm) line -> the profile schema's ISA names."""
    present = set(flags.split())
    return tuple(name for name, shown in ISA_FLAGS[arch].items() if present.intersection(shown))


def cpu_model(arch: str, processors: list[dict[str, str]], extra: dict[str, str]) -> str:
    if arch == "x86_64":
        names = [p["model name"] for p in processors if p.get("model name")]
        return " ".join(names[0].split()) if names else "x86_64 CPU"
    counts: dict[str, int] = {}
    for p in processors:
        try:
            key = (int(p["CPU implementer"], 16), int(p["CPU part"], 16))
        except (KeyError, ValueError):
            name = p.get("model name", "arm64 core")
        else:
            name = ARM_PARTS.get(key, f"arm64 core (implementer {key[0]:#x}, part {key[1]:#x})")
        counts[name] = counts.get(name, 0) + 1
    cores = " + ".join(f"{n}x {name}" for name, n in counts.items()) or "arm64 CPU"
    board = extra.get("Model") or extra.get("Hardware")
    return f"{cores} ({board})" if board else cores


def cpu_clock(model: str, processors: list[dict[str, str]], sysfs: dict[str, str]) -> tuple:
    """(GHz, where it came from). The vendor's base clock in the model name is the figure all
    cores sustain; sysfs and "cpu MHz" follow; `sysfs` maps file names of cpufreq to contents."""
    stated = re.search(r"@\s*([\d.]+)\s*GHz", model)
    if stated:
        return float(stated.group(1)), "base clock stated in the CPU's model name"
    for name, why in (
        ("base_frequency", "base clock from sysfs cpufreq/base_frequency"),
        ("cpuinfo_max_freq", "highest clock from sysfs cpufreq (all cores may not sustain it)"),
    ):
        value = sysfs.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value) / 1e6, why
    mhz = [p.get("cpu MHz", "") for p in processors]
    mhz = [float(m) for m in mhz if re.fullmatch(r"\d+(\.\d*)?", m)]
    if mhz and mhz[0] > 0:
        return mhz[0] / 1000, "current clock of the first core (/proc/cpuinfo cpu MHz)"
    return 2.0, "the OS reports no clock; 2.0 GHz is a conservative guess"


def read_text(path: str) -> str:
    """A file of the operating system's, or "" where it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def detect_cpu(allowed: set[int] | None) -> Cpu:
    arch = normalize_arch(platform.machine())
    processors, extra = parse_cpuinfo(read_text("/proc/cpuinfo"))
    if allowed is not None:
        mine = [p for p in processors if int(p["processor"]) in allowed]
        processors = mine or processors
    model = cpu_model(arch, processors, extra)
    first = min(allowed) if allowed else 0
    freq = f"/sys/devices/system/cpu/cpu{first}/cpufreq/"
    sysfs = {n: read_text(freq + n) for n in ("base_frequency", "cpuinfo_max_freq")}
    clock, source = cpu_clock(model, processors, sysfs)
    flags = processors[0].get("flags" if arch == "x86_64" else "Features", "") if processors else ""
    return Cpu(arch, model, round(clock, 2), source, isa_features(arch, flags))
