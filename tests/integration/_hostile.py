"""`Service`, the fixture of tests/integration/test_hostile_agent.py: one real orchestrator
(`python -m bot_bottle.orchestrator run` with the real core CLI and bwrap) and one fake Gitea
repository `OWNER/<repo>`, with hostile agents installed (`_hostile_agents`), whose runs it
launches, watches (their state, the reports agents write in their workspaces, the store read
only) and releases (the agents' fifos).

The orchestrator's own output is kept out of the home (the harness would write it there with
the test's umask; under systemd it goes to the journal); the orchestrator starts with the
common login umask 022 (not the unit's 0077: the home must be private whatever the umask).
Cleanup kills it and its bottles, then removes the bottles' cgroups once empty.
`SidecarFlood` is the one attack that runs on a thread beside the test methods.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import types
import unittest
from pathlib import Path
from typing import Callable

from bot_bottle.backend import limits
from bot_bottle.demo_support.fake_gitea_payloads import issue_event
from tests.integration._hostile_agents import command
from tests.integration._orchestrator import (AGENT_USER, REAL_CLI, OrchestratorProcess,
                                             make_forge)

OWNER = "hostile"
WORKING = ("queued", "starting", "running", "resuming")
BOTTLES = {"none": 'network = "none"\ntimeout = 120\n',
           "egress": 'network = "egress"\ntimeout = 120\n'}


class Service:
    """One orchestrator, its home and a fake Gitea repository `OWNER/repo`."""

    def __init__(self, add_cleanup: Callable[..., None], repo: str,
                 agents: dict[str, tuple[list[str], str]], *,
                 extra_env: dict[str, str] | None = None) -> None:
        """`add_cleanup`: a class's `addClassCleanup`, or `unittest.addModuleCleanup`."""
        self.repo = repo
        root = Path(tempfile.mkdtemp(prefix=f"bb-hostile-{repo}-"))
        add_cleanup(shutil.rmtree, root, ignore_errors=True)
        self.home = root / "home"
        self._write_home(agents)
        self.gitea = make_forge(types.SimpleNamespace(addCleanup=add_cleanup),
                                owner=OWNER, repo=repo)
        self.gitea.add_commit(OWNER, repo, {"README.md": "hostile\n"})
        self.gitea.set_permission(OWNER, repo, "mallory", "read")
        self.orch = OrchestratorProcess(self.home, self.gitea.url, cli=REAL_CLI,
                                        extra_env={"FORGE_OUTBOX_BACKOFF": "0.5",
                                                   **(extra_env or {})})
        (root / "logs").mkdir(mode=0o700)
        self.orch.log_path = root / "logs" / "orchestrator.log"
        add_cleanup(self.cleanup)
        umask = os.umask(0o022)
        try:
            self.orch.start()
        finally:
            os.umask(umask)

    def _write_home(self, agents: dict[str, tuple[list[str], str]]) -> None:
        """The operator's files, private (they are ours, not the service's)."""
        for d in (self.home, self.home / "agents", self.home / "bottles"):
            d.mkdir(mode=0o700)
        files = {f"bottles/{name}.toml": text for name, text in BOTTLES.items()}
        for name, (argv, bottle) in agents.items():
            files[f"agents/{name}.toml"] = (f'provider = "command"\nbottles = ["{bottle}"]\n'
                                            f"command = {json.dumps(argv)}\n")
        for rel, text in files.items():
            fd = os.open(self.home / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w") as fh:
                fh.write(text)

    def cleanup(self) -> None:
        self.orch.cleanup()
        # the bottles' cgroups (`bot-bottle-<slug>-<pid of the CLI>`): the CLIs were killed
        # before they could remove them; each goes once its last process has
        prefix = f"bot-bottle-{OWNER}-{self.repo}-"
        for base in (limits.CGROUP_ROOT / "pids", limits.CGROUP_ROOT):
            for group in base.glob(prefix + "*"):
                limits.remove_cgroup(group, wait=10.0)

    # ---- runs
    def launch(self, agent: str, *, author: str = "alice") -> int:
        """An issue by `author`, labelled for `agent` and assigned by alice: the run starts."""
        g = self.gitea
        issue = g.add_issue(OWNER, self.repo, f"Hostile {agent}", "Do your worst.", user=author,
                            labels=(f"bot-bottle:{agent}",), assignees=(AGENT_USER,))
        status, body = self.orch.deliver("issues", "issue_assign",
                                         issue_event(g, OWNER, self.repo, issue, "assigned",
                                                     "alice"))
        if status != 202:
            raise AssertionError(f"launching {agent}: {status} {body!r}")
        return issue

    def run(self, issue: int) -> dict:
        return next((r for r in self.orch.runs(include_destroyed=True)
                     if r["issue_number"] == issue), {"state": None, "slug": None})

    def wait_run(self, issue: int, states: tuple[str, ...], *, timeout: float = 60.0,
                 **fields) -> dict:
        def ready():
            run = self.run(issue)
            return run if run["state"] in states and all(run.get(k) == v
                                                         for k, v in fields.items()) else None
        return self.orch.wait_for(ready, timeout=timeout,
                                  what=f"issue {issue} in {states} with {fields}")

    def slug(self, issue: int, timeout: float = 60.0) -> str:
        return self.orch.wait_for(lambda: self.run(issue)["slug"], timeout=timeout,
                                  what=f"the bottle of issue {issue}")

    def state_dir(self, issue: int) -> Path:
        return self.home / "state" / self.slug(issue)

    def workspace(self, issue: int) -> Path:
        return self.state_dir(issue) / "bottle" / "workspace"

    def snapshot(self, issue: int) -> Path:
        return self.state_dir(issue) / "snapshots" / "latest.tar"

    def report(self, issue: int, name: str, timeout: float = 60.0) -> dict:
        """The agent's `/workspace/<name>.json`, once it is there."""
        path = self.workspace(issue) / f"{name}.json"

        def read():
            try:
                return (json.loads(path.read_text()),)  # a tuple: an empty report is there too
            except FileNotFoundError:
                return None
        return self.orch.wait_for(read, timeout=timeout, what=f"{path.name} of issue {issue}")[0]

    def release(self, issue: int, name: str = "release", timeout: float = 60.0) -> None:
        """Open the writing end of the agent's fifo (once it waits on it): the agent goes on."""
        path = self.workspace(issue) / name

        def opened():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENXIO):  # not made, or no reader yet
                    return False
                raise
            os.close(fd)
            return True
        self.orch.wait_for(opened, timeout=timeout, what=f"the agent of issue {issue} waiting")

    def comments(self, issue: int) -> list[str]:
        return [c["body"] for c in self.gitea.comments(OWNER, self.repo, issue)]

    # ---- the store, read-only, as root
    def query(self, sql: str, *args) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.orch.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def store_bytes(self) -> int:
        """The store on disk: the database and its write-ahead log."""
        return sum(os.stat(p).st_size for p in (self.orch.db_path, self.orch.db_path + "-wal")
                   if os.path.exists(p))

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (the peak) of the orchestrator process, in kB."""
        found = {}
        for line in Path(f"/proc/{self.orch.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found


class SidecarFlood:
    """The sidecar flood on a service of its own, driven on a thread (made in module set-up:
    its 30 s deadline would otherwise add up with every other test): an agent opens
    `connections` token-less connections and trickles a byte a second on each; once they
    fill the sidecar, a legitimate run is released to signal done. `outcome(timeout)` is
    what happened: the trickler's report, when it saw the sidecar full, how long the
    legitimate done took to freeze its run."""

    def __init__(self, connections: int) -> None:
        self._thread: threading.Thread | None = None
        unittest.addModuleCleanup(self._join)  # cleanups run last first: after the service's
        self.svc = Service(unittest.addModuleCleanup, "trickle", {
            "trickle": (command("trickle", str(connections)), "none"),
            "legit": (command("legit"), "none")})
        self.trickler = self.svc.launch("trickle")
        self.legit = self.svc.launch("legit")
        self._outcome: dict = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drive, name="hostile-trickle", daemon=True)
        self._thread.start()

    def _join(self) -> None:
        if self._thread is not None:  # its waits fail at once once the service is gone
            self._thread.join(30)

    def _drive(self) -> None:
        svc = self.svc
        try:
            svc.report(self.trickler, "ready", timeout=90)
            svc.report(self.legit, "ready", timeout=90)
            svc.release(self.trickler)
            self._outcome["saturated"] = svc.report(self.trickler, "saturated", timeout=30)
            svc.release(self.legit)
            released = time.monotonic()
            svc.wait_run(self.legit, ("frozen",), timeout=60, last_done_status="done")
            self._outcome["legit_seconds"] = time.monotonic() - released
            self._outcome["result"] = svc.report(self.trickler, "result", timeout=90)
        except BaseException as exc:  # re-raised in the test
            self._error = exc

    def outcome(self, timeout: float) -> dict:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the sidecar flood did not end within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._outcome
