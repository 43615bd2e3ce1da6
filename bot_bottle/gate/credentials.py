"""Credential injection: the provider's API key stays on the host and the gate adds it.

For a provider listed in `CREDENTIALS`, an `egress` bottle gets its base-URL variable pointing
at the gate (`http://127.0.0.1:3128/_upstream/<route>`) and, when the host holds a key, the key
variable set to `PLACEHOLDER`. The gate takes each request for `/_upstream/<route>/...`,
drops whatever credentials the agent sent (`x-api-key`, `authorization`), adds the real key
in the provider's header and forwards it over HTTPS with certificate verification to the real
base URL: the provider's default, or the one the operator set (the CLI's environment, or the
agent manifest's `env` table, which the agent never sees).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..providers import codex
from .http import HOP_BY_HOP, Head

AGENT_CREDENTIAL_HEADERS = ("x-api-key", "authorization")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Credential:
    """How one provider's CLI is pointed at its API and authenticates."""
    route: str           # /_upstream/<route>
    key_env: str         # the variable the CLI reads its key from
    base_url_env: str    # the variable (or config) the CLI takes its API base URL from
    default_base: str    # the real API
    header: str          # "x-api-key" (the key as is) or "authorization" (Bearer key)


_ANTHROPIC = Credential("anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                        "https://api.anthropic.com", "x-api-key")
CREDENTIALS = {
    "claude": _ANTHROPIC,
    "pi": _ANTHROPIC,
    "codex": Credential("openai", codex.API_KEY_ENV, codex.BASE_URL_ENV, codex.DEFAULT_BASE_URL,
                        "authorization"),
}


@dataclass(frozen=True)
class Upstream:
    """One route of the gate's reverse proxy."""
    route: str
    base_url: str                                  # scheme://host[:port][/path]
    header: str
    key: str = field(default="", repr=False)       # empty: the agent's own headers pass

    @property
    def parts(self):
        return urlsplit(self.base_url)

    def target(self, rest: str) -> str:
        """The upstream request target for `rest` (what followed /_upstream/<route>)."""
        base = self.parts.path.rstrip("/")
        if not rest or rest.startswith("?"):
            return (base or "/") + rest
        return base + rest

    def headers(self, head: Head) -> list[tuple[str, str]]:
        """The request's headers as the upstream gets them: hop-by-hop and Host dropped, the
        agent's credentials swapped for the real key when there is one."""
        drop = set(HOP_BY_HOP) | {"host"} | (set(AGENT_CREDENTIAL_HEADERS) if self.key else set())
        out = [("Host", self.parts.netloc)] + head.without(drop)
        if self.key:
            out.append(("x-api-key", self.key) if self.header == "x-api-key"
                       else ("Authorization", f"Bearer {self.key}"))
        return out + [("Connection", "close")]


def check_base_url(url: str, name: str) -> str:
    """An upstream base URL: https, or http on a loopback name (local test servers only)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{name} {url!r} must be an https:// URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_NAMES:
        raise ValueError(f"{name} {url!r}: the gate sends the key over https only "
                         "(http only to a loopback test server)")
    return url.rstrip("/")


def check_key(value: str, name: str) -> str:
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{name} holds whitespace or control characters")
    return value


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on (hostname and chain); `ca_file` replaces the system's trust store."""
    return ssl.create_default_context(cafile=ca_file)


def connect(upstream: Upstream, context: ssl.SSLContext, timeout: float = 15.0) -> socket.socket:
    """A connection to the upstream, TLS verified when it is https; OSError/SSLError if not."""
    parts = upstream.parts
    port = parts.port or (443 if parts.scheme == "https" else 80)
    sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if parts.scheme == "https":
            sock = context.wrap_socket(sock, server_hostname=parts.hostname)
        sock.settimeout(None)
        return sock
    except BaseException:
        sock.close()
        raise
