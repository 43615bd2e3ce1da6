"""`RunRecord.label`: one bottle slug per issue, readable for plain names, never shared by two
repositories that slugify alike, and within the core's slug length; and the transition table."""

from __future__ import annotations

import unittest

from bot_bottle.orchestrator.model import IllegalTransition, RunRecord, RunState, check_transition
from bot_bottle.state import MAX_SLUG, slugify


def label(owner: str, repo: str, issue: int) -> str:
    return RunRecord(1, owner, repo, issue, "claude", (), RunState.QUEUED, 0.0, 0.0).label


class LabelTest(unittest.TestCase):
    def test_plain_names_give_a_readable_label(self) -> None:
        self.assertEqual(label("acme", "widgets", 42), "acme-widgets-42")

    def test_names_that_slugify_alike_get_different_slugs(self) -> None:
        pairs = [(("a-b", "c", 1), ("a", "b-c", 1)), (("my.org", "x", 5), ("my-org", "x", 5)),
                 (("Acme", "widgets", 3), ("acme", "widgets", 3)),
                 (("o" * 40, "r" * 40, 1), ("o" * 40, "r" * 41, 1))]
        for one, other in pairs:
            with self.subTest(one=one, other=other):
                self.assertNotEqual(slugify(label(*one)), slugify(label(*other)))

    def test_labels_fit_the_core_slug_and_keep_their_hash(self) -> None:
        long = label("o" * 60, "r" * 60, 123456)
        self.assertLessEqual(len(slugify(long)), MAX_SLUG)
        self.assertRegex(slugify(long), r"-h[0-9a-f]{10}$")


class TransitionTableTest(unittest.TestCase):
    def test_only_a_starting_run_or_one_that_ended_without_a_bottle_goes_back_to_the_queue(
            self) -> None:
        back = (RunState.STARTING,  # a restart makes its launch again
                RunState.FAILED, RunState.FROZEN)  # a comment relaunches a run with no bottle
        for state in back:
            check_transition(state, RunState.QUEUED)
        for state in RunState:
            if state not in back:
                with self.subTest(state=state.value), self.assertRaises(IllegalTransition):
                    check_transition(state, RunState.QUEUED)

if __name__ == "__main__":
    unittest.main()
