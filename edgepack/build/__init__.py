"""The build pipeline: plan -> export -> validate -> measure -> select -> stage, per target.

pipeline.py runs it; selection.py decides which candidates are measured and which measured one
is kept (pure, tested from tables); stage.py writes one candidate's bundle into a staging
directory and runs its check there; settings.py is the kit runner's settings for a candidate.

May import: compress, plan, export, measure, model, bundle, device and the root modules.
"""
