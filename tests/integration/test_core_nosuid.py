"""A setuid binary in the workspace gains nothing in a real bwrap bottle: bwrap mounts every
bind `nosuid` and runs the sandbox with no_new_privs.

The binary is a copy of `id` owned by uid 65534 with setuid/setgid set. The test checks that
running the binary leaves the effective uid what the bottle's uid is, while the same binary on
the host does switch to 65534 (the control that proves the binary works), and that the
workspace and home mounts carry `nosuid` and the process `NoNewPrivs: 1`. (Run as root — the
suite is — the bottle is the agent user's and its workspace is given to that user before the
run, which also clears the bits: the mount options and no_new_privs are what still hold for a
binary the agent makes setuid itself; tests/integration/test_core_agent_user.py runs one.)"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from ._core_home import cli, make_home

PROBE = ("id -u > UID; ./id-suid -u > EUID; ./id-suid -g > EGID; "
         "cat /proc/self/mountinfo > MOUNTS; grep NoNewPrivs /proc/self/status > NNP")


class NosuidTest(unittest.TestCase):
    def test_a_setuid_binary_in_the_workspace_does_not_change_the_bottles_uid(self):
        home = make_home(self)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        ws = Path(tmp.name) / "ws"
        ws.mkdir()
        binary = ws / "id-suid"
        shutil.copy(shutil.which("id"), binary)
        os.chown(binary, 65534, 65534)   # the suite runs as root
        os.chmod(binary, 0o6755)
        host = subprocess.run([str(binary), "-u"], capture_output=True, text=True, check=True)
        self.assertEqual(host.stdout.strip(), "65534", "control: setuid works on the host")
        argv = ["sh", "-c", PROBE]
        (home / "agents" / "probe.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = {json.dumps(argv)}\n')
        (home / "bottles" / "b1.toml").write_text('network = "none"\n')
        r = cli(home, "start", "probe", "--headless", "--prompt", "p", "--workspace", str(ws))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(cli, home, "destroy", "probe")
        out = home / "state" / "probe" / "bottle" / "workspace"
        uid = (out / "UID").read_text().strip()
        self.assertEqual((out / "EUID").read_text().strip(), uid)
        self.assertNotEqual((out / "EGID").read_text().strip(), "65534")
        self.assertEqual((out / "NNP").read_text().split(), ["NoNewPrivs:", "1"])
        options = {line.split()[4]: line.split()[5].split(",") for line in (out / "MOUNTS").read_text().splitlines()}
        for mount in ("/workspace", "/home/agent"):
            self.assertIn("nosuid", options[mount], mount)
