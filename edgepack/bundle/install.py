"""What a bundle installs on its device, resolved at build time for the target's platform.

pip resolves the runtime's requirements for the profile's arch, glibc and Python, wheels only
(`pip install --dry-run --report --only-binary=:all: --platform ... --python-version ...`).
The runtime packages keep the build host's versions (the ones the export was validated with);
their helpers (numpy, tokenizers) take the newest release with a wheel for the target, up to
the build host's. A
requirement with no wheel for the target is an InstallError naming the newest version that has
one. llama-cpp-python publishes no wheels: it is a stated source build, with the CMAKE_ARGS
for the device (its own dependencies are resolved like the rest). Results are cached.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from ..cache import write_atomic
from ..device.profiles import Profile
from ..errors import EdgepackError
from ..liblog import say
from .crossbuild import CrossBuildError, compiler_name, cross_wheel, needs_cross, toolchain

# the runtime's own packages, pinned to the build host's versions
RUNTIME_PACKAGES = {
    "llama.cpp": ["llama-cpp-python"],
    "openvino": ["openvino", "openvino-tokenizers", "openvino-genai"],
    "onnxruntime": ["onnxruntime"],
    "onnxruntime-genai": ["onnxruntime-genai", "onnxruntime"],
}
HELPERS = {  # what the kit's runner imports besides the runtime
    "llama.cpp": ["numpy"],
    "openvino": ["tokenizers", "numpy"],
    "onnxruntime": ["tokenizers", "numpy"],
    "onnxruntime-genai": ["tokenizers", "numpy"],
}
SOURCE_BUILDS = {"llama-cpp-python"}  # no wheels on the index: the device compiles them
# what pip needs to build llama-cpp-python without the index (--wheels): its build backend,
# and cmake and ninja for a device that lacks them
BUILD_REQUIREMENTS = ["scikit-build-core[pyproject]>=0.9.2", "cmake>=3.21", "ninja"]
ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
OLDEST_GLIBC = {"x86_64": 5, "aarch64": 17}  # manylinux1 / manylinux2014
CACHE_DAYS = 7
NETWORK = re.compile(
    r"NewConnectionError|Failed to establish|Temporary failure in name resolution|"
    r"ConnectTimeout|ReadTimeout|ProxyError|SSLError|Max retries exceeded"
)


class InstallError(EdgepackError):
    """A requirement of the bundle has no wheel for the target's platform."""


class IndexUnreachable(EdgepackError):
    """The package index could not be reached to resolve the target's requirements."""


@dataclass(frozen=True)
class Resolution:
    platform: str  # e.g. "linux aarch64, glibc 2.36, CPython 3.11"
    packages: list[dict]  # {"name", "version", "url"}: the wheels pip would install
    source_builds: list[dict] = field(default_factory=list)  # {"name", "version", "cmake_args"}
    # source builds compiled on the build host for the target (--wheels, crossbuild.py):
    # {"name", "version", "cmake_args", "wheel", "built_with"}
    prebuilt: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """requirements.txt: every wheel pinned (the source builds are installed apart)."""
        return [f"{p['name']}=={p['version']}" for p in self.packages]


def platform_tags(profile: Profile) -> list[str]:
    """The manylinux tags a device with this glibc and arch installs, newest first."""
    arch = ARCH[profile.hardware.arch]
    newest = int(profile.platform.glibc.split(".")[1])
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(newest, OLDEST_GLIBC[arch] - 1, -1)]
    legacy = {"x86_64": ["manylinux2014", "manylinux2010", "manylinux1"]}
    tags += [f"{name}_{arch}" for name in legacy.get(arch, ["manylinux2014"])]
    return tags


def describe(profile: Profile) -> str:
    p = profile.platform
    return f"{p.os} {ARCH[profile.hardware.arch]}, glibc {p.glibc}, CPython {p.python}"


def requirements(runtime: str) -> tuple[list[str], list[dict]]:
    """(what pip resolves for the target, the stated source builds) for one runtime."""
    wanted, builds = [], []
    for package in RUNTIME_PACKAGES[runtime]:
        pinned = host_version(package)
        if package in SOURCE_BUILDS:
            builds.append({"name": package, "version": pinned})
            wanted += [r for r in requires(package) or [] if "extra ==" not in r]
        else:
            wanted.append(f"{package}=={pinned}" if pinned else package)
    for helper in HELPERS[runtime]:  # the newest with a wheel, up to the version tested here
        pinned = host_version(helper)
        wanted.append(f"{helper}<={pinned}" if pinned else helper)
    return wanted, builds


def cmake_args(profile: Profile) -> str:
    """CMAKE_ARGS for llama-cpp-python on the device: its GPU, or its CPU's ISA, not the
    build host's (GGML_NATIVE off, so the flags say what the binary uses)."""
    if profile.gpu is not None:
        return "-DGGML_CUDA=on"
    isa = set(profile.hardware.isa)
    if profile.hardware.arch == "arm64":
        extensions = ("dotprod", "fp16", "i8mm", "sve")
        arch = "armv8.2-a" + "".join(f"+{f}" for f in extensions if f in isa)
        return f"-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH={arch}"
    flags = {"avx2": "AVX2", "avx512": "AVX512", "avx512_vnni": "AVX512_VNNI"}
    flags |= {"avx_vnni": "AVX_VNNI", "amx": "AMX_INT8"}
    on = [f"-DGGML_{flags[f]}=ON" for f in flags if f in isa]
    if "avx2" in isa:
        on += ["-DGGML_FMA=ON", "-DGGML_F16C=ON"]
    return " ".join(["-DGGML_NATIVE=OFF", *on])


def resolve(profile: Profile, runtime: str, cache: Path, extra: tuple = ()) -> Resolution:
    """The wheels the device installs for `runtime`, and `extra` requirements beside it (a
    signed bundle's verifier), cached for CACHE_DAYS."""
    wanted, builds = requirements(runtime)
    wanted = [*wanted, *extra]
    for build in builds:
        build["cmake_args"] = cmake_args(profile)
    key = hashlib.sha256(
        json.dumps([wanted, platform_tags(profile), profile.platform.python]).encode()
    ).hexdigest()[:16]
    path = cache / "requirements" / f"{key}.json"
    if path.is_file() and time.time() - path.stat().st_mtime < CACHE_DAYS * 86400:
        data = json.loads(path.read_text())
    else:
        data = _pip_resolve(profile, wanted)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data))  # builds may resolve side by side
    if "error" in data:
        raise InstallError(f"{runtime} does not install on {profile.name}: {data['error']}")
    return Resolution(describe(profile), data["packages"], builds)


def _target_options(profile: Profile) -> list[str]:
    options = ["--only-binary=:all:", "--implementation", "cp"]
    options += ["--python-version", profile.platform.python]
    for tag in platform_tags(profile):
        options += ["--platform", tag]
    return options


def _pip_resolve(profile: Profile, wanted: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgepack-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        cmd += ["--quiet", "--disable-pip-version-check", "--retries", "1", "--timeout", "15"]
        cmd += ["--report", str(report), "--target", str(Path(tmp) / "t")]
        proc = subprocess.run(
            [*cmd, *_target_options(profile), *wanted], capture_output=True, text=True
        )
        if proc.returncode != 0:
            if NETWORK.search(proc.stderr):
                raise IndexUnreachable(
                    "cannot reach the package index to resolve the requirements for "
                    f"{profile.name} ({describe(profile)}); connect this host, or pass "
                    "--no-resolve (the bundle then pins this host's versions, unchecked)"
                )
            return {"error": no_wheel_message(proc.stderr, describe(profile))}
        items = json.loads(report.read_text())["install"]
    packages = [
        {
            "name": item["metadata"]["name"],
            "version": item["metadata"]["version"],
            "url": item["download_info"]["url"],
        }
        for item in items
    ]
    return {"packages": sorted(packages, key=lambda p: p["name"].lower())}


def no_wheel_message(stderr: str, platform: str) -> str:
    """pip's "Could not find a version that satisfies the requirement X (from versions: ...)"
    as one line naming the newest version with a wheel for the target."""
    found = re.search(r"satisfies the requirement (\S+) \(from versions: ([^)]*)\)", stderr)
    if found:
        requirement, versions = found.group(1), found.group(2).strip()
        name = re.split(r"[=<>!~\[;]", requirement)[0]
        if versions in ("", "none"):
            return f"{requirement} has no wheel for {platform}, in any version"
        newest = versions.split(", ")[-1]
        return f"{requirement} has no wheel for {platform}; the newest with one is {name}=={newest}"
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    reason = errors[0].removeprefix("ERROR:").strip() if errors else "pip failed"
    return f"the requirements do not resolve for {platform}: {reason}"


def host_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def keep_installable(profile, p, picked, forced, cache, resolutions, say, extra=()) -> list:
    """The picked candidates whose runtime installs on the target. A runtime that does not is
    left out (and said so), its place taken by the plan's next candidates that do; the error
    stands where nothing else is left, or where the user forced that candidate.
    resolutions[(target, runtime)] keeps each Resolution (or InstallError) for stage()."""

    def installs(c) -> bool:
        key = (profile.name, c.runtime)
        if key not in resolutions:
            try:
                resolutions[key] = resolve(profile, c.runtime, cache, tuple(extra))
            except InstallError as exc:
                resolutions[key] = exc
                say(f"{profile.name}: {exc}; its {c.runtime} candidates are left out")
        return not isinstance(resolutions[key], InstallError)

    kept = [c for c in picked if installs(c)]
    if len(kept) < len(picked) and not forced:
        rest = [c for c in p.candidates if c.feasible and not c.is_student]
        rest = [c for c in rest if c not in picked and installs(c)]
        kept += rest[: len(picked) - len(kept)]
    if not kept or (forced and len(kept) < len(picked)):
        raise next(r for r in resolutions.values() if isinstance(r, InstallError))
    return kept


def download(
    resolution: Resolution, profile: Profile, dest: Path, cache: Path, say=say
) -> tuple[list[str], Resolution]:
    """The target's wheels of `resolution` in `dest` (a wheelhouse for an offline device).

    A source build for a CPU of another arch is compiled here with the cross toolchain
    (crossbuild.py) and its wheel joins the others; where it cannot be (no toolchain), `say`
    tells why and the sdist goes in with its build requirements, for the device to compile.
    Returns requirements.txt's lines, each wheel pinned with its sha256 (pip's
    --require-hashes), and the resolution with its prebuilt wheels recorded."""
    dest.mkdir(parents=True, exist_ok=True)
    names = [f"{p['name']}=={p['version']}" for p in resolution.packages]
    _pip(profile, ["download", "--no-deps", "-d", str(dest), *_target_options(profile), *names])
    remaining, prebuilt = [], []
    for build in resolution.source_builds:
        wheel = _prebuilt(build, profile, cache, say) if needs_cross(profile) else None
        if wheel is not None:
            shutil.copy2(wheel, dest / wheel.name)
            prebuilt.append({**build, "wheel": wheel.name, "built_with": compiler_name(profile)})
            continue
        remaining.append(build)
        sdist = f"{build['name']}=={build['version']}"
        _pip(profile, ["download", "--no-deps", "--no-binary", ":all:", "-d", str(dest), sdist])
        _pip(profile, ["download", "-d", str(dest), *_target_options(profile), *BUILD_REQUIREMENTS])
    files = {_dist_key(f.name): f for f in dest.iterdir()}
    lines = []
    for p in [*resolution.packages, *prebuilt]:
        path = files.get((_normal(p["name"]), p["version"]))
        if path is None:
            raise InstallError(f"pip download left no wheel of {p['name']}=={p['version']}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{p['name']}=={p['version']} --hash=sha256:{digest}")
    return lines, replace(resolution, source_builds=remaining, prebuilt=prebuilt)


def _prebuilt(build: dict, profile: Profile, cache: Path, say) -> Path | None:
    """The target's wheel of a source build, cross-compiled here (cached), or None with a line
    said where this host cannot make it."""
    sdist = cache / "sdists" / f"{_normal(build['name'])}-{build['version']}.tar.gz"
    try:
        tools = toolchain(profile)
        if isinstance(tools, str):
            raise CrossBuildError(tools)
        if not sdist.is_file():
            spec = [f"{build['name']}=={build['version']}", "-d", str(sdist.parent)]
            _pip(profile, ["download", "--no-deps", "--no-binary", ":all:", *spec])
        return cross_wheel(build, profile, cache, sdist, say)
    except CrossBuildError as exc:
        say(f"{profile.name}: {exc}; the bundle states {build['name']}'s build on the device")
        return None


def _pip(profile: Profile, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]
    proc = subprocess.run(
        [*cmd, "--retries", "1", "--timeout", "30"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        if NETWORK.search(proc.stderr):
            raise IndexUnreachable(
                f"cannot reach the package index to download the wheels for {profile.name}; "
                "connect this host, or build without --wheels"
            )
        why = no_wheel_message(proc.stderr, describe(profile))
        raise InstallError(f"pip download for {profile.name} failed: {why}")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _dist_key(filename: str) -> tuple[str, str]:
    """(normalised name, version) of a wheel or sdist file name."""
    stem = re.sub(r"(\.tar\.gz|\.zip|\.whl)$", "", filename)
    name, _, rest = stem.partition("-")
    return _normal(name), rest.split("-")[0]
