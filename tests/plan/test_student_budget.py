"""Students' priors for a declared training budget: published results, and the plan's words."""

from __future__ import annotations

import json

import pytest

from edgepack.device.profiles import load_profile
from edgepack.export.support import inspect_model
from edgepack.plan.planner import plan
from edgepack.plan.student_budget import (
    BUDGETS,
    CPU_HEAL_TOKENS,
    PUBLISHED,
    Training,
    budget_loss,
    published_loss,
)
from edgepack.plan.students import Student, student_loss
from tests.conftest import config_dir, run_cli

LLAMA_7B = config_dir("llama-2-7b")


def test_published_retentions_are_the_papers_figures():
    by_name = {p.name.split(",")[0]: p for p in PUBLISHED}
    assert by_name["Sheared-LLaMA-2.7B"].retention == pytest.approx(56.7 / 64.6, abs=1e-3)
    assert by_name["Sheared-LLaMA-1.3B"].retention == pytest.approx(51.0 / 64.6, abs=1e-3)
    assert by_name["DistilGPT2"].retention == pytest.approx(16.3 / 21.1, abs=1e-3)
    depth = (58.7 / 65.3 + 72.1 / 77.3 + 52.6 / 57.9 + 73.2 / 81.8) / 4
    assert by_name["Llama-3.1-Minitron-4B-Depth"].retention == pytest.approx(depth, abs=1e-3)
    for p in PUBLISHED:
        assert "arXiv" in p.source or "model card" in p.source
    # one curve for every teacher: at half the blocks, the small model's perplexity loss and
    # the 8B one's accuracy loss agree at the reference size within 4 %
    half = [p.loss for p in PUBLISHED if p.share == 0.5]
    assert max(half) / min(half) < 1.04


def test_more_tokens_never_hurt_and_the_heal_stays_without_a_declaration():
    heal = 10.0
    losses = [budget_loss(0.5, heal, t) for t in (CPU_HEAL_TOKENS, 10**8, *BUDGETS, 10**12)]
    assert losses[0] == heal
    assert all(a >= b for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] == pytest.approx(published_loss(0.5, BUDGETS[-1]))
    # below the fewest blocks any result kept, no published figure stands in
    assert published_loss(0.05, BUDGETS[-1]) is None
    assert budget_loss(0.05, heal, BUDGETS[-1]) == heal


def test_a_declared_gpu_budget_raises_a_7b_students_prior():
    facts = inspect_model(LLAMA_7B)
    student = Student(layers=16)
    heal = student_loss(facts, student)
    big = student_loss(facts, student, Training(94_000_000_000, gpu=True))
    assert big < heal / 10
    assert 1 / (1 + big) == pytest.approx(0.91, abs=0.03)  # Minitron-4B-Depth's 0.909
    assert student_loss(facts, student, Training(CPU_HEAL_TOKENS)) == heal


def test_the_plan_names_the_sources_of_a_declared_budgets_prior():
    facts = inspect_model(LLAMA_7B)
    p = plan(facts, load_profile("edge-4gb"), training=Training(94_000_000_000, gpu=True))
    note = next(n for n in p.notes if "published distillation results" in n)
    assert "arXiv:2408.11796" in note and "arXiv:2310.06694" in note
    assert p.training == {"tokens": 94_000_000_000, "gpu": True}
    assert type(p).from_dict(p.to_dict()).training == p.training


def test_without_a_declaration_the_plan_says_which_budget_would_do():
    result = run_cli("plan", "--model", str(LLAMA_7B), "--target", "laptop", "--json")
    needs = json.loads(result.stdout)["needs"]
    assert result.returncode == 2 and needs["distill_tokens"] in BUDGETS
    assert f"--distill-tokens {needs['distill_tokens']} --distill-gpu" in needs["message"]


def test_a_large_budget_needs_the_gpu_declared():
    result = run_cli("plan", "--target", "edge-4gb", "--distill-tokens", "50000000000")
    assert result.returncode == 2 and "--distill-gpu" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    result = run_cli("plan", "--target", "edge-4gb", "--distill-gpu")
    assert result.returncode == 2 and "--distill-tokens" in result.stderr


def test_with_the_named_budget_the_plan_chooses_the_student():
    facts = inspect_model(LLAMA_7B)
    profile = load_profile("laptop")
    first = plan(facts, profile)
    tokens = first.needs["distill_tokens"]
    second = plan(facts, profile, training=Training(tokens, gpu=True))
    assert second.chosen is not None and second.chosen.is_student
    assert second.chosen.predicted.quality >= profile.budget.min_quality
