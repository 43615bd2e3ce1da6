"""The launch rule and the trust rule, over plain event values and the fake forge."""

from __future__ import annotations

import unittest
from dataclasses import replace

from bot_bottle.orchestrator.events import CommentEvent, IssueEvent
from bot_bottle.orchestrator.targeting import (
    MARKER, LaunchRejected, LaunchTarget, Trust, comment_trust, is_valid_name, launch_target)

from ._fakes import FakeForge

ORG = "bots"
AGENTS = ("claude", "codex")


def issue(**changes) -> IssueEvent:
    base = IssueEvent(action="label_updated", owner="acme", repo="widgets", number=42,
                      title="Crash", body="fix it", labels=("bug", "bot-bottle:claude"),
                      assignees=("alice", "claude-bot"), sender="alice", state="open")
    return replace(base, **changes)


def comment(body: str = "please go on", author: str = "alice") -> CommentEvent:
    return CommentEvent(action="created", owner="acme", repo="widgets", number=42,
                        is_pull=False, comment_id=7, body=body, author=author)


class LaunchTargetTests(unittest.TestCase):
    def setUp(self):
        self.members = {(ORG, "claude-bot")}
        self.asked: list[str] = []

    def is_member(self, org: str, login: str) -> bool:
        self.asked.append(login)
        return (org, login) in self.members

    def target(self, event: IssueEvent, agents=AGENTS):
        return launch_target(event, org=ORG, is_org_member=self.is_member, known_agents=agents)

    def test_labeled_issue_assigned_to_org_member_launches(self):
        self.assertEqual(self.target(issue()),
                         LaunchTarget(agent="claude", bottles=(), assignee="claude-bot"))

    def test_bottle_labels_are_validated_sorted_and_deduplicated(self):
        result = self.target(issue(labels=("bottle:web", "bot-bottle:claude", "bottle:db",
                                           "bottle:web")))
        self.assertEqual(result.bottles, ("db", "web"))

    def test_invalid_bottle_label_is_rejected_with_a_comment(self):
        result = self.target(issue(labels=("bot-bottle:claude", "bottle:Bad Name")))
        self.assertIsInstance(result, LaunchRejected)
        self.assertIn("bottle:Bad Name", result.comment)

    def test_issue_without_agent_label_is_silently_rejected_without_asking_the_forge(self):
        result = self.target(issue(labels=("bug", "bottle:web")))
        self.assertEqual(result, LaunchRejected(result.reason, comment=None))
        self.assertEqual(self.asked, [])

    def test_issue_not_assigned_to_an_org_member_is_silently_rejected(self):
        for assignees in ((), ("alice", "bob")):
            with self.subTest(assignees=assignees):
                result = self.target(issue(assignees=assignees))
                self.assertIsInstance(result, LaunchRejected)
                self.assertIsNone(result.comment)
                self.assertIn(ORG, result.reason)

    def test_unassigned_issue_with_unknown_agent_stays_silent(self):
        result = self.target(issue(assignees=("alice",), labels=("bot-bottle:nobody",)))
        self.assertIsNone(result.comment)

    def test_pull_request_and_closed_issue_are_silently_rejected(self):
        for event in (issue(is_pull=True), issue(state="closed")):
            with self.subTest(event=event):
                result = self.target(event)
                self.assertIsInstance(result, LaunchRejected)
                self.assertIsNone(result.comment)

    def test_unknown_agent_is_rejected_with_a_comment_listing_the_agents(self):
        result = self.target(issue(labels=("bot-bottle:gpt",)))
        self.assertIsInstance(result, LaunchRejected)
        self.assertIn("gpt", result.reason)
        self.assertIn("`claude`", result.comment)
        self.assertIn("`codex`", result.comment)

    def test_unknown_agent_with_no_agents_configured_says_so(self):
        result = self.target(issue(), agents=())
        self.assertIn("No agents", result.comment)

    def test_several_agent_labels_are_rejected_with_a_comment(self):
        result = self.target(issue(labels=("bot-bottle:claude", "bot-bottle:codex")))
        self.assertIsInstance(result, LaunchRejected)
        self.assertIn("bot-bottle:codex", result.comment)

    def test_the_same_agent_label_twice_counts_once(self):
        result = self.target(issue(labels=("bot-bottle:claude", "bot-bottle:claude")))
        self.assertEqual(result.agent, "claude")

    def test_invalid_agent_name_is_rejected_with_a_comment(self):
        for label in ("bot-bottle:", "bot-bottle:Claude", "bot-bottle:-x", "bot-bottle:a b",
                      "bot-bottle:" + "a" * 65):
            with self.subTest(label=label):
                result = self.target(issue(labels=(label,)), agents=AGENTS + (label[11:],))
                self.assertIsInstance(result, LaunchRejected)
                self.assertIsNotNone(result.comment)

    def test_first_org_member_among_assignees_is_the_assignee(self):
        self.members.add((ORG, "other-bot"))
        result = self.target(issue(assignees=("alice", "other-bot", "claude-bot")))
        self.assertEqual(result.assignee, "other-bot")

    def test_works_with_the_fake_forge_port(self):
        forge = FakeForge()
        forge.add_org_member(ORG, "claude-bot")
        result = launch_target(issue(), org=ORG, is_org_member=forge.is_org_member,
                               known_agents={"claude"})
        self.assertIsInstance(result, LaunchTarget)


class NameTests(unittest.TestCase):
    def test_name_rule(self):
        for name, ok in (("a", True), ("0-x_y", True), ("a" * 64, True), ("a" * 65, False),
                         ("", False), ("_a", False), ("A", False), ("a.b", False),
                         ("a\n", False)):
            with self.subTest(name=name):
                self.assertEqual(is_valid_name(name), ok)


class CommentTrustTests(unittest.TestCase):
    def setUp(self):
        self.permissions = {"alice": "write", "root": "admin", "boss": "owner", "eve": "read",
                            "claude-bot": "write"}
        self.asked: list[str] = []

    def permission(self, login: str) -> str:
        self.asked.append(login)
        return self.permissions.get(login, "none")

    def trust(self, event: CommentEvent) -> Trust:
        return comment_trust(event, agent_logins={"claude-bot"}, permission=self.permission)

    def test_writers_admins_and_owners_are_trusted(self):
        for login in ("alice", "root", "boss"):
            with self.subTest(login=login):
                self.assertIs(self.trust(comment(author=login)), Trust.TRUSTED)

    def test_readers_and_strangers_are_untrusted(self):
        for login in ("eve", "mallory"):
            with self.subTest(login=login):
                self.assertIs(self.trust(comment(author=login)), Trust.UNTRUSTED)

    def test_agent_comments_are_own_even_with_write_access_and_no_lookup_is_made(self):
        self.assertIs(self.trust(comment(author="claude-bot")), Trust.OWN)
        self.assertIs(self.trust(comment(author="Claude-Bot")), Trust.OWN)
        self.assertEqual(self.asked, [])

    def test_agent_logins_may_be_a_lazy_membership_check(self):
        class OrgMembers:  # supports `in` only, like the dispatcher's forge-backed view
            def __init__(self):
                self.asked = []

            def __contains__(self, login):
                self.asked.append(login)
                return login == "claude-bot"

        members = OrgMembers()
        self.assertIs(comment_trust(comment(author="claude-bot"), agent_logins=members,
                                    permission=self.permission), Trust.OWN)
        self.assertIs(comment_trust(comment(body=MARKER), agent_logins=members,
                                    permission=self.permission), Trust.OWN)
        self.assertEqual(members.asked, ["claude-bot"])  # the marker needs no look-up

    def test_comment_with_our_marker_is_own(self):
        self.assertIs(self.trust(comment(body=f"Run failed.\n\n{MARKER}")), Trust.OWN)

    def test_stop_command_from_a_trusted_user_is_stop(self):
        self.assertIs(self.trust(comment(body="  /bot-bottle stop\n")), Trust.STOP)

    def test_stop_command_from_an_untrusted_user_is_untrusted(self):
        self.assertIs(self.trust(comment(body="/bot-bottle stop", author="eve")),
                      Trust.UNTRUSTED)

    def test_stop_inside_a_longer_comment_is_a_prompt(self):
        self.assertIs(self.trust(comment(body="/bot-bottle stop please")), Trust.TRUSTED)

    def test_fake_forge_permissions(self):
        forge = FakeForge()
        forge.set_permission("alice", "write")
        self.assertIs(comment_trust(comment(), agent_logins=(), permission=forge.user_permission),
                      Trust.TRUSTED)
        self.assertIs(comment_trust(comment(author="bob"), agent_logins=(),
                                    permission=forge.user_permission), Trust.UNTRUSTED)


if __name__ == "__main__":
    unittest.main()
