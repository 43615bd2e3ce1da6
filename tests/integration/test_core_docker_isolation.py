"""Integration: what a hostile agent can and cannot do in a real docker bottle — the checks
tests/integration/test_core_isolation.py, test_core_agent_user.py, test_core_nosuid.py and
test_hostile_agent.py make under bwrap, against a private dockerd (_dockerd.py) and an image
holding the host's Debian python3 (`Dockerd.python_image()`, no registry).

- `network = "none"`: only workspace, home and /tmp writable (the image's system, the package
  bind and / are not); the host's $HOME, state dir, agent log, /etc, repository and the
  engine's socket are not in the bottle; a clean environment; the agent user's uid with every
  capability set empty and no_new_privs; setuid(0) refused; no route to a host server on
  0.0.0.0 by any of the host's addresses; the pid limit and the file-size cap hold;
- a setuid-root binary in the image gains nothing (it does without no-new-privileges);
- `network = "egress"`: the forwarder runs in front of the agent, which reaches an allowlisted
  host through the real gate, is refused another (403, and the CLI says so), and has no
  direct route to the host;
- what the agent writes outside its workspace and home does not come back on resume.
Like the rest of the suite this runs as root: bottles run as the agent user `bot-bottle`.
"""

import json
import pwd
import socket
import subprocess
import tempfile
import unittest
from pathlib import Path

from tests._serve import serve_connections

from ._core_home import REPO_ROOT, cli, make_home
from . import _dockerd
from ._dockerd import Dockerd
from ._gate_servers import Server

ENGINE = None
PYTHON = None
ZERO_CAPS = ["0000000000000000"]
MAX_PIDS = 48
MAX_FILE = 4 * 1024 * 1024

PROBE = r'''
import json, os, socket, subprocess, sys, urllib.request
args = json.loads(sys.argv[1])
def outcome(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return exc.strerror
def write(folder):
    with open(os.path.join(folder, ".probe"), "w") as fh:
        fh.write("x")
def connect(addr):
    socket.create_connection((addr, args["port"]), timeout=3).close()
def big():
    try:
        with open("/workspace/big", "wb") as fh:
            fh.write(b"x" * (args["max_file"] + 1))
    finally:
        os.unlink("/workspace/big")   # else the snapshot would outgrow its cap
def spawn():
    procs = []
    try:
        for _ in range(args["max_pids"] * 2):
            procs.append(subprocess.Popen(["sleep", "30"]))
    except OSError as exc:
        return [len(procs), exc.strerror]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return [len(procs), "no limit"]
report = {"cwd": os.getcwd(), "env": sorted(os.environ),
          "writable": {p: outcome(lambda p=p: write(p)) for p in
                       ("/workspace", "/home/agent", "/tmp", "/usr", "/etc", "/",
                        "/opt/bot-bottle/bot_bottle")},
          "sees": {p: os.path.exists(p) for p in args["host_paths"]},
          "connect": {a: outcome(lambda a=a: connect(a)) for a in args["addrs"]},
          "status": {k: v.split() for k, _, v in (line.partition(":") for line in
                     open("/proc/self/status")) if k in ("Uid", "Gid", "Groups", "CapInh",
                     "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")},
          "setuid0": outcome(lambda: os.setuid(0)),
          "big": outcome(big), "pids": spawn(),
          "left_before": os.path.exists("/tmp/left-behind"),
          "kept_before": os.path.exists("/home/agent/kept")}
if args.get("egress"):
    try:
        with urllib.request.urlopen("http://plain.test/hello", timeout=15) as r:
            report["allowed"] = [r.status, r.read().decode()]
    except Exception as exc:
        report["allowed"] = repr(exc)
    s = socket.create_connection(("127.0.0.1", 3128), timeout=15)
    s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    report["refused"] = s.recv(4096).decode().split("\r\n")[0]
    s.close()
    report["parent"] = open(f"/proc/{os.getppid()}/cmdline").read().split("\0")[:3]
for path in ("/tmp/left-behind", "/home/agent/kept"):
    with open(path, "w") as fh:
        fh.write("x")
with open("/workspace/REPORT.json", "w") as fh:
    json.dump(report, fh)
'''


def setUpModule():
    global ENGINE, PYTHON
    ENGINE = Dockerd()
    unittest.addModuleCleanup(_dockerd.check_nothing_left, _dockerd.stray_files())
    unittest.addModuleCleanup(ENGINE.stop)
    ENGINE.start()
    PYTHON = ENGINE.python_image()


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    assert "127.0.0.1" in found and len(found) > 1, found
    return found


class DockerIsolationTest(unittest.TestCase):
    def setUp(self):
        self.agent = pwd.getpwnam("bot-bottle")   # the suite runs as root (.ci/setup makes it)

    def _bottle(self, network="none", image=None):
        """A home with a docker bottle `b1`; `_agent` adds the agent `probe`."""
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(
            f'dir = {json.dumps(str(home / "src"))}\nbackend = "docker"\n'
            f'image = "{image or PYTHON}"\nnetwork = "{network}"\n'
            + ('egress = ["plain.test"]\n' if network == "egress" else ""))
        self.addCleanup(lambda: ENGINE.docker("rm", "-f", "bot-bottle-probe", check=False))
        self.addCleanup(lambda: cli(home, "destroy", "probe", extra_env=self._env()))
        return home

    @staticmethod
    def _agent(home, argv):
        (home / "agents" / "probe.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = {json.dumps(argv)}\n')

    def _env(self, **extra):
        return {"DOCKER_HOST": ENGINE.host, "BOT_BOTTLE_MAX_PIDS": str(MAX_PIDS),
                "BOT_BOTTLE_MAX_SNAPSHOT_BYTES": str(MAX_FILE), **extra}

    def _host_server(self):
        """A TCP server on every host address (0.0.0.0); the connections it accepted."""
        listener = socket.create_server(("0.0.0.0", 0))
        accepted = []

        def count(conn):
            accepted.append(1)
            conn.close()
        serve_connections(self.addCleanup, listener, count)
        return listener.getsockname()[1], accepted

    def _marker_in_etc(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="bot-bottle-docker-", dir="/etc"))
        self.addCleanup(lambda: (folder / "marker").unlink(missing_ok=True) or folder.rmdir())
        (folder / "marker").write_text("host only\n")
        return folder / "marker"

    def _probe(self, network, **extra):
        port, accepted = self._host_server()
        marker = self._marker_in_etc()
        home = self._bottle(network)
        state = home / "state" / "probe"
        args = {"port": port, "addrs": _host_addresses(), "max_pids": MAX_PIDS,
                "max_file": MAX_FILE, "egress": network == "egress",
                "host_paths": [str(Path.home()), str(home), str(state), str(state / "agent.log"),
                               str(marker), str(REPO_ROOT), str(ENGINE.sock), str(ENGINE.dir),
                               "/var/run/docker.sock", "/run/docker.sock"]}
        self._agent(home, ["python3", "-I", "-c", PROBE, json.dumps(args)])
        r = cli(home, "start", "probe", "--headless", "--prompt", "p",
                extra_env=self._env(SECRET_ON_HOST="s3", **extra))
        log = cli(home, "logs", "probe").stdout
        self.assertEqual(r.returncode, 0, r.stderr + log[-3000:])
        report = json.loads((state / "bottle" / "workspace" / "REPORT.json").read_text())
        return home, r, report, accepted

    def assert_confined(self, rep, accepted):
        self.assertEqual(rep["cwd"], "/workspace")
        self.assertEqual(rep["writable"], {
            "/workspace": "ok", "/home/agent": "ok", "/tmp": "ok", "/usr": "Permission denied",
            "/etc": "Permission denied", "/": "Permission denied",
            "/opt/bot-bottle/bot_bottle": "Read-only file system"})
        self.assertEqual([p for p, seen in rep["sees"].items() if seen], [],
                         "host paths visible in the bottle")
        self.assertNotIn("SECRET_ON_HOST", rep["env"])
        st = rep["status"]
        self.assertEqual(st["Uid"], [str(self.agent.pw_uid)] * 4)
        self.assertEqual(st["Gid"], [str(self.agent.pw_gid)] * 4)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"):
            self.assertEqual(st[cap], ZERO_CAPS, cap)
        self.assertEqual(st["NoNewPrivs"], ["1"])
        self.assertEqual(rep["setuid0"], "Operation not permitted")
        self.assertEqual(rep["big"], "File too large")
        started, why = rep["pids"]
        self.assertLess(started, MAX_PIDS, rep["pids"])
        self.assertEqual(why, "Resource temporarily unavailable")
        self.assertEqual(accepted, [], "the host server was reached")
        for addr, outcome in rep["connect"].items():
            expected = "Connection refused" if addr.startswith("127.") else "Network is unreachable"
            self.assertEqual(outcome, expected, addr)

    def test_a_network_none_bottle_is_confined_and_reaches_nothing_of_the_host(self):
        home, _, rep, accepted = self._probe("none")
        self.assert_confined(rep, accepted)
        self.assertTrue(set(rep["env"]) <= {"PATH", "HOME", "LANG", "BOT_BOTTLE_PROMPT_FILE",
                                            "HOSTNAME", "LC_CTYPE"}, rep["env"])
        self.assertEqual(rep["left_before"], False)
        # commit + resume: the home comes back, what was written outside it does not
        self.assertEqual(cli(home, "commit", "probe", extra_env=self._env()).returncode, 0)
        r = cli(home, "resume", "probe", "--headless", "--prompt", "again", extra_env=self._env())
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads((home / "state" / "probe" / "bottle" / "workspace" / "REPORT.json").read_text())
        self.assertEqual((rep["kept_before"], rep["left_before"]), (True, False))

    def test_an_egress_bottle_reaches_an_allowed_host_through_the_gate_and_nothing_else(self):
        plain = Server("plain").start(self.addCleanup)
        home, r, rep, accepted = self._probe(
            "egress", BOT_BOTTLE_EGRESS_PIN=f"plain.test=127.0.0.1:{plain.port}")
        self.assert_confined(rep, accepted)
        self.assertEqual(rep["parent"][:3], ["python3", "-I", "/opt/bot-bottle/bot_bottle/gate/forwarder.py"])
        self.assertTrue({"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"} <= set(rep["env"]), rep["env"])
        self.assertEqual(rep["allowed"], [200, "hello from plain /hello"])
        self.assertTrue(rep["refused"].startswith("HTTP/1.1 403"), rep["refused"])
        self.assertIn("bot-bottle: egress refused: example.com:443", r.stderr)
        self.assertFalse((home / "state" / "probe" / "egress.sock").exists())

    def test_a_setuid_root_binary_in_the_image_gains_nothing(self):
        image = ENGINE.setuid_image()
        user = f"{self.agent.pw_uid}:{self.agent.pw_gid}"
        control = ENGINE.docker("run", "--rm", "--network", "none", "--user", user, image,
                                "suid-id", "-u")
        self.assertEqual(control.stdout.strip(), "0", "control: setuid works in this image")
        home = self._bottle(image=image)
        self._agent(home, ["sh", "-c", "suid-id -u; suid-id -g; id -u"])
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env=self._env())
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = [str(self.agent.pw_uid), str(self.agent.pw_gid), str(self.agent.pw_uid)]
        self.assertIn("\n".join(ids) + "\n", cli(home, "logs", "probe").stdout)


if __name__ == "__main__":
    unittest.main()
