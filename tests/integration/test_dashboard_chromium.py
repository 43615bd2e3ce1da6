"""The dashboard and a run's page as a browser shows them: a real `SqliteRunStore` with runs in
several states, the real webhook server on 127.0.0.1 port 0, the real `bot-bottle logs` for
the agent log tail, and Debian's headless Chromium (`.ci/setup` installs it; the test fails
when it is missing). Checks the DOM Chromium built (states, links, no script, the filters, the
op-log in the host's time zone, here one that is not UTC) and takes screenshots at 1280 and
480 px wide, kept for a person to look at under the test output folder's `dashboard_chromium`:
`$BOT_BOTTLE_TEST_OUTPUT`, else `test-output/` in the checkout (git-ignored; each run replaces
its files, and the folder is printed).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from html.parser import HTMLParser
from pathlib import Path

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.pages import PAGE_CSP
from bot_bottle.orchestrator.runner import SubprocessBottleRunner
from bot_bottle.orchestrator.store import SqliteRunStore
from bot_bottle.orchestrator.webhook import StoreViews, WebhookApp, make_server
from tests._serve import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
GITEA = "https://gitea.example.test"
T0 = 1_764_460_800.0  # 2025-11-30T00:00:00Z
NOW = T0 + 3 * 3600
ZONE = "XST-5:30"  # POSIX TZ: UTC+05:30 named XST, no zone database needed
S = RunState
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--enable-logging=stderr", "--v=0")


class Dom(HTMLParser):
    """What the checks need from a rendered DOM: tags, attributes and text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def hrefs(self) -> list[str]:
        return [a.get("href", "") for t, a in self.tags if t == "a"]

    def classes(self) -> list[str]:
        return [a.get("class", "") for _, a in self.tags]

    def active_content(self) -> list[str]:
        return [t for t, a in self.tags if t in ("script", "iframe", "object", "embed", "form")
                or any(k.startswith("on") for k in a)]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


class DashboardInChromiumTest(unittest.TestCase):
    def setUp(self) -> None:
        self.chromium = shutil.which("chromium")
        # not a skip: .ci/setup installs it, and a page no browser checked is not checked
        self.assertIsNotNone(self.chromium, "chromium is missing: run .ci/setup")
        self.use_zone(ZONE)  # the server renders in this process: a host zone that is not UTC
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.store = SqliteRunStore(self.tmp / "orchestrator.db")
        self.addCleanup(self.store.close)
        self.ids = self.populate()
        home = self.tmp / "home"
        self.write_agent_log(home, "acme-widgets-3", "starting claude\n<script>alert(1)</script>\n"
                             "error: manifest not found\n")
        runner = SubprocessBottleRunner([sys.executable, "-m", "bot_bottle"],
                                        {**os.environ, "BOT_BOTTLE_HOME": str(home)}, timeout=20)
        views = StoreViews(self.store, lambda: NOW, gitea_url=GITEA, log_tail=runner.log_tail)
        app = WebhookApp(self.store, verify=lambda body, sig: False, views=views, clock=lambda: NOW)
        server = make_server("127.0.0.1", 0, app)
        serve_in_thread(self, server)
        self.port = server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        out = os.environ.get("BOT_BOTTLE_TEST_OUTPUT") or REPO / "test-output"
        self.out = Path(out) / "dashboard_chromium"  # kept for a person to look at
        self.out.mkdir(parents=True, exist_ok=True)

    def use_zone(self, tz: str) -> None:
        old = os.environ.get("TZ")
        os.environ["TZ"] = tz
        time.tzset()

        def restore() -> None:
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()
        self.addCleanup(restore)

    def populate(self) -> dict[str, int]:
        """One run per interesting state, with the fields the dashboard shows."""
        store, ids = self.store, {}

        def run(name, issue, path, **fields):
            r = store.create_run("acme", "widgets", issue, "claude", ["default"], S.QUEUED,
                                 f"tok-{issue}", now=T0 + issue * 60)
            at = T0 + issue * 60
            for state in path:
                at += 300
                store.transition(r.id, state, now=at, reason=f"to {state.value}")
            if fields:
                store.update_run(r.id, now=at, **fields)
            ids[name] = r.id

        run("running", 1, [S.STARTING, S.RUNNING], slug="acme-widgets-1",
            last_progress_at=NOW - 90, pr_number=11, last_done_status="done",
            last_done_summary="Opened PR #11 fixing the parser")
        run("queued", 2, [])
        run("failed", 3, [S.STARTING, S.FAILED], slug="acme-widgets-3",
            error="bot-bottle start: manifest not found: agents/claude.toml")
        run("timed_out", 4, [S.STARTING, S.RUNNING, S.TIMED_OUT], slug="acme-widgets-4",
            error="the agent ran past its 3600 s limit (exit 124)", last_progress_at=NOW - 7200)
        run("frozen", 5, [S.STARTING, S.RUNNING, S.FROZEN], slug="acme-widgets-5",
            last_done_status="done", last_done_summary="Waiting for review",
            last_progress_at=NOW - 4000)
        run("destroyed", 6, [S.DESTROYED])
        return ids

    def write_agent_log(self, home: Path, slug: str, text: str) -> None:
        state = home / "state" / slug
        state.mkdir(parents=True)
        (state / "metadata.json").write_text(json.dumps({"slug": slug}))
        (state / "agent.log").write_text(text)

    def browse(self, *args: str) -> str:
        """One Chromium process (its own profile), all its children ended afterwards."""
        profile = tempfile.TemporaryDirectory()
        self.addCleanup(profile.cleanup)
        proc = subprocess.Popen([self.chromium, *BROWSER_FLAGS, f"--user-data-dir={profile.name}",
                                 *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=25)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # zygote and helpers, if any are left
            except ProcessLookupError:
                pass
            proc.wait()
        self.assertEqual(proc.returncode, 0, err.decode(errors="replace")[-2000:])
        # the page's style is allowed by hash: a refused one would be logged here
        self.assertNotIn("Content Security Policy", err.decode(errors="replace"))
        return out.decode()

    def dom(self, path: str) -> Dom:
        return Dom(self.browse("--dump-dom", self.base + path))

    def screenshots(self, path: str, name: str) -> None:
        for width in (1280, 480):
            shot = self.out / f"{name}-{width}.png"
            shot.unlink(missing_ok=True)  # a file from an earlier run proves nothing
            self.browse(f"--screenshot={shot}", f"--window-size={width},900", self.base + path)
            self.assertEqual(png_size(shot), (width, 900))

    def fetch(self, path: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp

    def test_both_pages_carry_the_policy_and_a_missing_run_has_no_page(self) -> None:
        for path in ("/", "/?show=failed", f"/run/{self.ids['failed']}"):
            resp = self.fetch(path)
            self.assertEqual((resp.status, resp.getheader("Content-Security-Policy")),
                             (200, PAGE_CSP), path)
        self.assertEqual(self.fetch("/run/999").status, 404)
        self.assertEqual(self.fetch("/run/abc").status, 400)
        self.assertEqual(self.fetch("/run/1/x").status, 404)

    def test_the_dashboard_and_a_run_page_render_in_chromium(self) -> None:
        ids = self.ids
        dom = self.dom("/")
        self.assertEqual(dom.active_content(), [])
        text = " ".join(dom.text)
        badges = [c.split()[1] for c in dom.classes() if c.startswith("state state-")]
        self.assertEqual(sorted(badges), ["state-failed", "state-frozen", "state-queued",
                                          "state-running", "state-timed_out"])
        self.assertIn(f"{GITEA}/acme/widgets/issues/3", dom.hrefs())
        self.assertIn(f"{GITEA}/acme/widgets/pulls/11", dom.hrefs())
        self.assertIn(f"/run/{ids['failed']}", dom.hrefs())
        self.assertIn("manifest not found", text)
        self.assertIn("Opened PR #11 fixing the parser", text)
        self.assertIn("1m", text)  # the running run's last progress, 90 s ago
        metas = [a for t, a in dom.tags if t == "meta"]
        self.assertIn({"http-equiv": "refresh", "content": "30"}, metas)
        self.assertTrue(any(a.get("name") == "viewport" for a in metas))

        failed = self.dom("/?show=failed")
        self.assertEqual(sorted(c.split()[1] for c in failed.classes()
                                if c.startswith("state state-")),
                         ["state-failed", "state-timed_out"])
        everything = self.dom("/?all=1")
        self.assertIn("state state-destroyed", everything.classes())

        page = self.dom(f"/run/{ids['failed']}")
        self.assertEqual(page.active_content(), [])
        text = " ".join(page.text)
        # the op-log in the host's zone: the failed run's transition at T0 + 780 s
        oplog = page.text[page.text.index("Op-log"):page.text.index("Agent log (tail)")]
        self.assertIn("2025-11-30 05:43:00 XST (UTC+05:30)", oplog)
        self.assertNotIn("00:13:00", " ".join(page.text))  # no UTC time shown
        for expected in ("queued", "starting", "failed", "to failed",
                         "bot-bottle start: manifest not found", "error: manifest not found",
                         "<script>alert(1)</script>"):  # the agent's text, shown as text
            self.assertIn(expected, text)
        self.assertIn(f"/runs/{ids['failed']}/provenance", page.hrefs())

        self.screenshots("/", "dashboard")
        self.screenshots(f"/run/{ids['failed']}", "run")
        print(f"\ndashboard screenshots: {self.out}", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
