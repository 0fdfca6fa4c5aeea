"""The build side's door to the on-device kit (targets/, shipped as edgepack/targets).

The kit is plain modules that import no edgepack code; the build host uses the very same runners
that bundles carry, so what is validated here is what runs on the device.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def kit_dir() -> Path:
    return Path(str(resources.files("edgepack").joinpath("targets")))


def _import_path() -> None:
    path = str(kit_dir())
    if path not in sys.path:
        sys.path.insert(0, path)


def devicekit():
    """The kit's shared module, imported from the kit directory."""
    _import_path()
    import devicekit as module

    return module


def manifest_keys():
    """The kit's manifestkeys module: every manifest key, defined once."""
    _import_path()
    import manifestkeys as module

    return module


def signature_module():
    """The kit's signature module: a bundle's model.sig, made and verified (model-signing)."""
    _import_path()
    import signature as module

    return module


def gpu_module():
    """The kit's gpu module: how a GPU bundle proves it ran on the GPU, and the GPU builds."""
    _import_path()
    import gpu as module

    return module


def load_runner(runtime: str, model_dir: Path, threads: int | None = None, **settings):
    """A kit Runner for runtime over model_dir (see targets/devicekit.py for the interface)."""
    return devicekit().load_runner(runtime, str(model_dir), threads=threads, **settings)


def check_module():
    """The kit's check.py as a module: one implementation of sha256 and the manifest digest."""
    import importlib.util

    name = "_edgepack_kit_check"
    if name not in sys.modules:
        _import_path()
        spec = importlib.util.spec_from_file_location(name, kit_dir() / "check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
