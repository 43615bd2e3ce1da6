"""`/metrics` of a live app over a real store and a real socket: every webhook answer counted by
code (the transport's rejections too) and timed, run durations at terminal transitions, the
pending deliveries and outbox as gauges, forge errors by kind, build info and process figures;
and `promtool check metrics` finds nothing to say about it (the test fails without promtool:
`.ci/setup` installs it into .ci/tools/)."""

from __future__ import annotations

import functools
import http.client
import os
import re
import shutil
import subprocess
import time
import unittest
from pathlib import Path

import bot_bottle
from bot_bottle.contrib.forge.base import ForgeNotFound, ForgeUnavailable
from bot_bottle.contrib.gitea.signature import sign, verify_signature
from bot_bottle.orchestrator.metrics import ForgeErrors, Histogram
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.webhook import StoreViews, WebhookApp, make_server
from tests._serve import serve_in_thread

from .test_webhook import ISSUE_OPENED, SECRET, open_store

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_700_000_000.0


def promtool() -> str | None:
    local = ROOT / ".ci" / "tools" / "promtool"
    return str(local) if os.access(local, os.X_OK) else shutil.which("promtool")


def sample(text: str, series: str) -> float:
    """The value of one exact series line (`name{labels}`) in exposition text."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    if match is None:
        raise AssertionError(f"no series {series} in:\n{text}")
    return float(match.group(1))


class FakeForge:
    def __init__(self) -> None:
        self.label = "fake"

    def get_issue(self, number: int) -> str:
        if number == 404:
            raise ForgeNotFound("no issue")
        if number == 503:
            raise ForgeUnavailable("down", status=503)
        return f"issue {number}"


class LiveMetricsTest(unittest.TestCase):
    def setUp(self) -> None:
        self.store = open_store(self)
        self.forge_errors = ForgeErrors()
        views = StoreViews(self.store, lambda: T0, forge_errors=self.forge_errors)
        self.app = WebhookApp(self.store, verify=functools.partial(verify_signature, SECRET),
                              clock=lambda: T0, views=views)
        server = make_server("127.0.0.1", 0, self.app)
        serve_in_thread(self, server)
        self.port = server.server_address[1]

    def request(self, method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        self.addCleanup(conn.close)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()

    def deliver(self, body: bytes, secret: bytes = SECRET, **extra) -> int:
        headers = {"X-Gitea-Event-Type": "issues", "X-Gitea-Signature": sign(secret, body),
                   "Content-Type": "application/json", **extra}
        return self.request("POST", "/webhook", body, headers)[0]

    def metrics(self) -> str:
        status, data = self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        return data.decode()

    def test_every_webhook_answer_is_counted_by_code_and_timed(self):
        self.assertEqual(self.deliver(ISSUE_OPENED), 202)
        self.assertEqual(self.deliver(ISSUE_OPENED), 200)  # the same body again: duplicate
        with self.assertLogs("bot_bottle.orchestrator", "WARNING"):
            self.assertEqual(self.deliver(ISSUE_OPENED, secret=b"wrong"), 401)
            self.assertEqual(self.deliver(b"not json"), 400)
            # the transport's own refusals: a body over 1 MiB and a foreign Host
            self.assertEqual(self.request("POST", "/webhook", b"", {
                "Content-Length": str(2 << 20)})[0], 413)
            self.assertEqual(self.deliver(ISSUE_OPENED, Host="evil.example"), 421)
        self.assertEqual(self.request("GET", "/webhook")[0], 405)
        self.assertEqual(self.request("GET", "/healthz")[0], 200)  # not a webhook answer
        text = self.metrics()
        for code, n in (("202", 1), ("200", 1), ("401", 1), ("400", 1), ("413", 1), ("421", 1),
                        ("405", 1)):
            self.assertEqual(sample(text, f'bot_bottle_webhook_requests_total{{code="{code}"}}'),
                             n, code)
        self.assertEqual(sample(text, "bot_bottle_webhook_ack_seconds_count"), 7)
        self.assertEqual(sample(text, 'bot_bottle_webhook_ack_seconds_bucket{le="+Inf"}'), 7)
        self.assertGreater(sample(text, "bot_bottle_webhook_ack_seconds_sum"), 0)

    def test_a_run_ending_is_one_duration_observation_by_outcome(self):
        run = self.store.create_run("acme", "widgets", 1, "claude", (), RunState.QUEUED, "t1", T0)
        self.store.transition(run.id, RunState.FAILED, now=T0 + 90, reason="clone failed")
        self.store.update_run(run.id, now=T0 + 95, error="clone failed")  # not a transition
        other = self.store.create_run("acme", "widgets", 2, "claude", (), RunState.QUEUED, "t2",
                                      T0)
        self.store.transition(other.id, RunState.STARTING, now=T0 + 1, reason="launch")
        text = self.metrics()
        series = 'bot_bottle_run_duration_seconds_{}{{outcome="failed"{}}}'
        self.assertEqual(sample(text, series.format("count", "")), 1)
        self.assertEqual(sample(text, series.format("sum", "")), 90)
        self.assertEqual(sample(text, series.format("bucket", ',le="60.0"')), 0)
        self.assertEqual(sample(text, series.format("bucket", ',le="300.0"')), 1)
        self.assertEqual(sample(text, 'bot_bottle_run_duration_seconds_count{outcome="destroyed"}'), 0)

    def test_pending_deliveries_and_outbox_are_gauges(self):
        self.assertEqual(self.deliver(ISSUE_OPENED), 202)
        self.store.enqueue_comment(None, "acme", "widgets", 1, "hello", T0)
        text = self.metrics()
        self.assertEqual(sample(text, "bot_bottle_deliveries_pending"), 1)
        self.assertEqual(sample(text, "bot_bottle_outbox_pending"), 1)
        self.assertIn("# TYPE bot_bottle_deliveries_pending gauge", text)
        self.assertNotIn('outcome="pending"', text)

    def test_forge_errors_are_counted_by_kind_and_still_raised(self):
        forge = self.forge_errors.wrap(lambda owner, repo: FakeForge())("acme", "widgets")
        self.assertEqual((forge.get_issue(1), forge.label), ("issue 1", "fake"))
        with self.assertRaises(ForgeNotFound):
            forge.get_issue(404)
        for _ in range(2):
            with self.assertRaises(ForgeUnavailable):
                forge.get_issue(503)
        text = self.metrics()
        self.assertEqual(sample(text, 'bot_bottle_forge_errors_total{kind="not_found"}'), 1)
        self.assertEqual(sample(text, 'bot_bottle_forge_errors_total{kind="unavailable"}'), 2)
        self.assertEqual(sample(text, 'bot_bottle_forge_errors_total{kind="auth"}'), 0)

    def test_build_info_and_process_figures(self):
        text = self.metrics()
        self.assertEqual(sample(text, f'bot_bottle_build_info{{version="{bot_bottle.__version__}"}}'), 1)
        started = sample(text, "process_start_time_seconds")
        self.assertLessEqual(started, time.time())
        self.assertGreater(started, time.time() - 86400)
        self.assertGreater(sample(text, "process_resident_memory_bytes"), 1 << 20)

    def test_promtool_finds_nothing_to_say_about_a_live_answer(self):
        tool = promtool()
        if tool is None:
            self.fail("promtool is missing: run .ci/setup (it puts it in .ci/tools/)")
        self.deliver(ISSUE_OPENED)
        with self.assertLogs("bot_bottle.orchestrator", "WARNING"):
            self.deliver(b"x", secret=b"wrong")
        run = self.store.create_run("acme", "widgets", 1, "claude", (), RunState.QUEUED, "t1", T0)
        self.store.transition(run.id, RunState.FAILED, now=T0 + 5, reason="x")
        text = self.metrics()
        done = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                              text=True, timeout=60)
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""), text)


class HistogramTest(unittest.TestCase):
    def test_buckets_are_cumulative_and_bounds_inclusive(self):
        h = Histogram("x_seconds", "X.", (1.0, 2.0))
        for value in (0.5, 1.0, 1.5, 3.0, -1.0):
            h.observe(value)
        self.assertEqual(h.text()[2:], [
            'x_seconds_bucket{le="1.0"} 3', 'x_seconds_bucket{le="2.0"} 4',
            'x_seconds_bucket{le="+Inf"} 5', "x_seconds_sum 6.0", "x_seconds_count 5"])


if __name__ == "__main__":
    unittest.main()
