"""The package's layout holds: every sub-package says its job and what it may import, no module
grows past 400 lines, and the import contracts of pyproject.toml catch an arrow that runs back up
(`make lint` runs them on the tree itself)."""

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "edgepack"
MAX_LINES = 400


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return layers["layers"]


def _sub_packages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.glob("*/__init__.py"))


def test_every_sub_package_says_its_job_and_what_it_may_import():
    for package in _sub_packages():
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
        assert "May import:" in doc, f"{package.name}/__init__.py does not say what it may import"


def test_every_sub_package_and_root_module_has_its_layer():
    named = {name.strip() for layer in _layers() for name in layer.split("|")}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert {p.name for p in _sub_packages()} | modules == named
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    for name in named:  # the package's own docstring names them all
        assert f" {name} " in doc or f"{name} (" in doc, name


def test_no_module_over_400_lines():
    roots = [PACKAGE, ROOT / "targets", ROOT / "tests", ROOT / "tools"]
    files = {p.resolve() for root in roots for p in root.rglob("*.py")}
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted(files)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules: {long}"


def test_tools_holds_scripts_only():
    for path in (ROOT / "tools").glob("*.py"):
        tree = ast.parse(path.read_text())
        tests = [ast.unparse(n.test) for n in tree.body if isinstance(n, ast.If)]
        has_main = any("__main__" in test for test in tests)
        assert has_main, f"tools/{path.name} is not a script: move shared code into edgepack/"


@pytest.mark.parametrize(
    "module, arrow, contract",
    [
        ("model/facts.py", "from ..export import registry", "edgepack.model is not allowed"),
        ("plan/students.py", "from ..measure import quality", "edgepack.plan is not allowed"),
        ("bundle/kit.py", "from ..model import facts", "edgepack.bundle is not allowed"),
        ("errors.py", "from .device import profiles", "edgepack.errors is not allowed"),
        ("plan/ranking.py", "import torch", "edgepack.plan.ranking -> torch"),
    ],
)
def test_an_arrow_that_runs_back_up_breaks_the_contracts(tmp_path, module, arrow, contract):
    """A copy of the package with one forbidden import added fails lint-imports, naming it."""
    shutil.copytree(PACKAGE, tmp_path / "edgepack", symlinks=True)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "edgepack" / module
    path.write_text(path.read_text() + f"\n{arrow}  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert contract in result.stdout and "BROKEN" in result.stdout
