"""The one secret scanner: does a text hold a credential, and on which line?

`scan(text, known=())` returns a `Finding(kind, line)` for each line that holds
- a known value (`known`: {label: value}, e.g. the run token, the keys the gates inject,
  `FORGE_TOKEN`; or just values, labelled "a known secret"): found as a substring wherever it
  is, when it is at least MIN_KNOWN characters long (a short value would match ordinary text);
- or a common token shape: a private key block, a GitHub token (`ghp_`/`gho_`/`ghs_`/`ghu_`/
  `ghr_`/`github_pat_`), an AWS access key id (`AKIA`/`ASIA`) or secret key after its name, an
  Anthropic key (`sk-ant-`), an OpenAI key (`sk-proj-`, `sk-svcacct-`, `sk-admin-`, or a long
  plain `sk-`), a Gitea token (40 hex digits right after a word such as `token`, `password`,
  `Authorization:`, or as the password of a URL).
A finding names the kind and the line (1-based), never the value: callers put findings in
messages the agent, the log and the issue see. Shapes are chosen to keep false positives low:
a bare 40-hex string (a git SHA), a UUID or a base64 blob of text is not a finding.

Used by the git gate's pre-receive hook (every added line and commit message of a push) and
by the sidecar's write scan (comments and descriptions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MIN_KNOWN = 8   # shorter known values are not searched for (they would match ordinary text)
KNOWN_KIND = "a known secret"


@dataclass(frozen=True)
class Finding:
    kind: str   # what was found, e.g. "Anthropic API key", "the run token"
    line: int   # 1-based line of the text


_HEX40 = r"([0-9a-f]{40})(?![0-9A-Za-z])"
_SHAPES: tuple[tuple[str, re.Pattern], ...] = (
    ("private key block", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("GitHub token", re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])")),
    ("GitHub token", re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{50,255}")),
    ("AWS access key id", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("AWS secret access key", re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*(?:[:=]|=>)\s*[\"']?"
        r"(?-i:[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])")),
    ("Anthropic API key", re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,}")),
    ("OpenAI API key", re.compile(
        r"(?<![A-Za-z0-9_-])sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}")),
    # the older plain form: `sk-` and 32 or more letters and digits, no dashes in between
    ("OpenAI API key", re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9]{32,}(?![A-Za-z0-9_-])")),
    # a Gitea token is 40 hex digits like a git SHA: only after a word that says "credential"
    ("Gitea token", re.compile(
        r"(?i)(?:token|secret|passw(?:or)?d|passwd|api[_-]?key|authorization)[\"']?\s*"
        r"(?:[:=]|=>)?\s*[\"']?(?:(?:token|bearer|basic)\s+)?" + _HEX40)),
    ("Gitea token", re.compile(r"://[^/\s:@]+:" + _HEX40 + "@")),
)


def _labelled(known: Mapping[str, str] | Iterable[str]) -> list[tuple[str, str]]:
    pairs = known.items() if isinstance(known, Mapping) else ((KNOWN_KIND, v) for v in known)
    out = [(label, value) for label, value in pairs
           if isinstance(value, str) and len(value) >= MIN_KNOWN]
    # a longer value first: one that contains another is reported by its own name
    return sorted(out, key=lambda pair: -len(pair[1]))


def scan(text: str, known: Mapping[str, str] | Iterable[str] = ()) -> list[Finding]:
    """The findings in `text`, in line order; at most one per kind and line."""
    values = _labelled(known)
    findings: list[Finding] = []
    # lines as editors and git count them ("\n"), not str.splitlines' (\x0c, \x1e, \u2028...)
    for number, line in enumerate(text.split("\n"), 1):
        findings += scan_line(line, number, values)
    return findings


def scan_line(line: str, number: int, values: list[tuple[str, str]]) -> list[Finding]:
    """One line's findings; `values` as `_labelled` gives them (see `Scanner`)."""
    kinds: list[str] = []
    for label, value in values:
        if value in line and label not in kinds:
            kinds.append(label)
    for kind, pattern in _SHAPES:
        if kind not in kinds and pattern.search(line):
            kinds.append(kind)
    return [Finding(kind, number) for kind in kinds]


class Scanner:
    """`scan` for many lines against the same known values (the hook scans a push line by
    line as git prints it, without holding the whole diff)."""

    def __init__(self, known: Mapping[str, str] | Iterable[str] = ()) -> None:
        self._values = _labelled(known)

    def line(self, line: str, number: int) -> list[Finding]:
        return scan_line(line, number, self._values)
