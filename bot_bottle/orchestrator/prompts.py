"""What an agent is told, in one place: the prompt a launch starts with (the issue, then how
to reach the forge through the sidecar and deliver its work through the git gate), and the
one a relaunch starts with after a start that never ran the agent.
"""

from __future__ import annotations

SIDECAR_HELP = (
    "\n\n---\nYou reach the forge only through the bot-bottle sidecar: HTTP over the Unix socket "
    "in $BOT_BOTTLE_FORGE_SOCKET with header `Authorization: Bearer $BOT_BOTTLE_FORGE_RUN_TOKEN`. "
    "Endpoints: GET /issues/{n}, GET /pulls/{n}, GET /issues/{n}/comments, "
    "POST /issues/{n}/comments {body}, PATCH /issues/{n} {body}, POST /pulls {title,body,head,base}. "
    "When finished you MUST POST /done {\"status\": \"done\"|\"blocked\"|\"failed\", \"summary\": \"...\"}.\n"
    "The working directory is a checkout of the repository on your branch `bot-bottle/...`: "
    "before you signal done, commit your work and deliver it with `git push origin HEAD` "
    "(origin is the bot-bottle git gate: only your branch is accepted, and a push holding a "
    "secret is refused). If you open no pull request yourself, one is opened from your branch "
    "when you signal done.")


def launch_prompt(title: str, body: str, where: str = "") -> str:
    """`where` (e.g. "acme/widgets#7") tells the agent which issue it works on."""
    head = f"{where}: {title}" if where else title
    return f"{head}\n\n{body}{SIDECAR_HELP}"


def relaunch_prompt(launch_prompt: str, comment: str) -> str:
    """The prompt a relaunch starts with: the issue's launch prompt, then the comment."""
    return (f"{launch_prompt}\n\n---\nAn earlier start of this run ended before the agent "
            f"ran. A comment on the issue asked to retry:\n\n{comment}")
