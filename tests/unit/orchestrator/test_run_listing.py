"""The runs document (version 2) and the `status` table, read from a real store's ready text:
documented fields in documented order, ISO-8601 UTC times, when a run entered its state and the
answer's time, no token or prompt, destroyed runs only on request, and a table control
characters cannot break."""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator import run_listing, store_schema
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.store import SqliteRunStore, StoreError

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DOCS = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
FIELDS = ["id", "owner", "repo", "issue_number", "pr_number", "agent", "bottles", "slug", "state",
          "created_at", "updated_at", "state_since", "last_progress_at",
          "last_done_status", "last_done_summary", "error"]


class Listing(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.db = Path(tmp.name) / "orchestrator.db"
        self.store = SqliteRunStore(self.db)
        self.addCleanup(self.store.close)

    def run_at(self, issue: int, steps, *, token: str | None = None, **fields):
        """A run created at T0 that takes `steps` [(state, at)], then gets `fields`."""
        run = self.store.create_run("acme", "widgets", issue, "claude", ("db",), RunState.QUEUED,
                                    token or f"tok-{issue}", T0, launch_prompt="LAUNCH-PROMPT")
        for state, at in steps:
            run = self.store.transition(run.id, state, now=at, reason="test")
        if fields:
            run = self.store.update_run(run.id, now=steps[-1][1] if steps else T0, **fields)
        return run

    def document(self, now: float, include_destroyed: bool = False) -> dict:
        conn = run_listing.open_readonly(self.db)
        self.addCleanup(conn.close)
        return json.loads(run_listing.runs_document(conn, now, include_destroyed))

    def table(self, now: float, include_destroyed: bool = False) -> str:
        conn = run_listing.open_readonly(self.db)
        self.addCleanup(conn.close)
        return run_listing.status_table(conn, now, include_destroyed)


class RunsDocumentTest(Listing):
    def test_the_document_is_versioned_and_each_run_has_the_documented_fields_in_order(self):
        self.run_at(42, [(RunState.STARTING, T0 + 10), (RunState.RUNNING, T0 + 20)],
                    slug="acme-widgets-42", pr_number=43, last_progress_at=T0 + 30,
                    last_done_status="done", last_done_summary="fixed it", error=None)
        doc = self.document(T0 + 125)
        self.assertEqual(list(doc), ["version", "at", "runs"])
        self.assertEqual((doc["version"], doc["at"]), (2, "2023-11-14T22:15:25Z"))
        [run] = doc["runs"]
        self.assertEqual(list(run), FIELDS)
        self.assertEqual(run, {
            "id": 1, "owner": "acme", "repo": "widgets", "issue_number": 42, "pr_number": 43,
            "agent": "claude", "bottles": ["db"], "slug": "acme-widgets-42", "state": "running",
            "created_at": "2023-11-14T22:13:20Z", "updated_at": "2023-11-14T22:13:40Z",
            "state_since": "2023-11-14T22:13:40Z",
            "last_progress_at": "2023-11-14T22:13:50Z", "last_done_status": "done",
            "last_done_summary": "fixed it", "error": None})

    def test_state_since_is_the_last_transition_not_other_updates(self):
        self.run_at(1, [(RunState.STARTING, T0 + 5)], slug="s")  # update_run at T0+5
        run = self.store.list_runs()[0]
        self.store.update_run(run.id, now=T0 + 50, last_progress_at=T0 + 50)
        [out] = self.document(T0 + 65)["runs"]
        self.assertEqual(out["state_since"], "2023-11-14T22:13:25Z")
        self.assertEqual(out["updated_at"], "2023-11-14T22:14:10Z")

    def test_a_run_never_moved_is_in_its_state_since_creation(self):
        self.run_at(1, [])
        [out] = self.document(T0 - 30)["runs"]
        self.assertEqual((out["state"], out["state_since"]), ("queued", "2023-11-14T22:13:20Z"))

    def test_nothing_in_a_run_depends_on_the_clock_only_the_answers_time_does(self):
        self.run_at(1, [(RunState.STARTING, T0 + 5)])
        early, late = self.document(T0 + 10), self.document(T0 + 86400)
        self.assertEqual(early["runs"], late["runs"])
        self.assertEqual((early["at"], late["at"]), ("2023-11-14T22:13:30Z",
                                                      "2023-11-15T22:13:20Z"))

    def test_destroyed_runs_only_on_request_and_runs_are_in_id_order(self):
        self.run_at(1, [(RunState.DESTROYED, T0 + 1)])
        self.run_at(2, [])
        self.run_at(3, [(RunState.FAILED, T0 + 2)], error="clone failed: exit 128")
        self.assertEqual([r["issue_number"] for r in self.document(T0)["runs"]], [2, 3])
        every = self.document(T0, include_destroyed=True)["runs"]
        self.assertEqual([(r["issue_number"], r["state"]) for r in every],
                         [(1, "destroyed"), (2, "queued"), (3, "failed")])
        self.assertEqual(every[2]["error"], "clone failed: exit 128")

    def test_no_runs_is_an_empty_list(self):
        self.assertEqual(self.document(T0), {"version": 2, "at": "2023-11-14T22:13:20Z",
                                             "runs": []})

    def test_the_token_and_the_prompts_never_appear(self):
        self.run_at(1, [(RunState.STARTING, T0)], token="s3cr3t-token",
                    pending_prompt="PENDING-PROMPT")
        conn = run_listing.open_readonly(self.db)
        self.addCleanup(conn.close)
        text = run_listing.runs_document(conn, T0, True) + run_listing.run_document(conn, 1, T0)
        for secret in ("s3cr3t-token", "LAUNCH-PROMPT", "PENDING-PROMPT"):
            self.assertNotIn(secret, text)

    def test_forge_text_is_escaped_as_json(self):
        self.run_at(1, [(RunState.FAILED, T0)], last_done_summary='a "quote"\n\\ and \x1b[2J')
        [out] = self.document(T0)["runs"]
        self.assertEqual(out["last_done_summary"], 'a "quote"\n\\ and \x1b[2J')

    def test_one_run_is_the_same_object_under_the_version(self):
        self.run_at(1, [(RunState.STARTING, T0 + 1)])
        conn = run_listing.open_readonly(self.db)
        self.addCleanup(conn.close)
        one = json.loads(run_listing.run_document(conn, 1, T0 + 9))
        self.assertEqual(one, {"version": 2, "at": "2023-11-14T22:13:29Z",
                               "run": self.document(T0 + 9)["runs"][0]})
        self.assertEqual(json.loads(run_listing.run_object(conn, 1)), one["run"])
        self.assertIsNone(run_listing.run_document(conn, 2, T0))

    def test_the_document_answers_from_a_store_reader_too(self):
        self.run_at(1, [])
        text = self.store.with_reader(lambda conn: run_listing.runs_document(conn, T0))
        self.assertEqual(json.loads(text), self.document(T0))

    def test_every_field_is_documented_in_the_architecture_guide(self):
        text = DOCS.read_text(encoding="utf-8")
        section = text[text.index("### The runs document"):]
        section = section[:section.index("\n## ", 1)] if "\n## " in section else section
        documented = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
        self.assertEqual(documented, ["version", "at", "runs"] + FIELDS)

    def test_a_served_file_is_read_read_only_without_blocking_the_writer(self):
        self.run_at(1, [])
        conn = run_listing.open_readonly(self.db)
        self.addCleanup(conn.close)
        conn.execute("BEGIN")
        self.assertEqual(len(json.loads(run_listing.runs_document(conn, T0))["runs"]), 1)
        self.assertTrue(self.store.record_delivery("d1", "issues", b"x", 1.0))  # not blocked
        with self.assertRaises(sqlite3.OperationalError):  # read-only
            conn.execute("DELETE FROM runs")

    def test_a_missing_database_is_an_error_and_is_not_created(self):
        with self.assertRaises(StoreError):
            run_listing.open_readonly(self.db.parent / "nope.db")
        self.assertFalse((self.db.parent / "nope.db").exists())


class StatusTableTest(Listing):
    def test_header_then_one_line_per_live_run_in_fixed_columns(self):
        self.run_at(42, [(RunState.STARTING, T0), (RunState.RUNNING, T0 + 60)],
                    slug="acme-widgets-42")
        self.run_at(7, [(RunState.STARTING, T0), (RunState.RUNNING, T0), (RunState.FROZEN, T0)],
                    pr_number=8, last_done_status="blocked")
        self.run_at(9, [(RunState.DESTROYED, T0)])
        lines = self.table(T0 + 3 * 86400 + 5).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "REPO#ISSUE", "PR", "AGENT", "SLUG", "STATE",
                                            "SINCE", "LAST", "DONE"])
        self.assertEqual(lines[1].split(), ["1", "acme/widgets#42", "-", "claude",
                                            "acme-widgets-42", "running", "2023-11-14",
                                            "22:14Z", "-"])
        self.assertEqual(lines[2].split(), ["2", "acme/widgets#7", "#8", "claude", "-", "frozen",
                                            "2023-11-14", "22:13Z", "blocked"])
        self.assertEqual(len(lines), 3)
        for name in ("STATE", "SINCE", "LAST DONE"):  # aligned under the header
            col = lines[0].index(name)
            self.assertEqual([ln[col - 1] for ln in lines[1:]], [" ", " "])
            self.assertNotEqual(lines[1][col], " ")
        self.assertIn("destroyed", self.table(T0, include_destroyed=True))

    def test_since_is_when_the_run_entered_its_state_and_needs_no_clock(self):
        self.run_at(1, [(RunState.STARTING, T0 + 3600)])
        self.store.update_run(1, now=T0 + 7200, last_progress_at=T0 + 7200)
        self.assertIn("2023-11-14 23:13Z", self.table(T0))
        self.assertEqual(self.table(T0), self.table(T0 + 86400))

    def test_a_long_cell_pushes_its_line_and_is_never_cut(self):
        slug = "acme-" + "x" * 58
        self.run_at(1, [(RunState.STARTING, T0)], slug=slug)
        self.assertEqual(self.table(T0).splitlines()[1].split()[4], slug)

    def test_control_characters_cannot_break_the_table_and_other_text_is_kept(self):
        self.run_at(1, [(RunState.FAILED, T0)], last_done_status="x\nFAKE ROW\x1b[2J\u202e")
        self.run_at(2, [(RunState.FAILED, T0)], last_done_status="fertig ✓")
        text = self.table(T0)
        self.assertEqual(len(text.splitlines()), 3)
        self.assertNotIn("\x1b", text)
        self.assertIn("x?FAKE ROW?[2J?", text)
        self.assertIn("fertig ✓", text)

    def test_no_runs_is_just_the_header(self):
        self.assertEqual(self.table(T0), "ID      REPO#ISSUE                    PR      AGENT     "
                         "SLUG                              STATE      SINCE              "
                         "LAST DONE\n")


class ReadyTextTest(Listing):
    """`run_views` is kept by the store's triggers, filled for runs the file had before v4,
    and a file not yet migrated gives the same answers from `runs`."""

    def populate(self) -> None:
        self.run_at(1, [(RunState.STARTING, T0 + 1), (RunState.RUNNING, T0 + 2)],
                    slug="acme-widgets-1", last_done_status="x\x1bY")
        self.run_at(2, [(RunState.DESTROYED, T0 + 3)])
        self.run_at(3, [(RunState.FAILED, T0 + 4)], error="boom", pr_number=9)

    def answers(self) -> tuple:
        return (self.document(T0 + 99, True), self.table(T0, True),
                json.loads(run_listing.run_document(self.conn(), 3, T0 + 99)))

    def conn(self) -> sqlite3.Connection:
        conn = run_listing.open_readonly(self.db)
        self.addCleanup(conn.close)
        return conn

    def test_a_file_before_run_views_is_filled_by_the_migration_and_answers_the_same(self):
        self.populate()
        expected = self.answers()
        self.store.close()
        raw = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(raw.close)
        for trigger in ("insert", "update", "transition", "delete"):
            raw.execute(f"DROP TRIGGER run_views_{trigger}")
        raw.execute("DROP TABLE run_views")
        raw.execute("DROP TABLE run_lines")
        raw.execute("DROP TABLE run_cells")
        raw.execute("PRAGMA user_version = 3")
        self.assertEqual(self.answers(), expected)  # rendered from `runs` on the fly
        SqliteRunStore(self.db).close()  # migrates: v4 fills run_views
        self.assertEqual(raw.execute("SELECT count(*) FROM run_views").fetchone()[0], 3)
        self.assertEqual(self.answers(), expected)

    def test_a_file_with_v4s_two_part_objects_answers_the_same_before_and_after_v5(self):
        # an orchestrator not restarted since v5: `run_views` holds each object in two parts
        # around v4's `seconds_in_state`, which version 2 cuts out
        self.populate()
        self.run_at(4, [(RunState.FAILED, T0 + 5)], slug="größe-✓", error="kaputt ✗")
        expected = self.answers()
        self.store.close()
        raw = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(raw.close)
        raw.execute("DROP TABLE run_views")
        raw.execute("""CREATE TABLE run_views (run_id INTEGER PRIMARY KEY, dead INTEGER NOT NULL,
                       since REAL NOT NULL, head TEXT NOT NULL, tail TEXT NOT NULL)""")
        raw.execute("CREATE INDEX run_views_live ON run_views (run_id) WHERE dead = 0")
        raw.execute("INSERT INTO run_views " + store_schema.RENDER_V4.replace("{where}", ""))
        head = raw.execute("SELECT head FROM run_views WHERE run_id = 4").fetchone()[0]
        self.assertTrue(head.endswith(',"seconds_in_state":'))
        self.assertEqual(self.answers(), expected)
        self.assertEqual(self.document(T0)["runs"][-1]["slug"], "größe-✓")
        raw.execute("PRAGMA user_version = 4")
        SqliteRunStore(self.db).close()  # migrates: v5 stores each object whole
        self.assertEqual(raw.execute("SELECT count(*) FROM run_views WHERE object "
                                     "NOT LIKE '%seconds_in_state%'").fetchone()[0], 4)
        self.assertEqual(self.answers(), expected)

    def test_long_stretches_of_destroyed_runs_are_stepped_over_and_no_live_run_is_missed(self):
        raw = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(raw.close)
        raw.execute("BEGIN")
        raw.executemany(
            "INSERT INTO runs (owner, repo, issue_number, agent, bottles, state, created_at, "
            "updated_at, run_token) VALUES ('o', 'r', ?, 'pi', '[]', ?, ?, ?, ?)",
            [(n, "queued" if n in (1, 128, 129, 1500, 3000) else "destroyed", T0, T0,
              f"t{n}") for n in range(1, 3001)])
        raw.execute("COMMIT")
        live = [1, 128, 129, 1500, 3000]
        self.assertEqual([r["id"] for r in self.document(T0)["runs"]], live)
        self.assertEqual([int(ln.split()[0]) for ln in self.table(T0).splitlines()[1:]], live)
        self.assertEqual(len(self.document(T0, True)["runs"]), 3000)
        self.assertEqual(len(self.table(T0, True).splitlines()), 3001)

    def test_any_write_to_runs_keeps_the_ready_text_true(self):
        self.populate()
        raw = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(raw.close)
        raw.execute("UPDATE runs SET agent = 'pi' WHERE id = 3")
        self.assertEqual(self.document(T0)["runs"][1]["agent"], "pi")
        self.assertIn(" pi ", self.table(T0).splitlines()[2])
        raw.execute("DELETE FROM op_log WHERE run_id = 2")
        raw.execute("DELETE FROM runs WHERE id = 2")
        self.assertEqual([r["id"] for r in self.document(T0, True)["runs"]], [1, 3])


if __name__ == "__main__":
    unittest.main()
