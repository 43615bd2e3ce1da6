"""The Prometheus text of `GET /metrics` (`views.metrics_text`)."""

from __future__ import annotations

import re
import unittest

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.views import metrics_text


class MetricsTests(unittest.TestCase):
    LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="(?:[^"\\\n]|\\["\\n])*"\})? \S+$')

    def test_every_line_is_valid_exposition_format(self):
        text = metrics_text({"running": 2}, {"accepted": 5, 'we"ird\\\n': 1}, {"bot_bottle_up": 1})
        self.assertTrue(text.endswith("\n"))
        for line in text.splitlines():
            with self.subTest(line=line):
                if line.startswith("#"):
                    self.assertRegex(line, r"^# (HELP|TYPE) [a-z_]+ \S")
                else:
                    self.assertRegex(line, self.LINE)

    def test_counts_by_label(self):
        text = metrics_text({"running": 2, "frozen": 1}, {"accepted": 5, "ignored": 3})
        self.assertIn('bot_bottle_runs{state="running"} 2\n', text)
        self.assertIn('bot_bottle_runs{state="frozen"} 1\n', text)
        self.assertIn('bot_bottle_deliveries_total{outcome="ignored"} 3\n', text)
        self.assertIn("# TYPE bot_bottle_runs gauge\n", text)
        self.assertIn("# TYPE bot_bottle_deliveries_total counter\n", text)

    def test_every_state_is_present_even_at_zero(self):
        text = metrics_text({}, {})
        for state in RunState:
            self.assertIn(f'bot_bottle_runs{{state="{state.value}"}} 0\n', text)

    def test_label_values_are_escaped(self):
        text = metrics_text({}, {'a"b\\c\nd': 1})
        self.assertIn('outcome="a\\"b\\\\c\\nd"} 1', text)

    def test_extra_gauges_and_special_floats(self):
        text = metrics_text({}, {}, {"bot_bottle_queue_age_seconds": 1.5,
                                     "bot_bottle_nan": float("nan"), "bot_bottle_inf": float("inf")})
        self.assertIn("# TYPE bot_bottle_queue_age_seconds gauge\n", text)
        self.assertIn("bot_bottle_queue_age_seconds 1.5\n", text)
        self.assertIn("bot_bottle_nan NaN\n", text)
        self.assertIn("bot_bottle_inf +Inf\n", text)

    def test_invalid_extra_metric_name_is_refused(self):
        with self.assertRaises(ValueError):
            metrics_text({}, {}, {"bad name": 1})

    def test_counters_are_typed_counter_with_their_help_text(self):
        text = metrics_text({}, {}, counters={"bot_bottle_egress_refused_total": ("Refused.", 4)})
        self.assertIn("# HELP bot_bottle_egress_refused_total Refused.\n"
                      "# TYPE bot_bottle_egress_refused_total counter\n"
                      "bot_bottle_egress_refused_total 4\n", text)
        for line in text.splitlines():
            with self.subTest(line=line):
                if not line.startswith("#"):
                    self.assertRegex(line, self.LINE)

    def test_a_counter_name_must_be_valid_and_end_in_total(self):
        for name in ("bad name_total", "bot_bottle_refused"):
            with self.subTest(name=name), self.assertRaises(ValueError):
                metrics_text({}, {}, counters={name: ("x", 1)})


if __name__ == "__main__":
    unittest.main()
