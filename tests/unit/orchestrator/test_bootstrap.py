"""The composition root: `bootstrap.build(config)` wires a real store, the Gitea forge (the
fake Gitea over HTTP), the webhook server on port 0 and the sidecar socket; `start()` serves,
`stop()` stops every thread it started. The bottle runner is the holding fake."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import unittest
from pathlib import Path

from bot_bottle.orchestrator import bootstrap
from bot_bottle.orchestrator.config import Config
from bot_bottle.orchestrator.model import OrchestratorError, RunState
from bot_bottle.orchestrator.targeting import MARKER
from bot_bottle.demo_support.fake_gitea import FakeGitea, deliver, gitea_json
from bot_bottle.demo_support.fake_gitea_payloads import issue_event
from bot_bottle.demo_support.scripted_agent import comment as sidecar_comment

from ._fakes import HoldingBottleRunner

SECRET = "bootstrap-secret"


class BootstrapTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        home = Path(tmp.name)
        (home / "agents").mkdir()
        (home / "agents" / "claude.toml").write_text('provider = "claude"\nbottles = ["b"]\n')
        self.gitea = FakeGitea().start()
        self.addCleanup(self.gitea.stop)
        g = self.gitea
        g.add_repo("acme", "widgets")
        g.add_token("tok", "claude-bot")
        g.add_org_member("agents", "claude-bot")
        self.config = Config.from_env({
            "HOME": str(home), "BOT_BOTTLE_HOME": str(home), "FORGE_GITEA_URL": g.url,
            "FORGE_TOKEN": "tok", "FORGE_AGENT_ORG": "agents", "FORGE_WEBHOOK_SECRET": SECRET,
            "FORGE_WEBHOOK_PORT": "0", "FORGE_SIDECAR_SOCKET": str(home / "s.sock")})
        self.runner = HoldingBottleRunner()
        self.threads_before = set(threading.enumerate())

    def test_a_built_service_launches_serves_the_sidecar_and_stops_cleanly(self) -> None:
        service = bootstrap.build(self.config, runner=self.runner)
        service.start()
        try:
            g = self.gitea
            n = g.add_issue("acme", "widgets", "Fix", "it", labels=("bot-bottle:claude",),
                            assignees=("claude-bot",))
            status, _ = deliver(f"{service.url}/webhook", "issues", "issue_assign",
                                gitea_json(issue_event(g, "acme", "widgets", n, "assigned", "alice")),
                                SECRET)
            self.assertEqual(status, 202)
            deadline = time.monotonic() + 10
            while (run := service.store.latest_run_for_issue("acme", "widgets", n)) is None \
                    or run.state is not RunState.RUNNING:
                self.assertLess(time.monotonic(), deadline, "the run never reached running")
                time.sleep(0.02)
            env = self.runner.calls[0][5]
            # the workspace is a checkout of the issue's repository, on the run's own branch
            checkout = Path(self.config.home) / "checkouts" / run.slug
            self.assertEqual(self.runner.workspaces, [str(checkout)])
            self.assertEqual((checkout / ".git" / "HEAD").read_text().strip(),
                             f"ref: refs/heads/bot-bottle/{run.slug}")
            self.assertEqual(env["BOT_BOTTLE_FORGE_SOCKET"], str(Path(self.config.sidecar_socket)))
            code, _ = sidecar_comment(env["BOT_BOTTLE_FORGE_SOCKET"],
                                      env["BOT_BOTTLE_FORGE_RUN_TOKEN"], n, "hello from the agent")
            self.assertEqual(code, 201)
            bodies = [c["body"] for c in g.comments("acme", "widgets", n)]
            self.assertIn(f"hello from the agent\n\n{MARKER}", bodies)  # never read as a prompt
            self.assertNotIn("tok", env.values())
            mirrored = service.forge_state.get("acme", "widgets", n)  # the forge layer's view
            self.assertEqual((mirrored.state, mirrored.agent, mirrored.slug),
                             ("running", "claude", run.slug))
            # the loops beat (the systemd watchdog's proof; the watchdog's own every 30 s here)
            self.assertEqual(service.heartbeats.stalled(grace=30.0), [])
            while min(service.heartbeats.beats("dispatcher"), service.heartbeats.beats("relay")) < 1:
                self.assertLess(time.monotonic(), deadline, "the dispatcher or relay never beat")
                time.sleep(0.02)
        finally:
            self.runner.release_all()
            service.stop()
        time.sleep(0.1)
        left = [t for t in set(threading.enumerate()) - self.threads_before
                if t.name.startswith("bot-bottle-") and t.is_alive()]
        self.assertEqual(left, [])


    def test_with_cloning_turned_off_start_gets_no_workspace(self) -> None:
        import dataclasses
        config = dataclasses.replace(self.config, clone_workspace=False)
        service = bootstrap.build(config, runner=self.runner)
        service.start()
        try:
            g = self.gitea
            n = g.add_issue("acme", "widgets", "Fix", "it", labels=("bot-bottle:claude",),
                            assignees=("claude-bot",))
            deliver(f"{service.url}/webhook", "issues", "issue_assign",
                    gitea_json(issue_event(g, "acme", "widgets", n, "assigned", "alice")), SECRET)
            deadline = time.monotonic() + 10
            while not self.runner.workspaces:
                self.assertLess(time.monotonic(), deadline, "the run never started")
                time.sleep(0.02)
            self.assertEqual(self.runner.workspaces, [None])
            self.assertEqual(g.git_requests, [])
        finally:
            self.runner.release_all()
            service.stop()

    def test_a_busy_port_is_one_clear_error_and_leaves_nothing_open(self) -> None:
        import dataclasses
        import socket
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            config = dataclasses.replace(self.config, webhook_port=port)
            with self.assertRaisesRegex(OrchestratorError, f"cannot listen on 127.0.0.1:{port}"):
                bootstrap.build(config, runner=self.runner)
        self.assertFalse([t for t in threading.enumerate() if t.name == "store-writer"
                          and t not in self.threads_before])

    @unittest.skipUnless(os.getuid() == 0, "the agent user is used only when run as root")
    def test_as_root_a_missing_agent_user_is_one_line_before_anything_is_made(self) -> None:
        import dataclasses
        env = {**self.config.child_env, "BOT_BOTTLE_AGENT_USER": "bbnosuchuser"}
        config = dataclasses.replace(self.config, child_env=env)
        with self.assertRaises(OrchestratorError) as caught:
            bootstrap.build(config, runner=self.runner)
        self.assertRegex(str(caught.exception), r"'bbnosuchuser', which does not exist.*useradd")
        self.assertNotIn("\n", str(caught.exception))
        self.assertFalse(Path(config.db_path).exists())  # refused before the store opened

    @unittest.skipUnless(os.getuid() == 0, "the agent user is used only when run as root")
    def test_as_root_the_sidecar_socket_is_the_agent_user_s_alone(self) -> None:
        import pwd
        service = bootstrap.build(self.config, runner=self.runner)
        service.start()  # stop() waits for the serving loops
        self.addCleanup(service.stop)
        st = os.stat(self.config.sidecar_socket)
        self.assertEqual(st.st_uid, pwd.getpwnam("bot-bottle").pw_uid)  # .ci/setup makes it
        self.assertEqual(st.st_mode & 0o777, 0o600)


if __name__ == "__main__":
    unittest.main()
