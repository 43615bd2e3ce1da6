"""The HTML pages: the dashboard and a run's page (pure rendering from the runs document and
a provenance), their local times, escaping and content policy."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import unittest
from datetime import timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

from bot_bottle.orchestrator import pages
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.pages import dashboard_html, human_age, readable_time, run_page_html

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
ROOT = Path(__file__).resolve().parents[3]


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
            "state_since": "2023-11-14T22:12:20Z",
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
        return {"version": 2, "run": doc_run(state="failed", error="manifest <missing>",
                                             **changes), "ops": ops}

    def test_timeline_op_log_and_the_log_tail_escaped(self):
        page = run_page_html(self.prov(pr_number=9), NOW, gitea_url=GITEA,
                             log_tail="line 1\n<script>x()</script>\n")
        parser = parse(page)
        self.assertEqual(parser.scripts, 0)
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


class LocalTimeTests(unittest.TestCase):
    """The run page shows times in the service host's zone, the zone written beside each."""

    def test_a_time_in_a_given_zone_shows_its_name_and_offset(self):
        cet = timezone(timedelta(hours=1), "CET")
        self.assertEqual(readable_time("2023-11-14T22:12:20Z", cet),
                         "2023-11-14 23:12:20 CET (UTC+01:00)")
        self.assertEqual(readable_time("2023-11-14T22:12:20Z", timezone.utc),
                         "2023-11-14 22:12:20 UTC")
        self.assertEqual(readable_time("2023-11-14T22:12:20Z", timezone(timedelta(hours=-3.5))),
                         "2023-11-14 18:42:20 UTC-03:30")
        self.assertEqual((readable_time(None), readable_time("not a time")), ("-", "not a time"))

    def test_the_run_page_uses_the_hosts_zone_from_tz(self):
        # a process of its own: TZ and time.tzset() are process-wide; POSIX TZ strings need
        # no zone database ("XST-5:30" is UTC+05:30 named XST, with summer time "XDT" from the
        # last Sunday of March to the last Sunday of October)
        code = ("import sys; from bot_bottle.orchestrator.pages import run_page_html; "
                "from tests.unit.orchestrator.test_pages import RunPageTests; "
                "sys.stdout.write(run_page_html(RunPageTests().prov(), float(sys.argv[1])))")
        env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(ROOT),
               "TZ": "XST-5:30XDT,M3.5.0,M10.5.0"}
        done = subprocess.run([sys.executable, "-c", code, str(NOW)], env=env, cwd=str(ROOT),
                              capture_output=True, text=True, timeout=30, check=True)
        page = done.stdout
        oplog = page.split('id="oplog"', 1)[1].split("</table>", 1)[0]
        timeline = page.split('id="timeline"', 1)[1].split("</table>", 1)[0]
        self.assertIn("<th>at</th>", oplog)
        # the op-log's three ops (22:11:15, 22:11:20, 22:12:20 UTC) at UTC+05:30
        for local in ("2023-11-15 03:41:15 XST (UTC+05:30)", "2023-11-15 03:41:20 XST (UTC+05:30)",
                      "2023-11-15 03:42:20 XST (UTC+05:30)"):
            self.assertIn(local, oplog)
        self.assertIn("2023-11-15 03:42:20 XST (UTC+05:30)", timeline)
        self.assertNotIn(" UTC<", page)
        self.assertNotIn("22:12:20", page)  # no UTC time left anywhere on the page
        # and summer time is that day's offset, not today's
        code = ("import sys; from bot_bottle.orchestrator.pages import readable_time; "
                "print(readable_time('2023-07-01T12:00:00Z'))")
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT),
                              capture_output=True, text=True, timeout=30, check=True)
        self.assertEqual(done.stdout.strip(), "2023-07-01 18:30:00 XDT (UTC+06:30)")

    def test_the_dashboard_shows_ages_not_times_so_it_needs_no_zone(self):
        page = dashboard_html([doc_run()], NOW)
        self.assertNotIn("2023-11-14", page)
        self.assertEqual(parse(page).rows[1][5], "1m")  # in state: NOW - state_since


if __name__ == "__main__":
    unittest.main()
