"""The operator's HTML pages: the dashboard (`GET /`) and one run's page (`GET /run/<id>`).

Pure rendering: the runs document's objects (`run_listing`), a run's provenance (`provenance`)
and its agent log tail in, one HTML page out. Times are shown in the service host's local time
zone, the zone written beside each (`readable_time`); ages count from the caller's `now`.
Everything that came from the forge, the store or the agent is escaped with `html.escape`. The
pages carry no script and need none: they refresh with `<meta http-equiv="refresh">`, filter
with plain links, and their only active content is their own style sheet, allowed by hash in
`PAGE_CSP` (the same sheet on both pages).
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from urllib.parse import quote

REFRESH_SECONDS = 30
MAX_ROWS = 500  # newest first; a bigger page helps no one and costs the server
# name -> (states shown, link text); "live" (all but destroyed) is the default
FILTERS = {
    "live": (None, "live"),
    "active": (frozenset({"queued", "starting", "running", "frozen", "resuming"}), "active"),
    "failed": (frozenset({"failed", "timed_out"}), "failed"),
    "all": (None, "all"),
}
DEFAULT_FILTER = "live"
COLUMNS = ("id", "issue", "PR", "agent", "state", "in state", "since progress", "error",
           "last done")

_STYLE = """
body { font-family: sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.4em; margin: 0.2em 0; }
nav a { margin-right: 0.8em; }
nav a.on { font-weight: bold; color: #222; text-decoration: none; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #f0f0f0; }
/* ids, issues, agents, states and ages stay whole; error and summary take the rest */
#runs td:nth-child(-n+7), #runs th:nth-child(-n+7) { white-space: nowrap; }
/* a run's row is tinted with its state's colour, and so is its badge */
.state { font-weight: bold; padding: 0.1em 0.4em; border-radius: 0.3em; white-space: nowrap; }
.state-running { background: #d8f5d8; color: #0b5d0b; }
.state-queued, .state-starting, .state-resuming { background: #dde8fb; color: #1b3f8a; }
.state-frozen { background: #e6e0f5; color: #4b2d86; }
.state-failed, .state-timed_out { background: #fbdcdc; color: #8f1111; }
.state-destroyed { background: #e8e8e8; color: #555; }
.err { color: #8f1111; }
.muted { color: #666; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f6f6; padding: 0.5em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; }
dt { font-weight: bold; }
dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 700px) {
  table.cards thead { display: none; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; }
  table.cards tr { border: 1px solid #ccc; margin-bottom: 0.6em; }
  table.cards td { border: none; padding: 0.15em 0.5em; }
  table.cards td::before { content: attr(data-label) ": "; font-weight: bold; color: #555; }
  dl { grid-template-columns: 1fr; }
}
"""
# no script, no frame, no form, nothing from elsewhere; only the style sheet above, by hash
PAGE_CSP = ("default-src 'none'; style-src 'sha256-"
            + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
            + "'; img-src 'none'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
esc = html.escape
_AGE_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def human_age(seconds: float) -> str:
    """Largest whole unit: 5s, 3m, 2h, 4d (negative clock skew reads as 0s)."""
    seconds = max(0, int(seconds))
    for unit, size in _AGE_UNITS:
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _page(title: str, body: str) -> str:
    return _PAGE.format(refresh=REFRESH_SECONDS, title=esc(title), style=_STYLE, body=body)


def readable_time(iso: str | None, tz: tzinfo | None = None) -> str:
    """`2026-11-30T01:02:03Z` (the documents' form) in the local time zone (the service
    host's, from `TZ` or /etc/localtime; `tz` for another), the zone shown:
    `2026-11-30 02:02:03 CET (UTC+01:00)`, `2026-11-30 01:02:03 UTC`. `-` for no time."""
    if not iso:
        return "-"
    try:
        local = datetime.fromisoformat(iso).astimezone(tz)
    except ValueError:
        return iso
    offset = local.strftime("%z")  # +0100, or +053045 for a zone with seconds
    utc = f"UTC{offset[:3]}:{offset[3:5]}{(':' + offset[5:]) if offset[5:] else ''}"
    name = local.tzname() or ""
    if name == "UTC" and offset == "+0000":
        zone = "UTC"
    elif not name or name[0] in "+-" or name == utc:  # a zone without an abbreviation
        zone = utc
    else:
        zone = f"{name} ({utc})"
    return f"{local:%Y-%m-%d %H:%M:%S} {zone}"


def _seconds_since(iso: str | None, now: float) -> float | None:
    try:
        return now - datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def forge_link(gitea_url: str | None, run: Mapping, kind: str, number: int | None) -> str:
    """`owner/repo#N` (issues) or `#N` (pulls), a link to Gitea when its URL is known."""
    if number is None:
        return "-"
    text = f"{run['owner']}/{run['repo']}#{number}" if kind == "issues" else f"#{number}"
    if not gitea_url:
        return esc(text)
    href = (f"{gitea_url.rstrip('/')}/{quote(str(run['owner']), safe='')}/"
            f"{quote(str(run['repo']), safe='')}/{kind}/{int(number)}")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def state_badge(state: str) -> str:
    return f'<span class="state state-{esc(state)}">{esc(state)}</span>'


def _clip(text: str | None, limit: int = 160) -> str:
    if not text:
        return "-"
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _done(run: Mapping) -> str:
    status, summary = run.get("last_done_status"), run.get("last_done_summary")
    if not status and not summary:
        return "-"
    return " \u2014 ".join(part for part in (status, summary) if part)


def select(runs: Sequence[Mapping], show: str) -> list[Mapping]:
    """The runs the filter shows, newest first (`all` expects destroyed runs included)."""
    states = FILTERS[show][0]
    if states is not None:
        picked = [r for r in runs if r["state"] in states]
    elif show == "all":
        picked = list(runs)
    else:
        picked = [r for r in runs if r["state"] != "destroyed"]
    return sorted(picked, key=lambda r: r["id"], reverse=True)


def dashboard_html(runs: Sequence[Mapping], now: float, *, gitea_url: str | None = None,
                   show: str = DEFAULT_FILTER) -> str:
    """The dashboard: `runs` are the runs document's objects (destroyed ones included for
    `show="all"`); each run id links to its page."""
    shown = select(runs, show)
    on = ' class="on"'
    nav = " ".join(f'<a href="/?show={name}"{on if name == show else ""}>{esc(text)}</a>'
                   for name, (_, text) in FILTERS.items())
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    rows = []
    for run in shown[:MAX_ROWS]:
        in_state = _seconds_since(run.get("state_since"), now)
        progress = _seconds_since(run.get("last_progress_at"), now)
        cells = (
            f'<a href="/run/{int(run["id"])}">{int(run["id"])}</a>',
            forge_link(gitea_url, run, "issues", run["issue_number"]),
            forge_link(gitea_url, run, "pulls", run.get("pr_number")),
            esc(run["agent"]),
            state_badge(run["state"]),
            "-" if in_state is None else esc(human_age(in_state)),
            "-" if progress is None else esc(human_age(progress)),
            f'<span class="err">{esc(_clip(run.get("error")))}</span>' if run.get("error") else "-",
            esc(_clip(_done(run))),
        )
        rows.append(f'<tr class="state-{esc(run["state"])}">' + "".join(
            f'<td data-label="{esc(c)}">{cell}</td>' for c, cell in zip(COLUMNS, cells)) + "</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(COLUMNS)}">no runs</td></tr>')
    count = f"{len(shown)} run{'s' if len(shown) != 1 else ''} ({FILTERS[show][1]})"
    if len(shown) > MAX_ROWS:
        count += f", newest {MAX_ROWS} shown"
    body = (f"<h1>bot-bottle runs</h1>\n<nav>{nav}</nav>\n"
            f'<p id="summary">{esc(count)} \u00b7 <span class="muted">refreshes every '
            f'{REFRESH_SECONDS} s \u00b7 JSON: <a href="/runs">/runs</a></span></p>\n'
            f'<table id="runs" class="cards">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>")
    return _page("bot-bottle runs", body)


def _detail(detail) -> str:
    if isinstance(detail, dict):
        return ", ".join(f"{k}={v}" for k, v in detail.items())
    return "" if detail is None else str(detail)


def run_page_html(prov: Mapping, now: float, *, gitea_url: str | None = None,
                  log_tail: str | None = None, log_note: str | None = None) -> str:
    """One run: its fields, the transition timeline, the op-log (readable local times) and
    the agent log tail. `prov` is the run's provenance (`provenance.provenance_json`)."""
    run, ops = prov["run"], prov["ops"]
    rid = int(run["id"])
    in_state = _seconds_since(run.get("state_since"), now)
    progress = _seconds_since(run.get("last_progress_at"), now)
    fields = (
        ("issue", forge_link(gitea_url, run, "issues", run["issue_number"])),
        ("PR", forge_link(gitea_url, run, "pulls", run.get("pr_number"))),
        ("agent", esc(run["agent"])),
        ("slug", esc(run.get("slug") or "-")),
        ("state", state_badge(run["state"])),
        ("in state", "-" if in_state is None else esc(
            f"{human_age(in_state)}, since {readable_time(run.get('state_since'))}")),
        ("last progress", "-" if progress is None else esc(
            f"{human_age(progress)} ago, at {readable_time(run.get('last_progress_at'))}")),
        ("created", esc(readable_time(run.get("created_at")))),
        ("error", f'<span class="err">{esc(run["error"])}</span>' if run.get("error") else "-"),
        ("last done", esc(_done(run))),
    )
    dl = "\n".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in fields)
    steps = [op for op in ops if op["kind"] == "transition"]
    timeline = "\n".join(
        f'<tr><td data-label="at">{esc(readable_time(op["at"]))}</td>'
        f'<td data-label="from">{state_badge(str(op["detail"].get("from", "?")))}</td>'
        f'<td data-label="to">{state_badge(str(op["detail"].get("to", "?")))}</td>'
        f'<td data-label="reason">{esc(str(op["detail"].get("reason", "")))}</td></tr>'
        for op in steps) or '<tr><td colspan="4">no transitions yet</td></tr>'
    oplog = "\n".join(
        f'<tr><td data-label="at">{esc(readable_time(op["at"]))}</td>'
        f'<td data-label="kind">{esc(op["kind"])}</td>'
        f'<td data-label="detail">{esc(_detail(op["detail"]))}</td></tr>'
        for op in ops) or '<tr><td colspan="3">no operations</td></tr>'
    if log_tail:
        log = f'<pre id="log">{esc(log_tail)}</pre>'
    else:
        log = f'<p id="log" class="muted">{esc(log_note or "no agent log")}</p>'
    title = f"run {rid}: {run['owner']}/{run['repo']}#{run['issue_number']}"
    body = (f'<nav><a href="/">all runs</a> <a href="/runs/{rid}">JSON</a> '
            f'<a href="/runs/{rid}/provenance">provenance JSON</a></nav>\n'
            f"<h1>{esc(title)}</h1>\n<dl id=\"fields\">\n{dl}\n</dl>\n"
            '<h2>Transitions</h2>\n<table id="timeline" class="cards"><thead><tr>'
            "<th>at</th><th>from</th><th>to</th><th>reason</th></tr></thead>\n"
            f"<tbody>\n{timeline}\n</tbody></table>\n"
            '<h2>Op-log</h2>\n<table id="oplog" class="cards"><thead><tr>'
            "<th>at</th><th>kind</th><th>detail</th></tr></thead>\n"
            f"<tbody>\n{oplog}\n</tbody></table>\n"
            f"<h2>Agent log (tail)</h2>\n{log}")
    return _page(title, body)
