"""Measurement against the PyTorch reference (fp32, or bf16 for a large model): the reference
itself, validation after export, perplexity retention and task accuracy in the target runtime,
golden outputs, the effect of a smaller KV cache, and the texts all of them read (evaluation,
calibration, probes).

May import: model, bundle (its door to the on-device kit, whose runners it measures through)
and the root modules; never export, plan, compress or build.
"""
