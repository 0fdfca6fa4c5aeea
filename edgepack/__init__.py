"""edgepack: plan, export, quantize and bundle a Hugging Face model for a concrete device.

Sub-packages, from the top of the import layers to the bottom (an import points down, never up:
the import-linter contracts of pyproject.toml, run by `make lint`):

    cli        the click commands and terminal tables; errors become messages only here
    bench      side-by-side benchmarks against the plain tools (tools/bench.py; beside cli)
    build      the pipeline per target: plan, export, validate, measure, select, stage
    compress   pruning, distillation, the student a plan needs
    plan       pure: candidates, predictions, students' priors, host-to-device calibration
    export     the format registry, one exporter per format, the export cache
    measure    fp32 reference, validation, quality and tasks in the runtime, golden outputs
    model      model facts without weights; the default model     (model and bundle do not
    bundle     writer, reader, manifest, install, report, verify    know each other)
    device     profiles, --detect, hardware peak figures

and the root modules every layer uses: progress (bars on stderr), liblog (the libraries' own
output kept in a log), cache (where cached artifacts live: keys, locks, atomic writes) and
errors (the one error hierarchy and its exit codes).
"""

__version__ = "0.1.0"
