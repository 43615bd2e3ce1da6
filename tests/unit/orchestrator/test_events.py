"""Webhook payloads → event values, against every Gitea sample and against mutated ones."""

from __future__ import annotations

import copy
import json
import random
import unittest

from bot_bottle.orchestrator import events as E
from bot_bottle.orchestrator.model import OrchestratorError
from ._gitea_helpers import GITEA_DATA

# X-Gitea-Event-Type per sample file (from tests/data/gitea/REFERENCE.md) and what we expect of it.
SAMPLES = {
    "issues-opened.json": ("issues", E.IssueEvent),
    "issues-assigned.json": ("issue_assign", E.IssueEvent),
    "issues-unassigned.json": ("issue_assign", None),
    "issues-labeled.json": ("issue_label", E.IssueEvent),
    "issues-label-cleared.json": ("issue_label", None),
    "issues-edited-body.json": ("issues", None),
    "issues-closed.json": ("issues", E.IssueEvent),
    "issue_comment-created-on-issue.json": ("issue_comment", E.CommentEvent),
    "issue_comment-edited-on-issue.json": ("issue_comment", None),
    "issue_comment-deleted-on-issue.json": ("issue_comment", None),
    "issue_comment-created-on-pull.json": ("pull_request_comment", E.CommentEvent),
    "pull_request-opened.json": ("pull_request", E.PullRequestEvent),
    "pull_request-assigned.json": ("pull_request_assign", None),
    "pull_request-labeled.json": ("pull_request_label", None),
    "pull_request-edited-body.json": ("pull_request", None),
    "pull_request-synchronized.json": ("pull_request_sync", None),
    "pull_request-review-comment.json": ("pull_request_review_comment", None),
    "pull_request-closed.json": ("pull_request", E.PullRequestEvent),
    "pull_request-merged.json": ("pull_request", E.PullRequestEvent),
}


def load(name: str) -> dict:
    return json.loads((GITEA_DATA / name).read_bytes())


class SampleCoverageTests(unittest.TestCase):
    def test_every_sample_file_has_an_expectation(self):
        on_disk = {p.name for p in GITEA_DATA.glob("*.json")} - {"swagger.v1.json"}
        self.assertEqual(on_disk, set(SAMPLES))

    def test_every_sample_parses_to_the_expected_kind_or_is_ignored_with_a_reason(self):
        for name, (event_type, kind) in SAMPLES.items():
            with self.subTest(name):
                body = (GITEA_DATA / name).read_bytes()
                event = E.parse_delivery(event_type, body)
                reason = E.explain_ignored(event_type, json.loads(body))
                if kind is None:
                    self.assertIsNone(event)
                    self.assertTrue(reason)
                else:
                    self.assertIsInstance(event, kind)
                    self.assertIsNone(reason)
                    self.assertEqual((event.owner, event.repo), ("acme", "widgets"))


class IssueEventTests(unittest.TestCase):
    def test_opened_issue_reads_gitea_null_lists_as_empty_tuples(self):
        payload = load("issues-opened.json")
        self.assertIsNone(payload["issue"]["assignees"])  # the quirk this guards against
        event = E.parse_event("issues", payload)
        self.assertEqual(event, E.IssueEvent(
            action="opened", owner="acme", repo="widgets", number=42,
            title="Widgets crash on empty input", body=payload["issue"]["body"], labels=(),
            assignees=(), sender="alice", state="open", is_pull=False))

    def test_nul_and_lone_surrogates_become_replacement_characters(self):
        payload = load("issues-opened.json")
        payload["issue"]["title"] = "nul \x00 here"
        payload["issue"]["body"] = "lone SURROGATE here"
        raw = json.dumps(payload).replace("SURROGATE", "\\ud800").encode()
        event = E.parse_delivery("issues", raw)
        self.assertEqual((event.title, event.body), ("nul \ufffd here", "lone \ufffd here"))
        (event.title + event.body).encode("utf-8")  # encodable: SQLite and an argv take it

    def test_assigned_issue_lists_assignees_from_the_issue(self):
        event = E.parse_event("issue_assign", load("issues-assigned.json"))
        self.assertEqual(event.action, "assigned")
        self.assertEqual(event.assignees, ("claude-bot",))

    def test_labeled_issue_carries_the_full_label_set(self):
        event = E.parse_event("issue_label", load("issues-labeled.json"))
        self.assertEqual(event.action, "label_updated")
        self.assertEqual(set(event.labels), {"agent", "bug"})

    def test_closed_issue_has_closed_state(self):
        event = E.parse_event("issues", load("issues-closed.json"))
        self.assertEqual((event.action, event.state), ("closed", "closed"))

    def test_escaped_html_characters_arrive_decoded(self):
        raw = (GITEA_DATA / "issues-edited-body.json").read_bytes()
        self.assertIn(b"\\u003c!--", raw)
        event = E.parse_delivery("issues", raw.replace(b'"action": "edited"', b'"action": "opened"'))
        self.assertIn("<!-- claude-bot:state", event.body)

    def test_issue_with_pull_request_object_is_marked_as_pull(self):
        payload = load("issues-opened.json")
        payload["issue"]["pull_request"] = {"merged": False}
        self.assertTrue(E.parse_event("issues", payload).is_pull)

    def test_unassigned_is_ignored_with_reason(self):
        reason = E.explain_ignored("issue_assign", load("issues-unassigned.json"))
        self.assertIn("unassigned", reason)


class CommentEventTests(unittest.TestCase):
    def test_comment_on_issue(self):
        event = E.parse_event("issue_comment", load("issue_comment-created-on-issue.json"))
        self.assertEqual(event, E.CommentEvent(
            action="created", owner="acme", repo="widgets", number=42, is_pull=False,
            comment_id=1001, body="@claude-bot can you reproduce this on main?", author="alice"))

    def test_comment_on_pull_uses_the_number_not_the_issue_id(self):
        event = E.parse_event("pull_request_comment", load("issue_comment-created-on-pull.json"))
        self.assertEqual((event.number, event.is_pull, event.comment_id), (43, True, 1002))

    def test_pull_comment_is_recognised_under_the_coarse_event_header_too(self):
        event = E.parse_event("issue_comment", load("issue_comment-created-on-pull.json"))
        self.assertTrue(event.is_pull)

    def test_missing_is_pull_falls_back_to_issue_pull_request(self):
        payload = load("issue_comment-created-on-pull.json")
        del payload["is_pull"]
        del payload["pull_request"]
        self.assertTrue(E.parse_event("issue_comment", payload).is_pull)

    def test_edited_and_deleted_comments_are_ignored(self):
        for name in ("issue_comment-edited-on-issue.json", "issue_comment-deleted-on-issue.json"):
            with self.subTest(name):
                self.assertIsNone(E.parse_event("issue_comment", load(name)))


class PullRequestEventTests(unittest.TestCase):
    def test_opened_pull_request(self):
        event = E.parse_event("pull_request", load("pull_request-opened.json"))
        self.assertEqual((event.number, event.head_ref, event.base_ref, event.author,
                          event.merged), (43, "fix/empty-input", "main", "bob", False))

    def test_merge_is_closed_with_merged(self):
        event = E.parse_event("pull_request", load("pull_request-merged.json"))
        self.assertEqual((event.action, event.merged, event.sender), ("closed", True, "alice"))

    def test_close_without_merge(self):
        event = E.parse_event("pull_request", load("pull_request-closed.json"))
        self.assertEqual((event.action, event.merged), ("closed", False))

    def test_review_is_ignored_as_an_unhandled_type(self):
        reason = E.explain_ignored("pull_request_review_comment",
                                   load("pull_request-review-comment.json"))
        self.assertIn("not handled", reason)


class ShapeErrorTests(unittest.TestCase):
    def test_shape_error_is_an_orchestrator_error(self):
        self.assertTrue(issubclass(E.EventShapeError, OrchestratorError))

    def test_bad_json_and_non_objects_are_shape_errors(self):
        for body in (b"", b"{", b"\xff\xfe", b"[]", b"null", b'"x"', b"3", b"[" * 100000):
            with self.subTest(body[:10]):
                with self.assertRaises(E.EventShapeError):
                    E.parse_delivery("issues", body)

    def test_unknown_type_is_ignored_whatever_the_body(self):
        self.assertIsNone(E.parse_delivery("push", b"[1, 2]"))
        self.assertIn("push", E.explain_ignored("push", [1, 2]))

    def test_parse_event_logs_why_it_ignores(self):
        with self.assertLogs("bot_bottle.orchestrator.events", level="DEBUG") as logs:
            self.assertIsNone(E.parse_event("release", {}))
        self.assertIn("release", logs.output[0])

    def test_classify_delivery_gives_the_event_or_the_reason_from_one_parse(self):
        self.assertEqual(E.classify_delivery("release", b"{}"), "event type 'release' is not handled")
        self.assertIn("'edited' is not acted on",
                      E.classify_delivery("issues", b'{"action": "edited"}'))
        with self.assertRaises(E.EventShapeError):
            E.classify_delivery("issues", b"[1]")

    def test_a_payload_given_is_classified_without_parsing_the_body(self):
        self.assertIn("'edited' is not acted on",
                      E.classify_delivery("issues", b"not json", {"action": "edited"}))

    def test_payloads_hand_a_parse_over_once_for_the_same_bytes_and_stay_bounded(self):
        payloads = E.Payloads(limit=2)
        payloads.put("d1", b'{"a": 1}', {"a": 1})
        self.assertEqual(payloads.take("d1", b'{"a": 1}'), {"a": 1})
        self.assertIs(payloads.take("d1", b'{"a": 1}'), E._UNPARSED)  # taken once
        payloads.put("d2", b'{"a": 2}', {"a": 2})
        self.assertIs(payloads.take("d2", b'{"a": 3}'), E._UNPARSED)  # other bytes: parse them
        for n in range(3, 6):
            payloads.put(f"d{n}", b"{}", {})
        self.assertEqual(len(payloads), 2)  # the oldest went first
        self.assertIs(payloads.take("d3", b"{}"), E._UNPARSED)
        self.assertEqual(payloads.take("d5", b"{}"), {})
        self.assertIs(payloads.take(None, b"{}"), E._UNPARSED)

    def test_wrong_types_name_the_bad_field(self):
        cases = [
            ({"action": 1}, "payload.action"),
            ({"action": "opened", "repository": []}, "payload.repository"),
            ({"action": "opened", "repository": {"owner": {"login": "a"}, "name": "r"},
              "issue": {"number": True}}, "issue.number"),
        ]
        for payload, where in cases:
            with self.subTest(where):
                with self.assertRaisesRegex(E.EventShapeError, where):
                    E.parse_event("issues", payload)

    def test_nonpositive_number_is_rejected(self):
        payload = {"action": "opened", "repository": {"owner": {"login": "a"}, "name": "r"},
                   "issue": {"number": 0}}
        with self.assertRaises(E.EventShapeError):
            E.parse_event("issues", payload)


# ---- property-style: random damage never yields anything but a valid event or a shape error --

SWAPS = (None, 0, -1, 1.5, True, "", "x", [], [None], {}, {"login": 3})


def _paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix + (key,)
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield prefix + (index,)
            yield from _paths(item, prefix + (index,))


def _mutate(payload: dict, rng: random.Random) -> dict:
    damaged = copy.deepcopy(payload)
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(damaged))
        if not paths:
            break
        # Bias toward shallow paths: they are the fields the parser actually reads.
        path = min(rng.sample(paths, min(3, len(paths))), key=len)
        parent = damaged
        for step in path[:-1]:
            parent = parent[step]
        if rng.random() < 0.4:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(SWAPS))
    return damaged


def _assert_valid(test: unittest.TestCase, event) -> None:
    test.assertIsInstance(event, (E.IssueEvent, E.CommentEvent, E.PullRequestEvent))
    for name, expected in event.__annotations__.items():
        value = getattr(event, name)
        if expected in ("str",):
            test.assertIsInstance(value, str, name)
        elif expected in ("int",):
            test.assertTrue(isinstance(value, int) and not isinstance(value, bool), name)
        elif expected in ("bool",):
            test.assertIsInstance(value, bool, name)
        elif expected.startswith("tuple"):
            test.assertTrue(all(isinstance(item, str) for item in value), name)


class MutatedPayloadTests(unittest.TestCase):
    def test_mutated_samples_give_a_valid_event_none_or_a_shape_error(self):
        rng = random.Random(20261125)
        outcomes = {"event": 0, "ignored": 0, "shape": 0}
        for name, (event_type, _) in SAMPLES.items():
            original = load(name)
            for _ in range(150):
                damaged = _mutate(original, rng)
                try:
                    event = E.parse_event(event_type, damaged)
                except E.EventShapeError:
                    outcomes["shape"] += 1
                    continue
                if event is None:
                    outcomes["ignored"] += 1
                    self.assertTrue(E.explain_ignored(event_type, damaged))
                else:
                    outcomes["event"] += 1
                    _assert_valid(self, event)
        # the loop must exercise all three outcomes, or it proves little
        self.assertTrue(all(outcomes.values()), outcomes)

    def test_any_json_value_as_the_whole_payload(self):
        for value in SWAPS + ({"action": None}, {"action": []}, {"action": "opened"}):
            for event_type in ("issues", "issue_comment", "pull_request", "push"):
                with self.subTest(event_type=event_type, value=value):
                    try:
                        result = E.parse_event(event_type, value)
                    except E.EventShapeError:
                        continue
                    self.assertIsNone(result)


class CommentKeyTests(unittest.TestCase):
    COMMENT = {"action": "created", "comment": {"id": 9, "updated_at": "2026-01-01T00:00:00Z"}}

    def test_both_comment_types_give_the_same_key_for_one_comment(self):
        a = E.comment_key("issue_comment", self.COMMENT)
        self.assertEqual(a, "comment 9 created 2026-01-01T00:00:00Z")
        self.assertEqual(E.comment_key(" Pull_Request_Comment", self.COMMENT), a)

    def test_an_edit_time_or_action_change_gives_a_new_key(self):
        edited = {"action": "created", "comment": {"id": 9, "updated_at": "2026-01-02"}}
        self.assertNotEqual(E.comment_key("issue_comment", edited),
                            E.comment_key("issue_comment", self.COMMENT))
        self.assertNotEqual(E.comment_key("issue_comment", {**self.COMMENT, "action": "edited"}),
                            E.comment_key("issue_comment", self.COMMENT))

    def test_other_types_and_bad_shapes_have_no_key(self):
        for event_type, payload in (("issues", self.COMMENT), ("issue_comment", []),
                                    ("issue_comment", {"comment": None}),
                                    ("issue_comment", {"comment": {"id": True}}),
                                    ("issue_comment", {"comment": {"id": "9"}}), (None, {})):
            with self.subTest(event_type=event_type, payload=payload):
                self.assertIsNone(E.comment_key(event_type, payload))


if __name__ == "__main__":
    unittest.main()
