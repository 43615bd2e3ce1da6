"""Integration: BOT_BOTTLE_FORGE_SOCKET is bound into a real bwrap bottle; the scripted agent reaches it.

Also checks that no other variable of the CLI's environment (e.g. FORGE_TOKEN) enters the bottle.
"""

import json
import socketserver
import threading
import unittest
from http.server import BaseHTTPRequestHandler

from bot_bottle.backend import agent_user

from ._core_home import cli, make_home


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.calls.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        data = b'{"status":"accepted"}'
        self.send_response(202 if self.path == "/done" else 201)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ForgePassthroughTest(unittest.TestCase):
    def test_agent_reaches_sidecar_with_network_none_and_sees_no_host_secret(self):
        home = make_home(self, ["--issue", "5"])
        sock = str(home / "sidecar.sock")
        server = _Server(sock, _Handler)
        server.calls = []
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        agent_user.grant(sock, {})   # as the orchestrator does with its sidecar socket
        (home / "agents" / "envdump.toml").write_text(
            'provider = "command"\nbottles = ["b1"]\n'
            'command = ["/bin/sh", "-c", "env > ENV_DUMP; python3 /opt/bot-bottle/bot_bottle/demo_support/scripted_agent.py --issue 5"]\n')
        r = cli(home, "start", "envdump", "--headless", "--prompt", "do #5", 
                extra_env={"BOT_BOTTLE_FORGE_SOCKET": sock, "BOT_BOTTLE_FORGE_RUN_TOKEN": "tok1",
                           "FORGE_TOKEN": "host-secret"})
        self.assertEqual(r.returncode, 0, r.stderr)
        paths = [c[0] for c in server.calls]
        self.assertEqual(paths, ["/pulls", "/issues/5/comments", "/done"])
        self.assertTrue(all(c[1] == "Bearer tok1" for c in server.calls))
        self.assertEqual(server.calls[0][2]["head"], "bot/work")
        dump = (home / "state" / "envdump" / "bottle" / "workspace" / "ENV_DUMP").read_text()
        self.assertIn("BOT_BOTTLE_FORGE_SOCKET=/run/bot-bottle/forge.sock", dump)
        self.assertNotIn("host-secret", dump)
        cli(home, "destroy", "envdump")


if __name__ == "__main__":
    unittest.main()
