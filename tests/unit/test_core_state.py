"""Unit tests of bot_bottle.state: slugify, slug validation, atomic metadata."""

import tempfile
import unittest
from pathlib import Path

from bot_bottle import state
from bot_bottle.errors import UsageError


class SlugifyTest(unittest.TestCase):
    def test_slugify_lowercases_and_collapses_runs(self):
        for label, slug in [("Fix Bug #12", "fix-bug-12"), ("--a__b--", "a-b"), ("x" * 100, "x" * 63),
                            ("../../etc", "etc"), ("Ünïcode ok", "n-code-ok")]:
            with self.subTest(label=label):
                self.assertEqual(state.slugify(label), slug)

    def test_label_that_slugifies_to_nothing_is_a_usage_error(self):
        for label in ("", "!!!", "---", "../"):
            with self.subTest(label=label), self.assertRaises(UsageError):
                state.slugify(label)

    def test_slug_that_would_escape_the_state_dir_is_refused(self):
        for bad in ("..", "../x", "a/b", "", "-a", "A"):
            with self.subTest(bad=bad), self.assertRaises(UsageError):
                state.state_dir(Path("/tmp/h"), bad)


class MetadataTest(unittest.TestCase):
    def test_metadata_round_trips_and_leaves_no_temp_files(self):
        with tempfile.TemporaryDirectory() as d:
            home = Path(d)
            state.write_metadata(home, "s1", {"slug": "s1", "n": 1})
            state.update_metadata(home, "s1", n=2)
            self.assertEqual(state.read_metadata(home, "s1"), {"slug": "s1", "n": 2})
            self.assertEqual(sorted(p.name for p in (home / "state" / "s1").iterdir()), ["metadata.json"])
            self.assertEqual(state.list_slugs(home), ["s1"])
            self.assertIsNone(state.read_metadata(home, "other"))


if __name__ == "__main__":
    unittest.main()
