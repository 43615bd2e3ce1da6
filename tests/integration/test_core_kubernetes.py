"""Integration: the real core CLI with `backend = "kubernetes"` against the fake API server
(tests/support/fake_kube.py: real HTTPS, token, schema-checked objects, and a kubelet running
each pod's containers as real processes under bwrap with the PVC as a local dir). Real here:
the CLI, the REST client and its TLS, the bridge, the in-pod relay, the seed, the agent, the
volume carrying the work from one pod to the next. Not real: the scheduler, images, the CNI."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from bot_bottle.demo_support.homes import make_scripted_home
from tests.integration._gate_servers import Server
from tests.support.fake_kube import FakeKube

from ._core_home import REPO_ROOT, cli

IMAGE = "bb-test:1"
AGENT_DIR = "/srv/agent"
SLUG = "k1"


def kube_home(testcase, agent_args=(), timeout=None):
    tmp = tempfile.TemporaryDirectory()
    testcase.addCleanup(tmp.cleanup)
    home = make_scripted_home(Path(tmp.name), agent_args, script=f"{AGENT_DIR}/scripted_agent.py")
    with open(home / "bottles" / "b1.toml", "a") as fh:
        fh.write(f'backend = "kubernetes"\nimage = "{IMAGE}"\ncpu = "500m"\nmemory = "256Mi"\n')
    if timeout is not None:
        with open(home / "agents" / "scripted.toml", "a") as fh:
            fh.write(f"timeout = {timeout}\n")
    return home


def fake(testcase, **kw):
    kube = FakeKube(images={IMAGE: {AGENT_DIR: REPO_ROOT / "bot_bottle" / "demo_support"}}, **kw)
    kube.__enter__()
    testcase.addCleanup(kube.close)
    return kube


def managed(kube) -> dict:
    """Every object the fake holds, by plural (none of another owner is ever made here)."""
    return {plural: kube.names(plural) for plural in kube.store if kube.names(plural)}


class KubernetesLifecycleTest(unittest.TestCase):
    def run_cli(self, kube, home, *args, env=None):
        return cli(home, *args, extra_env=env or kube.environ())

    def test_start_commit_resume_destroy(self):
        kube = fake(self, snapshots=True)
        home = kube_home(self, ["--exit-code", "7"])
        r = self.run_cli(kube, home, "start", "scripted", "--headless", "--prompt", "first", "--label", SLUG)
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertEqual(r.stderr.splitlines()[0], f"bot-bottle: slug={SLUG}")
        log = self.run_cli(kube, home, "logs", SLUG).stdout
        self.assertIn("scripted-agent: run 1, saw 0 earlier run(s)\n--- bot-bottle: exit 7 ---\n", log)
        ws = kube.pvc_dir(f"bb-{SLUG}") / "workspace"
        self.assertEqual((ws / "AGENT_LOG.md").read_text(), "run 1: first\n")
        self.assertTrue((ws / "README").exists())   # the seed brought the clone
        # the run's pod and secret are gone; the volume, scripts and policy stay
        self.assertEqual(managed(kube), {"persistentvolumeclaims": [f"bb-{SLUG}"],
                                         "configmaps": [f"bb-{SLUG}-scripts"], "networkpolicies": [f"bb-{SLUG}"]})
        rows = json.loads(self.run_cli(kube, home, "list", "--json").stdout)
        self.assertEqual([(x["slug"], x["state"], x["backend"], x["exit_code"]) for x in rows],
                         [(SLUG, "exited", "kubernetes", 7)])

        r = self.run_cli(kube, home, "commit", SLUG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(kube.names("volumesnapshots")), 1)
        self.assertEqual(kube.names("persistentvolumeclaims"), [f"bb-{SLUG}"])

        r = self.run_cli(kube, home, "resume", SLUG, "--headless", "--prompt", "second")
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertIn("scripted-agent: run 2, saw 1 earlier run(s)\n", self.run_cli(kube, home, "logs", SLUG).stdout)
        self.assertEqual((ws / "AGENT_LOG.md").read_text(), "run 1: first\nrun 2: second\n")
        git = subprocess.run(["git", "-c", f"safe.directory={ws}", "-C", str(ws), "log", "--format=%s", "bot/work"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        self.assertEqual(git[:2], ["scripted agent run 2", "scripted agent run 1"])
        pods = [o for o in kube.created if o["kind"] == "Pod"]
        self.assertEqual([p["metadata"]["name"] for p in pods], [f"bb-{SLUG}-run-1", f"bb-{SLUG}-run-2"])
        self.assertEqual([len(p["spec"].get("initContainers", [])) for p in pods], [1, 0])   # seeded once
        for p in pods:
            self.assertEqual(p["spec"]["containers"][0]["resources"],
                             {"requests": {"cpu": "500m", "memory": "256Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}})

        r = self.run_cli(kube, home, "destroy", SLUG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(managed(kube), {})
        self.assertFalse((home / "state" / SLUG).exists())

    def test_no_snapshot_api_means_no_snapshot_and_commit_stops_a_running_pod(self):
        kube = fake(self, snapshots=False)
        home = kube_home(self, ["--sleep", "60"])
        env = {"PATH": os.environ["PATH"], "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT),
               **kube.environ()}
        proc = subprocess.Popen([sys.executable, "-m", "bot_bottle", "start", "scripted", "--headless",
                                 "--prompt", "p", "--label", SLUG], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        with kube.lock:   # synchronise on the fake's own state: the agent container runs
            self.assertTrue(kube.lock.wait_for(lambda: any(
                (p.get("status") or {}).get("phase") == "Running" for p in kube.store["pods"].values()), 30))
        r = self.run_cli(kube, home, "commit", SLUG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(proc.wait(timeout=30), 143)   # SIGTERM within the grace period
        proc.stderr.close()
        self.assertEqual(kube.names("pods"), [])
        self.assertEqual(kube.names("volumesnapshots"), [])
        self.assertFalse(any("volumesnapshots" in p for _, p in kube.requests))
        rows = json.loads(self.run_cli(kube, home, "list", "--json").stdout)
        self.assertEqual([(x["slug"], x["state"]) for x in rows], [(SLUG, "frozen")])
        self.assertEqual(self.run_cli(kube, home, "destroy", SLUG).returncode, 0)
        self.assertEqual(managed(kube), {})

    def test_timeout_is_the_pods_deadline(self):
        kube = fake(self)
        home = kube_home(self, ["--sleep", "60"], timeout=2)
        r = self.run_cli(kube, home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG)
        self.assertEqual(r.returncode, 124, r.stderr)
        self.assertIn("timeout", r.stderr)
        self.assertEqual(kube.names("pods"), [])


class KubernetesLogStreamTest(unittest.TestCase):
    def test_a_broken_log_stream_is_followed_again_and_loses_nothing(self):
        kube = fake(self)
        kube.cut_logs = 1
        home = kube_home(self)
        agent = "import time; print('line 1', flush=True); time.sleep(1.5); print('line 2', flush=True)"
        (home / "agents" / "scripted.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = ["python3", "-c", {json.dumps(agent)}]\n')
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG, extra_env=kube.environ())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(kube.cut_logs, 0)   # the first stream was cut
        log = cli(home, "logs", SLUG).stdout
        self.assertIn("line 1\n", log)
        self.assertIn("--- bot-bottle: the log stream broke; following it again ---\n", log)
        self.assertIn("line 2\n--- bot-bottle: exit 0 ---\n", log)
        self.assertEqual(managed(kube)["persistentvolumeclaims"], [f"bb-{SLUG}"])
        self.assertEqual(kube.names("pods"), [])


class KubernetesEgressTest(unittest.TestCase):
    def test_egress_reaches_the_hosts_gate_through_the_bridge(self):
        """network = "egress": the relay's 127.0.0.1:3128 in the pod, the bridge's `egress`
        channel, the host's egress gate, an allowlisted (pinned) host. The fake's pods share
        the host's network namespace, so 3128 is the host loopback's for this test."""
        kube = fake(self)
        home = kube_home(self)
        plain = Server("plain").start(self.addCleanup)
        probe = ("import urllib.request as u, urllib.error as e\n"
                 "print(u.urlopen('http://plain.test/kube', timeout=15).read().decode())\n"
                 "try:\n    u.urlopen('http://other.test/', timeout=15)\n"
                 "except e.HTTPError as x:\n    print('refused', x.code)\n")
        (home / "agents" / "scripted.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = ["python3", "-c", {json.dumps(probe)}]\n')
        bottle = home / "bottles" / "b1.toml"
        bottle.write_text(bottle.read_text().replace('network = "none"', 'egress = ["plain.test"]'))
        env = kube.environ(BOT_BOTTLE_EGRESS_PIN=f"plain.test=127.0.0.1:{plain.port}")
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG, extra_env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        log = cli(home, "logs", SLUG, extra_env=env).stdout
        self.assertIn("hello from plain /kube\n", log)
        self.assertIn("refused 403\n", log)
        self.assertEqual([q["path"] for q in plain.requests], ["/kube"])
        self.assertEqual(cli(home, "destroy", SLUG, extra_env=env).returncode, 0)
        self.assertEqual(managed(kube), {})


class KubernetesRefusalsTest(unittest.TestCase):
    def assert_one_line(self, r, code, text):
        self.assertEqual(r.returncode, code, r.stderr)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("bot-bottle: error: "), lines[0])
        self.assertIn(text, lines[0])

    def test_api_down_wrong_token_and_missing_settings_exit_4_leaving_nothing(self):
        kube = fake(self)
        home = kube_home(self)
        down = kube.environ(BOT_BOTTLE_KUBE_SERVER="https://127.0.0.1:9")   # nothing listens on 9
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG, extra_env=down)
        self.assert_one_line(r, 4, "does not answer")
        wrong = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: (wrong / "t").unlink() or wrong.rmdir())
        (wrong / "t").write_text("not-the-token")
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG,
                extra_env=kube.environ(BOT_BOTTLE_KUBE_TOKEN_FILE=str(wrong / "t")))
        self.assert_one_line(r, 4, "Unauthorized")
        self.assertNotIn(kube.token, r.stderr)
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG, extra_env={})
        self.assert_one_line(r, 4, "BOT_BOTTLE_KUBE_SERVER")
        self.assertFalse((home / "state" / SLUG).exists())
        self.assertEqual(managed(kube), {})

    def test_a_failing_seed_fails_in_one_line_with_its_output_and_leaves_nothing(self):
        broken = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: (broken / "python3").unlink() or broken.rmdir())
        (broken / "python3").write_text("#!/bin/sh\necho no python in this image\nexit 3\n")
        (broken / "python3").chmod(0o755)
        broken.chmod(0o755)   # the pod's uid (1000) reads it
        kube = FakeKube(images={"broken:1": {"/usr/local/bin": broken}})
        kube.__enter__()
        self.addCleanup(kube.close)
        home = kube_home(self)
        bottle = home / "bottles" / "b1.toml"
        bottle.write_text(bottle.read_text().replace(IMAGE, "broken:1"))
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG, extra_env=kube.environ())
        self.assertEqual(r.returncode, 4, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        self.assertIn("the seed exited 3: no python in this image", last)
        self.assertEqual(managed(kube), {})
        self.assertFalse((home / "state" / SLUG).exists())

    def test_missing_image_fails_in_one_line_and_leaves_nothing(self):
        kube = fake(self)
        home = kube_home(self)
        (home / "bottles" / "b1.toml").write_text((home / "bottles" / "b1.toml").read_text()
                                                  .replace(IMAGE, "no-such-image:1"))
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", SLUG, extra_env=kube.environ())
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("ErrImagePull", r.stderr.strip().splitlines()[-1])
        self.assertEqual(managed(kube), {})   # a first run that never started leaves nothing
        self.assertFalse((home / "state" / SLUG).exists())


if __name__ == "__main__":
    unittest.main()
