"""Integration: the Kubernetes bridge (bot_bottle.backend.kube_bridge) in this process with a
real TLS listener on 127.0.0.1 and a certificate made by `openssl`, and the pod's relay
(bot_bottle/gate/pod_relay.py) as a real process run the way a pod runs it (a plain script
under `python3 -I`), between them real unix sockets served by the test: what an agent sends
reaches the host's sockets and back, the seed arrives once, and whatever does not hold the
token and the pinned certificate gets nothing."""

import http.client
import http.server
import logging
import os
import signal
import socket
import socketserver
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

from bot_bottle.backend.kube_bridge import Bridge
from bot_bottle.gate import pod_relay
from tests._serve import serve_connections, serve_in_thread

RELAY = pod_relay.__file__
LOGGER = "bot_bottle.backend.kube_bridge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LogLines(logging.Handler):
    """The bridge's log lines as they come, and a way to wait for one."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record):
        with self.changed:
            self.lines.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        with self.changed:
            if not self.changed.wait_for(lambda: any(text in line for line in self.lines), timeout):
                raise AssertionError(f"no log line with {text!r} in {self.lines}")
            return next(line for line in self.lines if text in line)


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"forge saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixHTTP(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = True


class BridgeTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.forge_path = str(self.dir / "forge.sock")
        self.egress_path = str(self.dir / "egress.sock")
        self.logs = LogLines()
        logger = logging.getLogger(LOGGER)
        logger.addHandler(self.logs)
        self.addCleanup(logger.removeHandler, self.logs)

    # --- the pieces ---

    def bridge(self, seed_dir=None, advertise="127.0.0.1", **kw) -> Bridge:
        bridge = Bridge(self.dir / "state", listen_host="127.0.0.1", advertise_host=advertise,
                        forge_socket=self.forge_path, egress_socket=self.egress_path,
                        seed_dir=seed_dir, **kw)
        self.addCleanup(bridge.close)
        self.info = bridge.start()
        self.ca = self.dir / "ca.pem"
        self.ca.write_text(self.info.ca_pem)
        self.token_file = self.dir / "token"
        self.token_file.write_text(self.info.token + "\n")
        return bridge

    def serve_forge_http(self):
        serve_in_thread(self, _UnixHTTP(self.forge_path, _Hello))

    def serve_echo(self, path):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()

        def echo(conn):
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
        serve_connections(self.addCleanup, listener, echo)

    def relay_args(self, ca=None) -> list[str]:
        return ["--bridge", f"127.0.0.1:{self.info.port}", "--ca", str(ca or self.ca),
                "--token-file", str(self.token_file)]

    def relay(self, *args, **kw) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-I", RELAY, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **kw)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(),
                                 proc.stdout.close(), proc.stderr.close(),
                                 proc.stdin and proc.stdin.close()))
        return proc

    def run_relay(self, script: str, *extra, **kw) -> subprocess.Popen:
        return self.relay("run", *self.relay_args(), "--forge-socket",
                          str(self.dir / "pod" / "forge.sock"), *extra, "--", sys.executable,
                          "-c", script, **kw)

    def dial(self, cadata=None) -> ssl.SSLSocket:
        """A TLS connection to the bridge made by the test, as a pod would."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=cadata or self.info.ca_pem)
        raw = socket.create_connection(("127.0.0.1", self.info.port), timeout=10)
        try:
            return ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise

    @staticmethod
    def until_closed(sock) -> bytes:
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, ssl.SSLEOFError):
            pass
        return data

    # --- what reaches the host ---

    def test_http_requests_on_the_pods_unix_socket_reach_the_forge_and_come_back(self):
        self.serve_forge_http()
        self.bridge()
        pod_socket = self.dir / "pod" / "forge.sock"
        script = ("import http.client, os, socket, stat, sys, threading\n"
                  "class C(http.client.HTTPConnection):\n"
                  "    def connect(self):\n"
                  "        self.sock = socket.socket(socket.AF_UNIX)\n"
                  f"        self.sock.connect({str(pod_socket)!r})\n"
                  "answers = {}\n"
                  "def get(n):\n"
                  "    c = C('forge'); c.request('GET', f'/api/issues/{n}'); r = c.getresponse()\n"
                  "    answers[n] = (r.status, r.read().decode())\n"
                  "threads = [threading.Thread(target=get, args=(n,)) for n in range(8)]\n"
                  "[t.start() for t in threads]; [t.join() for t in threads]\n"
                  "assert answers == {n: (200, f'forge saw /api/issues/{n}') for n in range(8)}, answers\n"
                  f"mode = stat.S_IMODE(os.stat({str(pod_socket)!r}).st_mode)\n"
                  "print(*answers[7], oct(mode))\n"
                  "print(sys.stdin.read())\n")
        prompt = self.dir / "prompt.txt"
        prompt.write_text("the prompt")
        proc = self.run_relay(script, "--stdin", str(prompt))
        out, err = proc.communicate(timeout=30)
        self.assertEqual((proc.returncode, out.decode(), err),
                         (0, "200 forge saw /api/issues/7 0o600\nthe prompt\n", b""))

    def test_the_egress_port_relays_megabytes_both_ways_and_a_half_close(self):
        self.serve_echo(self.egress_path)
        self.bridge()
        port = free_port()
        script = ("import hashlib, os, socket, sys, threading\n"
                  f"s = socket.create_connection(('127.0.0.1', {port}))\n"
                  "blob = os.urandom(4 << 20)\n"
                  "def send():\n"
                  "    s.sendall(blob); s.shutdown(socket.SHUT_WR)\n"
                  "t = threading.Thread(target=send); t.start()\n"
                  "got = bytearray()\n"
                  "while data := s.recv(65536):\n"
                  "    got += data\n"
                  "t.join()\n"
                  "print(len(got), got == blob, sys.stdin.read() == '')\n")
        proc = self.run_relay(script, "--proxy-port", str(port))
        out, err = proc.communicate(timeout=60)
        self.assertEqual((out, err, proc.returncode), (b"4194304 True True\n", b"", 0))

    def test_without_the_bridge_an_agent_gets_a_502_and_the_relay_one_line(self):
        self.bridge()   # for its certificate and token; the relay dials a port nobody serves
        port = free_port()
        script = ("import http.client, socket\n"
                  f"s = socket.create_connection(('127.0.0.1', {port}))\n"
                  "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
                  "r = http.client.HTTPResponse(s); r.begin()\n"
                  "print(r.status, r.read().decode(), end='')\n")
        proc = self.relay("run", "--bridge", f"127.0.0.1:{free_port()}", "--ca", str(self.ca),
                          "--token-file", str(self.token_file), "--forge-socket",
                          str(self.dir / "pod" / "forge.sock"), "--proxy-port", str(port), "--",
                          sys.executable, "-c", script)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(out, b"502 bot-bottle relay: the bridge to the host is not reachable\n")
        self.assertEqual(len(err.decode().splitlines()), 1, err)
        self.assertIn("cannot reach the bridge at 127.0.0.1 for egress", err.decode())

    # --- the seed ---

    def test_the_seed_arrives_once_with_files_symlinks_and_an_empty_directory(self):
        seed = self.dir / "seed"
        (seed / "workspace" / "empty").mkdir(parents=True)
        (seed / "home").mkdir()
        (seed / "workspace" / "big.bin").write_bytes(os.urandom(3 << 20))
        (seed / "home" / ".profile").write_text("export A=1\n")
        os.symlink("big.bin", seed / "workspace" / "link")
        self.bridge(seed_dir=seed)
        into = self.dir / "bottle"
        proc = self.relay("seed", *self.relay_args(), "--into", str(into))
        out, err = proc.communicate(timeout=30)
        self.assertEqual((proc.returncode, out, err), (0, b"", b""))
        self.assertEqual((into / "workspace" / "big.bin").read_bytes(),
                         (seed / "workspace" / "big.bin").read_bytes())
        self.assertEqual(os.readlink(into / "workspace" / "link"), "big.bin")
        self.assertEqual(list((into / "workspace" / "empty").iterdir()), [])
        self.assertEqual((into / "home" / ".profile").read_text(), "export A=1\n")

        again = self.relay("seed", *self.relay_args(), "--into", str(self.dir / "again"))
        out, err = again.communicate(timeout=30)
        self.assertEqual((again.returncode, out), (1, b""))
        self.assertEqual(err.decode().splitlines(), [
            "bot-bottle relay: the bridge cut the seed stream (a refused token, or the seed "
            "already served)"])
        self.assertIn("already served", self.logs.wait_for("refused"))

    # --- what does not get through ---

    def test_the_relay_refuses_a_bridge_whose_certificate_is_not_the_pinned_one(self):
        seed = self.dir / "seed"
        (seed / "workspace").mkdir(parents=True)
        other = Bridge(self.dir / "other", listen_host="127.0.0.1", advertise_host="127.0.0.1",
                       forge_socket=None, egress_socket=None, seed_dir=None)
        other_ca = self.dir / "other-ca.pem"
        with other:
            other_ca.write_text(other.start().ca_pem)
        self.bridge(seed_dir=seed)
        proc = self.relay("seed", *self.relay_args(ca=other_ca), "--into", str(self.dir / "b"))
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(len(err.decode().splitlines()), 1, err)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", err.decode())
        self.assertIn("the TLS handshake failed", self.logs.wait_for("refused"))
        self.assertFalse((self.dir / "b").exists())
        # the seed was not spent on the impostor's attempt: the real CA still gets it
        proc = self.relay("seed", *self.relay_args(), "--into", str(self.dir / "b"))
        self.assertEqual(proc.communicate(timeout=30)[1], b"")

    def test_the_certificate_names_the_advertised_host_and_nothing_else(self):
        self.bridge(advertise="bridge.example.test")
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.dial()   # the test dials 127.0.0.1, which the certificate does not name
        key = self.dir / "state" / "bridge" / "bridge-key.pem"
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)

    def test_a_wrong_or_malformed_preamble_is_closed_and_nothing_reaches_the_host(self):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(self.forge_path)
        listener.listen()
        listener.setblocking(False)
        self.bridge()
        token, wrong = self.info.token, "x" * len(self.info.token)
        cases = {"a wrong token": f"BB1 forge {wrong}\n",
                 "a malformed preamble": f"BB2 forge {token}\n",
                 "an unknown channel": f"BB1 sidecar {token}\n",
                 "a preamble too long": f"BB1 forge {token}" + " " * 300 + "\n"}
        for reason, line in cases.items():
            with self.subTest(reason), self.dial() as tls:
                tls.sendall(line.encode() + b"GET / HTTP/1.1\r\n\r\n")
                self.assertEqual(self.until_closed(tls), b"")
                self.assertIn(reason, self.logs.wait_for(reason))
                with self.assertRaises(BlockingIOError):
                    listener.accept()
        self.assertEqual(len([line for line in self.logs.lines if "refused" in line]), 4)
        for secret in (token, wrong):
            self.assertNotIn(secret, "\n".join(self.logs.lines))

    def test_a_channel_without_a_host_socket_is_closed(self):
        self.bridge()   # nothing listens on egress.sock
        with self.dial() as tls:
            tls.sendall(f"BB1 egress {self.info.token}\n".encode())
            self.assertEqual(self.until_closed(tls), b"")
        self.assertIn("the egress socket: No such file or directory", self.logs.wait_for("refused"))
        self.assertNotIn(self.info.token, "\n".join(self.logs.lines))

    def test_a_client_that_never_sends_its_preamble_is_cut_after_the_deadline(self):
        self.bridge(preamble_seconds=0.3)
        began = time.monotonic()
        with self.dial() as tls:
            self.assertEqual(self.until_closed(tls), b"")
        self.assertGreaterEqual(time.monotonic() - began, 0.3)
        self.assertIn("no preamble within 0.3 s", self.logs.wait_for("refused"))

    def test_connections_past_the_cap_are_refused_until_one_ends(self):
        self.serve_echo(self.forge_path)
        self.bridge(max_connections=2)
        first, second = self.dial(), self.dial()
        self.addCleanup(second.close)
        with self.assertRaises(OSError):   # accepted and closed at once: no handshake
            self.dial().close()
        self.assertIn("already 2 connections", self.logs.wait_for("refused"))
        first.close()
        self.logs.wait_for("closed before its preamble")
        with self.dial() as third:
            third.sendall(f"BB1 forge {self.info.token}\nping".encode())
            self.assertEqual(third.recv(100), b"ping")

    def test_close_ends_every_connection_and_leaves_no_thread_or_listener(self):
        self.serve_echo(self.forge_path)
        bridge = self.bridge()
        relayed = self.dial()
        self.addCleanup(relayed.close)
        relayed.sendall(f"BB1 forge {self.info.token}\nping".encode())
        self.assertEqual(relayed.recv(100), b"ping")
        waiting = self.dial()
        self.addCleanup(waiting.close)
        bridge.close()
        self.assertEqual(self.until_closed(relayed), b"")
        self.assertEqual(self.until_closed(waiting), b"")
        self.assertEqual([t for t in threading.enumerate() if t.name == "kube-bridge"], [])
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.info.port), timeout=10).close()
        self.assertEqual(sorted(os.listdir(self.dir / "state" / "bridge")), [])

    # --- the agent's process ---

    def test_the_relay_exits_with_the_agents_status(self):
        self.bridge()
        for script, code in (("import sys; sys.exit(7)", 7),
                             ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                              128 + signal.SIGKILL)):
            with self.subTest(code=code):
                proc = self.run_relay(script)
                self.assertEqual(proc.wait(timeout=30), code)

    def test_a_sigterm_to_the_relay_reaches_the_agents_handler(self):
        self.bridge()
        script = ("import signal, sys\n"
                  "def term(*args):\n"
                  "    print('agent got SIGTERM', flush=True)\n"
                  "    sys.exit(9)\n"
                  "signal.signal(signal.SIGTERM, term)\n"
                  "print('ready', flush=True)\n"
                  "signal.pause()\n")
        proc = self.run_relay(script)
        self.assertEqual(proc.stdout.readline(), b"ready\n")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        self.assertEqual((proc.returncode, out, err), (9, b"agent got SIGTERM\n", b""))


if __name__ == "__main__":
    unittest.main()
