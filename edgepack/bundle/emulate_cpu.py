"""The /proc/cpuinfo an emulated arm64 device shows its programs.

qemu-user passes the host's /proc/cpuinfo through (an x86 one), which no arm64 board shows:
runtimes that parse it to pick their kernels misread it (onnxruntime's cpuinfo library crashes
on it). The device's is written instead: the features are the hwcaps qemu gives the process for
the emulated core (read from /proc/self/auxv inside the root, named as Linux names them), the
implementer and part those of that core (the table --detect reads), one block per processor
this host runs.
"""

from __future__ import annotations

from pathlib import Path

from ..device.cpuinfo import ARM_PARTS
from .emulate_root import EmulationError, in_root

# Linux's names of the AT_HWCAP and AT_HWCAP2 bits on arm64 (uapi asm/hwcap.h), bit by bit
HWCAP = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
    "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2 = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm "
    "svef64mm svebf16 i8mm bf16 dgh rng bti mte"
).split()
AUXV = (
    "import struct; d = open('/proc/self/auxv', 'rb').read(); "
    "v = dict(struct.iter_unpack('<QQ', d)); print(v.get(16, 0), v.get(26, 0))"
)


def features(root: Path, cpu: str) -> list[str]:
    """The hwcaps qemu gives a process on `cpu`, by Linux's names."""
    proc = in_root(root, cpu, f'python3 -c "{AUXV}"')
    words = proc.stdout.split()
    if proc.returncode != 0 or len(words) != 2:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmulationError(f"cannot read the emulated {cpu}'s hwcaps: {why}")
    hwcap, hwcap2 = int(words[0]), int(words[1])
    names = [n for i, n in enumerate(HWCAP) if hwcap >> i & 1]
    return names + [n for i, n in enumerate(HWCAP2) if hwcap2 >> i & 1]


def cpuinfo(root: Path, cpu: str, processors: int) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel writes it for `processors` cores of `cpu`."""
    ids = [key for key, name in ARM_PARTS.items() if name.lower() == cpu]
    implementer, part = ids[0] if ids else (0x41, 0x000)
    block = (
        "BogoMIPS\t: 108.00\n"
        f"Features\t: {' '.join(features(root, cpu))}\n"
        f"CPU implementer\t: 0x{implementer:02x}\n"
        "CPU architecture: 8\n"
        "CPU variant\t: 0x0\n"
        f"CPU part\t: 0x{part:03x}\n"
        "CPU revision\t: 0\n"
    )
    return "\n".join(f"processor\t: {i}\n{block}" for i in range(processors)) + "\n"
