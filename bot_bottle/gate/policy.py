"""Which destinations the egress gate lets a bottle reach, and at which address.

A destination passes when its name is on the allowlist (the provider's API hosts plus the
bottle manifests' `egress` entries: exact hostnames, or `*.suffix` for every name below a
suffix of at least two labels) and every address it resolves to is public. IP literals never
pass. Refused addresses: loopback, link-local (169.254/16, fe80::/10), private and
unique-local, shared (100.64/10), multicast, unspecified, reserved, anything else that is
not globally routable, and every address of the host itself (a public address of the host
would reach the service's own ports). The gate connects to exactly the addresses checked
here (no second lookup, so a name cannot be re-resolved to somewhere else in between).

Pins (`BOT_BOTTLE_EGRESS_PIN="name=ip:port,..."`, from the operator's environment only) send
an allowlisted name to a fixed address without the address rules: for tests and development
against servers on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[tuple[int, tuple]]]   # getaddrinfo-like: [(family, sockaddr)]


def is_ip_literal(host: str) -> bool:
    """An address written as a name: any form `inet_aton` takes (`127.1`, `0x7f.1`,
    `2130706433`) or an IPv6 literal."""
    if ":" in host or host.startswith("["):
        return True
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return False


def _is_address(name: str) -> bool:
    """Exactly an address (`inet_aton`'s forms, or IPv6 with or without brackets)."""
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
        return True
    except ValueError:
        pass
    return is_ip_literal(name) and ":" not in name and not name.startswith("[")


def normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def check_entry(raw: str) -> str:
    """An allowlist entry, normalised; ValueError saying what is wrong with it."""
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    host = normalise_host(raw)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if not name or len(name) > 253:
        raise ValueError("must be a hostname")
    if _is_address(name):
        raise ValueError("is an IP address (name a host)")
    labels = name.split(".")
    if not all(LABEL_RE.match(label) for label in labels):
        raise ValueError("must be a hostname (letters, digits, '-' and '.'; or '*.suffix')")
    if wildcard and len(labels) < 2:
        raise ValueError("a wildcard needs a suffix of at least two labels ('*.example.com')")
    return host


@dataclass(frozen=True)
class Allowlist:
    entries: tuple[str, ...]

    def allows(self, host: str) -> bool:
        host = normalise_host(host)
        for entry in self.entries:
            if entry.startswith("*."):
                if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                    return True
            elif host == entry:
                return True
        return False


def address_problem(ip: Address, own: frozenset = frozenset()) -> str | None:
    """Why the gate must not connect to `ip`, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, reason in ((lambda: ip.is_loopback, "a loopback address"),
                         (lambda: ip.is_link_local, "a link-local address"),
                         (lambda: ip.is_multicast, "a multicast address"),
                         (lambda: ip.is_unspecified, "the unspecified address"),
                         (lambda: ip.is_private, "a private address"),
                         (lambda: ip.is_reserved, "a reserved address"),
                         (lambda: ip in own, "an address of the host itself"),
                         (lambda: not ip.is_global, "not a public address")):
        if test():
            return reason
    return None


def host_addresses() -> frozenset:
    """Every address of this host: local routes from /proc/net/fib_trie, IPv6 interface
    addresses from /proc/net/if_inet6, and what the hostname resolves to."""
    found: set = set()
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as fh:
            last = None
            for line in fh:
                text = line.strip()
                if text.startswith("|--"):
                    last = text[3:].strip()
                elif text.startswith("/32 host LOCAL") and last:
                    found.add(ipaddress.ip_address(last))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as fh:
            for line in fh:
                raw = line.split()[0]
                found.add(ipaddress.IPv6Address(int(raw, 16)))
    except (OSError, ValueError, IndexError):
        pass
    try:
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
            found.add(ipaddress.ip_address(sockaddr[0].split("%")[0]))
    except (OSError, ValueError):
        pass
    return frozenset(found)


def parse_pins(raw: str | None) -> dict[str, tuple[str, int | None]]:
    """`name=ip[:port],...` (an IPv6 address in brackets) as {name: (ip, port or None)}."""
    pins: dict[str, tuple[str, int | None]] = {}
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        name, sep, target = item.partition("=")
        if not sep:
            raise ValueError(f"pin {item!r} must be name=ip[:port]")
        name = check_entry(name)
        if name.startswith("*."):
            raise ValueError(f"pin {item!r}: a pin names one host, not a wildcard")
        port = None
        if target.startswith("["):
            ip, _, rest = target[1:].partition("]")
            if rest:
                port = _port(rest.removeprefix(":"), item)
        elif target.count(":") == 1:
            ip, _, p = target.partition(":")
            port = _port(p, item)
        else:
            ip = target
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"pin {item!r}: {ip!r} is not an IP address") from None
        pins[name] = (ip, port)
    return pins


def _port(raw: str, item: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"pin {item!r}: bad port {raw!r}")
    return int(raw)


def getaddrinfo(host: str, port: int) -> list[tuple[int, tuple]]:
    return [(family, sockaddr) for family, _, _, _, sockaddr in
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)]


@dataclass(frozen=True)
class Decision:
    host: str
    port: int
    targets: tuple[tuple[int, tuple], ...] = ()   # (family, sockaddr) to connect to, in order
    refused: str | None = None                     # the reason, when refused


class Policy:
    """Decides one destination: `decide(host, port)`."""

    def __init__(self, allow: Iterable[str], pins: dict | None = None, own: frozenset = frozenset(),
                 resolve: Resolver = getaddrinfo):
        self.allowlist = Allowlist(tuple(allow))
        self.pins = dict(pins or {})
        self.own = own
        self._resolve = resolve

    def decide(self, host: str, port: int) -> Decision:
        host = normalise_host(host)
        if is_ip_literal(host):
            return Decision(host, port, refused="an IP address; only allowlisted host names are reachable")
        if not self.allowlist.allows(host):
            return Decision(host, port, refused="not on the bottle's egress allowlist")
        if host in self.pins:
            ip, pinned_port = self.pins[host]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            return Decision(host, port, ((family, (ip, pinned_port or port)),))
        try:
            targets = self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            return Decision(host, port, refused=f"does not resolve ({getattr(exc, 'strerror', None) or exc})")
        if not targets:
            return Decision(host, port, refused="does not resolve")
        for _, sockaddr in targets:
            ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
            problem = address_problem(ip, self.own)
            if problem:
                return Decision(host, port, refused=f"resolves to {ip}, {problem}")
        unique = tuple(dict.fromkeys((f, s) for f, s in targets))
        return Decision(host, port, unique)
