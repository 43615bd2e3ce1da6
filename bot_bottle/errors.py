"""The root of every error bot-bottle raises, and the core layer's errors with their exit codes.

Each layer has one root class below `BotBottleError`; edges (CLI, HTTP handlers) turn them
into an exit code or an HTTP status. Nothing below the edges calls `sys.exit`.
"""

from __future__ import annotations


class BotBottleError(Exception):
    """Root of all bot-bottle errors."""


class BottleError(BotBottleError):
    """Root of the core layer: manifests, state, backends. `exit_code` is what the CLI returns."""

    exit_code = 4


class UsageError(BottleError):
    """Bad command-line input or a bad name (label, slug, agent) — exit 2."""

    exit_code = 2


class ManifestError(BottleError):
    """A missing or malformed agent/bottle manifest — exit 2."""

    exit_code = 2


class StateConflictError(BottleError):
    """The bottle's state forbids the operation (slug in use, never frozen, unknown) — exit 3."""

    exit_code = 3


class BackendError(BottleError):
    """The backend (bwrap, docker) failed or is missing — exit 4."""

    exit_code = 4
