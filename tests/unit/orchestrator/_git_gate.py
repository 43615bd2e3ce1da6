"""Test harness for the git gate without a sandbox: the real chain a bottle's `git push` takes,
run on the host.

git (in a checkout `Workspaces.prepare` made, origin = the gate's `/_git/` URL) → the real
in-bottle forwarder (`gate/forwarder.py`, as a process on a free port; git reaches it through a
per-command `url.<...>.insteadOf`, since the bottle's fixed port 3128 may be taken here) → the
CLI's egress `Gate` (in this process, its plan holding the git route) → the service's sidecar
socket (`bootstrap.build`, only the sidecar served) → the git gate → the fake Gitea's real bare
repository over smart HTTP.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bot_bottle.gate import PROXY_URL
from bot_bottle.gate.egress import Gate
from bot_bottle.gate.plan import EgressPlan, GitRoute
from bot_bottle.orchestrator import bootstrap
from bot_bottle.orchestrator.config import Config
from bot_bottle.orchestrator.model import RunRecord, RunState
from bot_bottle.orchestrator.workspace import Workspaces
from bot_bottle.demo_support.fake_gitea import FakeGitea

FORWARDER = str(Path(__file__).resolve().parents[3] / "bot_bottle" / "gate" / "forwarder.py")
TOKEN = "gate-test-forge-token-0123456789"
OWNER, REPO = "acme", "widgets"
IDENT = ["-c", "user.name=agent", "-c", "user.email=agent@bot-bottle.invalid"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GitGateHarness:
    def __init__(self, testcase, *, extra_env: dict | None = None, runner=None) -> None:
        self.t = testcase
        tmp = tempfile.TemporaryDirectory()
        testcase.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.home = self.root / "home"
        self.home.mkdir()
        self.gitea = FakeGitea().start()
        testcase.addCleanup(self.gitea.stop)
        g = self.gitea
        g.add_token(TOKEN, "orchestrator")
        g.add_repo(OWNER, REPO, files={"README.md": "widgets\n"})
        g.set_permission(OWNER, REPO, "alice", "write")  # her close destroys a run
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
                    "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C"}
        self.config = Config.from_env({
            **self.env, "BOT_BOTTLE_HOME": str(self.home), "FORGE_GITEA_URL": g.url,
            "FORGE_TOKEN": TOKEN, "FORGE_AGENT_ORG": "agents", "FORGE_WEBHOOK_SECRET": "s3cret-hook",
            "FORGE_WEBHOOK_PORT": "0", "FORGE_SIDECAR_SOCKET": str(self.root / "sidecar.sock"),
            "FORGE_PUBLIC_URL": "https://bot-bottle.example", **(extra_env or {})})
        self.service = bootstrap.build(self.config, runner=runner)
        self.store = self.service.store
        sidecar = threading.Thread(target=self.service.sidecar.serve_forever, daemon=True)
        sidecar.start()

        def stop() -> None:
            self.service.sidecar.shutdown()
            sidecar.join(10)
            self.service.sidecar.server_close()
            self.service.webhook.server_close()
            self.store.close()
        testcase.addCleanup(stop)
        self.workspaces = Workspaces(g.url, TOKEN, self.home, env=self.env)

    def make_run(self, issue: int = 1, *, title: str = "Add a greeting") -> tuple[RunRecord, Path]:
        """A running run for a new issue, its checkout, and its CLI's egress gate."""
        self.gitea.add_issue(OWNER, REPO, title, "Please greet.", user="alice")
        run = self.store.create_run(OWNER, REPO, issue, "scripted", ("b1",), RunState.STARTING,
                                    secrets.token_urlsafe(32), 0.0)
        checkout = Path(self.workspaces.prepare(OWNER, REPO, run.label))
        run = self.store.transition(run.id, RunState.RUNNING, now=1.0, reason="test",
                                    slug=run.expected_slug)
        gate = Gate(EgressPlan((), git=GitRoute(str(self.root / "sidecar.sock"), run.run_token)),
                    own=frozenset())
        sock_dir = self.root / f"gate-{run.id}"
        sock_dir.mkdir()
        gate.listen(sock_dir / "egress.sock")
        self.t.addCleanup(gate.stop)
        self.gates = getattr(self, "gates", {})
        self.gates[run.id] = sock_dir / "egress.sock"
        return run, checkout

    def git(self, run: RunRecord, checkout: Path, *args: str, timeout: float = 60):
        """`git ARGS` in the checkout, its HTTP going through the forwarder and the gate."""
        port = free_port()
        argv = ["git", *IDENT, "-c", f"url.http://127.0.0.1:{port}/.insteadOf={PROXY_URL}/",
                "-C", str(checkout), *args]
        return subprocess.run([sys.executable, "-I", FORWARDER, "--port", str(port), "--socket",
                               str(self.gates[run.id]), "--", *argv], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def commit(self, checkout: Path, files: dict[str, str], message: str = "work") -> str:
        for name, text in files.items():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_text(text)
        subprocess.run(["git", *IDENT, "-C", str(checkout), "add", "-A"], env=self.env, check=True)
        subprocess.run(["git", *IDENT, "-C", str(checkout), "commit", "-qm", message],
                       env=self.env, check=True)
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], env=self.env,
                              check=True, capture_output=True, text=True).stdout.strip()

    def gitea_ref(self, ref: str) -> str | None:
        """The sha of `ref` in the fake Gitea's bare repository (None: no such ref)."""
        bare = self.gitea.git.bare(OWNER, REPO, "main")
        done = subprocess.run(["git", "-C", str(bare), "rev-parse", "--verify", "--quiet", ref],
                              env=self.env, capture_output=True, text=True)
        return done.stdout.strip() or None
