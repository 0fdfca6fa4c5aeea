"""Export: the format registry (data), one exporter module per format behind the small
Protocol of base.py, the export cache, which formats support a model, and the child processes
that run llama.cpp's and onnxruntime-genai's own tools.

May import: measure (the calibration text of data-aware quantizers), model, bundle (the
staging and leftover rules the export cache shares with bundles), device and the root modules.
"""
