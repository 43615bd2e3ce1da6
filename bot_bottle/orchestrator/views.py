"""Human and machine views of the runs: the dashboard page (`GET /`), the Prometheus text
(`GET /metrics`) and the `status` command's table.

Pure rendering: values in, text out. Anything that came from the forge or the store is
escaped for its medium (HTML, Prometheus label values, a terminal line).
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from collections.abc import Mapping, Sequence

from bot_bottle.orchestrator.model import RunRecord, RunState

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_AGE_UNITS = (("d", 86400), ("h", 3600), ("m", 60))

STATUS_COLUMNS = ("ID", "REPO#ISSUE", "PR", "AGENT", "SLUG", "STATE", "AGE", "LAST DONE")
DASHBOARD_COLUMNS = ("id", "repo#issue", "PR", "agent", "slug", "state", "age", "last op",
                     "last done")


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


# ---- dashboard --------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
"""
# The page's only active content is its own style sheet, allowed by hash: no script, no
# frame, no form, nothing from elsewhere (and no framing of the page by anyone).
DASHBOARD_CSP = ("default-src 'none'; style-src 'sha256-"
                 + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
                 + "'; img-src 'none'; base-uri 'none'; form-action 'none'; "
                 "frame-ancestors 'none'")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bot-bottle runs</title>
<style>{style}</style>
</head>
<body>
<h1>bot-bottle runs</h1>
<p>{summary}</p>
<table id="runs">
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


def dashboard_html(runs: Sequence[RunRecord], last_ops: Mapping[int, str], now: float) -> str:
    """The whole page; each run id links to its provenance JSON."""
    esc = html.escape
    head = "".join(f"<th>{esc(name)}</th>" for name in DASHBOARD_COLUMNS)
    rows = []
    for run in runs:
        cells = _cells(run, now)
        cells.insert(7, last_ops.get(run.id) or "-")
        link = f'<a href="/runs/{run.id}/provenance">{esc(cells[0])}</a>'
        tds = [link] + [esc(cell) for cell in cells[1:]]
        rows.append(f'<tr class="state-{esc(run.state.value)}">'
                    + "".join(f"<td>{td}</td>" for td in tds) + "</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(DASHBOARD_COLUMNS)}">no runs</td></tr>')
    summary = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    return _PAGE.format(style=_STYLE, summary=esc(summary), head=head, rows="\n".join(rows))


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
