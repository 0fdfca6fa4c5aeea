"""The CPU's parsers (edgepack.device.cpuinfo) on other machines' /proc/cpuinfo and sysfs."""

import pytest

from edgepack.device.cpuinfo import (
    cpu_clock,
    cpu_model,
    isa_features,
    normalize_arch,
    parse_cpuinfo,
)
from edgepack.device.profiles import parse_profile
from edgepack.errors import ProfileError

SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
cpu MHz\t\t: 2000.000
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts \
acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon \
pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 \
monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe \
popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb \
cat_l3 cat_l2 cdp_l3 invpcid_single intel_ppin cdp_l2 ssbd mba ibrs ibpb stibp ibrs_enhanced \
fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx smap \
avx512ifma clflushopt clwb intel_pt avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 \
xsaves cqm_llc split_lock_detect avx_vnni avx512_bf16 wbnoinvd dtherm ida arat pln pts hwp hfi \
avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg \
tme avx512_vpopcntdq la57 rdpid bus_lock_detect cldemote movdiri movdir64b enqcmd fsrm md_clear \
serialize tsxldtrk pconfig arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d \
arch_capabilities
bogomips\t: 4000.00

"""

ALDER_LAKE_LAPTOP = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: 12th Gen Intel(R) Core(TM) i7-1260P
cpu MHz\t\t: 400.000
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx \
fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 pcid \
sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch fsgsbase \
bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb intel_pt sha_ni xsaveopt xsavec \
xgetbv1 xsaves split_lock_detect avx_vnni dtherm ida arat pln pts hwp hwp_notify hwp_act_window \
hwp_epp hwp_pkg_req hfi umip pku ospke waitpkg gfni vaes vpclmulqdq rdpid movdiri movdir64b fsrm \
md_clear serialize arch_lbr ibt flush_l1d arch_capabilities

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: 12th Gen Intel(R) Core(TM) i7-1260P
cpu MHz\t\t: 2100.000
"""

PI5_CORE = """\
processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc \
dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
PI5_BOARD = """\
Revision\t: d04170
Serial\t\t: 4e6a1c3b5f0d2a17
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
RASPBERRY_PI_5 = "\n".join(PI5_CORE.format(n=n) for n in range(4)) + "\n" + PI5_BOARD

GRAVITON3 = """\
processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt \
fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg \
dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""

CPUS = [
    (
        "sapphire-rapids",
        "x86_64",
        SAPPHIRE_RAPIDS,
        "Intel(R) Xeon(R) Platinum 8480+",
        ("sse4_2", "avx2", "avx512", "avx512_vnni", "avx_vnni", "amx"),
    ),
    (
        "alder-lake-laptop",
        "x86_64",
        ALDER_LAKE_LAPTOP,
        "12th Gen Intel(R) Core(TM) i7-1260P",
        ("sse4_2", "avx2", "avx_vnni"),
    ),
    (
        "raspberry-pi-5",
        "arm64",
        RASPBERRY_PI_5,
        "4x Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)",
        ("neon", "dotprod", "fp16"),
    ),
    ("graviton3", "arm64", GRAVITON3, "1x Neoverse-V1", ("neon", "dotprod", "fp16", "i8mm", "sve")),
]


def _raw(arch, isa):
    """A minimal valid profile dict for checking that ISA names pass the schema."""
    return {
        "name": "x",
        "description": "x",
        "objective": "quality",
        "hardware": {
            "arch": arch,
            "cpu": "x",
            "cores": 1,
            "clock_ghz": 1.0,
            "ram_gb": 1.0,
            "memory_bandwidth_gbs": 1.0,
            "isa": list(isa),
        },
        "accelerator": {"kind": "none"},
        "budget": {
            "memory_gb": 0.5,
            "disk_gb": 1,
            "context_tokens": 1,
            "first_token_ms": 1,
            "decode_tokens_per_s": 1,
            "min_quality": 0.5,
        },
        "runtimes": {"prefer": ["llama.cpp"]},
    }


@pytest.mark.parametrize("label,arch,text,model,isa", CPUS, ids=[c[0] for c in CPUS])
def test_cpuinfo_model_and_isa(label, arch, text, model, isa):
    processors, extra = parse_cpuinfo(text)
    assert cpu_model(arch, processors, extra) == model
    flags = processors[0]["flags" if arch == "x86_64" else "Features"]
    assert isa_features(arch, flags) == isa
    parse_profile(_raw(arch, isa), source="x")  # the names are the schema's


def test_cpuinfo_counts_processors_and_keeps_machine_keys():
    processors, extra = parse_cpuinfo(RASPBERRY_PI_5)
    assert [p["processor"] for p in processors] == ["0", "1", "2", "3"]
    assert extra["Model"] == "Raspberry Pi 5 Model B Rev 1.0"
    big_little = PI5_CORE.format(n=0) + "\n" + PI5_CORE.format(n=1).replace("0xd0b", "0xd05")
    assert cpu_model("arm64", *parse_cpuinfo(big_little)) == "1x Cortex-A76 + 1x Cortex-A55"
    unknown = PI5_CORE.format(n=0).replace("0x41", "0x99")
    assert "implementer 0x99, part 0xd0b" in cpu_model("arm64", *parse_cpuinfo(unknown))


CLOCKS = [
    ("model name", "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", {}, "2500.0", 1.9, "model name"),
    ("base_frequency", "12th Gen", {"base_frequency": "2100000\n"}, "400.0", 2.1, "base clock"),
    ("max_freq", "4x Cortex-A76", {"cpuinfo_max_freq": "2400000\n"}, "", 2.4, "highest"),
    ("cpu MHz", "AMD EPYC", {"cpuinfo_max_freq": ""}, "2445.406", 2.445406, "cpu MHz"),
    ("nothing", "arm64 CPU", {}, "", 2.0, "conservative guess"),
]


@pytest.mark.parametrize("label,model,sysfs,mhz,ghz,why", CLOCKS, ids=[c[0] for c in CLOCKS])
def test_clock_sources(label, model, sysfs, mhz, ghz, why):
    processors = [{"processor": "0", "cpu MHz": mhz}] if mhz else [{"processor": "0"}]
    clock, source = cpu_clock(model, processors, sysfs)
    assert clock == pytest.approx(ghz)
    assert why in source


def test_arch_names():
    assert normalize_arch("x86_64") == "x86_64"
    assert normalize_arch("AMD64") == "x86_64"
    assert normalize_arch("aarch64") == "arm64"
    with pytest.raises(ProfileError, match="riscv64"):
        normalize_arch("riscv64")
