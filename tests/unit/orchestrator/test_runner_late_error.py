"""SubprocessBottleRunner when the CLI prints the slug and then fails with an error line (the
kubernetes backend: the claim made, the pod never started): with the bottle gone the start is
a `RunnerError` carrying that line; with the bottle still there the exit stands as before, and
the line is logged. Against a small fake CLI script (argv lists, no shell)."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from bot_bottle.orchestrator.runner import BottleExit, RunnerError, SubprocessBottleRunner

FAKE_CLI = textwrap.dedent("""
    import json, os, sys
    if sys.argv[1] == "start":
        sys.stdin.buffer.read()
        print("bot-bottle: slug=acme-widgets-42", file=sys.stderr, flush=True)
        print("bot-bottle: error: kubernetes: pod bb-x-run-1 cannot start: ErrImagePull: nope",
              file=sys.stderr)
        sys.exit(4)
    if sys.argv[1] == "list":
        if os.environ["FAKE_LIST"] == "fail":
            sys.exit(4)
        rows = [{"slug": "acme-widgets-42", "state": "exited"}] if os.environ["FAKE_LIST"] == "kept" else []
        print(json.dumps(rows))
""")


class LateErrorTest(unittest.TestCase):
    def runner(self, listing: str) -> SubprocessBottleRunner:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        script = Path(tmp.name) / "fake_cli.py"
        script.write_text(FAKE_CLI)
        return SubprocessBottleRunner([sys.executable, str(script)],
                                      {"PATH": os.environ.get("PATH", ""), "FAKE_LIST": listing},
                                      timeout=30)

    def start(self, runner: SubprocessBottleRunner, seen: list[str]) -> BottleExit:
        return runner.start(agent="scripted", bottles=["b1"], label="acme-widgets-42",
                            prompt="p", on_slug=seen.append, env={})

    def test_a_removed_bottle_makes_the_error_line_the_failure(self) -> None:
        seen: list[str] = []
        with self.assertRaises(RunnerError) as caught:
            self.start(self.runner("gone"), seen)
        self.assertEqual(str(caught.exception),
                         "kubernetes: pod bb-x-run-1 cannot start: ErrImagePull: nope")
        self.assertEqual(seen, ["acme-widgets-42"])

    def test_a_bottle_still_there_keeps_the_exit_and_logs_the_line(self) -> None:
        for listing in ("kept", "fail"):   # a failing `list` cannot tell: the exit stands
            with self.subTest(listing=listing), \
                    self.assertLogs("bot_bottle.orchestrator.runner", "WARNING") as logged:
                self.assertEqual(self.start(self.runner(listing), []),
                                 BottleExit("acme-widgets-42", 4))
            self.assertIn("ErrImagePull", "\n".join(logged.output))


if __name__ == "__main__":
    unittest.main()
