"""Unit tests of bot_bottle.gate.policy: allowlist entries, the address rules (table-driven),
pins, and what `Policy.decide` answers for names resolving here and there."""

import ipaddress
import socket
import unittest

from bot_bottle.gate.policy import (Allowlist, Policy, address_problem, check_entry, host_addresses,
                                    is_ip_literal, parse_pins)

OWN = frozenset({ipaddress.ip_address("203.0.113.77"), ipaddress.ip_address("2001:db8:77::1")})


def resolver(table):
    """A getaddrinfo stand-in: name -> list of address strings."""
    def resolve(host, port):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, (a, port)) for a in table[host]]
    return resolve


class AddressRulesTest(unittest.TestCase):
    def test_every_non_public_address_class_is_refused_with_its_name(self):
        cases = [
            ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
            ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
            ("fd00::1", "private"), ("fc00::5", "private"), ("::ffff:10.0.0.1", "private"),
            ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
            ("0.0.0.0", "unspecified"), ("::", "unspecified"),
            ("100.64.0.1", "not a public address"), ("240.0.0.1", "private"),
            ("203.0.113.77", "private"),        # TEST-NET-3 is private to ipaddress already
            ("198.51.100.1", "private"),
        ]
        for raw, word in cases:
            with self.subTest(address=raw):
                problem = address_problem(ipaddress.ip_address(raw), OWN)
                self.assertIsNotNone(problem)
                self.assertIn(word, problem)

    def test_public_addresses_pass_unless_they_are_the_hosts_own(self):
        for raw in ("93.184.216.34", "151.101.0.223", "2606:4700::6810:84e5", "::ffff:8.8.8.8"):
            with self.subTest(address=raw):
                self.assertIsNone(address_problem(ipaddress.ip_address(raw), OWN))
        own = frozenset({ipaddress.ip_address("93.184.216.34")})
        self.assertEqual(address_problem(ipaddress.ip_address("93.184.216.34"), own),
                         "an address of the host itself")

    def test_the_hosts_own_addresses_include_its_loopback(self):
        self.assertIn(ipaddress.ip_address("127.0.0.1"), host_addresses())


class EntriesTest(unittest.TestCase):
    def test_host_names_and_suffix_wildcards_are_entries(self):
        for raw, want in [("pypi.org", "pypi.org"), ("PyPI.org.", "pypi.org"), ("localhost", "localhost"),
                          ("*.pythonhosted.org", "*.pythonhosted.org"), ("a-b.c9.example", "a-b.c9.example")]:
            with self.subTest(entry=raw):
                self.assertEqual(check_entry(raw), want)

    def test_addresses_bad_names_and_broad_wildcards_are_not(self):
        for raw in ("127.0.0.1", "127.1", "0x7f.1", "2130706433", "::1", "[::1]", "", "*", "*.com",
                    "a..b", "-a.com", "a-.com", "a_b.com", "pypi.org:443", "http://pypi.org", "*.*.org",
                    "a" * 64 + ".com", "pypi.org/x", "exa mple.com"):
            with self.subTest(entry=raw):
                with self.assertRaises(ValueError):
                    check_entry(raw)

    def test_ip_literals_in_any_form_are_recognised(self):
        for raw in ("127.0.0.1", "127.1", "0177.0.0.1", "0x7f000001", "2130706433", "::1", "[fe80::1]"):
            with self.subTest(host=raw):
                self.assertTrue(is_ip_literal(raw))
        self.assertFalse(is_ip_literal("pypi.org"))

    def test_a_wildcard_matches_names_below_its_suffix_only(self):
        allow = Allowlist(("*.pythonhosted.org", "pypi.org"))
        for host, ok in [("files.pythonhosted.org", True), ("a.b.pythonhosted.org", True),
                         ("pythonhosted.org", False), ("evilpythonhosted.org", False),
                         ("PyPI.ORG.", True), ("pypi.org.evil.com", False), ("www.pypi.org", False)]:
            with self.subTest(host=host):
                self.assertEqual(allow.allows(host), ok)


class PinsTest(unittest.TestCase):
    def test_pins_parse_with_and_without_ports(self):
        self.assertEqual(parse_pins("a.test=127.0.0.1:8443, b.test=[::1]:9,c.test=10.0.0.1"),
                         {"a.test": ("127.0.0.1", 8443), "b.test": ("::1", 9), "c.test": ("10.0.0.1", None)})
        self.assertEqual(parse_pins(None), {})

    def test_bad_pins_are_refused(self):
        for raw in ("a.test", "a.test=host.example:1", "a.test=127.0.0.1:0", "*.test=127.0.0.1",
                    "127.0.0.1=127.0.0.1", "a.test=127.0.0.1:x"):
            with self.subTest(pin=raw):
                with self.assertRaises(ValueError):
                    parse_pins(raw)


class DecideTest(unittest.TestCase):
    def policy(self, **kw):
        table = {"pypi.org": ["151.101.0.223"], "dual.example": ["151.101.0.223", "10.0.0.8"],
                 "meta.example": ["169.254.169.254"], "self.example": ["93.184.216.99"],
                 "v6.example": ["2606:4700::1", "2606:4700::1"]}
        allow = ["pypi.org", "dual.example", "meta.example", "self.example", "v6.example", "gone.example",
                 "pinned.test"]
        return Policy(allow, pins={"pinned.test": ("127.0.0.1", 8080)},
                      own=frozenset({ipaddress.ip_address("93.184.216.99")}), resolve=resolver(table), **kw)

    def test_each_destination_gets_its_answer(self):
        cases = [
            ("pypi.org", 443, None, ((socket.AF_INET, ("151.101.0.223", 443)),)),
            ("PYPI.org.", 443, None, ((socket.AF_INET, ("151.101.0.223", 443)),)),
            ("v6.example", 443, None, ((socket.AF_INET6, ("2606:4700::1", 443)),)),
            ("pinned.test", 443, None, ((socket.AF_INET, ("127.0.0.1", 8080)),)),
            ("example.com", 443, "not on the bottle's egress allowlist", ()),
            ("169.254.169.254", 80, "an IP address", ()),
            ("127.0.0.1", 8477, "an IP address", ()),
            ("dual.example", 443, "resolves to 10.0.0.8, a private address", ()),
            ("meta.example", 80, "resolves to 169.254.169.254, a link-local address", ()),
            ("self.example", 443, "resolves to 93.184.216.99, an address of the host itself", ()),
            ("gone.example", 443, "does not resolve", ()),
        ]
        policy = self.policy()
        for host, port, refused, targets in cases:
            with self.subTest(host=host):
                d = policy.decide(host, port)
                if refused:
                    self.assertIn(refused, d.refused or "")
                    self.assertEqual(d.targets, ())
                else:
                    self.assertIsNone(d.refused)
                    self.assertEqual(d.targets, targets)

    def test_a_pin_keeps_the_requested_port_when_it_names_none(self):
        p = Policy(["p.test"], pins={"p.test": ("127.0.0.1", None)}, own=frozenset(), resolve=resolver({}))
        self.assertEqual(p.decide("p.test", 8443).targets, ((socket.AF_INET, ("127.0.0.1", 8443)),))


if __name__ == "__main__":
    unittest.main()
