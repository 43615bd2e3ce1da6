"""Bottle state: `$BOT_BOTTLE_HOME/state/<slug>/metadata.json`, written atomically, and slugify.

The home, `state/`, `checkouts/` and each bottle's state dir are 0700 and the metadata 0600,
whatever the caller's umask (`private`): they hold prompts, logs and snapshots of agents' work."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .errors import StateConflictError, UsageError
from .private import private_dir
from .trees import remove_tree

MAX_SLUG = 63
CHECKOUTS = "checkouts"   # $BOT_BOTTLE_HOME/checkouts/<name>: workspaces prepared for `start --workspace`
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def slugify(label: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:MAX_SLUG].strip("-")
    if not slug:
        raise UsageError(f"label {label!r} gives an empty slug")
    return slug


def check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise UsageError(f"invalid slug {slug!r}")
    return slug


def state_dir(home: Path, slug: str) -> Path:
    return home / "state" / check_slug(slug)


def private_home(home: Path) -> Path:
    """The home and its `state/` and `checkouts/`, made 0700 (or narrowed to it)."""
    private_dir(home)
    for sub in ("state", CHECKOUTS):
        private_dir(home / sub)
    return home / "state"


def read_metadata(home: Path, slug: str) -> dict | None:
    """The bottle's metadata, None when there is none; StateConflictError when it is unreadable."""
    path = state_dir(home, slug) / "metadata.json"
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateConflictError(f"{path}: corrupt metadata ({exc}); destroy the bottle") from exc
    if not isinstance(meta, dict):
        raise StateConflictError(f"{path}: corrupt metadata (not a JSON object); destroy the bottle")
    return meta


def write_metadata(home: Path, slug: str, meta: dict) -> None:
    d = state_dir(home, slug)
    private_home(home)
    private_dir(d)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".metadata.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, d / "metadata.json")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def update_metadata(home: Path, slug: str, **fields) -> dict:
    meta = read_metadata(home, slug) or {}
    meta.update(fields)
    write_metadata(home, slug, meta)
    return meta


def remove_state(home: Path, slug: str) -> None:
    """Remove the bottle's state dir (its workspace is the agent's: any depth, any modes)."""
    remove_tree(state_dir(home, slug), "the bottle's state")


def list_slugs(home: Path) -> list[str]:
    root = home / "state"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if SLUG_RE.match(p.name) and (p / "metadata.json").exists())


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
