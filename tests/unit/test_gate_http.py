"""Unit tests of the gate's HTTP heads (bot_bottle.gate.http) and its header swapping
(bot_bottle.gate.credentials): what the upstream receives in place of what the agent sent."""

import socket
import unittest

from bot_bottle.gate import PLACEHOLDER
from bot_bottle.gate.credentials import CREDENTIALS, Upstream, check_base_url, check_key
from bot_bottle.gate.http import (HeadError, build_head, closing_response, parse_head, read_head,
                                  split_authority)

KEY = "sk-ant-real-key-0123456789"


def head(text: str):
    return parse_head(text.replace("\n", "\r\n").encode() + b"\r\n")


class SwapTest(unittest.TestCase):
    def test_the_anthropic_route_drops_the_agents_credentials_and_adds_the_real_key(self):
        up = Upstream("anthropic", "https://api.anthropic.com", "x-api-key", KEY)
        req = head(f"POST /_upstream/anthropic/v1/messages HTTP/1.1\nHost: 127.0.0.1:3128\n"
                   f"X-Api-Key: {PLACEHOLDER}\nAuthorization: Bearer {PLACEHOLDER}\n"
                   "anthropic-version: 2023-06-01\nContent-Length: 2\nConnection: keep-alive\n"
                   "Keep-Alive: timeout=5\nProxy-Authorization: Basic eA==\n")
        self.assertEqual(up.headers(req), [("Host", "api.anthropic.com"), ("anthropic-version", "2023-06-01"),
                                           ("Content-Length", "2"), ("x-api-key", KEY),
                                           ("Connection", "close")])

    def test_the_openai_route_sends_the_key_as_a_bearer_token(self):
        up = Upstream("openai", "https://api.openai.com/v1", "authorization", KEY)
        req = head(f"POST /_upstream/openai/responses HTTP/1.1\nauthorization: Bearer {PLACEHOLDER}\n"
                   "Content-Type: application/json\n")
        self.assertEqual(up.headers(req), [("Host", "api.openai.com"), ("Content-Type", "application/json"),
                                           ("Authorization", f"Bearer {KEY}"), ("Connection", "close")])

    def test_without_a_key_on_the_host_the_agents_own_headers_pass(self):
        up = Upstream("anthropic", "https://api.anthropic.com:8443", "x-api-key", "")
        req = head("GET /_upstream/anthropic/v1/models HTTP/1.1\nAuthorization: Bearer oauth-token\n")
        self.assertEqual(up.headers(req), [("Host", "api.anthropic.com:8443"),
                                           ("Authorization", "Bearer oauth-token"), ("Connection", "close")])

    def test_headers_named_in_connection_are_hop_by_hop_too(self):
        up = Upstream("openai", "https://api.openai.com/v1", "authorization", KEY)
        req = head("GET /x HTTP/1.1\nConnection: close, X-Secret-Hop\nX-Secret-Hop: 1\nAccept: */*\n")
        self.assertEqual([k for k, _ in up.headers(req)], ["Host", "Accept", "Authorization", "Connection"])

    def test_the_key_is_not_in_the_upstreams_repr(self):
        self.assertNotIn(KEY, repr(Upstream("a", "https://x.example", "x-api-key", KEY)))

    def test_paths_map_onto_the_upstreams_base_path(self):
        openai = Upstream("openai", "https://api.openai.com/v1", "authorization")
        anthropic = Upstream("anthropic", "https://api.anthropic.com", "x-api-key")
        for up, rest, want in [(openai, "/responses", "/v1/responses"), (openai, "", "/v1"),
                               (openai, "?a=1", "/v1?a=1"), (anthropic, "/v1/messages?beta=true",
                                                            "/v1/messages?beta=true"),
                               (anthropic, "", "/")]:
            with self.subTest(base=up.base_url, rest=rest):
                self.assertEqual(up.target(rest), want)

    def test_each_provider_with_an_api_has_a_route(self):
        self.assertEqual({p: (c.route, c.key_env, c.header) for p, c in CREDENTIALS.items()},
                         {"claude": ("anthropic", "ANTHROPIC_API_KEY", "x-api-key"),
                          "pi": ("anthropic", "ANTHROPIC_API_KEY", "x-api-key"),
                          "codex": ("openai", "OPENAI_API_KEY", "authorization")})


class SettingsTest(unittest.TestCase):
    def test_upstreams_are_https_or_a_loopback_test_server(self):
        for url in ("https://api.anthropic.com", "https://localhost:8443/", "http://127.0.0.1:9/v1",
                    "http://localhost:1"):
            with self.subTest(url=url):
                self.assertEqual(check_base_url(url, "X"), url.rstrip("/"))
        for url in ("http://api.anthropic.com", "ftp://x", "https://", "api.anthropic.com", "https://a/?q=1"):
            with self.subTest(url=url):
                with self.assertRaises(ValueError):
                    check_base_url(url, "X")

    def test_a_key_with_whitespace_or_control_characters_is_refused(self):
        for bad in ("a b", "a\r\nX-Evil: 1", "a\tb", "a\x7f"):
            with self.subTest(key=bad):
                with self.assertRaises(ValueError):
                    check_key(bad, "K")
        self.assertEqual(check_key("sk-ok_1", "K"), "sk-ok_1")


class HeadTest(unittest.TestCase):
    def test_a_head_and_what_follows_are_read_apart_across_reads(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        b.sendall(b"GET / HTTP/1.1\r\nHo")
        b.sendall(b"st: x\r\n\r\nBODY")
        raw, rest = read_head(a)
        self.assertEqual((raw, rest), (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"BODY"))

    def test_malformed_heads_are_refused(self):
        for raw in (b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                    b"GET / SPDY/3\r\n\r\n", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"):
            with self.subTest(raw=raw):
                with self.assertRaises(HeadError):
                    parse_head(raw)

    def test_a_head_over_64_kib_or_cut_short_is_refused(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        b.sendall(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70000)
        with self.assertRaises(HeadError):
            read_head(a)
        b.close()
        with self.assertRaises(HeadError):
            read_head(a)

    def test_a_response_head_is_made_to_close_the_connection(self):
        raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" \
              b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
        self.assertEqual(closing_response(raw), b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        self.assertEqual(build_head(["HTTP/1.1", "204", "No Content"], []), b"HTTP/1.1 204 No Content\r\n\r\n")

    def test_authorities_split_into_host_and_port(self):
        self.assertEqual(split_authority("pypi.org:443", None), ("pypi.org", 443))
        self.assertEqual(split_authority("pypi.org", 80), ("pypi.org", 80))
        self.assertEqual(split_authority("[::1]:8080", None), ("[::1]", 8080))
        for bad in ("pypi.org", "pypi.org:x", "pypi.org:0", "pypi.org:70000", ":443"):
            with self.subTest(authority=bad):
                with self.assertRaises(ValueError):
                    split_authority(bad, None)


if __name__ == "__main__":
    unittest.main()
