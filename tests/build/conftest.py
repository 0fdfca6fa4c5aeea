"""Profiles for the build tests: the laptop's, with budgets replaced."""

import re

import pytest

from tests.conftest import PROFILES

# these builds test bundles, not the quality estimate (tests/measure/test_quality.py judges the
# default 4096 tokens): the smallest evaluation keeps them quick
QUICK_EVAL = ("--eval-tokens", "512", "--eval-tasks", "builtin")  # `generous` gates on tasks


def profile_file(tmp_path, name, **budget):
    """The laptop profile with some budget values replaced."""
    text = (PROFILES / "laptop.toml").read_text().replace('name = "laptop"', f'name = "{name}"')
    for key, value in budget.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, flags=re.M)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


# budgets nothing misses, so that a test fails only the budget it sets
GENEROUS = dict(
    memory_gb=12, disk_gb=100, first_token_ms=120000, decode_tokens_per_s=0.5, min_quality=0.5
)


@pytest.fixture(scope="module")
def generous(tmp_path_factory):
    """GENEROUS, with its floor on task accuracy (the builds answer the built-in tasks)."""
    path = profile_file(tmp_path_factory.mktemp("profiles"), "generous", **GENEROUS)
    text = path.read_text().replace("[budget]\n", '[budget]\nquality_metric = "tasks"\n')
    path.write_text(text)
    return path
