"""Per-bottle limits in a real bwrap bottle: a fork bomb (bounded: it tries at most the limit
+ 200 forks, its children wait on a pipe and all die with the bottle's pid namespace) stops at
BOT_BOTTLE_MAX_PIDS while the host can still start a process; a write past the file-size
limit (the snapshot cap) fails inside the bottle; the agent log names the mechanism."""

import json
import os
import subprocess
import sys
import time
import unittest

from ._core_home import REPO_ROOT, cli, make_home

LIMIT = 64
FSIZE = 1024 * 1024

# The agent: fork children that block on a pipe until EAGAIN (or the hard stop), report the
# count, try a file past the size limit, then hold the bomb until the test opens `release`.
BOMB = f"""
import errno, json, os
r, w = os.pipe()
kids, error = [], None
for _ in range({LIMIT} + 200):
    try:
        pid = os.fork()
    except OSError as exc:
        error = errno.errorcode.get(exc.errno, str(exc.errno))
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids.append(pid)
try:
    with open("/workspace/big.bin", "wb") as fh:
        fh.write(b"x" * ({FSIZE} + 4096))
    big = "written"
except OSError as exc:
    big = errno.errorcode.get(exc.errno, str(exc.errno))
os.mkfifo("/workspace/release")
with open("/workspace/peak.tmp", "w") as fh:
    json.dump({{"forked": len(kids), "error": error, "big": big}}, fh)
os.rename("/workspace/peak.tmp", "/workspace/peak.json")
open("/workspace/release").close()
os.close(w)
for pid in kids:
    os.waitpid(pid, 0)
"""


class ForkBombTest(unittest.TestCase):
    def setUp(self):
        self.home = make_home(self)
        (self.home / "agents" / "bomb.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = ["python3", "-c", {json.dumps(BOMB)}]\n'
            "timeout = 60\n")   # whatever happens, the bottle is stopped within a minute
        self.ws = self.home / "state" / "bomb" / "bottle" / "workspace"

    def start_bomb(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BOT_BOTTLE_HOME": str(self.home),
               "PYTHONPATH": str(REPO_ROOT),
               "BOT_BOTTLE_MAX_PIDS": str(LIMIT), "BOT_BOTTLE_MAX_SNAPSHOT_BYTES": str(FSIZE)}
        proc = subprocess.Popen([sys.executable, "-W", "error", "-m", "bot_bottle", "start", "bomb",
                                 "--headless", "--prompt", "go", "--label", "bomb"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=str(REPO_ROOT))
        self.addCleanup(cli, self.home, "destroy", "bomb")
        self.addCleanup(self.stop, proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.kill()   # --die-with-parent takes the bottle (and its pid namespace) along
        proc.communicate()

    def wait_for_peak(self, proc) -> dict:
        deadline = time.monotonic() + 60
        while not (self.ws / "peak.json").exists():
            if proc.poll() is not None:
                self.fail(f"the bottle ended before its peak: {proc.communicate()}")
            self.assertLess(time.monotonic(), deadline, "the bomb never reported its peak")
            time.sleep(0.05)   # polling a condition, with a deadline
        return json.loads((self.ws / "peak.json").read_text())

    def test_a_fork_bomb_stops_at_the_limit_and_a_big_file_fails_while_the_host_still_forks(self):
        proc = self.start_bomb()
        peak = self.wait_for_peak(proc)
        # the bomb is at its peak now, every child alive: the host can still start a process
        self.assertEqual(subprocess.run(["true"]).returncode, 0)
        with open(self.ws / "release", "w"):
            pass
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        log = (self.home / "state" / "bomb" / "agent.log").read_text()
        [line] = [ln for ln in log.splitlines() if ln.startswith("--- bot-bottle: limits: ")]
        self.assertEqual(peak["error"], "EAGAIN", peak)
        self.assertLessEqual(peak["forked"], LIMIT, peak)
        if "cgroup" in line:
            # the bottle's own count: bwrap, its init and the bomb itself use a few of the 64
            self.assertIn(f"pids={LIMIT}", line)
            self.assertGreaterEqual(peak["forked"], LIMIT - 8, peak)
        else:   # RLIMIT_NPROC counts every process of the uid, the test's own included
            self.assertIn(f"nproc={LIMIT}", line)
            self.assertNotEqual(os.getuid(), 0, "root ignores RLIMIT_NPROC: the bomb was not bounded")
        self.assertEqual(peak["big"], "EFBIG", peak)
        self.assertIn(f"fsize={FSIZE}", line)
        self.assertLessEqual((self.ws / "big.bin").stat().st_size, FSIZE)


if __name__ == "__main__":
    unittest.main()
