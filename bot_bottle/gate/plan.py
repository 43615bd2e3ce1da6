"""From manifests and the CLI's environment to an `EgressPlan`: the allowlist, the pins, the
CA file and the credential routes of one bottle, and the variables its agent gets.

The agent's variables: `HTTPS_PROXY`, `HTTP_PROXY` (and lowercase) = the forwarder,
`NO_PROXY=127.0.0.1,localhost`; for a provider with a credential route its base-URL variable
points at the gate and its key variable holds `PLACEHOLDER` (when the host has a key; the
provider's hosts then leave the CONNECT allowlist). The
real key is looked up where a bottle would have got it (the agent's `env` table, a bottle's
`env` names) and then in the CLI's environment; it goes into the plan, never the bottle.

When the CLI runs for the orchestrator (its environment has `BOT_BOTTLE_FORGE_SOCKET` and
`BOT_BOTTLE_FORGE_RUN_TOKEN`) the plan also gets the git route (`GitRoute`): the gate relays
`/_git/...` to that socket's `/git/...` with the run token as the bearer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import CA_FILE_VAR, PIN_VAR, PLACEHOLDER, PROXY_URL, ROUTE_PREFIX
from .credentials import CREDENTIALS, Upstream, check_base_url, check_key
from .policy import parse_pins

NO_PROXY = "127.0.0.1,localhost"
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")


@dataclass(frozen=True)
class GitRoute:
    """Where the gate relays `/_git/...`: the orchestrator's sidecar socket (a host path)."""
    socket: str
    token: str = field(default="", repr=False)   # the run's bearer token


@dataclass(frozen=True)
class EgressPlan:
    allow: tuple[str, ...]                               # allowlist entries
    upstreams: tuple[Upstream, ...] = ()                 # credential routes
    pins: tuple[tuple[str, str, int | None], ...] = ()   # (name, ip, port or None)
    ca_file: str | None = None
    env: dict = field(default_factory=dict)              # what the gate sets in the bottle
    git: GitRoute | None = None                          # the git gate, for an orchestrator run

    def keys(self) -> list[str]:
        return [u.key for u in self.upstreams if u.key]

    def public(self) -> dict:
        """For --dry-run: everything but the keys."""
        return {"allow": list(self.allow), "proxy": PROXY_URL,
                "upstreams": {u.route: {"base_url": u.base_url, "key_injected": bool(u.key)}
                              for u in self.upstreams},
                "pins": {name: f"{ip}:{port}" if port else ip for name, ip, port in self.pins},
                "ca_file": self.ca_file, "git": self.git is not None}


def build(provider_name: str, hosts, bottle_entries, env: dict, environ) -> EgressPlan:
    """The plan for a bottle whose manifests give `env` (before the gate's variables);
    ValueError naming the setting that is wrong. Sets the gate's variables in `env`."""
    try:
        pins = parse_pins(environ.get(PIN_VAR))
    except ValueError as exc:
        raise ValueError(f"{PIN_VAR}: {exc}") from None
    ca_file = environ.get(CA_FILE_VAR) or None
    if ca_file and not os.path.isfile(ca_file):
        raise ValueError(f"{CA_FILE_VAR}: {ca_file} is not a file")
    gate_env = {name: PROXY_URL for name in PROXY_VARS}
    gate_env.update(NO_PROXY=NO_PROXY, no_proxy=NO_PROXY)
    upstreams = []
    cred = CREDENTIALS.get(provider_name)
    if cred:
        base = env.get(cred.base_url_env) or environ.get(cred.base_url_env) or cred.default_base
        key = check_key(env.get(cred.key_env) or environ.get(cred.key_env) or "", cred.key_env)
        upstreams.append(Upstream(cred.route, check_base_url(base, cred.base_url_env),
                                  cred.header, key))
        gate_env[cred.base_url_env] = PROXY_URL + ROUTE_PREFIX + cred.route
        if key:
            gate_env[cred.key_env] = PLACEHOLDER
    env.update(gate_env)
    # with the key injected, the provider's API is reached only through the credential route,
    # which always sends *our* key: a tunnel of its own would let the agent use another
    # account's key to carry the workspace away (the manifest may still list the host)
    injected = any(u.key for u in upstreams)
    allow = tuple(dict.fromkeys([*(() if injected else hosts), *bottle_entries]))
    sock = environ.get("BOT_BOTTLE_FORGE_SOCKET")
    git = GitRoute(sock, environ.get("BOT_BOTTLE_FORGE_RUN_TOKEN", "")) if sock else None
    return EgressPlan(allow, tuple(upstreams),
                      tuple((n, ip, port) for n, (ip, port) in sorted(pins.items())),
                      ca_file, dict(gate_env), git)
