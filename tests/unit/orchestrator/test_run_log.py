"""The service's log: one line per run transition (from -> to, reason) through the store's run
listener, failures at ERROR with where the agent log is, journald priority prefixes only when
asked for, and a bad level refused."""

from __future__ import annotations

import io
import logging
import unittest

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import run_log
from bot_bottle.orchestrator.executor import Executor
from bot_bottle.orchestrator.model import OrchestratorError, RunState
from bot_bottle.orchestrator.runner import BottleExit

from ._fakes import FakeBottleRunner, FakeClock, seed_run, temp_store


class RunTransitionLinesTest(unittest.TestCase):
    def setUp(self) -> None:
        self.store = temp_store(self)

    def listen(self, **kwargs) -> None:
        self.store.add_run_listener(run_log.RunLog(self.store, since=0.0, **kwargs))

    def lines(self, fn) -> list[tuple[str, str]]:
        with self.assertLogs("bot_bottle.orchestrator.run_log", level="DEBUG") as logs:
            fn()
        return [(r.levelname, r.getMessage()) for r in logs.records]

    def test_each_transition_is_one_info_line_with_the_run_issue_states_and_reason(self) -> None:
        self.listen()
        run = seed_run(self.store, 7, RunState.QUEUED)
        lines = self.lines(lambda: self.store.transition(run.id, RunState.STARTING, now=1.0,
                                                         reason="slot free"))
        self.assertEqual(lines, [("INFO", f"run {run.id} acme/widgets#7: queued -> starting "
                                          "(slot free)")])

    def test_a_change_that_keeps_the_state_logs_nothing(self) -> None:
        self.listen()
        run = seed_run(self.store, 7, RunState.RUNNING, slug="acme-widgets-7")
        self.store.transition(run.id, RunState.FROZEN, now=1.0, reason="freeze")
        with self.assertNoLogs("bot_bottle.orchestrator.run_log", level="DEBUG"):
            self.store.update_run(run.id, now=2.0, last_progress_at=2.0)

    def test_a_failure_is_an_error_line_with_the_reason_and_the_agent_log(self) -> None:
        self.listen(home="/srv/bb")
        run = seed_run(self.store, 7, RunState.RUNNING, slug="acme-widgets-7")
        lines = self.lines(lambda: self.store.transition(
            run.id, RunState.FAILED, now=1.0, reason="manifest not found", error="manifest not found"))
        self.assertEqual(lines, [("ERROR", f"run {run.id} acme/widgets#7: running -> failed "
                                           "(manifest not found); agent log: "
                                           "/srv/bb/state/acme-widgets-7/agent.log "
                                           "(bot-bottle logs acme-widgets-7)")])

    def test_a_run_first_seen_after_a_restart_still_logs_the_state_it_left(self) -> None:
        run = seed_run(self.store, 7, RunState.RUNNING, slug="s")
        self.listen()  # nothing cached, as after a restart
        lines = self.lines(lambda: self.store.transition(run.id, RunState.TIMED_OUT, now=1.0,
                                                         reason="freeze"))
        self.assertEqual(lines[0][0], "WARNING")
        self.assertIn("running -> timed_out (freeze)", lines[0][1])
        self.assertIn("$BOT_BOTTLE_HOME/state/s/agent.log", lines[0][1])

    def test_after_a_restart_a_progress_stamp_does_not_repeat_an_old_transition(self) -> None:
        run = seed_run(self.store, 7, RunState.RUNNING, now=5.0, slug="s")
        self.store.add_run_listener(run_log.RunLog(self.store, since=10.0))
        with self.assertNoLogs("bot_bottle.orchestrator.run_log", level="DEBUG"):
            self.store.update_run(run.id, now=11.0, last_progress_at=11.0)

    def test_a_new_run_is_logged_with_its_first_state(self) -> None:
        self.listen()
        lines = self.lines(lambda: self.store.create_run("acme", "widgets", 3, "claude", [],
                                                         RunState.QUEUED, "tok", 1.0))
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0][1], r"^run \d+ acme/widgets#3: new -> queued \(created, agent claude\)$")


class ExitRunner(FakeBottleRunner):
    """Its agent exits with `code` (timed out at `limit` s when given)."""

    def __init__(self, code: int, limit: int | None = None) -> None:
        super().__init__()
        self.code, self.limit = code, limit

    def start(self, **kwargs) -> BottleExit:
        slug = super().start(**kwargs).slug
        return BottleExit(slug, self.code, self.limit is not None, self.limit)


class AgentEndLinesTest(unittest.TestCase):
    def launch(self, runner) -> list[tuple[str, str]]:
        store = temp_store(self)
        executor = Executor(store, runner, sidecar_socket="/s.sock", marker="<!-- m -->",
                            clock=FakeClock().now, spawn=lambda fn: fn(), home="/srv/bb")
        with self.assertLogs("bot_bottle.orchestrator.workers", level="INFO") as logs:
            executor.create("acme", "widgets", 7, L.Launch("claude", ()), "do it")
        return [(r.levelname, r.getMessage()) for r in logs.records]

    def test_an_agent_exit_with_a_non_zero_code_is_a_warning_with_the_code_and_the_log(self) -> None:
        self.assertEqual(self.launch(ExitRunner(3)), [
            ("WARNING", "run 1 acme/widgets#7: the agent exited with code 3; agent log: "
                        "/srv/bb/state/acme-widgets-7/agent.log (bot-bottle logs acme-widgets-7)")])

    def test_a_clean_exit_is_an_info_line(self) -> None:
        self.assertEqual(self.launch(ExitRunner(0)),
                         [("INFO", "run 1 acme/widgets#7: the agent exited with code 0")])

    def test_a_time_out_names_the_limit(self) -> None:
        level, line = self.launch(ExitRunner(124, limit=60))[0]
        self.assertEqual(level, "WARNING")
        self.assertIn("stopped at its 60 s wall-time limit (exit code 124)", line)

    def test_a_failed_launch_is_an_error_line_with_the_reason(self) -> None:
        runner = FakeBottleRunner()
        runner.fail_with = OrchestratorError("bot-bottle CLI not found: /nowhere/bot-bottle")
        self.assertEqual(self.launch(runner), [
            ("ERROR", "run 1 acme/widgets#7: could not run the agent: "
                      "bot-bottle CLI not found: /nowhere/bot-bottle")])


class LogSetupTest(unittest.TestCase):
    def setUp(self) -> None:
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        self.addCleanup(lambda: (setattr(root, "handlers", saved[0]), root.setLevel(saved[1])))

    def emit(self, journal: bool) -> str:
        out = io.StringIO()
        run_log.configure("debug", journal=journal, stream=out)
        log = logging.getLogger("bot_bottle.orchestrator.test")
        log.error("bad\nsecond line")
        log.warning("careful")
        log.info("fine")
        log.debug("detail")
        return out.getvalue()

    def test_under_journald_each_line_carries_its_syslog_priority(self) -> None:
        self.assertEqual(self.emit(journal=True).splitlines(), [
            "<3>ERROR bot_bottle.orchestrator.test: bad", "<3>second line",
            "<4>WARNING bot_bottle.orchestrator.test: careful",
            "<6>INFO bot_bottle.orchestrator.test: fine",
            "<7>DEBUG bot_bottle.orchestrator.test: detail"])

    def test_elsewhere_lines_are_plain(self) -> None:
        self.assertEqual(self.emit(journal=False).splitlines()[0],
                         "ERROR bot_bottle.orchestrator.test: bad")

    def test_an_unknown_level_is_refused_with_the_known_ones(self) -> None:
        with self.assertRaisesRegex(ValueError, "LOUD.*DEBUG, INFO, WARNING, ERROR"):
            run_log.configure("LOUD", journal=False, stream=io.StringIO())


if __name__ == "__main__":
    unittest.main()
