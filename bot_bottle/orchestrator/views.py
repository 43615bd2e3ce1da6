"""The Prometheus text of `GET /metrics` (the runs, the deliveries and whatever `metrics.py`
renders). The `status` table is `run_listing`'s, the HTML pages `pages.py`'s.

Pure rendering: values in, text out. Label values that came from the forge or the store are
escaped for the exposition format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from bot_bottle.orchestrator.model import RunState

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


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
