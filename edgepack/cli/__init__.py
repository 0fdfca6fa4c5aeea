"""The command line: a thin click layer, one module per command, and the terminal tables.

main.py holds the click group and is the only place that turns an EdgepackError into a one-line
message and an exit code; every other module raises. Commands import what they need when they
run, so `edgepack --help`, `targets`, `inspect` and `plan` never load a backend.

May import: every other sub-package (it sits on top).
"""
