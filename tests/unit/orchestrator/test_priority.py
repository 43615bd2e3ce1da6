"""`priority.niced` and `sandbox.renice_group`: a niced argv runs at that nice, and a child
that started a session (an autogroup of its own where the kernel has them) gets the same nice
for its autogroup. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import unittest

from bot_bottle.backend.sandbox import renice_group
from bot_bottle.orchestrator.priority import niced

PROBE = "import os, sys; print(os.nice(0), flush=True); sys.stdin.read()"


class PriorityTest(unittest.TestCase):
    def start(self, nice: int) -> subprocess.Popen:
        proc = subprocess.Popen(niced([sys.executable, "-c", PROBE], nice), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.stdin.close)
        return proc

    def test_a_niced_child_runs_lower_and_its_session_group_too(self) -> None:
        own = os.nice(0)
        proc = self.start(7)
        self.assertEqual(int(proc.stdout.readline()), min(own + 7, 19))
        renice_group(proc.pid, 7)
        if os.path.exists(f"/proc/{proc.pid}/autogroup"):   # a kernel with autogroups
            with open(f"/proc/{proc.pid}/autogroup") as fh:
                self.assertTrue(fh.read().rstrip().endswith("nice 7"))

    def test_nice_zero_changes_nothing(self) -> None:
        self.assertEqual(niced(["x"], 0), ["x"])
        own = os.nice(0)
        proc = self.start(0)
        self.assertEqual(int(proc.stdout.readline()), own)
        renice_group(proc.pid, 0)
        if os.path.exists(f"/proc/{proc.pid}/autogroup"):
            with open(f"/proc/{proc.pid}/autogroup") as fh:
                self.assertTrue(fh.read().rstrip().endswith("nice 0"))


if __name__ == "__main__":
    unittest.main()
