"""The HTML pages (dashboard, run page), Prometheus text and the status table."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import unittest
from html.parser import HTMLParser

from bot_bottle.orchestrator import pages
from bot_bottle.orchestrator.model import RunRecord, RunState
from bot_bottle.orchestrator.pages import dashboard_html, run_page_html
from bot_bottle.orchestrator.views import human_age, metrics_text, status_table

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


def doc_run(**changes) -> dict:
    """One object of the runs document, as the pages get it."""
    base = {"id": 1, "owner": "acme", "repo": "widgets", "issue_number": 42, "pr_number": None,
            "agent": "claude", "bottles": [], "slug": "acme-widgets-42", "state": "running",
            "created_at": "2023-11-14T22:11:15Z", "updated_at": "2023-11-14T22:13:20Z",
            "state_since": "2023-11-14T22:12:20Z", "seconds_in_state": 60,
            "last_progress_at": "2023-11-14T22:10:20Z", "last_done_status": None,
            "last_done_summary": None, "error": None}
    return {**base, **changes}


GITEA = "https://git.example.org"


class DashboardTests(unittest.TestCase):
    def test_row_shows_state_times_links_error_and_last_done(self):
        run = doc_run(pr_number=43, last_done_status="done", last_done_summary="fixed it",
                      error="exit 3")
        page = dashboard_html([run], NOW, gitea_url=GITEA)
        cells = parse(page).rows[1]
        # in state since state_since (60 s); last progress 2023-11-14T22:10:20Z = NOW - 200 s
        self.assertEqual(cells, ["1", "acme/widgets#42", "#43", "claude", "running", "1m", "3m",
                                 "exit 3", "done \u2014 fixed it"])
        self.assertIn(f'href="{GITEA}/acme/widgets/issues/42"', page)
        self.assertIn(f'href="{GITEA}/acme/widgets/pulls/43"', page)
        self.assertIn('href="/run/1"', page)
        self.assertIn('<span class="state state-running">', page)

    def test_every_state_class_has_a_colour_in_the_page_s_style(self):
        for state in RunState:
            self.assertRegex(pages._STYLE, rf"\.state-{state.value}\b[^{{]*{{[^}}]*background")

    def test_no_script_a_refresh_and_a_viewport(self):
        page = dashboard_html([doc_run()], NOW)
        self.assertEqual(parse(page).scripts, 0)
        self.assertIn('<meta http-equiv="refresh" content="30">', page)
        self.assertIn('<meta name="viewport" content="width=device-width, initial-scale=1">', page)
        self.assertIn("@media (max-width: 700px)", page)  # the table becomes cards

    def test_missing_values_show_a_dash_and_no_gitea_url_means_no_links(self):
        cells = parse(dashboard_html([doc_run(last_progress_at=None)], NOW)).rows[1]
        self.assertEqual([cells[2], cells[6], cells[7], cells[8]], ["-", "-", "-", "-"])
        self.assertNotIn("/issues/", dashboard_html([doc_run()], NOW))

    def test_forge_controlled_text_is_escaped(self):
        evil = "<script>alert(1)</script>"
        run = doc_run(repo='w"><img onerror=x>', agent=evil, last_done_status=evil, error=evil,
                      pr_number=5)
        page = dashboard_html([run], NOW, gitea_url=GITEA)
        self.assertNotIn("<script>", page)
        self.assertNotIn("<img", page)
        parser = parse(page)
        self.assertEqual(parser.scripts, 0)
        self.assertEqual(parser.rows[1][3], evil)  # shown as text, intact
        self.assertIn("/w%22%3E%3Cimg%20onerror%3Dx%3E/pulls/5", page)  # and quoted in links

    def test_filters_pick_states_newest_first(self):
        runs = [doc_run(id=i, state=s) for i, s in enumerate(
            ("running", "failed", "destroyed", "queued", "timed_out", "frozen"), start=1)]
        ids = lambda show: [int(r[0]) for r in parse(dashboard_html(runs, NOW, show=show)).rows[1:]]
        self.assertEqual(ids("live"), [6, 5, 4, 2, 1])
        self.assertEqual(ids("active"), [6, 4, 1])
        self.assertEqual(ids("failed"), [5, 2])
        self.assertEqual(ids("all"), [6, 5, 4, 3, 2, 1])
        self.assertIn('<a href="/?show=failed" class="on">', dashboard_html(runs, NOW, show="failed"))

    def test_empty_dashboard_says_no_runs(self):
        page = dashboard_html([], NOW)
        self.assertIn("no runs", page)
        self.assertTrue(page.startswith("<!DOCTYPE html>"))


class RunPageTests(unittest.TestCase):
    def prov(self, **changes) -> dict:
        ops = [{"at": "2023-11-14T22:11:15Z", "kind": "created", "detail": {"agent": "claude"}},
               {"at": "2023-11-14T22:11:20Z", "kind": "transition",
                "detail": {"from": "queued", "to": "starting", "reason": "launch"}},
               {"at": "2023-11-14T22:12:20Z", "kind": "transition",
                "detail": {"from": "starting", "to": "failed", "reason": "<b>exit 3</b>"}}]
        return {"version": 1, "run": doc_run(state="failed", error="manifest <missing>",
                                             **changes), "ops": ops}

    def test_timeline_op_log_in_utc_and_the_log_tail_escaped(self):
        page = run_page_html(self.prov(pr_number=9), NOW, gitea_url=GITEA,
                             log_tail="line 1\n<script>x()</script>\n")
        parser = parse(page)
        self.assertEqual(parser.scripts, 0)
        self.assertIn("2023-11-14 22:12:20 UTC", page)
        self.assertIn('<span class="state state-failed">failed</span>', page)
        self.assertIn("&lt;b&gt;exit 3&lt;/b&gt;", page)
        self.assertIn("manifest &lt;missing&gt;", page)
        self.assertIn("&lt;script&gt;x()&lt;/script&gt;", page)
        self.assertIn(f'href="{GITEA}/acme/widgets/pulls/9"', page)
        self.assertIn('href="/runs/1/provenance"', page)
        # the timeline is the transitions; the op-log every op
        timeline = page.split('id="timeline"', 1)[1].split("</table>", 1)[0]
        oplog = page.split('id="oplog"', 1)[1].split("</table>", 1)[0]
        self.assertEqual((timeline.count("<tr>"), oplog.count("<tr>")), (3, 4))

    def test_without_a_log_tail_the_page_says_why(self):
        page = run_page_html(self.prov(), NOW, log_note="no bottle yet, so no agent log")
        self.assertIn('<p id="log" class="muted">no bottle yet, so no agent log</p>', page)


class PagePolicyTests(unittest.TestCase):
    def test_the_csp_allows_exactly_the_pages_own_style(self):
        for page in (dashboard_html([], 0.0), run_page_html(RunPageTests().prov(), 0.0)):
            style = page.split("<style>", 1)[1].split("</style>", 1)[0]
            digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
            self.assertIn(f"style-src 'sha256-{digest}'", pages.PAGE_CSP)
        self.assertIn("default-src 'none'", pages.PAGE_CSP)
        self.assertIn("frame-ancestors 'none'", pages.PAGE_CSP)
        self.assertNotIn("unsafe", pages.PAGE_CSP)
        self.assertNotIn("script-src", pages.PAGE_CSP)  # default-src 'none' covers scripts


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
