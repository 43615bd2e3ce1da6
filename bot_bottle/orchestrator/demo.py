"""`python -m bot_bottle.orchestrator demo`: the whole lifecycle on this machine with no Gitea.

It starts the embedded fake Gitea (the one the tests use), the real orchestrator service on a
free loopback port with a temporary home, and the scripted agent in a real bwrap bottle
(`network = "egress"`, nothing allowlisted), then plays a maintainer: assign and label an
issue; the agent commits in the issue's repository and delivers its branch with `git push
origin HEAD` through the git gate, then signals done (frozen), and the service opens the PR;
comment on the PR (resumed with the comment, pushes again, frozen again), merge (destroyed). Every step is
printed with the comments it brought (each done signal gets exactly one); it ends with the
table `status --all` prints (`run_listing.status_table`), exits 0 on success and removes what
it made.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import bot_bottle
from bot_bottle.orchestrator import bootstrap, run_listing
from bot_bottle.orchestrator.config import Config
from bot_bottle.orchestrator.model import OrchestratorError, RunRecord, RunState
from bot_bottle.demo_support.fake_gitea import FakeGitea, deliver, gitea_json
from bot_bottle.demo_support.fake_gitea_payloads import close_issue, comment_event, issue_event, \
    pull_request_event
from bot_bottle.demo_support.homes import make_scripted_home

OWNER, REPO, ORG, BOT, MAINTAINER = "acme", "widgets", "agents", "claude-bot", "alice"
STEP_TIMEOUT = 90.0
DONE_COMMENT = "Agent finished with status"


class DemoFailed(OrchestratorError):
    pass


class Demo:
    def __init__(self, root: Path, environ: Mapping[str, str],
                 out: Callable[[str], None] = print) -> None:
        self.out = out
        (root / "home").mkdir()
        # the agent pushes through the git gate: its bottle needs the egress network (an empty
        # allowlist: the gate's own routes are all it reaches)
        self.home = make_scripted_home(root / "home", ["--push"], network="egress", repo=False)
        self.gitea = FakeGitea().start()
        g = self.gitea
        g.add_repo(OWNER, REPO, files={"README.md": "# widgets\n"})
        g.add_token("demo-token", BOT)
        g.add_org_member(ORG, BOT)
        g.set_permission(OWNER, REPO, MAINTAINER, "write")
        self.secret = secrets.token_hex(16)
        package_parent = str(Path(bot_bottle.__file__).resolve().parent.parent)
        self.config = Config.from_env({
            "PATH": environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
            "PYTHONPATH": package_parent, "BOT_BOTTLE_HOME": str(self.home),
            "FORGE_GITEA_URL": g.url, "FORGE_TOKEN": "demo-token", "FORGE_AGENT_ORG": ORG,
            "FORGE_WEBHOOK_SECRET": self.secret, "FORGE_WEBHOOK_PORT": "0",
            "FORGE_SIDECAR_SOCKET": str(root / "sidecar.sock"),
            "BOT_BOTTLE_CLI": f"{sys.executable} -m bot_bottle"})
        self.service = bootstrap.build(self.config)
        self.shown: set[int] = set()  # comment ids already printed

    # ---- plumbing -------------------------------------------------------------------------

    def send(self, event: str, event_type: str, payload: dict) -> None:
        status, body = deliver(f"{self.service.url}/webhook", event, event_type,
                               gitea_json(payload), self.secret)
        self.out(f"      webhook {event_type} -> {status} {body.decode(errors='replace')}")
        if status not in (200, 202):
            raise DemoFailed(f"the orchestrator refused a {event_type} webhook: {status}")

    def wait(self, what: str, done: Callable[[RunRecord], bool], issue: int) -> RunRecord:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            run = self.service.store.latest_run_for_issue(OWNER, REPO, issue)
            if run is not None and run.state is RunState.FAILED:
                raise DemoFailed(f"the run failed: {run.error}")
            if run is not None and done(run):
                return run
            time.sleep(0.1)
        raise DemoFailed(f"timed out after {STEP_TIMEOUT:.0f}s waiting for {what}")

    def comments(self, *numbers: int) -> list[tuple[int, dict]]:
        return [(n, c) for n in numbers for c in self.gitea.comments(OWNER, REPO, n)]

    def show_new_comments(self, dones: int, *numbers: int) -> None:
        """Wait until `dones` done comments are on the forge and nothing else is waiting in
        the outbox (a comment about the same exit would be queued before the done one), then
        print the comments not shown yet."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while (sum(DONE_COMMENT in c["body"] for _, c in self.comments(*numbers)) < dones
               or self.service.store.due_outbox(time.time() + 3600)):
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out after {STEP_TIMEOUT:.0f}s waiting for the comments")
            time.sleep(0.1)
        for n, c in self.comments(*numbers):
            if c["id"] not in self.shown:
                self.shown.add(c["id"])
                what = "PR" if n != numbers[0] else "issue"
                self.out(f"      comment on {what} #{n} by {c['user']}: {c['body'].splitlines()[0]}")

    # ---- the story ------------------------------------------------------------------------

    def play(self) -> None:
        g, out = self.gitea, self.out
        self.service.start()
        out(f"1. fake Gitea at {g.url}; orchestrator at {self.service.url}; home {self.home}")
        issue = g.add_issue(OWNER, REPO, "Add a greeting", "Please greet the world.",
                            user=MAINTAINER, labels=("bot-bottle:scripted",), assignees=(BOT,))
        out(f"2. {MAINTAINER} assigns {OWNER}/{REPO}#{issue} to {BOT}, label bot-bottle:scripted")
        self.send("issues", "issue_assign", issue_event(g, OWNER, REPO, issue, "assigned", MAINTAINER))
        run = self.wait("the agent to finish its first run and the PR",
                        lambda r: r.state is RunState.FROZEN and r.last_done_status == "done"
                        and r.pr_number is not None, issue)
        branch = f"bot-bottle/{run.slug}"
        pushes = [op.detail for op in self.service.store.op_log(run.id) if op.kind == "git.push"]
        if [p["result"] for p in pushes] != ["pushed"]:
            raise DemoFailed(f"the agent's push did not go through the git gate: {pushes}")
        pr = run.pr_number
        out(f"3. run {run.id} ran the scripted agent in bottle {run.slug}; it pushed {branch} "
            f"through the git gate and signalled done: {run.last_done_summary!r}; bottle frozen; "
            f"the service opened PR #{pr}")
        [opened] = [p for p in g.prs(OWNER, REPO) if p["number"] == pr]
        out(f"      PR #{pr} {opened['title']!r}: {opened['pr']['head']} -> {opened['pr']['base']}")
        self.show_new_comments(1, issue, pr)
        body = "Please also greet the moon."
        cid = g.add_comment(OWNER, REPO, pr, body, MAINTAINER)
        out(f"4. {MAINTAINER} (write access) comments on PR #{pr}: {body!r}")
        self.send("issue_comment", "pull_request_comment",
                  comment_event(g, OWNER, REPO, pr, cid, MAINTAINER))
        run = self.wait("the resumed agent to finish",
                        lambda r: r.state is RunState.FROZEN and r.last_done_summary == "run 2", issue)
        pushes = [op.detail for op in self.service.store.op_log(run.id) if op.kind == "git.push"]
        out(f"5. the bottle resumed from its snapshot with the comment as prompt, pushed again "
            f"({len(pushes)} pushes, all {'/'.join(sorted({p['result'] for p in pushes}))}), "
            f"signalled done again ({run.last_done_summary!r}) and was frozen; still "
            f"{len(g.prs(OWNER, REPO))} PR")
        self.show_new_comments(2, issue, pr)
        close_issue(g, OWNER, REPO, pr, merged=True)
        out(f"6. {MAINTAINER} merges PR #{pr}")
        self.send("pull_request", "pull_request", pull_request_event(g, OWNER, REPO, pr, "closed",
                                                                     MAINTAINER))
        run = self.wait("the bottle to be destroyed", lambda r: r.state is RunState.DESTROYED, issue)
        out(f"7. run {run.id} destroyed; bottle state removed: "
            f"{not (self.home / 'state' / (run.slug or '-')).exists()}")
        out("")
        # the table `status --all` prints, from the same function
        out(self.service.store.with_reader(
            lambda conn: run_listing.status_table(conn, include_destroyed=True)))

    def close(self) -> None:
        self.service.stop()
        self.gitea.stop()


def run_demo(environ: Mapping[str, str], *, keep: bool = False) -> int:
    if shutil.which("bwrap") is None:
        print("bot-bottle-orchestrator: error: the demo needs bubblewrap: "
              "apt-get install -y bubblewrap", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(logging.WARNING)  # the printed story is the output
    root = Path(tempfile.mkdtemp(prefix="bot-bottle-demo-"))
    demo = None
    try:
        demo = Demo(root, environ)
        demo.play()
        print("demo finished: the whole lifecycle worked")
        return 0
    except OrchestratorError as exc:
        print(f"bot-bottle-orchestrator: error: demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if demo is not None:
            demo.close()
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
