"""Machine and terminal views of the runs: the Prometheus text (`GET /metrics`) and the
`status` command's table (the HTML pages are `pages.py`'s).

Pure rendering: values in, text out. Anything that came from the forge or the store is
escaped for its medium (Prometheus label values, a terminal line).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from bot_bottle.orchestrator.model import RunRecord, RunState

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_AGE_UNITS = (("d", 86400), ("h", 3600), ("m", 60))

STATUS_COLUMNS = ("ID", "REPO#ISSUE", "PR", "AGENT", "SLUG", "STATE", "AGE", "LAST DONE")


def human_age(seconds: float) -> str:
    """Largest whole unit: 5s, 3m, 2h, 4d (negative clock skew reads as 0s)."""
    seconds = max(0, int(seconds))
    for unit, size in _AGE_UNITS:
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cells(run: RunRecord, now: float) -> list[str]:
    return [str(run.id), f"{run.repo_full_name}#{run.issue_number}",
            "-" if run.pr_number is None else f"#{run.pr_number}",
            run.agent, run.slug or "-", run.state.value, human_age(now - run.created_at),
            run.last_done_status or "-"]


# ---- metrics ----------------------------------------------------------------------------


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def metrics_text(run_counts: Mapping[str, int], delivery_counts: Mapping[str, int],
                 extra: Mapping[str, float] | None = None,
                 counters: Mapping[str, tuple[str, float]] | None = None,
                 families: Sequence[str] = ()) -> str:
    """Prometheus text exposition (version 0.0.4). Every run state is listed, 0 when absent,
    so that series do not vanish; `delivery_counts` are processed deliveries by outcome (a
    counter: pending ones are a gauge, `bot_bottle_deliveries_pending`); `extra` maps further
    metric names to gauge values, `counters` further counter names (ending in `_total`) to
    (help text, value); `families` are lines already rendered (`metrics.py`), appended."""
    runs = {state.value: 0 for state in RunState}
    runs.update(run_counts)
    lines = ["# HELP bot_bottle_runs Runs by state.", "# TYPE bot_bottle_runs gauge"]
    lines += [f'bot_bottle_runs{{state="{_label_value(state)}"}} {_number(count)}'
              for state, count in sorted(runs.items())]
    lines += ["# HELP bot_bottle_deliveries_total Processed webhook deliveries by outcome.",
              "# TYPE bot_bottle_deliveries_total counter"]
    lines += [f'bot_bottle_deliveries_total{{outcome="{_label_value(outcome)}"}} '
              f"{_number(count)}" for outcome, count in sorted(delivery_counts.items())]
    for name, value in sorted((extra or {}).items()):
        if not METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid Prometheus metric name: {name!r}")
        lines += [f"# HELP {name} {name.replace('_', ' ')}.", f"# TYPE {name} gauge",
                  f"{name} {_number(value)}"]
    for name, (help_text, value) in sorted((counters or {}).items()):
        if not METRIC_NAME.fullmatch(name) or not name.endswith("_total"):
            raise ValueError(f"invalid Prometheus counter name: {name!r}")
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter",
                  f"{name} {_number(value)}"]
    lines += families
    return "\n".join(lines) + "\n"


# ---- status table -----------------------------------------------------------------------


def _printable(text: str) -> str:
    """One terminal cell: control characters (newlines, escapes) would break the table."""
    if text.isprintable():  # nearly every cell: checked in C, no per-character loop
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def status_table(runs: Sequence[RunRecord], now: float) -> str:
    """A fixed-width table, header first, columns two spaces apart, one line per run."""
    table = [list(STATUS_COLUMNS)] + [[_printable(cell) for cell in _cells(run, now)]
                                      for run in runs]
    widths = [max(len(row[i]) for row in table) for i in range(len(STATUS_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in table]
    return "\n".join(lines) + "\n"
