"""Test helpers: a started FakeGitea with the reference cast, and where the Gitea samples live
(tests/data/gitea, a verbatim copy of Gitea's payloads, API answers and swagger)."""

from __future__ import annotations

import logging
from pathlib import Path

from bot_bottle.contrib.gitea.client import GiteaClient, GiteaForge
from bot_bottle.demo_support.fake_gitea import FakeGitea

GITEA_DATA = Path(__file__).resolve().parents[2] / "data" / "gitea"
TOKEN = "s3cr3t-token-value-abc123"


def start_fake(test) -> FakeGitea:
    g = FakeGitea().start()
    test.addCleanup(g.stop)
    g.add_token(TOKEN, "claude-bot")
    g.add_repo("acme", "widgets")
    g.set_permission("acme", "widgets", "claude-bot", "write")
    return g


def forge_for(g: FakeGitea, token: str = TOKEN, **kw) -> GiteaForge:
    kw.setdefault("timeout", 0.5)
    kw.setdefault("sleep", lambda s: None)
    return GiteaForge(GiteaClient(g.url, token, **kw), "acme", "widgets")


def quiet_client_log(test) -> None:
    """Silence the client's retry warnings for one test (restored by cleanup)."""
    log = logging.getLogger("bot_bottle.contrib.gitea.client")
    quiet = logging.NullHandler()
    log.addHandler(quiet)
    old, log.propagate = log.propagate, False
    test.addCleanup(lambda: (log.removeHandler(quiet), setattr(log, "propagate", old)))
