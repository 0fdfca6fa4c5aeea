"""The students a plan proposes (depth and width) and their measured quality priors."""

import json

import pytest

from edgepack.compress.make_student import student_message
from edgepack.compress.student_report import REPORT_FILE, student_text
from edgepack.device.profiles import load_profile
from edgepack.export.support import inspect_model
from edgepack.plan.planner import plan
from edgepack.plan.students import (
    MEASURED,
    MEASURED_ON_PARAMETERS,
    Student,
    block_share,
    pruned_facts,
    student_loss,
    students,
)
from tests.conftest import config_dir


def facts(name):
    return inspect_model(config_dir(name))


def test_pruned_facts_count_what_edgepack_prune_removes():
    model = facts("smollm2-135m")
    assert model.num_parameters == MEASURED_ON_PARAMETERS
    # `edgepack prune --ratio 0.25` on the default model reported 134,515,008 -> 114,608,448
    # parameters and intermediate_size 1536 -> 1152
    pruned = pruned_facts(model, 0.25)
    assert pruned.num_parameters == 114_608_448
    assert pruned.intermediate_size == 1152
    assert pruned.embedding_parameters == model.embedding_parameters
    assert model.num_parameters - pruned.num_parameters == (
        model.layer_parameters - pruned.layer_parameters
    )


def test_dense_decoders_get_width_students_and_others_do_not():
    assert Student(pruned_mlp=0.25) in students(facts("smollm2-135m"))
    assert Student(pruned_mlp=0.5) in students(facts("mistral-7b"))
    moe = students(facts("qwen3-30b-a3b"))
    assert moe and all(s.pruned_mlp is None for s in moe)
    phi3 = students(facts("phi-3-mini-4k"))  # fused projections: edgepack prune refuses it
    assert all(s.pruned_mlp is None for s in phi3) and Student(16) in phi3


def test_the_prior_reproduces_the_measurements_on_the_default_model():
    model = facts("smollm2-135m")
    for kind, points in MEASURED.items():
        for share, retention in points:
            if kind == "depth":
                student = Student(layers=round(share * model.num_layers))
            else:
                ratio = round((1 - share) * model.layer_parameters / _mlp(model), 2)
                student = Student(pruned_mlp=ratio)
            assert block_share(model, student) == pytest.approx(share, abs=2e-3)
            assert 1 / (1 + student_loss(model, student)) == pytest.approx(retention, abs=0.01)


def _mlp(model):
    return 3 * model.hidden_size * model.intermediate_size * model.num_layers


def test_width_keeps_more_than_depth_at_the_same_size_and_large_models_lose_less():
    small, large = facts("smollm2-135m"), facts("llama-2-7b")
    width, depth = Student(pruned_mlp=0.25), Student(layers=24)
    assert abs(block_share(small, width) - block_share(small, depth)) < 0.02
    assert student_loss(small, width) < student_loss(small, depth)
    assert student_loss(large, Student(layers=24)) < student_loss(small, depth)
    assert student_loss(small, Student()) == 0


def test_the_default_models_plan_lists_width_students_with_their_arithmetic():
    p = plan(facts("smollm2-135m"), load_profile("laptop"))
    width = [c for c in p.candidates if c.pruned_mlp == 0.25 and c.format == "gguf"]
    assert width and all(c.is_student for c in width)
    q8 = next(c for c in width if c.precision == "q8_0")
    assert q8.predicted.parameters == 114_608_448
    assert "with 25% of its MLP channels pruned" in q8.label
    assert p.chosen is not None and not p.chosen.is_student


def test_a_width_students_message_names_prune_then_heal(tmp_path):
    model = facts("smollm2-135m")
    p = plan(model, load_profile("laptop"))
    c = next(c for c in p.candidates if c.pruned_mlp == 0.5)
    line = student_message(tmp_path / "SmolLM2", load_profile("laptop"), c)
    assert "needs a student with 50% of its MLP channels pruned, healed by distillation" in line
    assert (
        f"edgepack prune --model {tmp_path / 'SmolLM2'} --ratio 0.5 --out pruned/SmolLM2-w50"
        in line
    )
    assert "&& edgepack distill --teacher" in line
    assert "--student pruned/SmolLM2-w50 --out students/SmolLM2-w50" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("pruned", "says"),
    [
        ({"ratio": 0.25}, "student with 25% of its MLP channels pruned"),
        (
            {
                "ratio": 0.25,
                "kv_groups": {"before": 2, "after": 1},
                "hidden_size": {"before": 576, "after": 432},
            },
            "student with 25% of its MLP channels, 1 of 2 key/value groups and 144 of 576 "
            "hidden channels pruned",
        ),
        (
            {"ratio": 0.0, "hidden_size": {"before": 576, "after": 432}},
            "student with 144 of 576 hidden channels pruned",
        ),
        ({"ratio": 0.0, "kv_groups": {"before": 3, "after": 3}}, "healed student"),
    ],
)
def test_a_healed_students_words_name_what_prune_cut(tmp_path, pruned, says):
    report = {"student": {"given": "pruned", "num_layers": 30, "pruned": pruned}}
    (tmp_path / REPORT_FILE).write_text(json.dumps(report))
    assert student_text(tmp_path) == says
