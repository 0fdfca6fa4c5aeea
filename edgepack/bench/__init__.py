"""Side-by-side benchmarks (tools/bench.py): each figure edgepack reports next to what the plain
tool measures for the same artifact, every variant in a process of its own (child.py): the
plain runtimes through their own APIs (plain_runtimes.py), the bundle's runner, check.py,
quality and predictions (bundle_runs.py), timed on cold prompts (timed.py), pooled over rounds
into ratios (rounds.py) and printed as tables (tables.py).

Developer-facing: no other sub-package imports it. May import: every sub-package below cli.
"""
