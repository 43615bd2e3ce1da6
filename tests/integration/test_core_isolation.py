"""Integration: what an agent can and cannot reach inside a real bwrap bottle — host system
read-only, only workspace and home writable, the real $HOME and the state dir invisible, a
clean environment, and no network unless the bottle says `host` (`egress`: only the proxy)."""

import json
import socket
import unittest
from pathlib import Path

from tests._serve import serve_connections

from ._core_home import cli, make_home

PROBE = r"""
import json, os, socket, sys
def writable(p):
    try:
        with open(os.path.join(p, ".probe"), "w") as fh:
            fh.write("x")
        return True
    except OSError:
        return False
def connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False
host_home, state, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = os.path.join(state, "probe", "agent.log")
report = {"cwd": os.getcwd(), "env": sorted(os.environ),
          "writable": {p: writable(p) for p in ("/workspace", "/home/agent", "/usr", "/etc", "/tmp")},
          "sees_host_home": os.path.exists(host_home), "sees_state": os.path.exists(state),
          "sees_log": os.path.exists(log) or os.path.exists("/workspace/../agent.log"),
          "connects": connects(port)}
with open("REPORT.json", "w") as fh:
    json.dump(report, fh)
"""


class IsolationTest(unittest.TestCase):
    def probe(self, network):
        home = make_home(self)
        listener = socket.create_server(("127.0.0.1", 0))
        serve_connections(self.addCleanup, listener, socket.socket.close)
        port = listener.getsockname()[1]
        argv = ["python3", "-c", PROBE, str(Path.home()), str(home / "state"), str(port)]
        (home / "agents" / "probe.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = [{", ".join(json.dumps(a) for a in argv)}]\n')
        (home / "bottles" / "b1.toml").write_text(f'dir = {json.dumps(str(home / "src"))}\nnetwork = "{network}"\n')
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env={"SECRET_ON_HOST": "s3"})
        self.assertEqual(r.returncode, 0, r.stderr)
        report = json.loads((home / "state" / "probe" / "bottle" / "workspace" / "REPORT.json").read_text())
        cli(home, "destroy", "probe")
        return report

    def test_no_network_bottle_is_confined(self):
        rep = self.probe("none")
        self.assertEqual(rep["cwd"], "/workspace")
        self.assertEqual(rep["writable"], {"/workspace": True, "/home/agent": True, "/usr": False,
                                           "/etc": False, "/tmp": True})
        self.assertFalse(rep["sees_host_home"], "the real $HOME is visible in the bottle")
        self.assertFalse(rep["sees_state"], "the state dir is visible in the bottle")
        self.assertFalse(rep["sees_log"], "the agent log is visible in the bottle")
        self.assertTrue(set(rep["env"]) <= {"PATH", "HOME", "LANG", "BOT_BOTTLE_PROMPT_FILE", "PWD", "LC_CTYPE"},
                        rep["env"])
        self.assertNotIn("SECRET_ON_HOST", rep["env"])
        self.assertFalse(rep["connects"], "a network=none bottle reached the host's loopback")

    def test_egress_bottle_has_no_direct_route_only_the_proxy_variables(self):
        rep = self.probe("egress")
        self.assertFalse(rep["connects"], "an egress bottle reached the host's loopback directly")
        self.assertTrue({"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"} <= set(rep["env"]), rep["env"])
        self.assertNotIn("SECRET_ON_HOST", rep["env"])

    def test_host_network_bottle_reaches_the_host(self):
        self.assertTrue(self.probe("host")["connects"])


if __name__ == "__main__":
    unittest.main()
