"""Every key of a bundle's manifest.json, defined once (stdlib only: check.py reads it on the
device; edgepack.bundle.manifest builds the typed manifest from the same names)."""

SCHEMA_VERSION = 2

SCHEMA = "schema_version"
EDGEPACK_VERSION = "edgepack_version"
CREATED = "created"
BUNDLE = "bundle"  # the bundle's name and the path it was published to
SOURCE_MODEL = "source_model"
TARGET = "target"  # the full profile; its "budget" is what check.py compares with
PLAN = "plan"  # the planner's candidate
FORCED = "forced_by_user"
ARTIFACT = "artifact"
RUNTIME = "runtime"  # name, package, requirements
PREDICTED = "predicted"  # the planner's prediction for the device
DEVICE_PREDICTION = "device_prediction"  # calibrated from this host's measurement
VALIDATION = "validation"
QUALITY = "quality"
GOLDEN = "golden"
BUILD_HOST = "build_host"  # this host's check, or why there is none
DISTILLATION = "distillation"
CANDIDATES = "candidates_measured"
FILES = "files"
DIGEST = "manifest_sha256"

REQUIRED = (
    SCHEMA,
    EDGEPACK_VERSION,
    CREATED,
    BUNDLE,
    SOURCE_MODEL,
    TARGET,
    PLAN,
    FORCED,
    ARTIFACT,
    RUNTIME,
    PREDICTED,
    VALIDATION,
    QUALITY,
    GOLDEN,
    BUILD_HOST,
)
OPTIONAL = (DEVICE_PREDICTION, DISTILLATION, CANDIDATES, FILES, DIGEST)
ALL = REQUIRED + OPTIONAL
