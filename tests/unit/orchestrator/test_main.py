"""The thin CLI `python -m bot_bottle.orchestrator`: `status` (table, JSON, --all) read
straight from the DB, configuration problems as one stderr line and exit 2, `--help`, and
the usage when no command is given."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import bot_bottle
from bot_bottle.orchestrator.__main__ import PROG, main, status_paths
from bot_bottle.orchestrator.config import Config
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.store import SqliteRunStore

from ._fakes import seed_run


def run_main(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict("os.environ", environ, clear=True), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's --help and usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


class StatusTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        self.env = {"BOT_BOTTLE_HOME": str(self.home), "PATH": "/usr/bin"}

    def seed(self) -> None:
        with SqliteRunStore(self.home / "orchestrator.db") as store:
            seed_run(store, 7, RunState.FROZEN, slug="acme-widgets-7", pr_number=9,
                     last_done_status="done", run_token="secret-run-token")
            seed_run(store, 8, RunState.DESTROYED)

    def test_status_without_a_database_warns_exits_1_and_creates_nothing(self) -> None:
        for argv in (["status"], ["status", "--json"]):
            code, out, err = run_main(argv, self.env)
            self.assertEqual((code, out), (1, ""))
            self.assertEqual(err.splitlines(), [
                f"{PROG}: error: no database at {self.home / 'orchestrator.db'}: the orchestrator "
                "has not run with this home (or FORGE_DB_PATH points elsewhere)"])
        self.assertFalse((self.home / "orchestrator.db").exists())

    def test_status_with_a_mistyped_home_warns_and_exits_1(self) -> None:
        env = {**self.env, "BOT_BOTTLE_HOME": str(self.home / "typo")}
        code, out, err = run_main(["status"], env)
        self.assertEqual((code, out), (1, ""))
        self.assertIn(f"no bot-bottle home at {self.home / 'typo'}", err)
        self.assertFalse((self.home / "typo").exists())

    def test_status_table_hides_destroyed_runs_unless_all(self) -> None:
        self.seed()
        code, out, _ = run_main(["status"], self.env)
        self.assertEqual(code, 0)
        self.assertRegex(out, r"acme/widgets#7\s+#9\s+claude\s+acme-widgets-7\s+frozen")
        self.assertNotIn("destroyed", out)
        _, out_all, _ = run_main(["status", "--all"], self.env)
        self.assertIn("destroyed", out_all)

    def test_status_json_has_the_run_fields_but_never_the_run_token(self) -> None:
        self.seed()
        code, out, _ = run_main(["status", "--json", "--all"], self.env)
        self.assertEqual(code, 0)
        doc = json.loads(out)
        self.assertEqual(list(doc), ["version", "at", "runs"])
        self.assertEqual(doc["version"], 2)
        self.assertRegex(doc["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual([(r["issue_number"], r["state"], r["pr_number"]) for r in doc["runs"]],
                         [(7, "frozen", 9), (8, "destroyed", None)])
        self.assertTrue(out.endswith("}\n") and "\n" not in out[:-1], "one compact line")
        self.assertNotIn("secret-run-token", out)

    def test_status_finds_the_home_and_database_as_the_service_config_does(self) -> None:
        for env in ({"BOT_BOTTLE_HOME": "/srv/bb/"}, {"HOME": "/home/x"}, {},
                    {"BOT_BOTTLE_HOME": " /srv/bb ", "FORGE_DB_PATH": "/var/lib/bb.db"},
                    {"HOME": "/home/x/", "FORGE_DB_PATH": " "}):
            config = Config.from_env(env, for_run=False)
            self.assertEqual(status_paths(env), (config.home, config.db_path), env)

    def test_status_to_a_pipe_closed_early_ends_quietly(self) -> None:
        import subprocess
        import sys
        self.seed()
        with SqliteRunStore(self.home / "orchestrator.db") as store:
            for issue in range(100, 1000):  # 113 KB of lines: more than a pipe holds
                seed_run(store, issue, RunState.QUEUED)
        proc = subprocess.Popen([sys.executable, "-m", "bot_bottle.orchestrator", "status"],
                                env={**self.env, "PYTHONPATH": str(Path(bot_bottle.__file__)
                                                                   .parents[1])},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(proc.wait)
        self.assertTrue(proc.stdout.readline().startswith(b"ID "))
        proc.stdout.close()  # like `status | head -1`
        self.assertEqual((proc.wait(timeout=60), proc.stderr.read()), (0, b""))
        proc.stderr.close()

    def test_status_honours_forge_db_path(self) -> None:
        self.seed()
        (self.home / "orchestrator.db").rename(self.home / "other.db")
        env = {**self.env, "FORGE_DB_PATH": str(self.home / "other.db")}
        self.assertIn("acme-widgets-7", run_main(["status"], env)[1])


class RunConfigTest(unittest.TestCase):
    def test_run_reports_every_missing_setting_in_one_line_and_exits_2(self) -> None:
        code, out, err = run_main(["run"], {"PATH": "/usr/bin", "FORGE_WEBHOOK_PORT": "x"})
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        for name in ("FORGE_GITEA_URL", "FORGE_TOKEN", "FORGE_AGENT_ORG", "FORGE_WEBHOOK_SECRET",
                     "FORGE_WEBHOOK_PORT"):
            self.assertIn(name, err)

    def test_a_bad_log_level_is_one_line_and_exit_2(self) -> None:
        code, out, err = run_main(["run"], {"PATH": "/usr/bin", "BOT_BOTTLE_LOG_LEVEL": "LOUD"})
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err.splitlines(), [
            f"{PROG}: error: BOT_BOTTLE_LOG_LEVEL='LOUD' is not a level: use one of "
            "DEBUG, INFO, WARNING, ERROR"])

    def test_version_prints_the_package_version(self) -> None:
        code, out, _ = run_main(["--version"], {})
        self.assertEqual((code, out), (0, f"{PROG} {bot_bottle.__version__}\n"))

    def test_no_command_prints_the_usage_and_where_help_is(self) -> None:
        code, out, err = run_main([], {})
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err.splitlines(), [
            f"usage: {PROG} [-h] [--version] COMMAND ...",
            f"run '{PROG} --help' for the commands and the environment they read"])

    def test_help_names_every_command(self) -> None:
        code, out, _ = run_main(["--help"], {})
        self.assertEqual(code, 0)
        for command in ("run", "status", "demo"):
            self.assertIn(command, out)
        code, out, _ = run_main(["status", "--help"], {})
        self.assertIn("--json", out)
        self.assertIn("--all", out)


if __name__ == "__main__":
    unittest.main()
