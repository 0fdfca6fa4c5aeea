"""The build's own memory on its host, predicted per candidate (no backend)."""

from edgepack.device.profiles import load_profile
from edgepack.export.support import inspect_model
from edgepack.plan.build_host import PROCESS_BYTES, build_cost
from edgepack.plan.planner import plan
from tests.conftest import config_dir

GB = 1e9


def candidate(name, fmt, precision, profile="laptop"):
    p = plan(inspect_model(config_dir(name)), load_profile(profile))
    return next(
        c for c in p.candidates if (c.format, c.precision) == (fmt, precision) and not c.is_student
    )


def test_a_7b_gguf_build_fits_a_24_gb_machine_and_its_fp32_reference_would_not():
    c = candidate("llama-2-7b", "gguf", "q4_k_m")
    need = c.predicted.build_memory_bytes
    # the bf16 reference (13.5 GB) or the importance matrix over the mmapped f16 GGUF
    assert 13.5 * GB < need < 16 * GB
    assert c.predicted.build_stage in ("reference", "export")
    assert need < 1.5 * 2 * c.predicted.parameters  # within 1.5x the bf16 checkpoint
    # an fp32 reference alone would hold 27 GB
    assert 4 * c.predicted.parameters > 24 * GB
    # on disk: the f16 base (13.5 GB), then the export, the bundle and its tarball
    written = 2 * c.predicted.parameters + 3 * c.predicted.disk_bytes
    assert c.predicted.build_disk_bytes == written


def test_each_stage_is_the_build_process_plus_what_it_holds():
    cost = build_cost("gguf", 7_000_000_000, 7_000_000_000, 4096, 32000, 4_000_000_000)
    assert cost.stages["reference"] > PROCESS_BYTES + 2 * 7e9  # bf16 weights and activations
    assert cost.stages["export"] > PROCESS_BYTES + 2 * 7e9  # the mmapped f16 GGUF
    assert cost.stages["check"] > cost.stages["validate and quality"]  # its own process
    assert cost.peak_bytes == max(cost.stages.values())
    # a student's export is smaller than the teacher's reference
    student = build_cost("gguf", 7_000_000_000, 1_000_000_000, 4096, 32000, 600_000_000)
    assert student.stage == "reference" and student.stages["export"] < cost.stages["export"]


def test_a_small_model_keeps_its_fp32_reference():
    small = build_cost("gguf", 134_515_008, 134_515_008, 576, 49152, 300_000_000)
    assert small.stages["reference"] > PROCESS_BYTES + 4 * 134_515_008
