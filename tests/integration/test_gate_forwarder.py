"""Integration: the in-bottle forwarder (bot_bottle/gate/forwarder.py) as a real process, run
the way a bottle runs it (a plain script under `python3 -I`), on a free port of this host's
loopback and a unix socket served by the test: it relays, runs the agent as its child with the
same stdio, passes on its exit status and the signals a supervisor sends."""

import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import bot_bottle.gate.forwarder as forwarder_module
from tests._serve import serve_connections

FORWARDER = forwarder_module.__file__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ForwarderTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.sock_path = str(self.dir / "gate.sock")
        self.port = free_port()

    def serve_gate(self):
        """A stand-in gate: answers each connection with what it read, upper-cased."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.sock_path)
        listener.listen()

        def upper(conn):
            with conn:
                conn.sendall(conn.recv(1000).upper())
        serve_connections(self.addCleanup, listener, upper)

    def forwarder(self, *command, **kw) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-I", FORWARDER, "--port", str(self.port), "--socket",
                                 self.sock_path, "--", *command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **kw)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(),
                                 proc.stdout.close(), proc.stderr.close()))
        return proc

    def test_a_connection_to_the_port_is_relayed_to_the_gate_while_the_agent_runs(self):
        self.serve_gate()
        script = ("import socket, sys\n"
                  f"s = socket.create_connection(('127.0.0.1', {self.port}))\n"
                  "s.sendall(b'connect pypi.org:443')\n"
                  "print(s.recv(100).decode()); print(sys.stdin.read())\n")
        proc = self.forwarder(sys.executable, "-c", script, stdin=subprocess.PIPE)
        out, err = proc.communicate(b"the prompt", timeout=30)
        self.assertEqual((proc.returncode, out, err), (0, b"CONNECT PYPI.ORG:443\nthe prompt\n", b""))

    def test_megabytes_both_ways_at_once_and_a_half_close_pass_through_intact(self):
        """A stand-in gate that echoes as it reads: the forwarder must keep both directions
        moving (neither buffers without bound nor stalls), and pass the agent's half-close on."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.sock_path)
        listener.listen()

        def echo(conn):
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
        serve_connections(self.addCleanup, listener, echo)
        script = ("import hashlib, os, socket, threading\n"
                  f"s = socket.create_connection(('127.0.0.1', {self.port}))\n"
                  "blob = os.urandom(8 << 20)\n"
                  "def send():\n"
                  "    s.sendall(blob); s.shutdown(socket.SHUT_WR)\n"
                  "t = threading.Thread(target=send); t.start()\n"
                  "got = bytearray()\n"
                  "while data := s.recv(65536):\n"
                  "    got += data\n"
                  "t.join()\n"
                  "print(len(got), got == blob)\n")
        proc = self.forwarder(sys.executable, "-c", script)
        out, err = proc.communicate(timeout=60)
        self.assertEqual((out, err, proc.returncode), (b"8388608 True\n", b"", 0))

    def test_the_agents_exit_status_is_the_forwarders(self):
        proc = self.forwarder(sys.executable, "-c", "import sys; sys.exit(7)")
        self.assertEqual(proc.wait(timeout=30), 7)

    def test_a_supervisors_sigterm_reaches_the_agent(self):
        ready = self.dir / "ready"
        script = ("import os, signal, sys, time\n"
                  "signal.signal(signal.SIGTERM, lambda *a: (print('agent got SIGTERM', flush=True), sys.exit(9)))\n"
                  f"open({str(ready)!r}, 'w').close()\n"
                  "signal.pause()\n")
        proc = self.forwarder(sys.executable, "-c", script)
        self.wait_for(ready.exists)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        self.assertEqual((proc.returncode, out), (9, b"agent got SIGTERM\n"))

    def test_an_agent_killed_by_a_signal_gives_128_plus_its_number(self):
        proc = self.forwarder(sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
        self.assertEqual(proc.wait(timeout=30), 128 + signal.SIGKILL)

    def test_a_missing_program_exits_127_with_one_line(self):
        proc = self.forwarder("/no/such/agent")
        out, err = proc.communicate(timeout=30)
        self.assertEqual((proc.returncode, out), (127, b""))
        self.assertEqual(err.decode().splitlines(), ["bot-bottle: cannot run '/no/such/agent': No such file or directory"])

    def test_without_the_gate_a_client_gets_a_502_not_a_hang(self):
        script = ("import socket\n"
                  f"s = socket.create_connection(('127.0.0.1', {self.port}))\n"
                  "s.sendall(b'CONNECT a:1 HTTP/1.1\\r\\n\\r\\n')\n"
                  "import http.client\n"
                  "r = http.client.HTTPResponse(s); r.begin(); print(r.status, r.read().decode(), end='')\n")
        proc = self.forwarder(sys.executable, "-c", script)
        out, _ = proc.communicate(timeout=30)
        self.assertEqual(out, b"502 bot-bottle forwarder: the egress gate is not reachable\n")

    @staticmethod
    def wait_for(condition, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.01)


if __name__ == "__main__":
    unittest.main()
