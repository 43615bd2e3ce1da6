"""The sidecar's write scan: a comment, description or PR that holds the run's token, the
service's secrets or a token shape is refused with 422 before it reaches the forge, and the
reason names the kind, never the value. Real Unix socket, real store, a FakeForge."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator import sidecar
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.sidecar import SidecarApp, SidecarServer, service_secrets
from tests.support.fake_forge import FakeForge
from tests._serve import serve_in_thread

from ._fakes import FakeClock, UnixConnection, seed_run, temp_store

RUN_TOKEN = "run-token-5f0c2a9e7d41b6c3"
FORGE_TOKEN = "0123456789abcdef0123456789abcdef01234567"
ANTHROPIC_KEY = "sk-ant-api03-Qx7vR2mN9pL4kJ8hG6fD3sA1zX5cV0bN-real-key-AA"
OPENAI_KEY = "sk-proj-Rt5yU8iO2pA4sD6fG8hJ0kL3zX7cV9bN1mQ"
GITHUB_TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
SECRETS = {FORGE_TOKEN, ANTHROPIC_KEY, OPENAI_KEY, RUN_TOKEN, GITHUB_TOKEN}


class SidecarSecretScanTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.forge = FakeForge("acme", "widgets")
        self.issue_n = self.forge.add_issue("Fix empty input", "crashes", user="alice")
        self.store = temp_store(self)
        seed_run(self.store, self.issue_n, RunState.RUNNING, run_token=RUN_TOKEN, run_id=7)
        # the service's secrets as bootstrap gathers them from its config and the CLI's env
        known = service_secrets(FORGE_TOKEN, "webhook-secret-value",
                                {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY,
                                 "PATH": "/usr/bin:/bin"})
        app = SidecarApp(self.store, lambda o, r: self.forge, self.dir / "queue",
                         FakeClock().now, lambda: 123, secret_values=known)
        self.sock = str(self.dir / "s.sock")
        server = SidecarServer(Path(self.sock), app)
        serve_in_thread(self, server)

    def call(self, method: str, path: str, body: dict):
        conn = UnixConnection(self.sock)
        self.addCleanup(conn.close)
        conn.request(method, path, body=json.dumps(body).encode(),
                     headers={"Authorization": f"Bearer {RUN_TOKEN}"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()

    def test_writes_holding_a_secret_are_refused_with_422_naming_the_kind(self) -> None:
        n = self.issue_n
        pr = {"title": "Fix", "body": "", "head": "bot-bottle/x", "base": "main"}
        cases = [
            ("POST", f"/issues/{n}/comments", {"body": f"my token is {RUN_TOKEN}"},
             "the comment's body", "the run token"),
            ("PATCH", f"/issues/{n}", {"body": f"ok\nremote: https://x:{FORGE_TOKEN}@h/r"},
             "the description's body", "FORGE_TOKEN"),
            ("POST", "/pulls", {**pr, "body": f"done\n\nkey={ANTHROPIC_KEY}"},
             "the pull request's body", "ANTHROPIC_API_KEY"),
            ("POST", "/pulls", {**pr, "title": f"use {OPENAI_KEY}"},
             "the pull request's title", "OPENAI_API_KEY"),
            ("POST", f"/issues/{n}/comments", {"body": f"found {GITHUB_TOKEN} in the logs"},
             "the comment's body", "GitHub token"),
        ]
        for method, path, body, field, kind in cases:
            with self.subTest(kind=kind), self.assertLogs(sidecar.log, "WARNING") as logs:
                status, text = self.call(method, path, body)
                self.assertEqual(status, 422, text)
                reason = json.loads(text)["reason"]
                self.assertIn(f"{field} holds a secret ({kind}", reason)
                for value in SECRETS:
                    self.assertNotIn(value, text)
                    self.assertNotIn(value, "\n".join(logs.output))
                self.assertIn(f"issue={n} run=7", logs.output[0])
                self.assertEqual(self.store.op_log(7)[-1].detail["status"], 422)
        self.assertEqual([c.body for c in self.forge.read_comments(n)], [])
        self.assertEqual(self.forge.read_issue(n).body, "crashes")
        self.assertIsNone(self.store.get_run(7).pr_number)

    def test_a_clean_write_still_goes_through(self) -> None:
        body = "fixed; see commit e83c5163316f89bfbde7d9ab23ca2e25604af290 (sk-ant- keys stay out)"
        status, text = self.call("POST", f"/issues/{self.issue_n}/comments", {"body": body})
        self.assertEqual(status, 201, text)

    def test_the_service_secrets_are_its_forge_secrets_and_the_injected_provider_keys(self) -> None:
        found = service_secrets("t" * 40, "w" * 20, {"ANTHROPIC_API_KEY": "a" * 30, "HOME": "/h",
                                                      "OPENAI_API_KEY": ""})
        self.assertEqual(found, {"FORGE_TOKEN": "t" * 40, "FORGE_WEBHOOK_SECRET": "w" * 20,
                                 "ANTHROPIC_API_KEY": "a" * 30})


if __name__ == "__main__":
    unittest.main()
