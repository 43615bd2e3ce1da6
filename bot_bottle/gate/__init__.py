"""The egress gate: how a bottle with `network = "egress"` reaches the outside, and only there.

The bottle keeps its own network namespace (loopback only, no DNS). Our forwarder
(`forwarder.py`, started by the backend before the agent, standard library only) listens on
`127.0.0.1:PROXY_PORT` inside and relays every TCP connection to a unix socket bound into
the bottle at `/run/bot-bottle/egress.sock`. On the host side of that socket the CLI that
runs the bottle serves the gate (`egress.py`, a thread alive exactly as long as the run):
- proxy requests (`CONNECT host:port`, plain-HTTP absolute URIs) are checked against the
  allowlist and the address rules (`policy.py`), then tunnelled to the address that was
  checked; anything else is refused with 403 and a body that says why;
- requests for `/_upstream/<route>/...` go to the provider's API with the real key swapped
  in for the bottle's placeholder (`credentials.py`), over verified HTTPS;
- requests for `/_git/<owner>/<repo>.git/...` (the workspace's `origin`) go to the git gate,
  `/git/...` on the orchestrator's sidecar socket, with the run's bearer token added by the
  gate (the bottle's git remote carries no credential).
`plan.py` turns the manifests and the CLI's environment into an `EgressPlan` and the bottle's
variables; `http.py` and `pipe.py` hold the HTTP head parsing and the byte relay.
"""

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
ROUTE_PREFIX = "/_upstream/"
GIT_ROUTE_PREFIX = "/_git/"       # relayed to GIT_SOCKET_PREFIX on the forge sidecar's socket
GIT_SOCKET_PREFIX = "/git/"
PLACEHOLDER = "bot-bottle-egress-gate-placeholder-key"   # the bottle's stand-in for a provider key
PIN_VAR = "BOT_BOTTLE_EGRESS_PIN"          # operator only: "name=ip:port,..." (tests, development)
CA_FILE_VAR = "BOT_BOTTLE_EGRESS_CA_FILE"  # operator only: the CA bundle trusted for upstreams
