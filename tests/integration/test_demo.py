"""The README's main-job command: `python -m bot_bottle.orchestrator demo` walks the whole
lifecycle with the embedded fake Gitea and a real bottle: the agent delivers its branch by
`git push` through the git gate (no sidecar PR) and the service opens the PR after done; it
shows exactly one comment per done signal, ends with the table `status --all` prints, exits 0
and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

from bot_bottle.orchestrator import run_listing
from tests.integration._core_home import REPO_ROOT


class DemoTest(unittest.TestCase):
    def test_demo_walks_the_lifecycle_and_cleans_up(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT),
               "HOME": os.environ.get("HOME", "/root")}
        done = subprocess.run([sys.executable, "-W", "error", "-m", "bot_bottle.orchestrator",
                               "demo"], env=env, cwd=str(REPO_ROOT), capture_output=True,
                              text=True, timeout=240)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        out = done.stdout
        for step in range(1, 8):
            self.assertRegex(out, rf"(?m)^{step}\. ")
        self.assertIn("it pushed bot-bottle/acme-widgets-1 through the git gate and signalled "
                      "done: 'run 1'; bottle frozen; the service opened PR #2", out)
        self.assertIn("PR #2 'Add a greeting': bot-bottle/acme-widgets-1 -> main", out)
        self.assertIn("pushed again (2 pushes, all pushed), signalled done again ('run 2') and "
                      "was frozen; still 1 PR", out)
        # exactly one comment per done signal (the first on the issue: the PR came after it;
        # then on the PR), and no false "exited without done" beside them
        self.assertEqual(len(re.findall(r"(?m)^ +comment on issue #1 by claude-bot: Agent finished "
                                        r"with status \*\*done\*\*", out)), 1, out)
        self.assertEqual(len(re.findall(r"(?m)^ +comment on PR #2 by claude-bot: Agent finished "
                                        r"with status \*\*done\*\*", out)), 1, out)
        self.assertNotIn("sidecar.open_pr", out)
        self.assertNotIn("without signalling done", out)
        # the table is `status --all`'s: the same header and SINCE (when it entered its state)
        self.assertIn("\n" + run_listing.HEADER, out)
        self.assertRegex(out, r"(?m)^1\s+acme/widgets#1\s+#2\s+scripted\s+acme-widgets-1\s+"
                              r"destroyed\s+\d{4}-\d\d-\d\d \d\d:\d\dZ\s+done$")
        self.assertIn("demo finished", out)
        home = re.search(r"home (/\S+)", out).group(1)
        self.assertFalse(Path(home).parent.exists(), "the demo's temporary root is removed")


if __name__ == "__main__":
    unittest.main()
