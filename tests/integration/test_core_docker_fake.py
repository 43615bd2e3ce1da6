"""Integration: the docker backend against a fake `docker` executable that records its argv."""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

from ._core_home import cli, make_home

FAKE = """#!/usr/bin/env python3
import json, os, sys
here = os.path.dirname(os.path.abspath(sys.argv[0]))
with open(os.path.join(here, "log"), "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "run":
    with open(os.path.join(here, "stdin"), "wb") as fh:
        fh.write(sys.stdin.buffer.read())
    print("fake docker ran", flush=True)
if sys.argv[1:3] == ["image", "inspect"]:
    print("sha256:" + "0" * 64)
with open(os.path.join(here, "rc")) as fh:
    sys.exit(int(fh.read()) if sys.argv[1] == "run" else 0)
"""


class DockerFakeTest(unittest.TestCase):
    def test_docker_lifecycle_pings_the_engine_checks_the_image_then_runs_commits_and_removes(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\nimage = "img:1"\n')
        with tempfile.TemporaryDirectory() as bindir:
            (Path(bindir) / "docker").write_text(FAKE)
            os.chmod(Path(bindir) / "docker", stat.S_IRWXU)
            log = Path(bindir) / "log"
            path = bindir + ":" + os.environ["PATH"]
            (Path(bindir) / "rc").write_text("5")
            env = {}
            r = cli(home, "start", "scripted", "--headless", "--prompt", "p", path=path, extra_env=env)
            self.assertEqual(r.returncode, 5, r.stderr)
            self.assertEqual(cli(home, "commit", "scripted", path=path, extra_env=env).returncode, 0)
            self.assertEqual(cli(home, "destroy", "scripted", path=path, extra_env=env).returncode, 0)
            calls = [json.loads(line) for line in log.read_text().splitlines()]
        self.assertEqual(calls[:4], [["version", "--format", "{{.Server.Version}}"],
                                     ["image", "inspect", "--format", "{{.Id}}", "img:1"],
                                     ["rm", "bot-bottle-scripted"],
                                     calls[3]])
        run = calls[3]
        self.assertEqual(run[:5], ["run", "--init", "-i", "--name", "bot-bottle-scripted"])
        self.assertIn("img:1", run)
        self.assertFalse([c for c in calls if c[0] == "network"], calls)
        stop = calls.index(["stop", "-t", "5", "bot-bottle-scripted"])
        commit = calls.index(["commit", "bot-bottle-scripted", "bot-bottle-scripted:frozen"])
        self.assertLess(stop, commit, "stopped (SIGTERM, then SIGKILL after 5 s) before the commit")
        self.assertIn(["rm", "-f", "bot-bottle-scripted"], calls[commit + 1:])

    def test_values_reach_docker_through_its_environment_never_its_argv(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(
            f'dir = "{home / "src"}"\nbackend = "docker"\nenv = ["SECRET_KEY"]\n')
        path, calls = self._fake_docker()
        seen = Path(path.split(":")[0]) / "env.json"
        fake = (Path(path.split(":")[0]) / "docker")
        fake.write_text(FAKE.replace("with open(os.path.join(here, \"rc\"))",
                                     "json.dump(dict(os.environ), open(os.path.join(here, 'env.json'), 'w')) "
                                     "if sys.argv[1] == 'run' else None\nwith open(os.path.join(here, \"rc\"))"))
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", path=path,
                extra_env={"SECRET_KEY": "s3cr3t-value"})
        self.assertEqual(r.returncode, 0, r.stderr)
        run = next(c for c in calls() if c[0] == "run")
        names = [run[i + 1] for i, a in enumerate(run) if a == "-e"]
        self.assertIn("SECRET_KEY", names)
        self.assertIn("BOT_BOTTLE_PROMPT_FILE", names)
        self.assertFalse([a for a in run if "s3cr3t-value" in a or "=" in a and a.split("=")[0] in names])
        env = json.loads(seen.read_text())
        self.assertEqual((env["SECRET_KEY"], env["BOT_BOTTLE_PROMPT_FILE"]), ("s3cr3t-value", "/run/bot-bottle/prompt.txt"))
        self.assertEqual((seen.parent / "stdin").read_text(), "p", "the prompt is docker run -i's stdin")

    def test_tools_are_bound_read_only_path_is_set_and_the_program_is_left_to_the_image(self):
        home = make_home(self)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        tools = Path(tmp.name)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\n')
        (home / "agents" / "img.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = ["cli-only-in-the-image"]\n'
            f'tools = ["{tools}"]\npath = ["{tools}"]\n')
        path, calls = self._fake_docker()
        r = cli(home, "start", "img", "--headless", "--prompt", "p", path=path)
        self.assertEqual(r.returncode, 0, r.stderr)
        run = next(c for c in calls() if c[0] == "run")
        vols = [run[i + 1] for i, a in enumerate(run) if a == "-v"]
        self.assertIn(f"{tools}:{tools}:ro", vols)
        self.assertIn("PATH", [run[i + 1] for i, a in enumerate(run) if a == "-e"])
        self.assertEqual(run[-1], "cli-only-in-the-image")
        self.assertIn("fake docker ran\n--- bot-bottle: exit 0 ---", cli(home, "logs", "img", path=path).stdout)

    def test_missing_docker_exits_4(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\n')
        with tempfile.TemporaryDirectory() as bindir:
            r = cli(home, "start", "scripted", "--headless", "--prompt", "p", path=bindir)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("docker not found", r.stderr)
        self.assertEqual(r.stderr.strip().splitlines(), [r.stderr.strip()])
        self.assertTrue(r.stderr.startswith("bot-bottle: error: "), r.stderr)
        self.assertFalse((home / "state" / "scripted").exists())

    def _fake_docker(self, rc="0"):
        bindir = tempfile.TemporaryDirectory()
        self.addCleanup(bindir.cleanup)
        (Path(bindir.name) / "docker").write_text(FAKE)
        os.chmod(Path(bindir.name) / "docker", stat.S_IRWXU)
        (Path(bindir.name) / "rc").write_text(rc)
        log = Path(bindir.name) / "log"
        return bindir.name + ":" + os.environ["PATH"], lambda: [json.loads(x) for x in log.read_text().splitlines()]

    def test_no_network_bottle_runs_on_network_none_with_only_bottle_mounts(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\n')
        path, calls = self._fake_docker()
        self.assertEqual(cli(home, "start", "scripted", "--headless", "--prompt", "p", path=path).returncode, 0)
        self.assertFalse([c for c in calls() if c[0] == "network"], calls())
        run = next(c for c in calls() if c[0] == "run")
        self.assertEqual(run[run.index("--network") + 1], "none")
        self.assertIn("python:3-slim", run)  # default image
        vols = [run[i + 1] for i, a in enumerate(run) if a == "-v"]
        state = home / "state" / "scripted"
        self.assertIn(f"{state / 'bottle' / 'workspace'}:/workspace", vols)
        self.assertIn(f"{state / 'bottle' / 'home'}:/home/agent", vols)
        self.assertIn(f"{state / 'prompt.txt'}:/run/bot-bottle/prompt.txt:ro", vols)
        self.assertFalse(any(v.split(":")[0] == str(Path.home()) for v in vols), vols)
        self.assertEqual(run[run.index("-w") + 1], "/workspace")

    def test_host_network_bottle_creates_no_network_and_resume_and_destroy_clean_up(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(
            f'dir = "{home / "src"}"\nbackend = "docker"\nnetwork = "host"\nimage = "img:2"\n')
        path, calls = self._fake_docker("3")
        self.assertEqual(cli(home, "start", "scripted", "--headless", "--prompt", "p", path=path).returncode, 3)
        self.assertEqual(cli(home, "commit", "scripted", path=path).returncode, 0)
        r = cli(home, "resume", "scripted", "--headless", "--prompt", "again", path=path)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stderr.splitlines()[0], "bot-bottle: slug=scripted")
        self.assertEqual(cli(home, "destroy", "scripted", path=path).returncode, 0)
        log = calls()
        self.assertFalse([c for c in log if c[:2] == ["network", "create"]], log)
        runs = [c for c in log if c[0] == "run"]
        self.assertEqual(len(runs), 2)
        for run in runs:
            self.assertEqual(run[run.index("--network") + 1], "host")
            self.assertIn("img:2", run)
        self.assertEqual(log[-2:], [["rm", "-f", "bot-bottle-scripted"], ["rmi", "-f", "bot-bottle-scripted:frozen"]])
        self.assertFalse((home / "state" / "scripted").exists())

    def test_an_egress_bottle_runs_with_network_none_the_gates_socket_and_the_forwarder(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(
            f'dir = "{home / "src"}"\nbackend = "docker"\negress = ["pypi.org"]\n')
        path, calls = self._fake_docker()
        bindir = Path(path.split(":")[0])
        # while `docker run` runs, the gate serves the socket it binds: ask it for a refused host
        (bindir / "docker").write_text(FAKE.replace('if sys.argv[1] == "run":\n', """if sys.argv[1] == "run":
    import socket
    src = next(v.split(":")[0] for v in sys.argv if v.endswith(":/run/bot-bottle/egress.sock"))
    s = socket.socket(socket.AF_UNIX)
    s.connect(src)
    s.sendall(b"CONNECT evil.example:443 HTTP/1.1\\r\\n\\r\\n")
    open(os.path.join(here, "gate"), "wb").write(s.recv(1000))
""", 1))
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", path=path)
        self.assertEqual(r.returncode, 0, r.stderr)
        log = calls()
        self.assertFalse([c for c in log if c[:2] == ["network", "create"]], log)
        run = next(c for c in log if c[0] == "run")
        self.assertEqual(run[run.index("--network") + 1], "none")
        sock = home / "state" / "scripted" / "egress.sock"
        self.assertIn(f"{sock}:/run/bot-bottle/egress.sock", [run[i + 1] for i, a in enumerate(run) if a == "-v"])
        self.assertIn("HTTPS_PROXY", [run[i + 1] for i, a in enumerate(run) if a == "-e"])
        image = run.index("python:3-slim")
        self.assertEqual(run[image + 1:image + 10],
                         ["python3", "-I", "/opt/bot-bottle/bot_bottle/gate/forwarder.py", "--port", "3128",
                          "--socket", "/run/bot-bottle/egress.sock", "--", "python3"])
        self.assertIn(b"403 Forbidden", (bindir / "gate").read_bytes())
        self.assertIn("bot-bottle: egress refused: evil.example:443: not on the bottle's egress allowlist", r.stderr)
        self.assertFalse(sock.exists())

    def test_every_flag_we_pass_is_known_to_the_real_docker_client(self):
        """No engine needed: the real client's `--help` of each subcommand lists each flag we
        use (`.ci/setup` installs the client: no skip)."""
        real = shutil.which("docker")
        self.assertIsNotNone(real, "no docker client on PATH (.ci/setup installs docker.io)")
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\n')
        path, calls = self._fake_docker()
        cli(home, "start", "scripted", "--headless", "--prompt", "p", path=path)
        cli(home, "commit", "scripted", path=path)
        cli(home, "destroy", "scripted", path=path)
        seen = set()
        for call in calls():
            sub = call[:2] if call[0] == "image" else call[:1]
            flags = [a for a in call[len(sub):] if a.startswith("-")]
            if call[0] == "run":
                flags = [a for a in call[1:call.index("python:3-slim")] if a.startswith("-")]
            with self.subTest(sub=sub):
                out = subprocess.run([real, *sub, "--help"], capture_output=True, text=True, timeout=30,
                                     stdin=subprocess.DEVNULL)
                self.assertEqual(out.returncode, 0, out.stderr)
                for flag in flags:
                    self.assertRegex(out.stdout, rf"(^|[\s,]){re.escape(flag)}[\s,]")
            seen.add(tuple(sub))
        self.assertEqual(seen, {("version",), ("image", "inspect"), ("run",), ("stop",), ("commit",), ("rm",),
                                ("rmi",)})

    def test_dry_run_shows_the_docker_argv_and_calls_nothing(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\n')
        path, calls = self._fake_docker()
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--dry-run", path=path)
        self.assertEqual(r.returncode, 0, r.stderr)
        plan = json.loads(r.stdout)
        self.assertEqual((plan["backend"], plan["argv"][:2]), ("docker", ["docker", "run"]))
        self.assertFalse((home / "state" / "scripted").exists())
        with self.assertRaises(FileNotFoundError):
            calls()


if __name__ == "__main__":
    unittest.main()
