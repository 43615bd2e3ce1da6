"""The last lines of a bottle's log as the orchestrator quotes them in an issue comment.

`clean` keeps at most `LINES` lines of at most `WIDTH` characters, drops terminal control
sequences, and replaces every secret it is given with `***` (the core redacts the bottle's
env values as it writes the log; we redact again with what only the orchestrator knows: the
run token, `FORGE_TOKEN`, the webhook secret). `quote` puts the text in a Markdown fence no
line inside can close. Both are pure, so `lifecycle.decide` stays free of I/O. `printable`
is the one rule for putting other text an agent or a client chose on one line (a log line, a
`status` cell): cut, and every character that is not printable shown as `?`.
"""

from __future__ import annotations

import re
from typing import Iterable

LINES = 20
WIDTH = 300
MIN_SECRET = 4  # shorter values would blank out ordinary text and hide nothing
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str, limit: int | None = None) -> str:
    """`text` cut to `limit` characters, each one that is not printable replaced by `?`
    (checked in C first: the per-character pass runs only for the rare text that needs it)."""
    if limit is not None:
        text = text[:limit]
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def clean(text: str, secrets: Iterable[str], *, lines: int = LINES, width: int = WIDTH) -> str:
    # redact before cutting: a secret cut in two by the width must not leave its first half
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, "***")
    all_lines = [line.rstrip() for line in _CONTROL.sub("", text).split("\n")]
    while all_lines and not all_lines[-1]:
        all_lines.pop()
    kept = all_lines[-lines:]
    while kept and not kept[0]:
        kept.pop(0)
    return "\n".join(line if len(line) <= width else line[:width] + " […]" for line in kept)


def quote(text: str) -> str:
    """`text` in a fenced code block ("" for no text)."""
    if not text:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"
