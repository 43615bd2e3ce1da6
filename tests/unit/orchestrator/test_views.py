"""Dashboard HTML, Prometheus text and the status table."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import unittest
from html.parser import HTMLParser

from bot_bottle.orchestrator import views
from bot_bottle.orchestrator.model import RunRecord, RunState
from bot_bottle.orchestrator.views import (
    dashboard_html, human_age, metrics_text, status_table)

NOW = 1_700_000_000.0


def make_run(**changes) -> RunRecord:
    base = RunRecord(id=1, owner="acme", repo="widgets", issue_number=42, agent="claude",
                     bottles=(), state=RunState.RUNNING, created_at=NOW - 125,
                     updated_at=NOW, run_token="tok", slug="acme-widgets-42")
    return dataclasses.replace(base, **changes)


class TableCells(HTMLParser):
    """Collects the text of each <td> of the runs table, and notices any script."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.in_td = False
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        if tag == "script" or any(name.startswith("on") for name, _ in attrs):
            self.scripts += 1
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self.in_td = True
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self.in_td = False

    def handle_data(self, data):
        if self.in_td:
            self.rows[-1][-1] += data


def parse(page: str) -> TableCells:
    parser = TableCells()
    parser.feed(page)
    return parser


class HumanAgeTests(unittest.TestCase):
    def test_largest_whole_unit(self):
        for seconds, text in ((0, "0s"), (5, "5s"), (59.9, "59s"), (60, "1m"), (3599, "59m"),
                              (7200, "2h"), (86399, "23h"), (4 * 86400 + 5, "4d"), (-3, "0s")):
            with self.subTest(seconds=seconds):
                self.assertEqual(human_age(seconds), text)


class DashboardTests(unittest.TestCase):
    def test_row_shows_every_column(self):
        run = make_run(pr_number=43, last_done_status="done")
        cells = parse(dashboard_html([run], {1: "transition"}, NOW)).rows[1]
        self.assertEqual(cells, ["1", "acme/widgets#42", "#43", "claude", "acme-widgets-42",
                                 "running", "2m", "transition", "done"])

    def test_missing_values_show_a_dash(self):
        cells = parse(dashboard_html([make_run(slug=None)], {}, NOW)).rows[1]
        self.assertEqual([cells[2], cells[4], cells[7], cells[8]], ["-", "-", "-", "-"])

    def test_forge_controlled_text_is_escaped(self):
        evil = "<script>alert(1)</script>"
        run = make_run(repo='w"><img onerror=x>', agent=evil, last_done_status=evil)
        page = dashboard_html([run], {1: evil}, NOW)
        self.assertNotIn("<script>", page)
        self.assertNotIn("<img", page)
        parser = parse(page)
        self.assertEqual(parser.scripts, 0)
        self.assertEqual(parser.rows[1][3], evil)  # shown as text, intact

    def test_empty_dashboard_says_no_runs(self):
        page = dashboard_html([], {}, NOW)
        self.assertIn("no runs", page)
        self.assertTrue(page.startswith("<!DOCTYPE html>"))

    def test_run_id_links_to_its_provenance(self):
        self.assertIn('href="/runs/7/provenance"', dashboard_html([make_run(id=7)], {}, NOW))


class DashboardPolicyTests(unittest.TestCase):
    def test_the_csp_allows_exactly_the_dashboard_s_own_style(self):
        page = views.dashboard_html([], {}, 0.0)
        style = page.split("<style>", 1)[1].split("</style>", 1)[0]
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        self.assertIn(f"style-src 'sha256-{digest}'", views.DASHBOARD_CSP)
        self.assertIn("default-src 'none'", views.DASHBOARD_CSP)
        self.assertIn("frame-ancestors 'none'", views.DASHBOARD_CSP)
        self.assertNotIn("unsafe", views.DASHBOARD_CSP)


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


class StatusTableTests(unittest.TestCase):
    def test_header_and_aligned_columns(self):
        runs = [make_run(), make_run(id=12, repo="w", issue_number=7, pr_number=8, slug=None,
                                     state=RunState.FROZEN, created_at=NOW - 3 * 86400,
                                     last_done_status="blocked")]
        lines = status_table(runs, NOW).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "REPO#ISSUE", "PR", "AGENT", "SLUG", "STATE",
                                            "AGE", "LAST", "DONE"])
        self.assertEqual(lines[1].split(), ["1", "acme/widgets#42", "-", "claude",
                                            "acme-widgets-42", "running", "2m", "-"])
        self.assertEqual(lines[2].split(), ["12", "acme/w#7", "#8", "claude", "-", "frozen",
                                            "3d", "blocked"])
        # columns line up: each header starts where its values start
        state_col = lines[0].index("STATE")
        self.assertEqual(lines[1][state_col:].split()[0], "running")
        self.assertEqual(lines[2][state_col:].split()[0], "frozen")

    def test_control_characters_cannot_break_the_table(self):
        text = status_table([make_run(last_done_status="x\nFAKE ROW\x1b[2J")], NOW)
        self.assertEqual(len(text.splitlines()), 2)
        self.assertNotIn("\x1b", text)

    def test_no_runs_is_just_the_header(self):
        self.assertEqual(status_table([], NOW).splitlines(), [
            "ID  REPO#ISSUE  PR  AGENT  SLUG  STATE  AGE  LAST DONE"])


if __name__ == "__main__":
    unittest.main()
