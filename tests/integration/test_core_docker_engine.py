"""Integration: the docker backend against a real, private dockerd (tests/integration/_dockerd.py)
running a busybox image imported from Debian's busybox-static: networks, the lifecycle (commit
stops a running agent gracefully: SIGTERM, SIGKILL after the grace period), the client settings,
the agent user, an engine down or an image missing. No skips: `.ci/setup` installs docker.io and
busybox-static, and a dockerd that cannot start fails the module. The hostile-agent checks and
egress are in test_core_docker_isolation.py, a non-root caller in test_core_docker_user.py."""

import http.server
import json
import os
import pwd
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
from pathlib import Path

from bot_bottle.backend import docker

from ._core_home import REPO_ROOT, cli, make_home
from . import _dockerd
from ._dockerd import IMAGE, Dockerd

ENGINE = None


def setUpModule():
    global ENGINE
    ENGINE = Dockerd()
    unittest.addModuleCleanup(_dockerd.check_nothing_left, _dockerd.stray_files())
    unittest.addModuleCleanup(ENGINE.stop)
    ENGINE.start()
    ENGINE.import_busybox()


def _images() -> set:
    return set(ENGINE.docker("images", "-a", "-q", "--no-trunc").stdout.split())


class DockerEngineTest(unittest.TestCase):
    def _home(self, command, network="none", image=IMAGE):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(
            f'dir = "{home / "src"}"\nbackend = "docker"\nimage = "{image}"\nnetwork = "{network}"\n')
        (home / "agents" / "probe.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = {json.dumps(command)}\n')
        return home

    def _env(self, **extra):
        return {"DOCKER_HOST": ENGINE.host, **extra}

    def _cleanup_bottle(self, home, slug):
        self.addCleanup(lambda: ENGINE.docker("rm", "-f", f"bot-bottle-{slug}", check=False))
        self.addCleanup(lambda: cli(home, "destroy", slug, extra_env=self._env()))

    def _host_server(self):
        hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.client_address[0])
                body = b"host-secret-page"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server.server_address[1], hits

    def _probe(self, port):
        # try the host's loopback and the gateway of whatever network the bottle sits on
        return ["sh", "-c",
                "for a in 127.0.0.1 $(ip -4 route | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'"
                " | sed 's/\\.[0-9]*$/.1/'); do "
                f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $a {port} && echo \" via $a\"; done;"
                " echo probe-done"]

    def test_host_network_reaches_the_host_server_so_the_probe_works(self):
        port, hits = self._host_server()
        home = self._home(self._probe(port), network="host")
        self._cleanup_bottle(home, "probe")
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env=self._env())
        self.assertEqual(r.returncode, 0, r.stderr)
        out = cli(home, "logs", "probe").stdout
        self.assertIn("host-secret-page via 127.0.0.1", out)
        self.assertIn("probe-done", out)
        self.assertTrue(hits)

    def test_network_none_cannot_reach_a_host_server_on_any_address(self):
        port, hits = self._host_server()
        home = self._home(self._probe(port))
        self._cleanup_bottle(home, "probe")
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env=self._env())
        self.assertEqual(r.returncode, 0, r.stderr)
        out = cli(home, "logs", "probe").stdout
        self.assertIn("probe-done", out)
        self.assertNotIn("host-secret-page", out)
        self.assertEqual(hits, [])

    def _start_bg(self, home, *args):
        env = {"PATH": os.environ["PATH"], "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT),
               **self._env()}
        proc = subprocess.Popen([sys.executable, "-W", "error", "-m", "bot_bottle", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                cwd=str(REPO_ROOT))
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.communicate()))
        return proc

    def _wait_running(self, name):
        deadline = time.monotonic() + 30
        while not ENGINE.docker("ps", "-q", "--filter", f"name=^{name}$").stdout.strip():
            self.assertLess(time.monotonic(), deadline, f"{name} never ran")
            time.sleep(0.1)

    def test_commit_twice_then_destroy_leaves_no_image_of_the_bottle(self):
        before = _images()
        home = self._home(["sh", "-c", "echo started; exec sleep 60"])
        self._cleanup_bottle(home, "probe")
        for args in (("start", "probe", "--headless", "--prompt", "p"),
                     ("resume", "probe", "--headless", "--prompt", "p")):
            proc = self._start_bg(home, *args)
            self._wait_running("bot-bottle-probe")
            r = cli(home, "commit", "probe", extra_env=self._env())
            self.assertEqual(r.returncode, 0, r.stderr)
            proc.communicate(timeout=30)
            self.assertIn("bot-bottle-probe:frozen", ENGINE.docker("images", "--format",
                                                                   "{{.Repository}}:{{.Tag}}").stdout)
        self.assertEqual(cli(home, "destroy", "probe", extra_env=self._env()).returncode, 0)
        self.assertEqual(_images(), before)
        self.assertFalse((home / "state" / "probe").exists())

    def _commit_running(self, script):
        """Start `script` (busybox sh), wait for its /workspace/STARTED, commit; (commit's
        seconds, the start's exit code, the state dir)."""
        home = self._home(["sh", "-c", script])
        self._cleanup_bottle(home, "probe")
        proc = self._start_bg(home, "start", "probe", "--headless", "--prompt", "p")
        state = home / "state" / "probe"
        deadline = time.monotonic() + 30
        while not (state / "bottle" / "workspace" / "STARTED").exists():
            if proc.poll() is not None:
                self.fail(f"the start ended early: {proc.communicate()}")
            self.assertLess(time.monotonic(), deadline, "the agent never started")
            time.sleep(0.05)
        began = time.monotonic()
        r = cli(home, "commit", "probe", extra_env=self._env())
        took = time.monotonic() - began
        self.assertEqual(r.returncode, 0, r.stderr)
        proc.communicate(timeout=30)
        return took, proc.returncode, state

    def test_commit_of_a_running_agent_lets_its_sigterm_handler_finish_before_the_snapshot(self):
        """What the handler writes, in the workspace and in the container's own layer, is kept:
        in the snapshot and in the committed image."""
        handler = ("echo handled > /workspace/TERMED; echo layer > /tmp/TERMED; "
                   "echo handler-ran; exit 0")
        _, code, state = self._commit_running(
            f"trap '{handler}' TERM; touch /workspace/STARTED; sleep 600 & wait")
        self.assertEqual(code, 0, "the agent's own exit code, after its handler ran")
        self.assertEqual((state / "bottle" / "workspace" / "TERMED").read_text(), "handled\n")
        with tarfile.open(state / "snapshots" / "latest.tar") as tar:
            self.assertIn("workspace/TERMED", tar.getnames())
        self.assertIn("handler-ran", cli(state.parent.parent, "logs", "probe").stdout)
        layer = ENGINE.docker("run", "--rm", "bot-bottle-probe:frozen", "cat", "/tmp/TERMED")
        self.assertEqual(layer.stdout, "layer\n")
        self.assertEqual(ENGINE.docker("ps", "-a", "-q").stdout.strip(), "", "no container left")

    def test_an_agent_without_a_handler_stops_at_sigterm_at_once(self):
        """Not pid 1 of its container (docker's init is), so SIGTERM's default action applies
        as to any process but a pid 1: it ends at once, no wait for the grace period."""
        _, code, _ = self._commit_running("touch /workspace/STARTED; exec sleep 600")
        self.assertEqual(code, 143, "SIGTERM, not SIGKILL after the grace period (137)")

    def test_an_agent_that_ignores_sigterm_is_killed_after_the_grace_period(self):
        took, code, state = self._commit_running(
            "trap '' TERM; touch /workspace/STARTED; exec sleep 600")
        self.assertEqual(code, 137)
        self.assertGreaterEqual(took, docker.STOP_GRACE)
        self.assertTrue((state / "snapshots" / "latest.tar").exists())

    def test_a_docker_context_in_the_callers_config_reaches_every_docker_call(self):
        """No DOCKER_HOST: the engine is named only by the caller's ~/.docker context; destroy
        too reaches it (the exited agent's container is kept until then)."""
        caller = tempfile.TemporaryDirectory()
        self.addCleanup(caller.cleanup)
        env = {"HOME": caller.name}
        cfg = Path(caller.name) / ".docker"
        ENGINE.docker("--config", str(cfg), "context", "create", "bbtest",
                      "--docker", f"host={ENGINE.host}")
        ENGINE.docker("--config", str(cfg), "context", "use", "bbtest")
        home = self._home(["sh", "-c", "echo ran-in-$HOME"])
        self._cleanup_bottle(home, "probe")
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ran-in-/home/agent", cli(home, "logs", "probe").stdout)
        self.assertTrue(ENGINE.docker("ps", "-a", "-q", "--filter", "name=^bot-bottle-probe$").stdout.strip())
        self.assertEqual(cli(home, "destroy", "probe", extra_env=env).returncode, 0)
        self.assertEqual(ENGINE.docker("ps", "-a", "-q").stdout.strip(), "")

    def test_the_agent_runs_as_the_agent_user_and_what_it_writes_is_that_users(self):
        """We run as root (the suite does): the bottle runs as BOT_BOTTLE_AGENT_USER's uid."""
        agent = pwd.getpwnam("bot-bottle")
        home = self._home(["sh", "-c", "echo uid=$(id -u) gid=$(id -g); touch /workspace/made $HOME/made"])
        self._cleanup_bottle(home, "probe")
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env=self._env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"uid={agent.pw_uid} gid={agent.pw_gid}\n", cli(home, "logs", "probe").stdout)
        bottle = home / "state" / "probe" / "bottle"
        for made in (bottle / "workspace" / "made", bottle / "home" / "made"):
            st = made.stat()
            self.assertEqual((st.st_uid, st.st_gid), (agent.pw_uid, agent.pw_gid), made)
        self.assertEqual(cli(home, "commit", "probe", extra_env=self._env()).returncode, 0)
        r = cli(home, "resume", "probe", "--headless", "--prompt", "p", extra_env=self._env())
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_a_container_left_by_a_destroy_without_the_engine_does_not_block_the_slug(self):
        home = self._home(["sh", "-c", "echo run-$(cat /workspace/README)"])
        self._cleanup_bottle(home, "probe")
        self.assertEqual(cli(home, "start", "probe", "--headless", "--prompt", "p",
                             extra_env=self._env()).returncode, 0)
        with tempfile.TemporaryDirectory() as d:
            gone = {"DOCKER_HOST": f"unix://{d}/no-engine.sock"}
            self.assertEqual(cli(home, "destroy", "probe", extra_env=gone).returncode, 0)
        self.assertTrue(ENGINE.docker("ps", "-a", "-q").stdout.strip(), "the container outlived it")
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env=self._env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("run-hello", cli(home, "logs", "probe").stdout)

    def test_engine_down_exits_4_and_leaves_no_state(self):
        home = self._home(["sh", "-c", "echo hi"])
        with tempfile.TemporaryDirectory() as d:
            r = cli(home, "start", "probe", "--headless", "--prompt", "p",
                    extra_env={"DOCKER_HOST": f"unix://{d}/no-engine.sock"})
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertTrue(r.stderr.startswith("bot-bottle: error: "), r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("the docker engine does not answer", r.stderr)
        self.assertFalse((home / "state" / "probe").exists())

    def test_missing_image_exits_4_and_leaves_no_state(self):
        home = self._home(["sh", "-c", "echo hi"], image="bot-bottle-test/absent:1")
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", extra_env=self._env())
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("bot-bottle-test/absent:1", r.stderr)
        self.assertFalse((home / "state" / "probe").exists())
        self.assertEqual(ENGINE.docker("ps", "-a", "-q").stdout.strip(), "")


if __name__ == "__main__":
    unittest.main()
