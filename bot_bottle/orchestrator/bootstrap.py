"""The composition root: the one place that wires the forge layer (`contrib.gitea`) to the
orchestrator core and owns the service's threads.

`build(config)` makes a `Service` (store, Gitea forge, subprocess runner, workspace
checkouts, the git gate on the sidecar's socket and its PR opener, executor, dispatcher,
webhook server, sidecar, relay, watchdog) without starting anything; tests and the demo pass
their own `forge_factory` or `runner`. `Service.start()` reconciles, then starts the threads;
`Service.stop()` stops accepting, lets in-flight requests finish, and leaves bottles as they
are. `secure_home(config)` (run by `build`) makes the service's files private first. The
dispatcher, relay and watchdog loops beat `Service.heartbeats` (what the systemd watchdog
ping checks); the store's run listeners mirror runs into `forge_state` and log each transition
(`run_log.RunLog`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from bot_bottle.backend import agent_user
from bot_bottle.contrib.gitea import forge_state
from bot_bottle.contrib.gitea.client import GiteaClient, GiteaForge
from bot_bottle.contrib.gitea.signature import verify_signature
from bot_bottle.errors import BottleError
from bot_bottle.orchestrator.config import Config
from bot_bottle.orchestrator.dispatcher import Orchestrator, agents_in
from bot_bottle.orchestrator.egress_log import EgressRefusals, describe_run
from bot_bottle.orchestrator.executor import Executor
from bot_bottle.orchestrator.git_gate import GitGate
from bot_bottle.orchestrator.git_gate_repo import GATES, GateRepos
from bot_bottle.orchestrator.model import OrchestratorError
from bot_bottle.orchestrator.notify import Heartbeats
from bot_bottle.orchestrator.pr_opener import PrOpener
from bot_bottle.orchestrator.relay import Relay
from bot_bottle.orchestrator.run_log import RunLog
from bot_bottle.orchestrator.runner import SubprocessBottleRunner
from bot_bottle.orchestrator.sidecar import SidecarApp, SidecarServer, service_secrets
from bot_bottle.orchestrator.store import SqliteRunStore
from bot_bottle.orchestrator.targeting import MARKER, marked
from bot_bottle.orchestrator.watchdog import Watchdog
from bot_bottle.orchestrator.webhook import StoreViews, WebhookApp, make_server
from bot_bottle.orchestrator.workspace import Workspaces
from bot_bottle.private import DIR_MODE, FILE_MODE, private_dir, tighten
from bot_bottle.state import CHECKOUTS

log = logging.getLogger(__name__)
# the dispatcher passes at least every 2 s (its retry interval); the relay every 0.5 s
DISPATCH_PERIOD = 2.5
RELAY_PERIOD = 0.5


class MarkedForge:
    """The forge as the agent sees it: its comments carry our marker, so the trust rule
    never mistakes them for a human's (they are posted with the orchestrator's token)."""

    def __init__(self, forge) -> None:
        self._forge = forge

    def __getattr__(self, name: str):
        return getattr(self._forge, name)

    def post_comment(self, number: int, body: str):
        return self._forge.post_comment(number, marked(body))


def forge_state_of(run) -> forge_state.ForgeState:
    """The forge layer's per-issue view of a run (kept in `forge_state`, same file)."""
    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
    return forge_state.ForgeState(
        run.owner, run.repo, run.issue_number, run.pr_number, run.agent, run.bottles, run.slug,
        run.state.value, iso(run.created_at), iso(run.updated_at), run.last_done_status,
        run.last_done_summary)


def gitea_forge_factory(config: Config) -> Callable[[str, str], GiteaForge]:
    client = GiteaClient(config.gitea_url, config.token, timeout=config.gitea_timeout)
    return lambda owner, repo: GiteaForge(client, owner, repo)


@dataclass
class Service:
    config: Config
    store: SqliteRunStore
    forge_state: forge_state.SqliteForgeStateStore
    orchestrator: Orchestrator
    webhook: object
    sidecar: SidecarServer
    relay: Relay
    watchdog: Watchdog
    heartbeats: Heartbeats = field(default_factory=Heartbeats)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.webhook.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.relay.tick()  # done files written while we were down become done events first
        for run_id in self.orchestrator.reconcile():
            log.warning("reconciled run %s left working by the previous process", run_id)
        beats, interval = self.heartbeats, self._watchdog_interval()
        # the loops that must keep making progress for the systemd watchdog to be pinged,
        # each with the longest it waits between passes
        for name, period in (("dispatcher", DISPATCH_PERIOD), ("relay", RELAY_PERIOD),
                             ("watchdog", interval)):
            beats.expect(name, period)
        loops = {
            "webhook": self.webhook.serve_forever,
            "sidecar": self.sidecar.serve_forever,
            "dispatcher": lambda: self.orchestrator.run(
                self.stop_event, beat=lambda: beats.beat("dispatcher")),
            "relay": lambda: self.relay.run(self.stop_event, interval=RELAY_PERIOD,
                                            beat=lambda: beats.beat("relay")),
            "watchdog": lambda: self.watchdog.run(self.stop_event, interval=interval,
                                                  beat=lambda: beats.beat("watchdog")),
        }
        for name, target in loops.items():
            thread = threading.Thread(target=target, name=f"bot-bottle-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.orchestrator.wake()

    def _watchdog_interval(self) -> float:
        return max(0.5, min(30.0, self.config.watchdog_timeout / 4))

    def stop(self, grace: float = 10.0) -> None:
        self.webhook.shutdown()  # stop accepting; handlers already running finish below
        self.sidecar.shutdown()
        self.stop_event.set()
        self.orchestrator.wake()
        deadline = time.monotonic() + grace
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # retries that wait are dropped; a freeze or destroy running gets what is left of
        # the grace before the store closes under it
        if not self.orchestrator.close(max(0.0, deadline - time.monotonic())):
            log.warning("stopping with bottle operations still running")
        self.webhook.server_close()
        self.sidecar.server_close()
        self.store.close()


# a bottle's files the service narrows at start (state/<slug>/...; agent.log.N are rotations)
BOTTLE_FILES = ("metadata.json", "prompt.txt", "agent.log*", "snapshots/*.tar")


def secure_home(config: Config) -> None:
    """The home, state/, checkouts/, gates/ and the queue made 0700; any of them, the DB files
    and the bottles' files found wider (a home made under another umask, an older version)
    narrowed, one warning line per path."""
    home = Path(os.path.expanduser(config.home))   # as the gates and checkouts see it
    dirs = [home, home / "state", home / CHECKOUTS, home / GATES, Path(config.queue_dir)]
    for d in dirs:
        if d.exists():
            _narrow(d, DIR_MODE)
        else:
            private_dir(d)
    db = Path(config.db_path)
    for suffix in ("", "-wal", "-shm"):
        _narrow(db.with_name(db.name + suffix), FILE_MODE)
    state = home / "state"
    for bottle in sorted(p for p in state.iterdir() if p.is_dir() and not p.is_symlink()):
        _narrow(bottle, DIR_MODE)
        _narrow(bottle / "snapshots", DIR_MODE)
        for pattern in BOTTLE_FILES:
            for path in sorted(bottle.glob(pattern)):
                _narrow(path, FILE_MODE)


def _narrow(path: Path, mode: int) -> None:
    before = path.lstat().st_mode & 0o7777 if path.exists() else None
    if tighten(path, mode):
        log.warning("%s was mode %o: narrowed to %o", path, before, before & mode)


def build(config: Config, *, forge_factory: Callable[[str, str], object] | None = None,
          runner=None, clock: Callable[[], float] = time.time) -> Service:
    try:  # as root, bottles run as the agent user: a missing one is one line at start
        agent_user.check(config.child_env)
    except BottleError as exc:
        raise OrchestratorError(str(exc)) from exc
    secure_home(config)
    store = SqliteRunStore(config.db_path, schema_hooks=(forge_state.apply_schema,),
                           delivery_retention=config.delivery_retention_days * 86400.0)
    forge_states = forge_state.SqliteForgeStateStore(store.side_connection(), migrate=False)
    store.add_run_listener(lambda run: forge_states.put(forge_state_of(run)))
    store.add_run_listener(RunLog(store, home=config.home, since=clock()))  # a line per transition
    from bot_bottle.orchestrator.metrics import FORGE_ERRORS  # counted for /metrics
    forge_factory = FORGE_ERRORS.wrap(forge_factory or gitea_forge_factory(config))
    refusals = EgressRefusals(describe_run(store))  # the CLI's egress refusal lines
    runner = runner or SubprocessBottleRunner(config.cli, config.child_env, refusals=refusals,
                                                nice=config.bottle_nice)
    orchestrator: Orchestrator | None = None

    def wake() -> None:
        if orchestrator is not None:
            orchestrator.wake()

    # the relay also runs on a bottle's worker: done signals before its exit are applied first
    relay = Relay(store, Path(config.queue_dir), wake, clock)
    workspaces = (Workspaces(config.gitea_url, config.token, config.home, env=config.child_env,
                             timeout=config.clone_timeout, nice=config.bottle_nice)
                  if config.clone_workspace else None)
    # what the sidecar's write scan and the git gate's push scan look for by value
    known = service_secrets(config.token, config.webhook_secret, config.child_env)
    # the git gate comes with the clone: the workspace's origin is the gate
    gate_repos = (GateRepos(config.gitea_url, config.token, config.home, env=config.child_env,
                            known=known, timeout=config.clone_timeout)
                  if config.clone_workspace else None)
    listener: list = []  # the webhook server, once made: the default public URL is its address

    def provenance_url(run_id: int) -> str:
        base = config.public_url
        if not base and listener:
            host, port = listener[0].server_address[:2]
            base = f"http://{host}:{port}"
        return f"{base}/runs/{run_id}/provenance"

    pr_opener = (PrOpener(store, gate_repos, forge_factory, provenance_url=provenance_url,
                          clock=clock, marker=MARKER) if gate_repos is not None else None)
    executor = Executor(store, runner, sidecar_socket=str(Path(config.sidecar_socket).resolve()),
                        marker=MARKER, clock=clock, on_slot_freed=wake, workspaces=workspaces,
                        secret_values=(config.token, config.webhook_secret), relay=relay.tick,
                        pr_opener=pr_opener, gate_repos=gate_repos, home=config.home,
                        bottle_workers=config.bottle_workers,
                        retry_delays=config.bottle_retry_delays,
                        starts_at_once=config.starts_at_once)
    orchestrator = Orchestrator(store, executor, runner, forge_factory, org=config.agent_org,
                                known_agents=agents_in(config.home),
                                max_concurrent=config.max_concurrent_runs, clock=clock,
                                outbox_backoff=config.outbox_backoff)
    secret = config.webhook_secret.encode()
    app = WebhookApp(store, verify=functools.partial(verify_signature, secret), wake=wake,
                     clock=clock, views=StoreViews(store, clock, counters=refusals.counters,
                                      gitea_url=config.gitea_url,
                                      log_tail=getattr(runner, "log_tail", None)),
                     payloads=orchestrator.payloads)  # the dispatcher reuses the parsed body
    sidecar_app = SidecarApp(store, lambda owner, repo: MarkedForge(forge_factory(owner, repo)),
                             Path(config.queue_dir), clock, time.time_ns, secret_values=known)
    try:
        webhook = make_server(config.webhook_host, config.webhook_port, app,
                              allowed_hosts=config.allowed_hosts)
    except OSError as exc:
        store.close()
        raise OrchestratorError(f"cannot listen on {config.webhook_host}:{config.webhook_port}: "
                                f"{exc.strerror or exc}") from exc
    listener.append(webhook)
    try:
        sidecar = SidecarServer(Path(config.sidecar_socket), sidecar_app)
    except OSError as exc:
        webhook.server_close()
        store.close()
        raise OrchestratorError(f"cannot create the sidecar socket {config.sidecar_socket}: "
                                f"{exc.strerror or exc}") from exc
    try:  # as root, bottles run as the agent user: the socket is that user's (still 0600)
        agent_user.grant(config.sidecar_socket, config.child_env)
    except (BottleError, OSError) as exc:
        sidecar.server_close()
        webhook.server_close()
        store.close()
        raise OrchestratorError(f"cannot give the sidecar socket to the agent user: {exc}") from exc
    if gate_repos is not None:  # git smart HTTP under /git/ on the same socket
        sidecar.git_gate = GitGate(store, gate_repos, clock=clock, marker=MARKER)
    watchdog = Watchdog(store, orchestrator.on_watchdog, config.watchdog_timeout, clock)
    return Service(config, store, forge_states, orchestrator, webhook, sidecar, relay, watchdog)
