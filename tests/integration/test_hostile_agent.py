"""Issue 11's audit as tests: a fully hostile agent (the `command` provider running a script of
ours, `_hostile_agents`, in a real bwrap bottle started by the real core CLI under the real
orchestrator process) and a curious unprivileged local user (made for this module, removed
after it), each attack asserting that its effect stays inside its own run.

- file modes: the local user cannot list the home, read the store (deliveries, run tokens),
  logs, prompts, snapshots or the agent's own world-readable file, nor connect to the sidecar
  or egress socket, and finds no token in any /proc it can read; nothing under the home is
  group- or world-readable after a run (what the agent controls is behind private dirs);
- an agent printing 640 MB on stderr without a newline (over 10x the limit, more than the
  audit's 400 MB): the service's peak RSS stays under 60 MB;
- a fork bomb stops at the pid limit while webhooks keep getting 2xx and /healthz 200;
- the service is root (the suite is): the agent cannot read /etc/shadow or the service's
  secrets file, and a setuid binary it leaves gives the local user nothing;
- a close by the issue's author without write access freezes the run and says so;
- a signed comment replayed under the other comment event type does not prompt again;
- sidecar bodies nested 100k deep → 400 and the service answers on; 500 calls with 60 KB
  paths grow neither the store nor the log by more than a bound;
- `Host` not ours → 421; HTML says nosniff, a strict CSP and frame-ancestors 'none';
- a poison done (an unreadable file, a path over PATH_MAX, then done): three bystanders'
  done signals are all frozen within 10 s while the poisoned run ends failed with a comment;
- a 20 GiB sparse file (21 GiB of them: a bottle's file-size limit is the snapshot cap): the
  freeze writes no holes out and leaves no temporary file, and the run leaves `running`;
- token-less connections trickling a byte a second are cut at the sidecar's whole-request
  deadline (30 s), those over their bottle's connection cap (16) get 503 at once, and
  another run's done gets through at once.

Each TestCase class shares one orchestrator and one fake Gitea repository, and its runs start
together in setUpClass. A run whose freeze fails (the poison) gets a service of its own, so a
dispatcher it might wedge is its alone; the sparse file too. The sidecar flood, bound by its
30 s deadline, is driven on a thread from setUpModule beside the other tests.
"""

from __future__ import annotations

import http.client
import os
import shutil
import stat
import tarfile
import tempfile
import time
import unittest
from pathlib import Path

from bot_bottle.demo_support.fake_gitea_payloads import close_issue, comment_event, issue_event
from tests.integration import _hostile as H
from tests.integration import _hostile_users as U
from tests.integration._hostile_agents import command, flood_command
from tests.integration._orchestrator import SECRET, TOKEN

RSS_LIMIT_KB = 60 * 1024
FLOOD_BYTES = 640_000_000  # over 10x the limit, and over the audit's 400 MB
MAX_PIDS = 128
TRICKLERS = 100  # over the sidecar's caps of connections (16 per bottle, 64 in all)
LOCAL: U.LocalUser | None = None
TRICKLE: H.SidecarFlood | None = None


def setUpModule() -> None:
    global LOCAL, TRICKLE
    if U.ensure_bottle_user():
        unittest.addModuleCleanup(U.remove_bottle_user)
    LOCAL = U.LocalUser()
    unittest.addModuleCleanup(LOCAL.remove)
    # the sidecar's whole-request deadline is 30 s: that attack runs beside the others
    TRICKLE = H.SidecarFlood(TRICKLERS)


def secrets_file(cls) -> Path:
    """The service's secrets where the operator guide puts them (under /etc, which every
    bottle sees read-only): root's, mode 0600."""
    folder = Path(tempfile.mkdtemp(prefix="bot-bottle-hostile-", dir="/etc"))
    cls.addClassCleanup(shutil.rmtree, folder, ignore_errors=True)
    os.chmod(folder, 0o755)
    path = folder / "orchestrator.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w") as fh:
        fh.write(f"FORGE_TOKEN={TOKEN}\nFORGE_WEBHOOK_SECRET={SECRET}\n")
    return path


class OneServiceTest(unittest.TestCase):
    """Attacks whose freeze succeeds, all on one service at once."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.env_file = secrets_file(cls)
        agents = {"modes": (command("modes"), "egress"),
                  "flood": (flood_command(FLOOD_BYTES), "none"),
                  "bomb": (command("bomb", str(MAX_PIDS)), "none"),
                  "root": (command("root", str(cls.env_file)), "none"),
                  "hold": (command("hold"), "none"),
                  "prompts": (command("prompts"), "none"),
                  "abuse": (command("abuse"), "none")}
        cls.svc = H.Service(cls.addClassCleanup, "shared", agents, extra_env={
            "FORGE_MAX_CONCURRENT_RUNS": str(len(agents)), "BOT_BOTTLE_MAX_PIDS": str(MAX_PIDS)})
        # an issue without a run: comments on it are deliveries the service ignores
        cls.quiet = cls.svc.gitea.add_issue(H.OWNER, cls.svc.repo, "Quiet", "No agent here.")
        cls.issues = {name: cls.svc.launch(name, author="mallory" if name == "hold" else "alice")
                      for name in agents}

    def noise(self, text: str) -> int:
        """A signed comment delivery on the quiet issue; its HTTP status."""
        g, repo = self.svc.gitea, self.svc.repo
        cid = g.add_comment(H.OWNER, repo, self.quiet, text, "mallory")
        return self.svc.orch.deliver("issue_comment", "issue_comment",
                                     comment_event(g, H.OWNER, repo, self.quiet, cid, "mallory"))[0]

    def all_processed(self) -> None:
        """Wait until the dispatcher has handled every stored delivery."""
        self.svc.orch.wait_for(lambda: self.svc.query(
            "SELECT count(*) FROM delivery_pending")[0][0] == 0,
            timeout=30, what="every delivery processed")

    def tokens(self) -> list[str]:
        return [t for (t,) in self.svc.query("SELECT run_token FROM runs")]

    # ---- file modes and the local user
    def test_a_local_user_reads_and_reaches_nothing_of_the_service(self) -> None:
        svc, issue = self.svc, self.issues["modes"]
        svc.report(issue, "ready")
        state, ws, home = svc.state_dir(issue), svc.workspace(issue), svc.home
        egress = state / "egress.sock"
        sidecar = Path(svc.orch.env["FORGE_SIDECAR_SOCKET"])
        self.assertTrue(stat.S_ISSOCK(os.stat(egress).st_mode), "the egress gate's socket")
        self.assertTrue(stat.S_ISSOCK(os.stat(sidecar).st_mode), "the sidecar socket")
        db = Path(svc.orch.db_path)
        files = [db, *(p for p in (Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()),
                 *(p for p in state.iterdir() if p.is_file()), ws / "leak.txt", "/etc/hostname"]
        seen = LOCAL.probe(read=files, listing=[home, home / "state", state, ws,
                                                 svc.orch.env["FORGE_QUEUE_DIR"]],
                           connect=[sidecar, egress],
                           needles=[*self.tokens(), TOKEN, SECRET])
        self.assertEqual((seen["uid"], seen["gid"], seen["groups"]), (LOCAL.uid, LOCAL.gid, []))
        # the control: the probe does read what anyone may
        self.assertTrue(seen["read"].pop("/etc/hostname").startswith("READ"), seen)
        for kind in ("read", "list", "connect"):
            for path, outcome in seen[kind].items():
                with self.subTest(kind=kind, path=path):
                    self.assertEqual(outcome, "EACCES")
        self.assertGreater(seen["proc_scanned"], 0)
        self.assertEqual(seen["proc_found"], [], "a token or secret in a readable /proc file")

        svc.release(issue)
        svc.wait_run(issue, ("frozen",), last_done_status="done")
        seen = LOCAL.probe(read=[svc.snapshot(issue), state / "agent.log"],
                           listing=[svc.snapshot(issue).parent])
        for kind in ("read", "list"):
            for path, outcome in seen[kind].items():
                with self.subTest(kind=kind, path=path):
                    self.assertEqual(outcome, "EACCES")
        exposed = U.exposed(home)
        if exposed:
            self.fail("group- or world-readable under the home:\n" + "\n".join(exposed))

    # ---- output flood
    def test_an_output_flood_leaves_the_service_under_60_mb(self) -> None:
        svc, issue = self.svc, self.issues["flood"]

        def exit_comment():
            return next((c for c in svc.comments(issue) if "without signalling done" in c), None)
        svc.orch.wait_for(exit_comment, timeout=120, what="the flood's exit comment")
        memory = svc.memory_kb()
        self.assertLess(memory["VmHWM"], RSS_LIMIT_KB, f"the service peaked at {memory} kB")
        self.assertLess(memory["VmRSS"], RSS_LIMIT_KB, memory)

    # ---- fork bomb
    def test_a_fork_bomb_stops_at_the_limit_while_webhooks_are_answered(self) -> None:
        svc, issue = self.svc, self.issues["bomb"]
        peak = svc.report(issue, "peak", timeout=90)
        # the bomb holds every child alive now: the service still answers
        answers = [(self.noise(f"noise {i}"), svc.orch.healthz()) for i in range(20)]
        self.assertTrue(all(200 <= w < 300 and h == 200 for w, h in answers), answers)
        self.assertEqual(peak["error"], "EAGAIN", peak)
        self.assertLessEqual(peak["forked"], MAX_PIDS, peak)
        self.assertGreaterEqual(peak["forked"], MAX_PIDS - 8, peak)  # bwrap & co. use a few
        svc.release(issue)
        svc.wait_run(issue, ("frozen",), last_done_status="done")

    # ---- root
    def test_a_root_service_gives_the_agent_no_root(self) -> None:
        svc, issue = self.svc, self.issues["root"]
        seen = svc.report(issue, "result")
        self.assertEqual(seen["shadow"], {"error": "EACCES"}, seen)
        self.assertEqual(seen["env_file"], {"error": "EACCES"}, seen)
        suid = svc.workspace(issue) / "suid-id"
        st = os.lstat(suid)
        self.assertFalse(st.st_mode & (stat.S_ISUID | stat.S_ISGID) and st.st_uid == 0,
                         f"the agent left a setuid-root binary: {stat.filemode(st.st_mode)} "
                         f"uid {st.st_uid}")
        self.assertEqual(LOCAL.probe(execute=[suid])["exec"], {str(suid): "EACCES"})
        svc.wait_run(issue, ("frozen",), last_done_status="done")
        with tarfile.open(svc.snapshot(issue)) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("workspace/suid-id"))
        self.assertEqual(member.mode & (stat.S_ISUID | stat.S_ISGID), 0, oct(member.mode))

    # ---- closing
    def test_a_close_without_write_access_freezes_and_says_so(self) -> None:
        svc, issue = self.svc, self.issues["hold"]
        svc.report(issue, "ready")
        close_issue(svc.gitea, H.OWNER, svc.repo, issue)
        status, body = svc.orch.deliver("issues", "issues", issue_event(
            svc.gitea, H.OWNER, svc.repo, issue, "closed", "mallory"))
        self.assertEqual(status, 202, body)
        svc.wait_run(issue, ("frozen",))
        svc.orch.wait_for(lambda: any("lacks write access" in c for c in svc.comments(issue)),
                          timeout=30, what="the comment on the kept run")
        self.assertTrue(svc.snapshot(issue).is_file(), "the run's work is kept")
        self.assertTrue(svc.workspace(issue).is_dir())

    # ---- replayed comments
    def test_a_comment_replayed_under_the_other_event_type_prompts_once(self) -> None:
        svc, issue, g = self.svc, self.issues["prompts"], self.svc.gitea
        svc.wait_run(issue, ("frozen",), last_done_summary="prompt 1")
        for n, (sent_as, replayed_as) in enumerate((("issue_comment", "pull_request_comment"),
                                                    ("pull_request_comment", "issue_comment")),
                                                   start=2):
            cid = g.add_comment(H.OWNER, svc.repo, issue, f"Please do step {n}.", "alice")
            body = comment_event(g, H.OWNER, svc.repo, issue, cid, "alice")
            self.assertEqual(svc.orch.deliver("issue_comment", sent_as, body)[0], 202)
            svc.wait_run(issue, ("frozen",), last_done_summary=f"prompt {n}")
            status, answer = svc.orch.deliver("issue_comment", replayed_as, body,
                                              delivery_id=f"replay-{cid}")
            self.assertIn(status, (200, 202), answer)
            self.all_processed()
            run = svc.run(issue)
            self.assertEqual((run["state"], run["last_done_summary"]), ("frozen", f"prompt {n}"),
                             f"the replay under {replayed_as} prompted the run again")
        prompts = (svc.workspace(issue) / "prompts.log").read_text().splitlines()
        self.assertEqual(len(prompts), 3, prompts)

    # ---- sidecar bodies and paths
    def test_deep_json_and_long_paths_on_the_sidecar_stay_bounded(self) -> None:
        svc, issue = self.svc, self.issues["abuse"]
        svc.report(issue, "ready")
        run_id = svc.run(issue)["id"]
        store, log = svc.store_bytes(), svc.orch.log_path.stat().st_size
        svc.release(issue)
        seen = svc.report(issue, "result", timeout=120)
        svc.wait_run(issue, ("frozen",), last_done_status="done")
        self.assertEqual(seen["deep"], 400, seen)
        self.assertEqual((seen["alive_after_deep"], seen["alive_after_paths"]), (200, 200), seen)
        self.assertEqual(sum(seen["long_paths"].values()), 500, seen)
        self.assertTrue(all(a.isdigit() and 400 <= int(a) < 500 for a in seen["long_paths"]), seen)
        grown = {"store": svc.store_bytes() - store,
                 "log": svc.orch.log_path.stat().st_size - log,
                 "op_log": svc.query("SELECT coalesce(sum(length(detail) + length(kind)), 0) "
                                     "FROM op_log WHERE run_id = ?", run_id)[0][0]}
        # 500 x 60 KB is 30 MB: each may keep a little of every call, none a path
        self.assertLess(grown["store"], 4 << 20, grown)
        self.assertLess(grown["log"], 1 << 20, grown)
        self.assertLess(grown["op_log"], 256 << 10, grown)

    # ---- HTTP
    def get(self, path: str, host: str | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.svc.orch.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", path, headers={"Host": host} if host else {})
        response = conn.getresponse()
        response.read()
        return response

    def test_a_foreign_host_is_refused_and_pages_forbid_framing_and_sniffing(self) -> None:
        for path in ("/", "/runs", "/healthz"):
            with self.subTest(path=path):
                self.assertEqual(self.get(path, "rebound.example").status, 421)
                self.assertEqual(self.get(path, f"rebound.example:{self.svc.orch.port}").status, 421)
        run_id = self.svc.run(self.issues["modes"])["id"]
        for path in ("/", f"/run/{run_id}"):
            with self.subTest(path=path):
                page = self.get(path)
                self.assertEqual(page.status, 200)
                self.assertIn("text/html", page.getheader("Content-Type"))
                self.assertEqual(page.getheader("X-Content-Type-Options"), "nosniff")
                csp = [d.strip().split() for d in page.getheader("Content-Security-Policy").split(";")]
                policy = {d[0]: d[1:] for d in csp if d}
                self.assertEqual(policy.get("default-src"), ["'none'"], policy)
                self.assertEqual(policy.get("frame-ancestors"), ["'none'"], policy)
                for sources in policy.values():
                    self.assertFalse({"'unsafe-inline'", "'unsafe-eval'", "*", "data:"} & set(sources),
                                     policy)
        self.assertEqual(self.get("/runs").getheader("X-Content-Type-Options"), "nosniff")


class PoisonDoneTest(unittest.TestCase):
    """One run poisons its own freeze; three others must not notice."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.svc = H.Service(cls.addClassCleanup, "poison", {"poison": (command("poison"), "none"),
                                            "bystander": (command("bystander"), "none")},
                            # three attempts, as by default, without the default's 35 s of waits
                            extra_env={"FORGE_MAX_CONCURRENT_RUNS": "4",
                                       "BOT_BOTTLE_BOTTLE_RETRY": "0.5,1"})
        cls.poisoned = cls.svc.launch("poison")
        cls.bystanders = [cls.svc.launch("bystander") for _ in range(3)]

    def test_three_bystanders_are_frozen_within_10_s_while_the_poisoned_run_fails(self) -> None:
        svc = self.svc
        for issue in (self.poisoned, *self.bystanders):
            svc.report(issue, "ready", timeout=90)
        svc.release(self.poisoned)
        svc.report(self.poisoned, "poisoned")
        run_id = svc.run(self.poisoned)["id"]
        svc.orch.wait_for(lambda: svc.query("SELECT count(*) FROM done_events WHERE run_id = ?",
                                            run_id)[0][0], timeout=30, what="the poisoned done")
        for issue in self.bystanders:
            svc.release(issue)
        signalled = time.monotonic()
        for issue in self.bystanders:
            left = max(0.1, 10 - (time.monotonic() - signalled))
            svc.wait_run(issue, ("frozen",), timeout=left, last_done_status="done")
        self.assertLess(time.monotonic() - signalled, 10)
        svc.wait_run(self.poisoned, ("failed",), timeout=120)
        svc.orch.wait_for(lambda: svc.comments(self.poisoned), timeout=30,
                          what="a comment on the poisoned run")


class SparseFileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.svc = H.Service(cls.addClassCleanup, "sparse", {"sparse": (command("sparse"), "none")})

    def test_a_20_gib_sparse_file_fills_no_disk_and_leaves_no_temporary_file(self) -> None:
        svc = self.svc
        free = shutil.disk_usage(svc.home).free
        issue = svc.launch("sparse")
        seen = svc.report(issue, "result", timeout=90)

        def ended():
            # checked on every poll, so a freeze writing the holes out is stopped early
            # (the cleanup kills it) instead of filling the disk
            written = free - shutil.disk_usage(svc.home).free
            self.assertLess(written, 2 << 30, "the freeze writes the sparse file's holes out")
            return svc.run(issue)["state"] not in H.WORKING
        svc.orch.wait_for(ended, timeout=120, what="the sparse run to leave the working states")
        # the file-size limit of a bottle is the snapshot cap (10 GiB by default): a single
        # 20 GiB file is refused there, and the agent makes 21 GiB of 7 GiB files instead
        self.assertIn(seen["single"], ("ok", "EFBIG"), seen)
        self.assertGreaterEqual(seen["apparent"], 20 << 30, seen)
        self.assertLess(seen["used"], 1 << 20, seen)
        self.assertEqual(list(svc.home.rglob("*.tmp")), [])
        run = svc.run(issue)
        if run["state"] == "frozen":  # stored sparsely
            self.assertLess(svc.snapshot(issue).stat().st_blocks * 512, 64 << 20)
        else:  # refused: the run failed and the issue says so
            self.assertEqual(run["state"], "failed", run)
            svc.orch.wait_for(lambda: svc.comments(issue), timeout=30, what="the failure comment")


class SidecarTrickleTest(unittest.TestCase):
    def test_trickling_connections_are_cut_and_capped_while_a_done_gets_through(self) -> None:
        outcome = TRICKLE.outcome(timeout=180)
        # the flood fills only its own bottle's share (16): the other run's done gets through
        # at once, not once the 30 s deadline has cut the trickling connections
        self.assertLess(outcome["legit_seconds"], 15, outcome)
        conns = outcome["result"]["conns"]
        refused = [c for c in conns if c["answer"].startswith("HTTP/1.1 503")]
        served = [c for c in conns if c not in refused]
        self.assertTrue(refused, f"no connection over the cap was refused: {outcome['saturated']}")
        self.assertLessEqual(len(served), 16, "one bottle held more than its share")
        self.assertTrue(served, "every connection was refused")
        for c in served:
            self.assertIsNotNone(c["closed"], f"a trickling connection was never cut: {c}")
            self.assertLessEqual(c["closed"] - c["opened"], 40, c)
            # a byte a second all along: the whole-request deadline cut it, not a read timeout
            self.assertGreaterEqual(c["sent"], 10, c)
        for c in refused:
            self.assertLessEqual(c["closed"] - c["opened"], 5, c)


if __name__ == "__main__":
    unittest.main()
