"""Integration: nothing secret in a bottle the real orchestrator starts, and nothing on the
host's side reachable from it. The orchestrator runs as a process (`python -m
bot_bottle.orchestrator run`) with the real core CLI and bwrap, a realistic `FORGE_TOKEN`
and, in its own environment only, a realistic `ANTHROPIC_API_KEY` with `ANTHROPIC_BASE_URL`
pointing the gate at a fake model (plain http on 127.0.0.1, which the gate accepts for
loopback upstreams). The agent uses the `claude` provider (the egress network and the
credential route are its defaults), its `claude` a stand-in probe first on its PATH.

The probe, inside the bottle: dumps its environment, every `/proc/<pid>/environ` and
`cmdline` it can open and every readable regular file outside the system trees into one file
of the workspace; calls the model through `$ANTHROPIC_BASE_URL` with the placeholder key; asks
the proxy for the service's webhook port, Gitea's API, the host's 127.0.0.1, localhost and
169.254.169.254 (CONNECT and plain HTTP); tries direct connections and DNS; then signals done.
The test reads the frozen snapshot: no key and no forge token anywhere in the dump, every
proxied target refused with 403 (localhost although allowlisted: it resolves to loopback),
nothing direct got through, the model saw the real key, and the service logged each refusal
with the run and counted it in `/metrics`.
"""

from __future__ import annotations

import json
import os
import secrets
import tarfile
import tempfile
import unittest
from pathlib import Path

from bot_bottle.gate import PLACEHOLDER
from tests.support.fake_anthropic import FakeAnthropic
from bot_bottle.demo_support.fake_gitea_payloads import issue_event
from tests.integration._orchestrator import AGENT_USER as BOT, make_forge, start_orchestrator

OWNER, REPO = "acme", "widgets"
# realistic shapes, new on every run (no file can hold them by chance)
API_KEY = f"sk-ant-api03-{secrets.token_urlsafe(70)}-{secrets.token_hex(4)}AA"
FORGE_TOKEN = secrets.token_hex(20)

PROBE = r'''#!/usr/bin/python3 -I
import json, os, socket, stat, sys, urllib.error, urllib.request
WEBHOOK, GITEA = %(webhook)d, %(gitea)d
OUT = "/workspace/.probe"
os.makedirs(OUT, exist_ok=True)
FILE_CAP, TOTAL_CAP = 256 * 1024, 48 * 1024 * 1024
SKIP = {"/usr", "/bin", "/sbin", "/opt", "/proc", "/sys", "/dev", os.path.abspath(OUT)}
report = {"files": 0, "procs": 0}
total = 0
dump = open(os.path.join(OUT, "dump.bin"), "wb")

def add(label, path):
    global total
    try:
        if label == "file" and not stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode):
            return False
        with open(path, "rb") as fh:
            data = fh.read(min(FILE_CAP, TOTAL_CAP - total))
    except OSError:
        return False
    total += len(data)
    dump.write(f"\n=== {label} {path}\n".encode() + data)
    return True

dump.write(b"=== environment\n" + "\n".join(f"{k}={v}" for k, v in os.environ.items()).encode())
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    report["procs"] += sum(add("proc", f"/proc/{pid}/{part}") for part in ("environ", "cmdline"))
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP
               and not (root == "/" and d.startswith("lib"))]
    for name in files:
        report["files"] += add("file", os.path.join(root, name))
dump.close()

def fetch(url, **kw):
    try:
        with urllib.request.urlopen(url, timeout=15, **kw) as r:
            return [r.status, r.read().decode(errors="replace")]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode(errors="replace")]
    except Exception as e:
        return ["error", repr(e)]

def through_proxy(line):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=15)
    s.sendall(line.encode())
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return [int(head.split()[1]), body]

def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except OSError as e:
        return repr(e)

base = os.environ["ANTHROPIC_BASE_URL"]
req = urllib.request.Request(base + "/v1/messages", method="POST",
    data=json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16,
                     "messages": [{"role": "user", "content": "probe"}]}).encode(),
    headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"], "content-type": "application/json",
             "anthropic-version": "2023-06-01"})
report["messages"] = fetch(req)

targets = [f"127.0.0.1:{WEBHOOK}", f"localhost:{WEBHOOK}", f"127.0.0.1:{GITEA}",
           f"localhost:{GITEA}", "127.0.0.1:80", "localhost:443", "169.254.169.254:80"]
report["connect"] = {t: through_proxy(f"CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n") for t in targets}
urls = [f"http://127.0.0.1:{WEBHOOK}/healthz", f"http://localhost:{WEBHOOK}/metrics",
        f"http://127.0.0.1:{GITEA}/api/v1/version", f"http://localhost:{GITEA}/api/v1/version",
        "http://127.0.0.1/", "http://169.254.169.254/latest/meta-data/"]
report["http"] = {u: through_proxy(f"GET {u} HTTP/1.1\r\nHost: x\r\n\r\n") for u in urls}
report["direct"] = {f"{h}:{p}": direct(h, p) for h, p in
                    [("127.0.0.1", WEBHOOK), ("127.0.0.1", GITEA), ("169.254.169.254", 80)]}
dns = {}
for name in ("localhost.localdomain", "api.anthropic.com", "example.com"):
    try:
        dns[name] = socket.getaddrinfo(name, 443)[0][4][0]
    except OSError:
        dns[name] = None
report["dns"] = dns
with open(os.path.join(OUT, "report.json"), "w") as fh:
    json.dump(report, fh)

# done, through the sidecar socket (the run then freezes: the test reads the snapshot)
import http.client
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(15)
        self.sock.connect(os.environ["BOT_BOTTLE_FORGE_SOCKET"])
conn = Unix("localhost")
conn.request("POST", "/done", body=json.dumps({"status": "done", "summary": "probed"}),
             headers={"Authorization": "Bearer " + os.environ["BOT_BOTTLE_FORGE_RUN_TOKEN"],
                      "Content-Type": "application/json"})
sys.exit(0 if conn.getresponse().status == 202 else 3)
'''


class OrchestratorBottleHoldsNothingTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        root = Path(tmp.name)
        self.api = FakeAnthropic("Bash").start()
        self.addCleanup(self.api.stop)
        self.gitea = make_forge(self, owner=OWNER, repo=REPO)
        self.gitea.add_token(FORGE_TOKEN, "orchestrator")
        self.gitea.add_commit(OWNER, REPO, {"README.md": "widgets\n"})
        self.home = root / "home"
        (self.home / "agents").mkdir(parents=True)
        (self.home / "bottles").mkdir()
        self.bindir = root / "bin"
        self.bindir.mkdir()
        # the bottle is settings only: its workspace is the issue's repository, cloned by the service
        (self.home / "agents" / "probe.toml").write_text(
            f'provider = "claude"\nbottles = ["b1"]\ntools = ["{self.bindir}"]\n'
            f'path = ["{self.bindir}"]\n')
        # localhost allowlisted on purpose: the gate still refuses what resolves to loopback
        (self.home / "bottles" / "b1.toml").write_text('timeout = 120\negress = ["localhost"]\n')

    def test_a_service_bottle_holds_no_key_or_forge_token_and_reaches_nothing_of_the_host(self) -> None:
        g = self.gitea
        gitea_port = int(g.url.rsplit(":", 1)[1])
        orch = start_orchestrator(self, self.home, g.url, token=FORGE_TOKEN, extra_env={
            "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": self.api.url})
        probe = self.bindir / "claude"
        probe.write_text(PROBE % {"webhook": orch.port, "gitea": gitea_port})
        os.chmod(probe, 0o755)   # as root the bottle runs as the agent user

        issue = g.add_issue(OWNER, REPO, "Probe", "Look around.", user="alice",
                            labels=("bot-bottle:probe",), assignees=(BOT,))
        status, body = orch.deliver("issues", "issue_assign",
                                    issue_event(g, OWNER, REPO, issue, "assigned", "alice"))
        self.assertEqual(status, 202, body)
        run = orch.wait_for(lambda: next((r for r in orch.runs(include_destroyed=True)
                                          if r["issue_number"] == issue
                                          and r["state"] == "frozen"), None),
                            timeout=60, what="the probe's done")
        files = self.snapshot(run["slug"])
        report = json.loads(files["report.json"])
        dump = files["dump.bin"]

        # the dump is real: it holds the probe's own environment, processes and files
        self.assertIn(f"ANTHROPIC_API_KEY={PLACEHOLDER}".encode(), dump)
        self.assertIn(b"ANTHROPIC_BASE_URL=http://127.0.0.1:3128/_upstream/anthropic", dump)
        self.assertIn(b"=== proc /proc/1/cmdline", dump)
        self.assertIn(b"=== file /workspace/README.md\nwidgets\n", dump)
        self.assertGreater(report["procs"], 2)
        self.assertGreater(report["files"], 20)
        # ...and holds neither secret, nor the real upstream (the gate's business)
        self.assertNotIn(API_KEY.encode(), dump)
        self.assertNotIn(FORGE_TOKEN.encode(), dump)
        self.assertNotIn(self.api.url.encode(), dump)
        log = (self.home / "state" / run["slug"] / "agent.log").read_bytes()
        self.assertNotIn(API_KEY.encode(), log)
        self.assertNotIn(FORGE_TOKEN.encode(), log)

        # the model saw the real key on the probe's request, never the placeholder
        self.assertEqual(report["messages"][0], 200, report["messages"])
        posts = [r for r in self.api.requests if r.method == "POST"]
        self.assertEqual([(r.path, r.headers.get("x-api-key")) for r in posts],
                         [("/v1/messages", API_KEY)])
        self.assertNotIn(PLACEHOLDER, json.dumps(posts[0].headers))

        # the service, Gitea, the host's loopback and cloud metadata: all refused by the proxy
        for kind in ("connect", "http"):
            for target, (code, why) in report[kind].items():
                with self.subTest(kind=kind, target=target):
                    self.assertEqual(code, 403, why)
                    self.assertIn("a loopback address" if "localhost" in target else "an IP address",
                                  why)
        self.assertEqual(len(report["connect"]) + len(report["http"]), 13)
        # ...and nothing leaves the bottle's own network namespace directly, nor resolves
        for target, outcome in report["direct"].items():
            with self.subTest(direct=target):
                self.assertNotEqual(outcome, "connected")
                self.assertRegex(outcome, r"Connection refused|Network is unreachable")
        self.assertEqual(report["dns"], dict.fromkeys(report["dns"]))
        # the service counted the refusals and logged them with the run
        orch.wait_for(lambda: "\nbot_bottle_egress_refused_total 13\n"
                      in orch.request("GET", "/metrics")[1].decode(), what="13 refusals counted")
        self.assertIn(f"egress refused: 169.254.169.254:80: an IP address; only allowlisted host "
                      f"names are reachable repo={OWNER}/{REPO} issue={issue} run={run['id']}", orch.log())

    def snapshot(self, slug: str) -> dict[str, bytes]:
        """The probe's files from the frozen run's snapshot."""
        tar_path = self.home / "state" / slug / "snapshots" / "latest.tar"
        with tarfile.open(tar_path) as tar:
            return {m.name.rsplit("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()
                    if "workspace/.probe/" in m.name and m.isfile()}


if __name__ == "__main__":
    unittest.main()
