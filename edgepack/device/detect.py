"""This machine as a device profile (`edgepack targets --detect`).

Hardware facts come from the operating system (/proc/cpuinfo, sysfs, sysconf, the scheduler's
CPU affinity), memory bandwidth from a short numpy probe, an NVIDIA GPU from NVML or nvidia-smi.
The budgets are defaults derived from those facts. The CPU's parsers (edgepack.device.cpuinfo)
are pure functions of text, so they are tested on excerpts of other machines; no heavy backend
is imported here.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProfileError
from .cpuinfo import Cpu, detect_cpu, read_text
from .detect_gpu import Gpu, detect_gpu, gpu_figures, parse_nvidia_smi  # noqa: F401
from .profiles import Profile, parse_profile

GB = 1e9  # the planner's unit: budgets and sizes in 10^9 bytes
MiB = 2**20
PROBE_BYTES = 256 * MiB  # more than the last-level cache of the CPUs edgepack targets
PROBE_REPETITIONS, PROBE_SECONDS = 5, 0.15  # at least 5 reads, and on for 0.15 s: best of them
DISK_SHARE, DISK_CAP_GB = 0.5, 100.0
MEMORY_SHARE, VRAM_SHARE = 0.75, 0.9

@dataclass(frozen=True)
class Bandwidth:
    all_threads_gbs: float  # one thread per allowed core, each reading its own slice
    one_thread_gbs: float
    threads: int
    bytes: int
    repetitions: int
    seconds: float  # the whole probe, allocation included


@dataclass(frozen=True)
class Machine:
    cpu: Cpu
    cores: int
    cores_source: str
    ram_bytes: int
    memory_limit_bytes: int | None  # a cgroup limit below the RAM, if any
    bandwidth: Bandwidth
    gpu: Gpu | None
    gpu_note: str  # how the GPU was found, or why none was
    disk_free_bytes: int
    disk_path: str


# ---- the machine -------------------------------------------------------------------------


def allowed_cores() -> tuple[set[int] | None, int, str]:
    if hasattr(os, "sched_getaffinity"):
        cpus = os.sched_getaffinity(0)
        return cpus, len(cpus), "the cores this process may run on (sched_getaffinity)"
    return None, os.cpu_count() or 1, "the cores the OS reports (os.cpu_count)"


def memory_limit() -> int | None:
    """The tightest cgroup (container) memory limit over this process's cgroup and the ones
    above it (cgroup v2's memory.max, v1's memory.limit_in_bytes), if one is set."""
    limits = []
    for line in read_text("/proc/self/cgroup").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: one hierarchy
            root, name = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        here = root / path.strip().lstrip("/")
        while True:
            value = read_text(str(here / name)).strip()
            if value.isdigit():
                limits.append(int(value))
            if here == root or root not in here.parents:
                break
            here = here.parent
    return min(limits) if limits else None


def host_memory() -> tuple[int, int | None]:
    """This machine's RAM and the cgroup limit below it, if any (both in bytes)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = memory_limit()
    return ram, limit if limit is not None and limit < ram else None


def available_memory() -> int | None:
    """What the kernel says is available now (MemAvailable: free plus reclaimable cache)."""
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def probe_bandwidth(threads: int, size: int = PROBE_BYTES, repetitions: int = PROBE_REPETITIONS):
    """Read a large array with one thread per core, each summing its own slice (numpy releases
    the GIL while it sums), then with one thread; the best of several repetitions, so a busy
    moment of a shared machine does not count. GB/s = bytes read / seconds."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    started = time.perf_counter()
    data = np.ones(size // 8, dtype=np.float64)  # written once, so every page is resident
    parts = np.array_split(data, threads)

    def best(run) -> float:
        times, until = [], time.perf_counter() + PROBE_SECONDS
        while len(times) < repetitions or (time.perf_counter() < until and len(times) < 100):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        runs.append(len(times))
        return min(times)

    runs: list[int] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(np.sum, parts))  # start the threads before timing
        many = best(lambda: list(pool.map(np.sum, parts)))
    one = best(data.sum)
    repetitions = min(runs)
    seconds = round(time.perf_counter() - started, 3)
    gbs = [round(data.nbytes / t / GB, 1) for t in (many, one)]
    return Bandwidth(*gbs, threads, int(data.nbytes), repetitions, seconds)


def detect(out_dir: Path, progress: Callable[[str], None] = lambda msg: None) -> Machine:
    """Every fact of this machine that a profile needs; `out_dir` is where the profile goes."""
    allowed, cores, cores_source = allowed_cores()
    cpu = detect_cpu(allowed)
    ram, limit = host_memory()
    progress(f"CPU: {cores} cores of {cpu.model} @ {cpu.clock_ghz:g} GHz, {ram / GB:.1f} GB RAM")
    size = min(PROBE_BYTES, max(16 * MiB, ram // 16 // MiB * MiB))
    progress(f"memory bandwidth: reading {size // MiB} MiB with {cores} threads")
    bandwidth = probe_bandwidth(cores, size)
    progress(
        f"memory bandwidth: {bandwidth.all_threads_gbs:g} GB/s on {cores} threads, "
        f"{bandwidth.one_thread_gbs:g} GB/s on one"
    )
    gpu, gpu_note = detect_gpu()
    progress(f"GPU: {gpu.name} ({gpu.vram_bytes / GB:.1f} GB)" if gpu else gpu_note)
    existing = out_dir.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    disk = shutil.disk_usage(existing).free  # the file system the profile is written to
    where = str(existing)
    return Machine(cpu, cores, cores_source, ram, limit, bandwidth, gpu, gpu_note, disk, where)


# ---- the profile -------------------------------------------------------------------------


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, (int, float)) else json.dumps(value)  # str, [str]


def _runtimes(cpu: Cpu, gpu: Gpu | None) -> tuple[list[str], str]:
    llama_first = ["llama.cpp", "onnxruntime", "openvino"]
    genai = ["onnxruntime-genai"]  # the kit runs it on the CPU
    if gpu is not None:
        return llama_first, "llama.cpp runs on CUDA; OpenVINO only on the CPU"
    if cpu.arch == "arm64":
        return llama_first + genai, "llama.cpp has the best-tuned NEON kernels"
    if "intel" in cpu.model.lower():
        intel = ["openvino", "llama.cpp", "onnxruntime", *genai]
        return intel, "OpenVINO is Intel's own runtime"
    return llama_first + genai, "OpenVINO is tuned for Intel CPUs, not this one"


def _gpu_entries(machine: Machine, gpu: Gpu) -> tuple[list, tuple]:
    bandwidth, fp16, int8, int8_known, source = gpu_figures(gpu.name)
    vram_gb = round(gpu.vram_bytes / GB, 1)
    first = f"the first of {gpu.count} GPUs, " if gpu.count > 1 else ""
    entries = [
        ("kind", "nvidia-gpu", f"{first}{machine.gpu_note}"),
        ("name", gpu.name, f"as {gpu.source} names it"),
        ("vram_gb", vram_gb, f"total memory reported by {gpu.source}, 10^9 bytes"),
        ("memory_bandwidth_gbs", bandwidth, f"{source}; not measured"),
        ("fp16_tflops", fp16, f"{source}, dense tensor cores; not measured"),
        ("int8_tops", int8, f"{source}, dense tensor cores; not measured"),
        ("fp16", True, "every NVIDIA GPU since Pascal computes in fp16"),
        ("int8", int8_known, "INT8 tensor cores" if int8_known else "not assumed: unknown GPU"),
    ]
    budget = ("accelerator_memory_gb", math.floor(vram_gb * VRAM_SHARE * 10) / 10,
              "90 % of the VRAM, the rest for CUDA contexts and other processes")  # fmt: skip
    return entries, budget


def _platform() -> dict:
    """This machine's C library and Python, where it is Linux with glibc (else the defaults)."""
    libc, libc_version = platform.libc_ver()
    if sys.platform != "linux" or libc != "glibc" or libc_version.count(".") != 1:
        return {}
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "platform": [
            ("os", "linux", "sys.platform"),
            ("glibc", libc_version, "platform.libc_ver()"),
            ("python", python, "the Python that runs edgepack here"),
        ]
    }


def build_profile(machine: Machine, name: str = "detected") -> tuple[Profile, str]:
    """The profile of `machine` and its TOML text; every number says where it came from."""
    cpu, gpu, bw, limit = machine.cpu, machine.gpu, machine.bandwidth, machine.memory_limit_bytes
    summary = f"{machine.cores} cores of {cpu.model} @ {cpu.clock_ghz:g} GHz"
    memory_why = (f"75 % of the cgroup memory limit ({limit / GB:.1f} GB)" if limit
                  else "75 % of the RAM, the rest for the OS and other processes")  # fmt: skip
    free_gb = machine.disk_free_bytes / GB
    if gpu is None:
        accelerator, gpu_budget = [("kind", "none", machine.gpu_note)], []
    else:
        accelerator, extra = _gpu_entries(machine, gpu)
        gpu_budget = [extra]
    gpu_text = gpu.name if gpu else "no GPU"
    flags = "flags" if cpu.arch == "x86_64" else "Features"
    isa_why = f"from /proc/cpuinfo {flags}" if cpu.isa else f"none found in /proc/cpuinfo {flags}"
    sections = {
        None: [
            ("name", name, ""),
            ("description", f"This machine: {summary}, {machine.ram_bytes / GB:.1f} GB RAM, "
             f"{gpu_text}", ""),
            ("objective", "quality", "the best quality that meets the budgets"),
        ],
        "hardware": [
            ("arch", cpu.arch, f"platform.machine() is {platform.machine()}"),
            ("cpu", cpu.model, "as the operating system names it"),
            ("cores", machine.cores, machine.cores_source),
            ("clock_ghz", cpu.clock_ghz, cpu.clock_source),
            ("ram_gb", round(machine.ram_bytes / GB, 2), "physical memory (sysconf), 10^9 bytes"),
            ("memory_bandwidth_gbs", bw.all_threads_gbs, f"measured: numpy sum of {bw.bytes // MiB}"
             f" MiB, {bw.threads} threads, best of {bw.repetitions}; one thread "
             f"{bw.one_thread_gbs:g} GB/s"),
            ("isa", list(cpu.isa), isa_why),
        ],
        **_platform(),
        "accelerator": accelerator,
        "budget": [
            ("memory_gb", math.floor((limit or machine.ram_bytes) * MEMORY_SHARE / GB * 10) / 10,
             memory_why),
            *gpu_budget,
            ("disk_gb", max(0.1, round(min(free_gb * DISK_SHARE, DISK_CAP_GB), 1)),
             f"half of the {free_gb:.1f} GB free on {machine.disk_path}, at most {DISK_CAP_GB:g}"),
            ("context_tokens", 2048, "KV cache sized for a 2k-token chat turn with history"),
            ("first_token_ms", 2000, "a 128-token prompt answered within two seconds"),
            ("decode_tokens_per_s", 10, "twice reading speed (~250 words/min is ~5.5 tokens/s)"),
            ("min_quality", 0.9, "the reference floor: refuse anything under 90 % retention"),
        ],
        "runtimes": [("prefer", *_runtimes(cpu, gpu))],
    }  # fmt: skip
    lines = [
        f"# This machine, as `edgepack targets --detect` found it on {time.strftime('%Y-%m-%d')}.",
        "# Hardware from the operating system and a memory-bandwidth probe; the budgets are",
        "# defaults derived from it: edit them for what a model may take on this machine.",
    ]
    raw: dict = {}
    for section, entries in sections.items():
        table = raw.setdefault(section, {}) if section else raw
        lines += ["", f"[{section}]"] if section else []
        for key, value, comment in entries:
            table[key] = value
            text = f"{key} = {_toml(value)}"
            lines.append(f"{text:<34} # {comment}" if comment else text)
    text = "\n".join(lines) + "\n"
    profile = parse_profile(text.encode(), source="the detected profile")
    if profile != parse_profile(raw, source="the detected profile"):
        raise RuntimeError("the detected profile's TOML does not read back as it was built")
    return profile, text


def check_writable(path: Path, force: bool) -> None:
    if path.is_dir():
        raise ProfileError(f"{path} is a directory; give --out a file name, e.g. {path}/x.toml")
    if path.exists() and not force:
        raise ProfileError(f"{path} already exists; pass --force to replace it, or another --out")


def write_profile(path: Path, text: str, force: bool = False) -> None:
    """Atomically: a temporary file beside it, then a rename. Without `force` the rename is a
    hard link, which refuses a name that exists, so a file that appeared meanwhile stays too."""
    check_writable(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o644)
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.replace(tmp, path) if force else os.link(tmp, path)
            except PermissionError:  # a file system without hard links (FAT)
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except FileExistsError:
        check_writable(path, force)
        raise
    except OSError as exc:
        raise ProfileError(f"cannot write {path}: {exc.strerror or exc}") from None
