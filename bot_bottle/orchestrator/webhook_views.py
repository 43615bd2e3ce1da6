"""The webhook port's read-only pages from the store: `StoreViews` gives `WebhookApp` the
dashboard and a run's page (HTML, rendered by `pages`), the runs documents (`run_listing`), a
run's provenance and the `/metrics` text, each from indexed queries (no scrape reads every
row). Renderers are imported when first used.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Mapping

from bot_bottle.orchestrator.pages import DEFAULT_FILTER

LOG_TAIL_LINES = 50


class StoreViews:
    """The read-only pages, from the store and the renderers (imported lazily)."""

    def __init__(self, store, clock: Callable[[], float] = time.time,
                 extra_metrics: Callable[[], Mapping[str, float]] | None = None,
                 counters: Callable[[], Mapping[str, tuple[str, float]]] | None = None,
                 forge_errors=None, gitea_url: str | None = None,
                 log_tail: Callable[[str, int], str] | None = None) -> None:
        from bot_bottle.orchestrator import metrics
        self._store = store
        self._gitea_url = gitea_url  # issue and PR links; plain text without it
        self._log_tail = log_tail  # `runner.log_tail(slug, lines)`; no log section without it
        self._clock = clock
        self._extra = extra_metrics
        self._counters = counters  # e.g. `EgressRefusals.counters`: name -> (help, value)
        self._forge_errors = forge_errors or metrics.FORGE_ERRORS
        self.durations = metrics.RunDurations()
        if hasattr(store, "add_transition_listener"):
            store.add_transition_listener(self.durations.transition)

    def dashboard(self, show: str = DEFAULT_FILTER) -> str:
        from bot_bottle.orchestrator import pages
        doc = json.loads(self.runs(include_destroyed=show == "all"))
        return pages.dashboard_html(doc["runs"], self._clock(), gitea_url=self._gitea_url,
                                    show=show)

    def run_page(self, run_id: int) -> str | None:
        """The run's HTML page; the agent log tail is read by the CLI (`bot-bottle logs`)."""
        from bot_bottle.orchestrator import pages
        prov = self.provenance(run_id)
        if prov is None:
            return None
        slug, tail, note = prov["run"].get("slug"), None, None
        if self._log_tail is None:
            note = "the agent log is not available here"
        elif not slug:
            note = "no bottle yet, so no agent log"
        else:
            try:
                tail = self._log_tail(slug, LOG_TAIL_LINES)
                note = "the agent log is empty"
            except Exception as exc:  # the page still shows everything else
                note = f"cannot read the agent log: {exc}"
        return pages.run_page_html(prov, self._clock(), gitea_url=self._gitea_url,
                                   log_tail=tail, log_note=note)

    def runs(self, include_destroyed: bool = False) -> str:
        """The runs document (JSON text), as `status --json` prints it."""
        from bot_bottle.orchestrator import run_listing
        now = self._clock()
        return self._store.with_reader(
            lambda conn: run_listing.runs_document(conn, now, include_destroyed))

    def run(self, run_id: int) -> str | None:
        from bot_bottle.orchestrator import run_listing
        now = self._clock()
        return self._store.with_reader(lambda conn: run_listing.run_document(conn, run_id, now))

    def provenance(self, run_id: int) -> dict | None:
        from bot_bottle.orchestrator import provenance, run_listing
        now = self._clock()
        run = self._store.with_reader(lambda conn: run_listing.run_object(conn, run_id, now))
        if run is None:
            return None
        return provenance.provenance_json(json.loads(run), self._store.op_log(run_id))

    def metrics(self) -> str:
        """Every figure from an indexed count or memory: no scrape reads every row."""
        import bot_bottle
        from bot_bottle.orchestrator import metrics, views
        extra = dict(self._extra()) if self._extra else {}
        counters = dict(self._counters()) if self._counters else {}
        families = (
            metrics.gauge("bot_bottle_deliveries_pending",
                          "Webhook deliveries stored and not yet processed.",
                          self._store.pending_delivery_count())
            + metrics.gauge("bot_bottle_outbox_pending",
                            "Comments waiting in the outbox to be posted to the forge.",
                            self._store.outbox_pending_count())
            + self.durations.text() + self._forge_errors.text()
            + metrics.process_text(bot_bottle.__version__))
        return views.metrics_text(self._store.count_runs_by_state(),
                                  self._store.delivery_counts(), extra, counters, families)
