"""A wheel of a source-only runtime (llama-cpp-python) for a target of another arch, compiled
on the build host with a cross toolchain, so the device installs it from the bundle's wheelhouse
without a compiler or the internet.

pip builds the package's sdist with CC/CXX set to the GNU cross compilers
(`aarch64-linux-gnu-gcc`, Debian's g++-aarch64-linux-gnu), CMake told the system it builds for
(CMAKE_SYSTEM_NAME/PROCESSOR), ggml's CPU flags for the target (install.cmake_args), OpenMP off
(libgomp is not on a minimal root) and libstdc++ linked in. scikit-build-core would label the
result linux_x86_64: _PYTHON_HOST_PLATFORM names the target, and the wheel is then retagged
manylinux_2_N for the newest glibc symbol its libraries need (readelf), which must not pass the
profile's glibc. Built wheels are cached by package, version, target, flags and compiler.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ..cache import locked
from ..device.profiles import Profile
from ..errors import EdgepackError
from ..liblog import say

GNU_TRIPLET = {"arm64": "aarch64-linux-gnu"}
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
TOOLCHAIN_PACKAGE = {"arm64": "g++-aarch64-linux-gnu"}  # Debian/Ubuntu
CROSS_CMAKE = {
    "arm64": "-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64",
}
# what the device's root lacks or the bundle does not need: OpenMP's runtime, the llava library
TRIM = "-DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF"
STATIC_RUNTIME = "'-DCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++ -static-libgcc'"  # shlex-split
BUILD_TIMEOUT_S = 3600


class CrossBuildError(EdgepackError):
    """The cross-compiled wheel could not be made, or would not run on the target."""


def needs_cross(profile: Profile) -> bool:
    """A CPU target of another arch than this host's (a GPU target compiles on the device)."""
    host = HOST_ARCH.get(platform.machine().lower())
    return profile.gpu is None and profile.hardware.arch != host


def toolchain(profile: Profile) -> tuple[str, str] | str:
    """(cc, c++) of the cross compilers for the profile's arch, or why there are none (a line
    naming what to install)."""
    triplet = GNU_TRIPLET.get(profile.hardware.arch)
    if triplet is None:
        return f"no cross toolchain is known for {profile.hardware.arch}"
    cc, cxx = shutil.which(f"{triplet}-gcc"), shutil.which(f"{triplet}-g++")
    if not (cc and cxx):
        package = TOOLCHAIN_PACKAGE[profile.hardware.arch]
        return f"no {triplet} cross compiler on this host (apt-get install {package})"
    if not shutil.which("readelf"):
        return "no readelf on this host to read the wheel's glibc needs (apt-get install binutils)"
    return cc, cxx


def cross_wheel(build: dict, profile: Profile, cache: Path, sdist: Path, say=say) -> Path:
    """The target's wheel of `build` ({"name", "version", "cmake_args"}) from `sdist`, from the
    cache or compiled now (said first: minutes). Raises CrossBuildError where it cannot be
    made."""
    tools = toolchain(profile)
    if isinstance(tools, str):
        raise CrossBuildError(tools)
    cc, cxx = tools
    args = " ".join([CROSS_CMAKE[profile.hardware.arch], build["cmake_args"], TRIM])
    key = json.dumps([build["name"], build["version"], profile.hardware.arch, args,
                      profile.platform.glibc, _version(cxx)])  # fmt: skip
    folder = cache / "wheels" / hashlib.sha256(key.encode()).hexdigest()[:16]
    with locked(folder.with_suffix(".lock")):
        made = sorted(folder.glob("*.whl")) if folder.is_dir() else []
        if made:
            return made[0]
        say(
            f"{profile.name}: cross-compiling {build['name']} {build['version']} for "
            f"{profile.hardware.arch} with {Path(cxx).name} (minutes, once: it is cached)"
        )
        with tempfile.TemporaryDirectory(prefix="edgepack-cross-") as tmp:
            log = folder.with_suffix(".log")  # kept: what to read where the build fails
            wheel = _compile(sdist, Path(tmp), cc, cxx, f"{args} {STATIC_RUNTIME}", profile, log)
            tagged = retag(wheel, profile)
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / tagged.name
            shutil.move(tagged, final)
            (folder / "build.json").write_text(json.dumps(
                {"key": json.loads(key), "cmake_args": args, "seconds": _seconds(tmp)}
            ))  # fmt: skip
        return final


def compiler_name(profile: Profile) -> str:
    """The cross compiler and its version, as the manifest records what built a wheel."""
    tools = toolchain(profile)
    if isinstance(tools, str):
        return "unknown"
    return f"{Path(tools[1]).name} {_version(tools[1])} on the build host"


def _version(compiler: str) -> str:
    out = subprocess.run([compiler, "-dumpfullversion"], capture_output=True, text=True)
    return out.stdout.strip()


def _compile(
    sdist: Path, tmp: Path, cc: str, cxx: str, args: str, profile: Profile, log: Path
) -> Path:
    arch = GNU_TRIPLET[profile.hardware.arch].split("-")[0]
    env = dict(os.environ, CC=cc, CXX=cxx, CMAKE_ARGS=args)
    env["_PYTHON_HOST_PLATFORM"] = f"linux-{arch}"  # else scikit-build-core says linux_x86_64
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 1)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp)]
    cmd += ["--disable-pip-version-check", str(sdist)]
    with open(log, "w") as out:
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=BUILD_TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            why = f"cross-compiling {sdist.name} ran past {BUILD_TIMEOUT_S} s"
            raise CrossBuildError(why) from None
    (tmp / "seconds").write_text(f"{time.monotonic() - started:.0f}")
    wheels = sorted(tmp.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        text = log.read_text(errors="replace").splitlines()
        errors = [ln for ln in text if re.search(r"\berror\b:|CMake Error", ln)]
        why = errors[0].strip() if errors else f"pip exited {proc.returncode}"
        raise CrossBuildError(
            f"cross-compiling {sdist.name} for {arch} failed ({why[:200]}; log: {log})"
        )
    return wheels[0]


def _seconds(tmp: str) -> float | None:
    path = Path(tmp) / "seconds"
    return float(path.read_text()) if path.is_file() else None


def glibc_needed(wheel: Path) -> tuple[int, int]:
    """The newest GLIBC_x.y symbol version any shared library in the wheel needs."""
    newest = (2, 17)
    with tempfile.TemporaryDirectory(prefix="edgepack-elf-") as tmp, zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not re.search(r"\.so(\.\d+)*$", name):
                continue
            path = Path(z.extract(name, tmp))
            out = subprocess.run(["readelf", "-V", "-W", str(path)], capture_output=True,
                                 text=True).stdout  # fmt: skip
            for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", out):
                newest = max(newest, (int(major), int(minor)))
    return newest


def retag(wheel: Path, profile: Profile) -> Path:
    """The wheel renamed and relabelled py3-none-manylinux_2_N_<arch> (N: its glibc need)."""
    major, minor = glibc_needed(wheel)
    device = tuple(int(p) for p in profile.platform.glibc.split(".")[:2])
    if (major, minor) > device:
        raise CrossBuildError(
            f"the cross-built {wheel.name} needs glibc {major}.{minor}, newer than "
            f"{profile.name}'s {profile.platform.glibc}: use a cross toolchain for an older glibc"
        )
    arch = GNU_TRIPLET[profile.hardware.arch].split("-")[0]
    tag = f"py3-none-manylinux_{major}_{minor}_{arch}"
    name, ver = wheel.name.split("-")[:2]
    out = wheel.with_name(f"{name}-{ver}-{tag}.whl")
    _rewrite(wheel, out, tag)
    return out


def _rewrite(src: Path, dst: Path, tag: str) -> None:
    """Copy the wheel with its WHEEL file's Tag lines replaced and RECORD's hash of it renewed."""
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        wheel_file = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        record_file = next(n for n in names if n.endswith(".dist-info/RECORD"))
        lines = zin.read(wheel_file).decode().splitlines()
        body = "\n".join([ln for ln in lines if not ln.startswith("Tag:")] + [f"Tag: {tag}"])
        body = (body + "\n").encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        record = []
        for line in zin.read(record_file).decode().splitlines():
            if line.startswith(f"{wheel_file},"):
                line = f"{wheel_file},sha256={digest},{len(body)}"
            record.append(line)
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename == wheel_file:
                    data = body
                elif info.filename == record_file:
                    data = ("\n".join(record) + "\n").encode()
                zout.writestr(info, data)
