"""Never host root in a bottle: run as root, the CLI runs each bottle as the unprivileged user
`BOT_BOTTLE_AGENT_USER` (here a throw-away system user `bbtest<hex>` this test creates and
removes), in a real bwrap bottle.

A hostile agent (the `command` provider, a python script) tries what uid 0 could do: read
/etc/shadow, leave a setuid-root shell in its workspace, become root, keep capabilities. It
must run as the agent user (Uid/Gid in /proc/self/status, no groups, every capability set
empty, no_new_privs), its files must be that user's on the host, and it must still reach what
a bottle reaches: /tmp, the egress gate through the forwarder (an allowlisted host works,
another is refused), and the forge socket once `agent_user.grant` gave it. After a commit and
resume the restored workspace is the agent user's again. A missing user fails start and
resume with one line naming the fix, exit 4, no state left; a bad name or root, exit 2.
Like the rest of the suite (.ci/setup, CI) this runs as root: only root can make the user.
"""

import json
import os
import pwd
import secrets
import socket
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend import agent_user
from bot_bottle.errors import BackendError
from tests._serve import serve_connections
from tests.integration._core_home import cli, make_home
from tests.integration._gate_servers import Server

PROBE = r'''
import json, os, shutil, socket, subprocess, urllib.error, urllib.request
report = {}
try:
    open("/etc/shadow").read()
    report["shadow"] = "read"
except OSError as exc:
    report["shadow"] = exc.strerror
with open("/workspace/mine.txt", "w") as fh:
    fh.write("mine\n")
shutil.copy("/bin/sh", "/workspace/sh-suid")
os.chmod("/workspace/sh-suid", 0o4755)
run = subprocess.run(["/workspace/sh-suid", "-p", "-c", "id -u; id -g; cat /etc/shadow"],
                     capture_output=True, text=True)
report["suid_run"] = [run.returncode, run.stdout.split(), "Permission denied" in run.stderr]
report["status"] = {k: v.split() for k, _, v in (line.partition(":") for line in
                    open("/proc/self/status")) if k in ("Uid", "Gid", "Groups", "CapInh",
                    "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")}
try:
    os.setuid(0)
    report["setuid0"] = "became root"
except OSError as exc:
    report["setuid0"] = exc.strerror
try:
    with open("/tmp/t", "w") as fh:
        fh.write("t")
    report["tmp"] = "written"
except OSError as exc:
    report["tmp"] = exc.strerror
try:
    with urllib.request.urlopen("http://plain.test/hello", timeout=15) as r:
        report["allowed"] = [r.status, r.read().decode()]
except Exception as exc:
    report["allowed"] = repr(exc)
s = socket.create_connection(("127.0.0.1", 3128), timeout=15)
s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
report["refused"] = s.recv(4096).decode().split("\r\n")[0]
s.close()
try:
    f = socket.socket(socket.AF_UNIX)
    f.connect("/run/bot-bottle/forge.sock")
    report["forge"] = f.recv(64).decode()
    f.close()
except OSError as exc:
    report["forge"] = exc.strerror
report["sockets"] = {p: [os.stat(p).st_uid, oct(os.stat(p).st_mode & 0o7777)]
                     for p in ("/run/bot-bottle/egress.sock", "/run/bot-bottle/forge.sock",
                               "/run/bot-bottle/prompt.txt")}
report["runs"] = len(open("/workspace/RUNS").read()) + 1 if os.path.exists("/workspace/RUNS") else 1
with open("/workspace/RUNS", "a") as fh:
    fh.write("x")
with open("/workspace/REPORT.json", "w") as fh:
    json.dump(report, fh)
'''

ZERO_CAPS = ["0000000000000000"]


def _remove_user(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)
    if subprocess.run(["getent", "group", name], capture_output=True).returncode == 0:
        subprocess.run(["groupdel", name], capture_output=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    raise AssertionError(f"test user {name} could not be removed")


def make_user(add_cleanup) -> pwd.struct_passwd:
    """A new system user bbtest<hex> (and its group), removed by the cleanup."""
    name = "bbtest" + secrets.token_hex(4)
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    add_cleanup(_remove_user, name)
    return pwd.getpwnam(name)


class AgentUserBottleTest(unittest.TestCase):
    def setUp(self):
        self.assertEqual(os.geteuid(), 0, "the suite runs as root (only root can add a user)")
        entry = make_user(self.addCleanup)
        self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid
        self.env = {agent_user.USER_VAR: self.name}

    def forge_socket(self) -> Path:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        path = Path(tmp.name) / "forge.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(4)

        def hello(conn):
            with conn:
                conn.sendall(b"forge-ok")
        serve_connections(self.addCleanup, listener, hello)
        agent_user.grant(path, self.env)   # what the orchestrator does with its sidecar socket
        return path

    def test_a_hostile_agent_runs_as_the_agent_user_and_gains_nothing(self):
        home = make_home(self)
        plain = Server("plain").start(self.addCleanup)
        (home / "agents" / "evil.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = {json.dumps(["python3", "-c", PROBE])}\n')
        (home / "bottles" / "b1.toml").write_text(
            f'dir = {json.dumps(str(home / "src"))}\negress = ["plain.test"]\n')
        forge = self.forge_socket()
        env = {**self.env, "BOT_BOTTLE_EGRESS_PIN": f"plain.test=127.0.0.1:{plain.port}",
               "BOT_BOTTLE_FORGE_SOCKET": str(forge), "BOT_BOTTLE_FORGE_RUN_TOKEN": "t"}
        r = cli(home, "start", "evil", "--headless", "--prompt", "p", extra_env=env)
        self.addCleanup(cli, home, "destroy", "evil")
        self.assertEqual(r.returncode, 0, r.stderr + cli(home, "logs", "evil").stdout[-3000:])
        state = home / "state" / "evil"
        ws = state / "bottle" / "workspace"
        rep = json.loads((ws / "REPORT.json").read_text())

        self.assertEqual(rep["shadow"], "Permission denied")
        self.assertEqual(rep["setuid0"], "Operation not permitted")
        st = rep["status"]
        self.assertEqual(st["Uid"], [str(self.uid)] * 4)
        self.assertEqual(st["Gid"], [str(self.gid)] * 4)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            self.assertEqual(st[cap], ZERO_CAPS, cap)
        self.assertEqual(st["NoNewPrivs"], ["1"])
        self.assertEqual(st["Groups"], [])
        self.assertEqual(st["CapBnd"], ZERO_CAPS, "no capability left to gain back")
        # the setuid copy of sh: the agent user's own, and running it gains nothing
        self.assertEqual(rep["suid_run"], [1, [str(self.uid), str(self.gid)], True])
        suid = os.lstat(ws / "sh-suid")
        self.assertEqual((suid.st_uid, suid.st_gid), (self.uid, self.gid))
        self.assertNotEqual(suid.st_uid, 0)
        self.assertEqual(rep["tmp"], "written")
        # on the host, everything in the bottle is the agent user's (the fill's clone included)
        self.assert_owned(state / "bottle")
        mine = os.lstat(ws / "mine.txt")
        self.assertEqual((mine.st_uid, mine.st_gid), (self.uid, self.gid))

        # the forwarder runs as the agent user and reaches the gate; the gate still decides
        self.assertEqual(rep["allowed"], [200, "hello from plain /hello"])
        self.assertTrue(rep["refused"].startswith("HTTP/1.1 403"), rep["refused"])
        self.assertIn("bot-bottle: egress refused: example.com:443", r.stderr)
        self.assertEqual(rep["forge"], "forge-ok")
        # what the bottle reaches is the agent user's alone (and root's), never world-readable
        self.assertEqual(set(map(tuple, rep["sockets"].values())), {(self.uid, "0o600")}, rep["sockets"])

        # commit + resume: the restored workspace is the agent user's, the setuid bit gone
        self.assertEqual(cli(home, "commit", "evil").returncode, 0)
        (ws / "REPORT.json").unlink()
        r = cli(home, "resume", "evil", "--headless", "--prompt", "again", extra_env=env)
        self.assertEqual(r.returncode, 0, r.stderr + cli(home, "logs", "evil").stdout[-3000:])
        rep = json.loads((ws / "REPORT.json").read_text())
        self.assertEqual(rep["runs"], 2)
        self.assertEqual(rep["status"]["Uid"], [str(self.uid)] * 4)
        self.assert_owned(state / "bottle")

    def assert_owned(self, bottle: Path) -> None:
        for part in ("workspace", "home"):
            for root, dirs, files in os.walk(bottle / part):
                for name in [".", *dirs, *files]:
                    info = os.lstat(os.path.join(root, name))
                    self.assertEqual((info.st_uid, info.st_gid), (self.uid, self.gid),
                                     os.path.join(root, name))
                    self.assertFalse(info.st_uid == 0 and info.st_mode & stat.S_ISUID, name)

    def test_a_missing_agent_user_refuses_start_and_resume_in_one_line(self):
        home = make_home(self)
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", extra_env=self.env)
        self.addCleanup(cli, home, "destroy", "scripted")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(cli(home, "commit", "scripted").returncode, 0)
        missing = "bbtest" + secrets.token_hex(4) + "x"
        bad = {agent_user.USER_VAR: missing}
        resumed = cli(home, "resume", "scripted", "--headless", "--prompt", "p", extra_env=bad)
        started = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", "other",
                      extra_env=bad)
        line = (f"bot-bottle: error: running as root, bottles run as the unprivileged user "
                f"'{missing}', which does not exist; create it: useradd --system --user-group "
                f"--no-create-home --shell /usr/sbin/nologin {missing} (or set BOT_BOTTLE_AGENT_USER)\n")
        for r in (resumed, started):
            self.assertEqual((r.returncode, r.stderr), (4, line))
        self.assertFalse((home / "state" / "other").exists(), "a refused start left state")
        rows = json.loads(cli(home, "list", "--json").stdout)
        self.assertEqual([(row["slug"], row["state"]) for row in rows], [("scripted", "frozen")])

    def test_a_bad_name_or_a_root_user_is_a_usage_error(self):
        home = make_home(self)
        for name in ("../etc", "root"):
            with self.subTest(name=name):
                r = cli(home, "start", "scripted", "--headless", "--prompt", "p",
                        extra_env={agent_user.USER_VAR: name})
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertIn(agent_user.USER_VAR, r.stderr)
                self.assertFalse((home / "state" / "scripted").exists())


class OwnTest(unittest.TestCase):
    """`agent_user.own` gives a tree the agent controls to the agent user without following
    a symlink out of it or giving away a file hard-linked from outside (root only: chown)."""

    def test_own_never_follows_a_link_out_of_the_tree(self):
        self.assertEqual(os.geteuid(), 0, "giving files away needs root (the suite runs as root)")
        entry = make_user(self.addCleanup)
        user = agent_user.AgentUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        root = Path(tmp.name)
        outside, tree = root / "outside", root / "tree"
        (outside / "dir").mkdir(parents=True)
        (outside / "file").write_text("host\n")
        (outside / "linked").write_text("host, hard-linked\n")
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "file").write_text("agent\n")
        os.chmod(tree / "sub" / "file", 0o6755)
        (tree / "to-file").symlink_to(outside / "file")
        (tree / "sub" / "to-dir").symlink_to(outside / "dir")
        os.link(outside / "linked", tree / "linked")

        agent_user.own(tree, user)

        owner = lambda p: (os.lstat(p).st_uid, os.lstat(p).st_gid)  # noqa: E731
        for p in (tree, tree / "sub", tree / "sub" / "file", tree / "to-file", tree / "sub" / "to-dir"):
            self.assertEqual(owner(p), (user.uid, user.gid), p)
        self.assertEqual(stat.S_IMODE(os.lstat(tree / "sub" / "file").st_mode) & 0o6000, 0,
                         "chown drops setuid/setgid")
        for p in (outside, outside / "dir", outside / "file", outside / "linked"):
            self.assertEqual(owner(p), (0, 0), p)
        agent_user.own(root / "absent", user)   # nothing there: nothing to do

    def test_check_is_none_unless_root_and_grant_keeps_0600(self):
        self.assertIsNone(agent_user.check({agent_user.USER_VAR: "no-such-user-at-all"}, euid=1000))
        self.assertEqual(os.geteuid(), 0, "the rest needs root (the suite runs as root)")
        entry = make_user(self.addCleanup)
        env = {agent_user.USER_VAR: entry.pw_name}
        self.assertEqual(agent_user.check(env), agent_user.AgentUser(entry.pw_name, entry.pw_uid,
                                                                     entry.pw_gid))
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        path = Path(tmp.name) / "s.sock"
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
            os.chmod(path, 0o644)
            agent_user.grant(path, env)
            info = os.lstat(path)
            self.assertEqual((info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)),
                             (entry.pw_uid, entry.pw_gid, 0o600))
            link = Path(tmp.name) / "link"
            link.symlink_to(path)
            with self.assertRaises(BackendError):
                agent_user.grant(link, env)


if __name__ == "__main__":
    unittest.main()
