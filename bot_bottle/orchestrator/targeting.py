"""The spec's launch rule and trust rule, as pure functions over parsed events.

`launch_target` decides whether an issue event asks for a run (which agent, which bottles,
on whose behalf); `comment_trust` decides how much a comment counts. Forge look-ups
(org membership, repository permission) come in as callables so this module does no I/O
and is tested with plain dicts or the fake forge.

Rejections are silent (`comment=None`) when the issue is simply not meant for us — no
`bot-bottle:` label, no assignee in the agent org, a PR, a closed issue — so that ordinary
issues never get bot chatter. They carry a comment when someone clearly tried to start a
run and got it wrong (several agent labels, a bad name, an unknown agent). The caller
appends `MARKER` when it posts such a comment (the executor does for every comment).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Container
from dataclasses import dataclass

from bot_bottle.manifest import NAME
from bot_bottle.orchestrator.events import CommentEvent, IssueEvent

# Marks comments the orchestrator posts; a webhook echo of one must never count as a prompt,
# whichever account posted it.
MARKER = "<!-- bot-bottle -->"
AGENT_LABEL_PREFIX = "bot-bottle:"
BOTTLE_LABEL_PREFIX = "bottle:"
STOP_COMMAND = "/bot-bottle stop"
NAME_PATTERN = re.compile(NAME)  # the core's agent-name rule (`manifest.NAME`)
WRITE_PERMISSIONS = frozenset({"write", "admin", "owner"})


def marked(body: str, marker: str = MARKER) -> str:
    """A comment of ours as it is posted: the body, then the marker on its own line."""
    return f"{body}\n\n{marker}"


@dataclass(frozen=True)
class LaunchTarget:
    agent: str
    bottles: tuple[str, ...]
    assignee: str


@dataclass(frozen=True)
class LaunchRejected:
    """Why an issue event does not launch; `comment` is for the issue, `None` = stay silent."""

    reason: str
    comment: str | None = None


class Trust(enum.Enum):
    TRUSTED = "trusted"
    STOP = "stop"  # trusted, and the comment is the stop command
    OWN = "own"  # written by an agent account or by the orchestrator: never a prompt
    UNTRUSTED = "untrusted"


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def launch_target(event: IssueEvent, *, org: str, is_org_member: Callable[[str, str], bool],
                  known_agents: Collection[str]) -> LaunchTarget | LaunchRejected:
    """Apply the launch rule to an issue event (the caller filters on its action)."""
    if event.is_pull:
        return LaunchRejected("a pull request, not an issue")
    if event.state != "open":
        return LaunchRejected(f"issue is {event.state}, not open")
    agent_names = _dedupe(label[len(AGENT_LABEL_PREFIX):] for label in event.labels
                          if label.startswith(AGENT_LABEL_PREFIX))
    if not agent_names:
        return LaunchRejected("no bot-bottle:<agent> label")
    # Membership is checked only now, after the cheap label test, since each check may be
    # a forge request; and before any comment, so unassigned issues stay quiet.
    assignee = next((login for login in event.assignees if is_org_member(org, login)), None)
    if assignee is None:
        return LaunchRejected(f"not assigned to a member of {org}")
    if len(agent_names) > 1:
        listed = ", ".join(f"`{AGENT_LABEL_PREFIX}{name}`" for name in agent_names)
        return LaunchRejected(
            "several bot-bottle labels",
            comment=f"This issue has several agent labels ({listed}). "
                    f"Keep exactly one `{AGENT_LABEL_PREFIX}<agent>` label to start a run.")
    agent = agent_names[0]
    if not is_valid_name(agent):
        return LaunchRejected(
            f"invalid agent name {agent!r}",
            comment=f"`{AGENT_LABEL_PREFIX}{agent}` does not name a valid agent: names are "
                    "lowercase letters, digits, `-` and `_`, at most 64 characters.\n\n"
                    + _agents_sentence(known_agents))
    if agent not in known_agents:
        return LaunchRejected(
            f"unknown agent {agent!r}",
            comment=f"There is no agent called `{agent}`. " + _agents_sentence(known_agents))
    bottles = _dedupe(label[len(BOTTLE_LABEL_PREFIX):] for label in event.labels
                      if label.startswith(BOTTLE_LABEL_PREFIX))
    invalid = [name for name in bottles if not is_valid_name(name)]
    if invalid:
        listed = ", ".join(f"`{BOTTLE_LABEL_PREFIX}{name}`" for name in invalid)
        return LaunchRejected(
            "invalid bottle name",
            comment=f"Invalid bottle label(s): {listed}. Bottle names are lowercase letters, "
                    "digits, `-` and `_`, at most 64 characters.")
    return LaunchTarget(agent=agent, bottles=tuple(sorted(bottles)), assignee=assignee)


def comment_trust(event: CommentEvent, *, agent_logins: Container[str],
                  permission: Callable[[str], str]) -> Trust:
    """Apply the trust rule: write access on the repository makes a comment a prompt.

    `agent_logins` is only asked `in`, so it may be a lazy org-membership check; the marker
    test comes first because it costs no forge request.
    """
    if MARKER in event.body:
        return Trust.OWN
    # Gitea logins are case-insensitive; a set of lowercase names also matches "Claude-Bot".
    if event.author in agent_logins or event.author.casefold() in agent_logins:
        return Trust.OWN
    if permission(event.author) not in WRITE_PERMISSIONS:
        return Trust.UNTRUSTED
    if event.body.strip() == STOP_COMMAND:
        return Trust.STOP
    return Trust.TRUSTED


def _dedupe(names) -> list[str]:
    """Unique names in sorted order (org and repo labels may share a name)."""
    return sorted(set(names))


def _agents_sentence(known_agents: Collection[str]) -> str:
    if not known_agents:
        return "No agents are configured on this orchestrator."
    listed = ", ".join(f"`{name}`" for name in sorted(known_agents))
    return f"Available agents: {listed}."
