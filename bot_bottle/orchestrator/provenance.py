"""The provenance view of a run, as served by `GET /runs/<id>/provenance`: the run's object
from the runs document (`run_listing`) and its op-log, with ISO-8601 UTC times.

Pure rendering: the caller reads the store and passes the values in. The run token is a
credential of the bottle and is never part of any view; nor are the prompts a run keeps (its
launch prompt and a remembered comment): up to 1 MiB each, the issue's and the comments'
text, which are the forge's to show, not the dashboard's. (`run_listing` selects its fields by
name, so neither ever reaches a view; these names are what it must leave out.)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from bot_bottle.orchestrator.run_listing import SCHEMA_VERSION, iso_time

# Fields that must never leave the orchestrator.
SECRET_FIELDS = frozenset({"run_token"})
# Fields no view shows: large, and none of the views' business.
PROMPT_FIELDS = frozenset({"launch_prompt", "pending_prompt"})


def provenance_json(run: dict, ops: Iterable) -> dict:
    """`{"version", "run", "ops"}`: `run` is the run's object of the runs document; ops
    (with `at`, `kind`, `detail`) oldest first as given, times as `run_listing.iso_time`."""
    return {
        "version": SCHEMA_VERSION,
        "run": run,
        "ops": [{"at": iso_time(op.at), "kind": op.kind, "detail": _plain(op.detail)}
                for op in ops],
    }


def _plain(value):
    """A JSON-ready copy: enums as values, tuples as lists, anything unknown as text."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value)
