"""The kit runner's settings for a planned candidate.

They are recorded in the bundle's manifest as runtime.settings; check.py passes them back to
the runner (devicekit.load_runner), and the build validates and measures with them:
- kv_cache: a smaller KV-cache type than the runtime's default (edgepack.measure.kvcache);
- gpu_layers: llama.cpp on a GPU offloads every layer (-1);
- cpu_moe_layers: on a GPU, the expert matrices of the first N layers stay in host RAM
  (llama.cpp's --n-cpu-moe), where the planner found that the whole model misses VRAM.
"""

from __future__ import annotations


def runtime_settings(candidate) -> dict:
    settings = {}
    if getattr(candidate, "kv_cache", None):
        settings["kv_cache"] = candidate.kv_cache
    if getattr(candidate, "device", "cpu") == "gpu" and candidate.runtime == "llama.cpp":
        settings["gpu_layers"] = -1
    if getattr(candidate, "cpu_moe_layers", None):
        settings["cpu_moe_layers"] = candidate.cpu_moe_layers
    return settings
