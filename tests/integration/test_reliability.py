"""Reliability suite: `python -m bot_bottle.orchestrator run` as a real process on loopback,
with the fake Gitea and the fake core CLI (no bwrap), under crashes, hostile input and faults.

- kill -9 during bursts of signed deliveries (10 cycles on one DB): every acknowledged
  delivery is stored and processed, none twice, and each launch trigger gives one run;
- a seeded stdlib fuzzer of bodies, headers, framing and routes: never a 5xx other than 503,
  the process stays up and leaks no threads; a non-ASCII signature header is a plain 401
  with no traceback in the log;
- slow-loris clients and oversized bodies do not stop the server answering others, and the
  slow ones are cut at their deadline (threads reclaimed);
- a DB that cannot be written (file size limit of the process: a full disk) or is locked by
  another writer gives 503, never a 2xx, and the refused delivery is accepted once it can be;
- Gitea answering 500, hanging (past `FORGE_GITEA_TIMEOUT`) and dropping connections while
  the orchestrator comments: the comment arrives once it recovers, exactly once;
- the same trigger delivered twice, redelivered with a new id, replayed out of order and
  raced from several threads: exactly one run;
- issue text that cannot go into an argv or SQLite as is (NUL, lone surrogate, 200 KB) never
  leaves a run stuck in `starting`;
- kill -9 while a run is `starting` (its CLI held at a gate): after the restart the issue has
  exactly one started bottle, never a failed run, whether the CLI died with the service or
  made its bottle while the service was down.

Bounded: the whole file runs in well under 90 s on 2 cores. `CI` set → 5,000 fuzz cases.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import http.client
import json
import os
import random
import select
import shlex
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import unittest
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bot_bottle.orchestrator.targeting import MARKER
from tests.support import fake_core_cli
from bot_bottle.demo_support.fake_gitea import gitea_json
from bot_bottle.demo_support.fake_gitea_payloads import comment_event, issue_event
from tests.integration import _gated_cli
from tests.integration import _orchestrator as H
from tests.integration._in_flight import start_delivery

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None

OWNER, REPO = "acme", "widgets"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "gitea"  # Gitea's own deliveries
FUZZ_CASES = 5000 if os.environ.get("CI") else 1000
SAMPLE_HEADERS = {  # file stem -> (X-Gitea-Event, X-Gitea-Event-Type) where they differ
    "issues-assigned": ("issues", "issue_assign"), "issues-unassigned": ("issues", "issue_assign"),
    "issues-labeled": ("issues", "issue_label"), "issues-label-cleared": ("issues", "issue_label"),
    "issue_comment-created-on-pull": ("issue_comment", "pull_request_comment"),
    "pull_request-assigned": ("pull_request", "pull_request_assign"),
    "pull_request-labeled": ("pull_request", "pull_request_label"),
    "pull_request-synchronized": ("pull_request", "pull_request_sync"),
    "pull_request-review-comment": ("pull_request_comment", "pull_request_review_comment"),
}
HANDLED = ("issues", "issue_assign", "issue_label", "issue_comment", "pull_request",
           "pull_request_comment")


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line")


class _Base(unittest.TestCase):
    fake_cli_sleep = 0.05

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = H.make_fake_home(Path(tmp.name), fake_cli_sleep=self.fake_cli_sleep)
        self.gitea = H.make_forge(self, owner=OWNER, repo=REPO)

    def orchestrator(self, gitea_url: str | None = None, **env) -> H.OrchestratorProcess:
        orch = H.OrchestratorProcess(self.home, gitea_url or self.gitea.url, cli=H.FAKE_CLI,
                                     extra_env={k: str(v) for k, v in env.items()})
        self.addCleanup(orch.cleanup)
        return orch

    def launch_issue(self, title: str) -> int:
        return self.gitea.add_issue(OWNER, REPO, title, "body", user="alice",
                                    labels=("bot-bottle:scripted",), assignees=(H.AGENT_USER,))

    def deliveries(self, db_path: str) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            # a delivery's processed state is beside its row (store schema v6)
            return conn.execute("SELECT d.delivery_id, o.processed_at, o.outcome "
                                "FROM deliveries d LEFT JOIN delivery_outcomes o "
                                "ON o.seq = d.seq ORDER BY d.seq").fetchall()
        finally:
            conn.close()

    def wait_processed(self, orch: H.OrchestratorProcess, ids, timeout: float = 30.0) -> dict:
        ids = set(ids)

        def done():
            rows = {r["delivery_id"]: r for r in self.deliveries(orch.db_path)}
            missing = [i for i in ids if i not in rows or rows[i]["processed_at"] is None]
            return rows if not missing else None
        return orch.wait_for(done, timeout, interval=0.1, what="deliveries processed")

    def starts_per_slug(self) -> collections.Counter:
        """Bottles made per slug (a start the fake refused, say for a slug in use, made none)."""
        return collections.Counter(e["slug"] for e in fake_core_cli.read_log(self.home)
                                   if e["cmd"] == "start" and e.get("ok"))


# ---------------------------------------------------------------------------------------
class KillNineTest(_Base):
    CYCLES = 10
    THREADS = 4
    PER_THREAD = 10

    def test_kill_9_mid_burst_loses_no_acknowledged_delivery_and_repeats_none(self) -> None:
        g, rng = self.gitea, random.Random(9)
        chatter = g.add_issue(OWNER, REPO, "chatter", "no run here", user="alice")
        orch = self.orchestrator()
        acked: dict[str, str] = {}  # delivery id -> event type
        launch_of: dict[str, int] = {}  # delivery id -> issue number, for launch triggers
        sent_launches: set[int] = set()
        lock = threading.Lock()
        for cycle in range(self.CYCLES):
            orch.start()
            batches = []
            for t in range(self.THREADS):
                batch = []
                for i in range(self.PER_THREAD):
                    did = str(uuid.UUID(int=rng.getrandbits(128)))
                    if i % 4 == 0:
                        n = self.launch_issue(f"cycle {cycle} thread {t} item {i}")
                        body = gitea_json(issue_event(g, OWNER, REPO, n, "assigned", "alice"))
                        batch.append((did, "issues", "issue_assign", body, n))
                        sent_launches.add(n)
                    else:
                        cid = g.add_comment(OWNER, REPO, chatter, f"c{cycle}-{t}-{i}", "alice")
                        body = gitea_json(comment_event(g, OWNER, REPO, chatter, cid, "alice"))
                        batch.append((did, "issue_comment", "issue_comment", body, None))
                batches.append(batch)
            kill_after = rng.randint(1, self.THREADS * self.PER_THREAD * 2 // 3)
            enough = threading.Event()

            def send(batch):
                for did, event, etype, body, issue in batch:
                    try:
                        status, _ = orch.deliver(event, etype, body, delivery_id=did, timeout=5)
                    except (OSError, http.client.HTTPException):
                        continue  # killed: no answer, so Gitea would redeliver; not acked
                    if 200 <= status < 300:
                        with lock:
                            acked[did] = etype
                            if issue is not None:
                                launch_of[did] = issue
                            if len(acked) >= cycle_base + kill_after:
                                enough.set()
            with lock:
                cycle_base = len(acked)
            threads = [threading.Thread(target=send, args=(b,)) for b in batches]
            for th in threads:
                th.start()
            enough.wait(5)
            orch.kill()
            for th in threads:
                th.join(30)
            self.assertEqual(orch.returncode, -9)
        orch.start()
        rows = self.wait_processed(orch, acked)
        # stored but unacknowledged ones (killed before the answer) are processed as well
        orch.wait_for(lambda: all(r["processed_at"] for r in self.deliveries(orch.db_path)),
                      what="every stored delivery processed")
        ids = [r["delivery_id"] for r in self.deliveries(orch.db_path)]
        self.assertEqual(len(ids), len(set(ids)), "a delivery id is stored twice")
        self.assertTrue(set(acked) <= set(rows))
        self.assertGreater(len(acked), self.CYCLES)  # the bursts really ran
        self.assertLess(len(acked), self.CYCLES * self.THREADS * self.PER_THREAD,
                        "no kill landed mid-burst")
        # processed exactly once: one run per launch trigger, never a second bottle start
        runs = orch.runs(include_destroyed=True)
        per_issue = collections.Counter(r["issue_number"] for r in runs
                                        if (r["owner"], r["repo"]) == (OWNER, REPO))
        for did, issue in launch_of.items():
            self.assertEqual(per_issue[issue], 1, f"issue {issue} (delivery {did}) has "
                             f"{per_issue[issue]} runs")
        self.assertTrue(set(per_issue) <= sent_launches, "a run for an issue never triggered")
        self.assertEqual(max(per_issue.values()), 1)
        doubled = {s: c for s, c in self.starts_per_slug().items() if c > 1}
        self.assertEqual(doubled, {}, "a bottle was started twice for one run")
        self.assertEqual(orch.stop(), 0, orch.log())


# ---------------------------------------------------------------------------------------
class KillDuringLaunchTest(_Base):
    """kill -9 of the service while a run is `starting`: the CLI waits at a gate
    (`_gated_cli`) until the test lets it go, so the kill lands before any bottle exists."""

    def gated(self) -> H.OrchestratorProcess:
        cli = (f"{shlex.quote(sys.executable)} -m tests.integration._gated_cli "
               "tests.support.fake_core_cli")
        orch = H.OrchestratorProcess(self.home, self.gitea.url, cli=cli)
        self.addCleanup(orch.cleanup)
        return orch

    def kill_mid_launch(self) -> tuple[H.OrchestratorProcess, int, int]:
        """Launch one issue, wait until its start waits at the gate, kill -9 the service."""
        orch = self.gated().start()
        n = self.launch_issue("launched as the service dies")
        self.assertEqual(orch.deliver("issues", "issue_assign",
                                      issue_event(self.gitea, OWNER, REPO, n, "assigned",
                                                  "alice"))[0], 202)
        [cli_pid] = orch.wait_for(lambda: _gated_cli.waiting_pids(self.home),
                                  what="the start to wait at the gate")
        self.assertEqual([r["state"] for r in orch.runs()], ["starting"])
        orch.kill()
        return orch, n, cli_pid

    def settled_run(self, orch: H.OrchestratorProcess) -> dict:
        """The one run once it is frozen and every comment about it is sent."""
        def settled():
            runs = orch.runs(include_destroyed=True)
            if runs and runs[0]["state"] == "failed":
                self.fail(f"the run failed: {runs[0]['error']}\n{orch.log()}")
            return (len(runs) == 1 and runs[0]["state"] == "frozen"
                    and not self.unsent_comments(orch.db_path) and runs[0])
        return orch.wait_for(settled, timeout=30, what="the run frozen, its comments sent")

    def unsent_comments(self, db_path: str) -> int:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND "
                                "dropped_at IS NULL").fetchone()[0]
        finally:
            conn.close()

    def test_a_launch_killed_before_its_bottle_existed_starts_exactly_once_after_restart(self) -> None:
        orch, n, cli_pid = self.kill_mid_launch()
        os.kill(cli_pid, signal.SIGKILL)  # the CLI died with the service (its cgroup, say)
        H.wait_for(lambda: _gated_cli.ended(cli_pid), what="the gated CLI gone")
        _gated_cli.open_gate(self.home)
        orch.start()
        run = self.settled_run(orch)
        self.assertEqual(run["slug"], f"acme-widgets-{n}")
        self.assertEqual(self.starts_per_slug(), {run["slug"]: 1})
        moves = [op["detail"]["to"] for op in orch.provenance(run["id"])["ops"]
                 if op["kind"] == "transition"]
        self.assertEqual(moves, ["queued", "starting", "running", "frozen"])
        comments = [c["body"] for c in self.gitea.comments(OWNER, REPO, n)]
        self.assertEqual([b for b in comments if "fail" in b.lower()], [])
        self.assertEqual(orch.stop(), 0, orch.log())

    def test_a_launch_whose_cli_outlived_the_killed_service_keeps_its_one_bottle(self) -> None:
        orch, n, cli_pid = self.kill_mid_launch()
        _gated_cli.open_gate(self.home)  # the orphaned CLI makes its bottle while we are down
        H.wait_for(lambda: self.starts_per_slug(), what="the orphaned start's bottle")
        orch.start()
        run = self.settled_run(orch)
        self.assertEqual(self.starts_per_slug(), {run["slug"]: 1})
        self.assertEqual(run["last_done_status"], "interrupted")
        comments = [c["body"] for c in self.gitea.comments(OWNER, REPO, n)]
        self.assertTrue(any("restarted while the agent worked" in b for b in comments), comments)
        self.assertEqual([b for b in comments if "fail" in b.lower()], [])
        self.assertEqual(orch.stop(), 0, orch.log())


# ---------------------------------------------------------------------------------------
def _seed_bodies(g) -> list[tuple[str, str, bytes]]:
    """(X-Gitea-Event, X-Gitea-Event-Type, body): the real samples (tests/data/gitea) and
    payloads built by the fake."""
    seeds = []
    for path in sorted(SAMPLES.glob("*.json")):
        if path.name.startswith("swagger"):
            continue
        event, etype = SAMPLE_HEADERS.get(path.stem, (path.stem.split("-", 1)[0],) * 2)
        seeds.append((event, etype, path.read_bytes()))
    assert len(seeds) == 19, f"Gitea samples missing from {SAMPLES}"
    n = g.add_issue(OWNER, REPO, "fuzz <target> & co", "body", user="alice", labels=("bug",),
                    assignees=("bob",))
    cid = g.add_comment(OWNER, REPO, n, "hello", "alice")
    seeds.append(("issues", "issues", gitea_json(issue_event(g, OWNER, REPO, n, "opened", "alice"))))
    seeds.append(("issues", "issue_assign",
                  gitea_json(issue_event(g, OWNER, REPO, n, "assigned", "alice"))))
    seeds.append(("issue_comment", "issue_comment",
                  gitea_json(comment_event(g, OWNER, REPO, n, cid, "alice"))))
    return seeds


class _Fuzzer:
    """Makes one request from a seeded `random.Random`: (mode, method, path, headers, body)."""

    def __init__(self, rng: random.Random, seeds, secret: str) -> None:
        self.rng, self.seeds, self.secret = rng, seeds, secret

    def text(self, n: int | None = None) -> str:
        r = self.rng
        n = r.randint(0, 40) if n is None else n
        alphabet = r.choice(["abc-_:/#", "\x00\x01\x7f\"\\{}[]", "äöü€😀\u202e", "\ud800\udfff"])
        return "".join(r.choice(alphabet + "xyz019 ") for _ in range(n))

    def value(self, depth: int = 0):
        r = self.rng
        kind = r.randrange(10 if depth < 3 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([True, False])
        if kind == 2:
            return r.choice([0, -1, 1, 42, 2**63, -(2**63) - 1, 10**40])
        if kind == 3:
            return r.choice([0.5, -1e308, 1e-300, float("inf") if r.random() < 0.1 else 3.0])
        if kind in (4, 5):
            return self.text()
        if kind in (6, 7):
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.text(8): self.value(depth + 1) for _ in range(r.randint(0, 4))}

    def mutate_json(self, obj):
        r = self.rng
        for _ in range(r.randint(1, 6)):
            node, path = obj, []
            while isinstance(node, (dict, list)) and node and r.random() < 0.7:
                key = r.choice(list(node)) if isinstance(node, dict) else r.randrange(len(node))
                path.append((node, key))
                node = node[key]
            if not path:
                if isinstance(obj, dict):
                    obj[self.text(6)] = self.value()
                continue
            parent, key = path[-1]
            op = r.randrange(4)
            if op == 0 and isinstance(parent, dict):
                del parent[key]
            elif op == 1:
                parent[key] = self.value()
            elif op == 2:
                parent[key] = [parent[key]] if r.random() < 0.5 else {"x": parent[key]}
            else:
                parent[key] = r.choice([None, "", [], {}, 0, "null", -1, "closed", "created",
                                        "bot-bottle:nosuch", [{"name": None}], {"login": 7}])
        if r.random() < 0.03:
            deep = {}
            cur = deep
            for _ in range(r.choice([50, 3000])):
                cur["a"] = {}
                cur = cur["a"]
            obj = obj if not isinstance(obj, dict) else {**obj, "deep": deep}
        return obj

    def body(self) -> tuple[str, str, bytes]:
        r = self.rng
        event, etype, raw = r.choice(self.seeds)
        roll = r.random()
        if roll < 0.25:
            return event, etype, raw
        if roll < 0.65:
            obj = self.mutate_json(json.loads(raw))
            try:
                text = json.dumps(obj, indent=r.choice([None, 2]), allow_nan=r.random() < 0.5)
            except (ValueError, RecursionError):
                text = "{}"
            return event, etype, text.encode("utf-8", "surrogatepass")
        if roll < 0.85:
            b = bytearray(raw)
            for _ in range(r.randint(1, 20)):
                op, i = r.randrange(3), r.randrange(max(1, len(b)))
                if op == 0 and b:
                    b[i] = r.randrange(256)
                elif op == 1:
                    b[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 8)))
                else:
                    del b[i:i + r.randint(1, 50)]
            if r.random() < 0.2:
                b = b[:r.randrange(len(b) + 1)]
            return event, etype, bytes(b)
        junk = r.choice([b"", b"null", b"[]", b"1e999999", b'"x"', b"{", b"\xff\xfe\x00",
                         b"[" * 100000, bytes(r.randrange(256) for _ in range(r.randint(0, 3000)))])
        return event, etype, junk

    def headers(self, event: str, etype: str, body: bytes) -> list[tuple[str, bytes]]:
        r = self.rng
        sig = sign(self.secret, body)
        did = str(uuid.UUID(int=r.getrandbits(128)))
        if r.random() < 0.1:
            did = r.choice(["", " ", "x" * r.choice([1, 300, 9000]), self.text()])
        if r.random() < 0.7:
            etype = r.choice([etype] * 4 + list(HANDLED) + ["push", "", " ", "ISSUES", self.text()])
        prefix = r.choice(["Gitea"] * 6 + ["Forgejo", "Gogs"])
        hs = [("Content-Type", r.choice(["application/json"] * 5 + ["text/plain", "", "\x00"])),
              (f"X-{prefix}-Event", event), (f"X-{prefix}-Event-Type", etype),
              (f"X-{prefix}-Delivery", did)]
        roll = r.random()
        if roll < 0.55:
            hs.append((f"X-{prefix}-Signature", sig))
        elif roll < 0.65:
            hs.append(("X-Hub-Signature-256", "sha256=" + sig))
        elif roll < 0.75:
            hs.append(("X-Gitea-Signature", sign(self.secret + "x", body)))
        elif roll < 0.85:
            hs.append(("X-Gitea-Signature", r.choice(["", "zz", sig.upper(), sig[:-1], sig + "00",
                                                      "g" * 64, self.text(), "é" * 64])))
        if r.random() < 0.05:
            hs += [(f"X-Junk-{i}", self.text()) for i in range(r.choice([5, 120]))]
        if r.random() < 0.02:
            hs.append(("X-Long", "y" * 70000))
        r.shuffle(hs)
        return [(k, v.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b""))
                for k, v in hs]

    def case(self):
        r = self.rng
        event, etype, body = self.body()
        headers = self.headers(event, etype, body)
        method, path = "POST", "/webhook"
        if r.random() < 0.05:
            method = r.choice(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
        if r.random() < 0.05:
            path = r.choice(["/", "/healthz", "/runs", "/runs/1", "/runs/abc", "/runs/1/provenance",
                             "/runs/99999999999999999999", "/metrics", "/webhook?x=1", "/%00",
                             "/webhook/", "//webhook", "/" + "a" * 5000])
            if path != "/webhook" and r.random() < 0.5:
                method = "GET"
        framing = "exact"
        if r.random() < 0.12:
            framing = r.choice(["missing", "negative", "junk", "longer", "shorter", "huge",
                                "chunked", "plus"])
        return framing, method, path, headers, body


class FuzzTest(_Base):
    def test_fuzzed_requests_never_get_a_5xx_other_than_503_nor_crash_nor_leak_threads(self) -> None:
        orch = self.orchestrator().start()
        rng = random.Random(20251125)
        fuzzer = _Fuzzer(rng, _seed_bodies(self.gitea), orch.secret)
        for _ in range(20):  # warm up the handler paths before counting threads
            self.assertEqual(orch.healthz(), 200)
        time.sleep(0.3)
        threads_before = thread_count(orch.pid)
        statuses: collections.Counter = collections.Counter()
        bad: list[str] = []
        conn = http.client.HTTPConnection("127.0.0.1", orch.port, timeout=10)
        for i in range(FUZZ_CASES):
            framing, method, path, headers, body = fuzzer.case()
            if framing == "exact":
                got, conn = self._keepalive(conn, orch.port, method, path, headers, body)
            else:
                got = self._raw(orch.port, framing, method, path, headers, body)
            for status in got:
                statuses[status] += 1
                if 500 <= status <= 599 and status != 503:
                    bad.append(f"case {i}: {framing} {method} {path} -> {status}; body[:80]="
                               f"{body[:80]!r}")
            if i % 1000 == 999:
                self.assertTrue(orch.alive(), f"orchestrator died at case {i}:\n{orch.log()}")
        conn.close()
        self.assertEqual(bad[:10], [], f"{len(bad)} forbidden 5xx; statuses {dict(statuses)}")
        self.assertTrue(orch.alive(), orch.log())
        self.assertEqual(orch.healthz(), 200)
        self.assertGreater(statuses[202] + statuses[200], FUZZ_CASES // 20, dict(statuses))
        self.assertGreater(statuses[401], FUZZ_CASES // 20, dict(statuses))
        orch.wait_for(lambda: thread_count(orch.pid) <= threads_before + 3, timeout=15,
                      what=f"threads back to {threads_before} (+3)")
        status, _ = orch.deliver("issues", "issues", b'{"action": "opened", "n": "after fuzz"}')
        self.assertIn(status, (200, 202))
        # no poison delivery: whatever was stored, the dispatcher gets through all of it
        orch.wait_for(lambda: all(r["processed_at"] for r in self.deliveries(orch.db_path)),
                      timeout=20, what="every stored fuzz delivery processed")
        log = orch.log_path.read_text(errors="replace")
        for crash in ("dispatch pass failed", "handler failed", "Logging error"):
            self.assertNotIn(crash, log)
        self.assertEqual(orch.stop(), 0, orch.log())

    def test_a_non_ascii_signature_is_a_plain_401_without_a_logged_crash(self) -> None:
        orch = self.orchestrator().start()
        body = b'{"action": "opened"}'
        for sig in ("\u00e9" * 64, "sha256=\u00fc", "\u00ff" + sign(orch.secret, body)[1:]):
            conn = http.client.HTTPConnection("127.0.0.1", orch.port, timeout=5)
            conn.putrequest("POST", "/webhook", skip_accept_encoding=True)
            conn.putheader("X-Gitea-Event-Type", "issues")
            conn.putheader("X-Gitea-Signature", sig.encode("latin-1"))
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            self.assertEqual(conn.getresponse().status, 401)
            conn.close()
        self.assertEqual(orch.stop(), 0, orch.log())
        log = orch.log_path.read_text(errors="replace")
        self.assertNotIn("Traceback", log)
        self.assertNotIn("ERROR", log)

    @staticmethod
    def _keepalive(conn, port, method, path, headers, body):
        for attempt in (0, 1):
            try:
                conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                resp.read()
                if resp.will_close:
                    conn.close()
                return [resp.status], conn
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                # the server closed a kept-alive connection (after an error reply): reconnect once
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                if attempt:
                    return [], conn
        return [], conn

    @staticmethod
    def _raw(port, framing, method, path, headers, body) -> list[int]:
        length = {"missing": None, "negative": "-5", "junk": "12abc", "longer": str(len(body) + 50),
                  "shorter": str(max(0, len(body) - 7)), "huge": str((1 << 20) + 1),
                  "chunked": None, "plus": f"+{len(body)}"}[framing]
        lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: 127.0.0.1:{port}".encode()]
        lines += [k.encode() + b": " + v for k, v in headers]
        if length is not None:
            lines.append(b"Content-Length: " + length.encode())
        if framing == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        lines.append(b"Connection: close")
        payload = b"\r\n".join(lines) + b"\r\n\r\n" + (body if framing != "huge" else body[:1000])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
        codes = []
        for line in data.split(b"\r\n"):
            if line.startswith(b"HTTP/1."):
                try:
                    codes.append(int(line.split()[1]))
                except (IndexError, ValueError):
                    pass
        return codes


# ---------------------------------------------------------------------------------------
class SlowClientsTest(_Base):
    HANDLER_TIMEOUT = 10.0  # the webhook server's overall deadline for headers, and for a body

    def test_slow_loris_and_oversized_bodies_do_not_stop_the_server_answering_others(self) -> None:
        orch = self.orchestrator().start()
        for _ in range(10):
            orch.healthz()
        time.sleep(0.2)
        threads_before = thread_count(orch.pid)
        opened = time.monotonic()
        stop = threading.Event()
        self.addCleanup(stop.set)
        socks: list[socket.socket] = []
        self.addCleanup(lambda: [s.close() for s in socks])

        def connect():
            s = socket.create_connection(("127.0.0.1", orch.port), timeout=5)
            socks.append(s)
            return s
        body = b'{"action": "opened"}'
        signed = (f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:{orch.port}\r\n"
                  "X-Gitea-Event-Type: issues\r\n"
                  f"X-Gitea-Signature: {sign(orch.secret, body)}\r\n").encode()
        tricklers = [connect() for _ in range(20)]
        for s in tricklers:
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % orch.port)

        def trickle():
            i = 0
            while not stop.wait(0.1):
                for s in tricklers:
                    try:
                        s.sendall(b"X-Slow-%d: %d\r\n" % (i, i))
                    except OSError:
                        pass
                i += 1
        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        self.addCleanup(trickler.join)
        for _ in range(20):  # half a body, then silence
            connect().sendall(signed + b"Content-Length: 1000\r\n\r\n" + b"{" * 500)
        for _ in range(10):  # headers only, never the end of headers
            connect().sendall(signed)
        oversized = []
        for _ in range(5):  # over 1 MiB announced: refused without reading it
            s = connect()
            s.sendall(signed + b"Content-Length: %d\r\n\r\n" % (2 << 20) + b"x" * 65536)
            oversized.append(s)
        streamed = []

        def stream_big():
            big = b"x" * ((1 << 20) + 4096)
            try:
                streamed.append(orch.request("POST", "/webhook", big, {
                    "X-Gitea-Event-Type": "issues", "X-Gitea-Signature": sign(orch.secret, big)})[0])
            except OSError as exc:  # refused mid-upload: the server closed on us, which is fine
                streamed.append(type(exc).__name__)
        big_thread = threading.Thread(target=stream_big)
        big_thread.start()
        time.sleep(0.2)
        n = self.launch_issue("still served")
        payload = issue_event(self.gitea, OWNER, REPO, n, "assigned", "alice")
        worst = 0.0
        for i in range(5):
            started = time.monotonic()
            status, _ = orch.deliver("issues", "issue_assign", payload, timeout=5)
            worst = max(worst, time.monotonic() - started)
            self.assertIn(status, (200, 202))
            self.assertEqual(orch.healthz(), 200)
        self.assertLess(worst, 2.0, "a normal delivery waited behind slow clients")
        for s in oversized:
            s.settimeout(5)
            self.assertIn(b" 413 ", s.recv(4096).split(b"\r\n", 1)[0] + b" ")
        big_thread.join(10)
        self.assertTrue(streamed and streamed[0] in (413, "ConnectionResetError", "BrokenPipeError"),
                        streamed)
        orch.wait_for(lambda: len(orch.runs()) == 1, what="the run of the served delivery")
        # and the slow ones do not hold their threads for ever: each is cut at its deadline
        held = {s for s in socks if s not in oversized}
        deadline = opened + self.HANDLER_TIMEOUT + 5
        while held and time.monotonic() < deadline:
            readable, _, _ = select.select(list(held), [], [], 0.2)
            for s in readable:
                try:
                    if s.recv(65536):
                        continue  # a 408 first, then the close
                except OSError:
                    pass
                held.discard(s)
        self.assertEqual(len(held), 0, f"{len(held)} slow connections still open after "
                         f"{time.monotonic() - opened:.1f}s")
        stop.set()
        for s in socks:
            s.close()
        orch.wait_for(lambda: thread_count(orch.pid) <= threads_before + 2, timeout=5,
                      what=f"threads back to {threads_before} (+2)")
        self.assertEqual(orch.stop(), 0, orch.log())


# ---------------------------------------------------------------------------------------
@unittest.skipUnless(resource is not None and hasattr(resource, "prlimit")
                     and Path("/proc/self/status").exists(), "needs Linux prlimit")
class UnwritableStoreTest(_Base):
    def test_a_store_that_cannot_be_written_answers_503_and_never_2xx(self) -> None:
        orch = self.orchestrator().start()
        body = lambda i: gitea_json({"action": "opened", "probe": i})  # noqa: E731
        self.assertEqual(orch.deliver("issues", "issues", body(0), delivery_id="before")[0], 202)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        # the disk is full for the orchestrator: every write past byte 1 of any file fails
        resource.prlimit(orch.pid, resource.RLIMIT_FSIZE, (1, hard))
        self.addCleanup(lambda: orch.alive() and resource.prlimit(orch.pid, resource.RLIMIT_FSIZE,
                                                                  (soft, hard)))
        refused = []
        results = []

        def send(i):
            results.append((i, orch.deliver("issues", "issues", body(i), delivery_id=f"full-{i}")[0]))
        threads = [threading.Thread(target=send, args=(i,)) for i in range(1, 9)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        for i in range(9, 12):  # one at a time too
            send(i)
        for i, status in results:
            self.assertEqual(status, 503, f"delivery {i} while the store is unwritable")
            refused.append(f"full-{i}")
        self.assertTrue(orch.alive(), orch.log())
        stored = {r["delivery_id"] for r in self.deliveries(orch.db_path)}
        self.assertEqual(stored & set(refused), set(), "a refused delivery was stored")
        # the disk has room again: Gitea's redelivery of a refused one is accepted, once
        resource.prlimit(orch.pid, resource.RLIMIT_FSIZE, (soft, hard))
        orch.wait_for(lambda: orch.deliver("issues", "issues", body(1),
                                           delivery_id="full-1")[0] in (200, 202),
                      timeout=10, what="the store to accept writes again")
        self.assertEqual(orch.deliver("issues", "issues", body(1), delivery_id="full-1")[0], 200)
        self.assertEqual(orch.healthz(), 200)
        self.assertEqual(orch.stop(), 0, orch.log())


class LockedStoreTest(_Base):
    def test_a_store_locked_by_another_writer_answers_503_and_reads_go_on(self) -> None:
        orch = self.orchestrator().start()
        other = sqlite3.connect(orch.db_path, isolation_level=None, timeout=1)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")  # say, an operator's sqlite3 shell mid-UPDATE
        # returns once the service has the delivery (its 100 Continue): its write now waits
        conn = start_delivery(orch.port, orch.secret, "issues",
                              gitea_json({"action": "opened", "locked": True}),
                              delivery_id="locked-1")
        self.addCleanup(conn.close)
        started = time.monotonic()
        self.assertEqual(orch.healthz(), 200)  # WAL: readers are not blocked by the writer
        self.assertEqual(orch.request("GET", "/runs")[0], 200)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(conn.getresponse().status, 503)  # after the store's busy timeout
        other.execute("ROLLBACK")
        status, _ = orch.deliver("issues", "issues", gitea_json({"action": "opened", "locked": True}),
                                 delivery_id="locked-1")
        self.assertEqual(status, 202)  # the refused delivery was not half-stored
        self.assertEqual(orch.stop(), 0, orch.log())


# ---------------------------------------------------------------------------------------
class _FaultyProxy:
    """A loopback HTTP proxy in front of the fake Gitea that applies `faults` ("500", "hang",
    "drop", in order) to requests for which `match(method, path)` is true; "hang" holds the
    request without answering until the client gives up."""

    def __init__(self, upstream_port: int, match) -> None:
        self.faults: list[str] = []
        self.seen: list[tuple[str, str, str]] = []  # (method, path, what we did)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    fault = proxy.faults.pop(0) if match(self.command, self.path) and proxy.faults \
                        else "pass"
                    proxy.seen.append((self.command, self.path, fault))
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault == "hang":
                    self.connection.settimeout(None)
                    select.select([self.connection], [], [], 30)  # until the client hangs up
                    self.close_connection = True
                    return
                if fault == "500":
                    out = b'{"message":"internal error","url":""}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                up = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection", "content-length")}
                    up.request(self.command, self.path, body=raw or None, headers=headers)
                    resp = up.getresponse()
                    data = resp.read()
                finally:
                    up.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding",
                                         "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class ForgeOutageTest(_Base):
    def test_comments_arrive_once_gitea_recovers_from_500s_hangs_and_drops(self) -> None:
        g = self.gitea
        port = int(g.url.rsplit(":", 1)[1])
        proxy = _FaultyProxy(port, lambda m, p: m == "POST" and p.endswith("/comments"))
        self.addCleanup(proxy.stop)
        proxy.faults = ["500", "hang", "drop", "500"]
        # short outbox retry delay and Gitea client timeout (defaults 30 s and 10 s)
        orch = self.orchestrator(proxy.url, FORGE_OUTBOX_BACKOFF=0.5, FORGE_GITEA_TIMEOUT=1).start()
        n = self.launch_issue("the agent exits without done: the orchestrator comments")
        unknown = g.add_issue(OWNER, REPO, "unknown agent", "x", user="alice",
                              labels=("bot-bottle:nosuch",), assignees=(H.AGENT_USER,))
        for number in (n, unknown):
            status, _ = orch.deliver("issues", "issue_assign",
                                     issue_event(g, OWNER, REPO, number, "assigned", "alice"))
            self.assertEqual(status, 202)
        ours = lambda number: [c for c in g.comments(OWNER, REPO, number)  # noqa: E731
                               if MARKER in c["body"]]
        orch.wait_for(lambda: ours(n) and ours(unknown), timeout=30, interval=0.2,
                      what="both comments after the outage")
        self.assertEqual(proxy.faults, [], "every fault was hit")
        time.sleep(1.0)  # a retry that was not needed would show up now
        self.assertEqual(len(ours(n)), 1, ours(n))
        self.assertEqual(len(ours(unknown)), 1, ours(unknown))
        self.assertIn("scripted", ours(unknown)[0]["body"])  # names the agents that exist
        self.assertEqual(orch.stop(), 0, orch.log())


# ---------------------------------------------------------------------------------------
class ReplayTest(_Base):
    def test_duplicates_redeliveries_and_out_of_order_replays_give_exactly_one_run(self) -> None:
        g = self.gitea
        orch = self.orchestrator().start()
        n = self.launch_issue("replayed")
        full = issue_event(g, OWNER, REPO, n, "label_updated", "alice")
        assigned_only = json.loads(gitea_json(issue_event(g, OWNER, REPO, n, "assigned", "alice")))
        assigned_only["issue"]["labels"] = []  # assigned first, labelled later
        assigned_full = issue_event(g, OWNER, REPO, n, "assigned", "alice")
        opened = issue_event(g, OWNER, REPO, n, "opened", "alice")
        accepted = []

        def send(event_type, payload, did, *, compact=False):
            raw = json.dumps(payload).encode() if compact else gitea_json(payload)
            status, _ = orch.deliver("issues", event_type, raw, delivery_id=did)
            self.assertIn(status, (200, 202), (event_type, did))
            if status == 202:  # stored under this id (a 200 is a duplicate, not stored again)
                accepted.append(did)
            return status
        self.assertEqual(send("issue_assign", assigned_only, "a1"), 202)  # not yet a trigger
        self.assertEqual(send("issue_label", full, "l1"), 202)  # the trigger
        self.assertEqual(send("issue_label", full, "l1"), 200)  # same delivery twice
        self.assertEqual(send("issue_label", full, "l2"), 200)  # redelivered with a new id
        send("issue_assign", assigned_full, "a2")  # the same state by another route
        send("issues", opened, "o1")
        # replayed out of order, byte-different (so not caught as duplicates), new ids
        send("issue_label", full, "l3", compact=True)
        send("issue_assign", assigned_only, "a3", compact=True)
        send("issue_assign", assigned_full, "a4", compact=True)
        # and raced from several threads for a second issue, label event first
        m = self.launch_issue("raced")
        raced = [("issue_label", issue_event(g, OWNER, REPO, m, "label_updated", "alice")),
                 ("issue_assign", issue_event(g, OWNER, REPO, m, "assigned", "alice")),
                 ("issues", issue_event(g, OWNER, REPO, m, "opened", "alice"))]
        errors = []

        def race(k):
            for j, (etype, payload) in enumerate(raced):
                try:
                    send(etype, payload, f"r{k}-{j}", compact=bool(k % 2))
                except AssertionError as exc:
                    errors.append(exc)
        threads = [threading.Thread(target=race, args=(k,)) for k in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        self.assertEqual(errors, [])
        self.wait_processed(orch, accepted)
        runs = orch.runs(include_destroyed=True)
        self.assertEqual(sorted(r["issue_number"] for r in runs), [n, m], runs)
        # each bottle ran (the fake exits at once) and was frozen: its start is in the log
        orch.wait_for(lambda: {r["state"] for r in orch.runs(include_destroyed=True)} == {"frozen"},
                      what="both runs frozen")
        starts = self.starts_per_slug()
        self.assertEqual(sorted(starts.values()), [1, 1], starts)
        self.assertEqual(orch.stop(), 0, orch.log())


# ---------------------------------------------------------------------------------------
class HostileIssueTextTest(_Base):
    """Signed, well-formed launch triggers whose issue text cannot go into an argv or into
    SQLite as is: a NUL in the title, a lone surrogate escape in the body, a 200 KB body
    (over Linux's 128 KiB limit for one argument). Each run must end somewhere (running,
    frozen, or failed with a comment saying why), never hang in `starting` holding a slot."""

    def test_issue_text_that_cannot_be_passed_on_never_leaves_a_run_stuck(self) -> None:
        g = self.gitea
        orch = self.orchestrator(FORGE_MAX_CONCURRENT_RUNS=1).start()
        hostile = {
            self.gitea.add_issue(OWNER, REPO, "nul \x00 in the title", "body", user="alice",
                                 labels=("bot-bottle:scripted",), assignees=(H.AGENT_USER,)): "nul",
            self.gitea.add_issue(OWNER, REPO, "lone surrogate", "body \ud800 here", user="alice",
                                 labels=("bot-bottle:scripted",), assignees=(H.AGENT_USER,)): "surrogate",
            self.gitea.add_issue(OWNER, REPO, "pasted log", "log line\n" * 20000, user="alice",
                                 labels=("bot-bottle:scripted",), assignees=(H.AGENT_USER,)): "200 KB",
        }
        normal = self.launch_issue("an ordinary issue after the hostile ones")
        for n in [*hostile, normal]:
            raw = json.dumps(issue_event(g, OWNER, REPO, n, "assigned", "alice")).encode()
            self.assertEqual(orch.deliver("issues", "issue_assign", raw)[0], 202)

        def settled():
            runs = {r["issue_number"]: r for r in orch.runs(include_destroyed=True)}
            return normal in runs and runs[normal]["state"] == "frozen" and runs
        try:
            runs = orch.wait_for(settled, timeout=10, what="the ordinary issue's run to finish")
        except AssertionError:
            runs = {r["issue_number"]: r for r in orch.runs(include_destroyed=True)}
            stuck = {hostile.get(n, "ordinary"): (r["state"], r["error"]) for n, r in runs.items()}
            self.fail(f"runs did not settle (max 1 running): {stuck}\n{orch.log()}")
        for n, what in hostile.items():
            run = runs.get(n)
            if run is None:
                continue  # refused at the door is fine too
            self.assertNotIn(run["state"], ("starting", "queued", "running"), what)
            if run["state"] == "failed":
                orch.wait_for(lambda: [c for c in g.comments(OWNER, REPO, n) if MARKER in c["body"]],
                              what=f"a comment saying why the {what} run failed")
        self.assertNotIn("dispatch pass failed", orch.log_path.read_text(errors="replace"))
        self.assertEqual(orch.stop(), 0, orch.log())


if __name__ == "__main__":
    unittest.main()
