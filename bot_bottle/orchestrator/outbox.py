"""Sending the comment outbox: the comments `decide` asked for (queued in the store in the
same pass that decided them) reach the forge in order, each at most once in effect, even
across a forge outage or a crash between a POST and its record.
"""

from __future__ import annotations

import logging
from typing import Callable

from bot_bottle.contrib.forge.base import ForgeNotFound, ForgeScopeError, ForgeValidationError

log = logging.getLogger(__name__)
PERMANENT_FORGE_ERRORS = (ForgeNotFound, ForgeValidationError, ForgeScopeError)


def outbox_tag(item_id: int) -> str:
    """An invisible tag that makes a posted outbox comment recognisable."""
    return f"<!-- bot-bottle:outbox={item_id} -->"


def drain(store, forge_factory: Callable[[str, str], object], now: float,
          backoff: float = 30.0) -> int:
    """Send due comments in order; returns how many were sent. Every comment carries its
    outbox tag, and one whose earlier POST may have gone through (timeout, crash) is looked
    for before it is posted again. A refusal that cannot change (404, 422, out of scope)
    drops the comment; any other failure retries it later, waiting twice as long each time
    up to 32 × `backoff`, and defers the rest of this pass (the forge is likely down)."""
    sent = 0
    failure: str | None = None
    for item in store.due_outbox(now):
        delay = backoff * 2 ** min(item.attempts, 5)
        if failure is not None:
            store.mark_outbox_retry(item.id, now + backoff, failure)
            continue
        tag = outbox_tag(item.id)
        try:
            forge = forge_factory(item.owner, item.repo)
            if not (item.posting and any(tag in c.body for c in forge.read_comments(item.number))):
                store.mark_outbox_posting(item.id, now)
                forge.post_comment(item.number, f"{item.body}\n{tag}")
        except PERMANENT_FORGE_ERRORS as exc:
            log.error("dropping comment %s on %s/%s#%s: %s", item.id, item.owner, item.repo,
                      item.number, exc)
            store.mark_outbox_dropped(item.id, now, str(exc))
            continue
        except Exception as exc:  # ForgeError or I/O: retry later, never lose it
            failure = str(exc)
            store.mark_outbox_retry(item.id, now + delay, failure)
            continue
        store.mark_outbox_sent(item.id, now)
        sent += 1
    return sent
