"""Integration: the docker backend driven by a non-root host user, against a private dockerd
(_dockerd.py) and a busybox image whose USER is 1000.

The suite runs as root, so the caller here is a throw-away local user (`_hostile_users.
LocalUser`, removed with its processes); it runs the real core CLI with Debian's python3 and
`DOCKER_HOST` naming the private engine, whose socket is handed to that user for this module
only (and handed back before the engine stops). Without `--user`, the bottle ran as the image's
uid 1000, which cannot write a workspace of another uid, and a root image left root's files in
it (resume then failed and destroy left them behind). Here: start, commit, resume and destroy
all exit 0; the agent runs as the caller's uid:gid; everything in the workspace and home is the
caller's; destroy leaves no state, container or image.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from bot_bottle.demo_support.homes import make_scripted_home

from ._core_home import REPO_ROOT
from . import _dockerd
from ._dockerd import Dockerd
from ._hostile_users import PYTHON, LocalUser

ENGINE = None
CALLER = None
IMAGE_USER_1000 = "bot-bottle-test/busybox-user1000:1"


def setUpModule():
    global ENGINE, CALLER
    ENGINE = Dockerd()
    unittest.addModuleCleanup(_dockerd.check_nothing_left, _dockerd.stray_files())
    unittest.addModuleCleanup(ENGINE.stop)
    ENGINE.start()
    ENGINE.import_busybox(IMAGE_USER_1000, user="1000")
    CALLER = LocalUser()
    unittest.addModuleCleanup(CALLER.remove)
    # the engine's socket is root-equivalent: the caller gets it for this module alone
    os.chmod(ENGINE.dir, 0o711)
    os.chown(ENGINE.sock, CALLER.uid, CALLER.gid)
    unittest.addModuleCleanup(os.chmod, ENGINE.dir, 0o700)
    unittest.addModuleCleanup(lambda: ENGINE.sock.exists() and os.chown(ENGINE.sock, 0, 0))


class NonRootCallerTest(unittest.TestCase):
    def setUp(self):
        self.assertEqual(os.geteuid(), 0, "the suite runs as root (only root can add a user)")
        tmp = Path(tempfile.mkdtemp(prefix="bb-docker-user-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        self.home = make_scripted_home(tmp)
        agent = ["sh", "-c", "echo uid=$(id -u):$(id -g) run=$(cat /workspace/RUNS 2>/dev/null); "
                 "echo x >> /workspace/RUNS; mkdir -p /workspace/sub $HOME/cache; "
                 "touch /workspace/sub/made $HOME/cache/made"]
        (self.home / "bottles" / "b1.toml").write_text(
            f'dir = {json.dumps(str(self.home / "src"))}\nbackend = "docker"\n'
            f'image = "{IMAGE_USER_1000}"\nnetwork = "none"\n')
        (self.home / "agents" / "probe.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = {json.dumps(agent)}\n')
        for root, dirs, files in os.walk(tmp):
            for name in [".", *dirs, *files]:
                os.lchown(os.path.join(root, name), CALLER.uid, CALLER.gid)
        self.addCleanup(lambda: ENGINE.docker("rm", "-f", "bot-bottle-probe", check=False))
        self.addCleanup(lambda: ENGINE.docker("rmi", "-f", "bot-bottle-probe:frozen", check=False))

    def cli(self, *args):
        """The core CLI as the caller: its uid and gid, no supplementary groups."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home),
               "BOT_BOTTLE_HOME": str(self.home), "PYTHONPATH": str(REPO_ROOT),
               "DOCKER_HOST": ENGINE.host}
        return subprocess.run([PYTHON, "-W", "error", "-m", "bot_bottle", *args], env=env,
                              capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT),
                              user=CALLER.uid, group=CALLER.gid, extra_groups=[])

    def assert_callers(self, bottle: Path) -> None:
        for part in ("workspace", "home"):
            for root, dirs, files in os.walk(bottle / part):
                for name in [".", *dirs, *files]:
                    info = os.lstat(os.path.join(root, name))
                    self.assertEqual((info.st_uid, info.st_gid), (CALLER.uid, CALLER.gid),
                                     os.path.join(root, name))

    def test_a_non_root_caller_starts_commits_resumes_and_destroys_with_an_image_of_user_1000(self):
        r = self.cli("start", "probe", "--headless", "--prompt", "p")
        self.assertEqual(r.returncode, 0, r.stderr + self.cli("logs", "probe").stdout)
        bottle = self.home / "state" / "probe" / "bottle"
        self.assertIn(f"uid={CALLER.uid}:{CALLER.gid} run=\n", self.cli("logs", "probe").stdout)
        self.assert_callers(bottle)
        r = self.cli("commit", "probe")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli("resume", "probe", "--headless", "--prompt", "again")
        self.assertEqual(r.returncode, 0, r.stderr + self.cli("logs", "probe").stdout)
        self.assertIn(f"uid={CALLER.uid}:{CALLER.gid} run=x\n", self.cli("logs", "probe").stdout)
        self.assert_callers(bottle)
        rows = json.loads(self.cli("list", "--json").stdout)
        self.assertEqual([(x["slug"], x["state"]) for x in rows], [("probe", "exited")])
        self.assertEqual(self.cli("commit", "probe").returncode, 0)
        r = self.cli("destroy", "probe")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse((self.home / "state" / "probe").exists())
        self.assertEqual(json.loads(self.cli("list", "--json").stdout), [])
        self.assertEqual(ENGINE.docker("ps", "-a", "-q").stdout.strip(), "")
        self.assertNotIn("bot-bottle-probe", ENGINE.docker("images", "-a").stdout)
        r = self.cli("start", "probe", "--headless", "--prompt", "p")
        self.assertEqual(r.returncode, 0, "the slug is free again: " + r.stderr)
        self.assertEqual(self.cli("destroy", "probe").returncode, 0)


if __name__ == "__main__":
    unittest.main()
