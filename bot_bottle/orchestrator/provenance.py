"""JSON views of runs and their op-log, as served by `GET /runs`, `GET /runs/<id>` and
`GET /runs/<id>/provenance`.

Pure rendering: the caller reads the store and the clock and passes the values in. The run
token is a credential of the bottle and is never part of any view; nor are the prompts a run
keeps (its launch prompt and a remembered comment): up to 1 MiB each, the issue's and the
comments' text, which are the forge's to show, not the dashboard's.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from bot_bottle.orchestrator.model import RunRecord

# Fields that must never leave the orchestrator.
SECRET_FIELDS = frozenset({"run_token"})
# Fields no view shows: large, and none of the views' business.
PROMPT_FIELDS = frozenset({"launch_prompt", "pending_prompt"})


def run_json(run: RunRecord, now: float | None) -> dict:
    """Every `RunRecord` field except the token and the prompts, the state as its value, and
    `age_seconds` (whole seconds since creation; `None` when no `now` is given)."""
    out: dict = {}
    for field in dataclasses.fields(run):
        if field.name in SECRET_FIELDS or field.name in PROMPT_FIELDS:
            continue
        out[field.name] = _plain(getattr(run, field.name))
    out["age_seconds"] = None if now is None else max(0, int(now - run.created_at))
    return out


def provenance_json(run: RunRecord, ops: Iterable, now: float | None = None) -> dict:
    """The run and its op-log, oldest first as given; ops have `at`, `kind`, `detail`."""
    return {
        "run": run_json(run, now),
        "ops": [{"at": op.at, "kind": op.kind, "detail": _plain(op.detail)} for op in ops],
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
