"""One error hierarchy. Only the CLI turns these into a one-line message and an exit code.

Exit codes (DESIGN.md): 0 success / PASS, 1 a check or budget failed, 2 usage or input error,
3 internal error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class EdgepackError(Exception):
    """Base of every error edgepack reports to a user; the message says what to do next."""

    exit_code = EXIT_USAGE


class ProfileError(EdgepackError):
    """A device profile is missing, unknown or invalid."""


class ModelError(EdgepackError):
    """The model directory cannot be read: missing, malformed, or unsafe."""


class UnsupportedModelError(ModelError):
    """The model's architecture cannot be handled by the requested format or by edgepack."""


class PlanError(EdgepackError):
    """No candidate meets the target's budgets; `needs` says what would fit."""

    def __init__(self, message: str, plan=None):
        super().__init__(message)
        self.plan = plan


class ExportError(EdgepackError):
    """An export or quantization step failed."""

    exit_code = EXIT_INTERNAL


class ValidationError(EdgepackError):
    """An exported artifact does not match the reference within tolerance."""

    exit_code = EXIT_FAIL


class QualityError(EdgepackError):
    """A candidate's measured quality is below the target's floor: nothing is written."""

    exit_code = EXIT_FAIL


class VerificationError(EdgepackError):
    """A bundle or tarball breaks the rules: a changed, missing or extra file, an unsafe member."""


class StudentRequired(EdgepackError):
    """The chosen plan needs a distilled student that does not exist yet."""
