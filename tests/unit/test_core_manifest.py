"""Unit tests of bot_bottle.manifest: parsing agents and bottles, and every error's wording."""

import tempfile
import unittest
from pathlib import Path

from bot_bottle.errors import ManifestError, UsageError
from bot_bottle.manifest import load_agent, load_bottle


class ManifestTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.home = Path(self._tmp.name)
        (self.home / "agents").mkdir()
        (self.home / "bottles").mkdir()

    def write(self, kind, name, text):
        (self.home / kind / f"{name}.toml").write_text(text)

    def test_valid_agent_and_bottle_parse(self):
        self.write("agents", "a", 'provider="claude"\nbottles=["b"]\nmodel="m"\nenv={X="1"}\n')
        self.write("bottles", "b", 'dir="/tmp"\nenv=["TERM"]\nnetwork="host"\n')
        a = load_agent(self.home, "a")
        self.assertEqual((a.provider, a.bottles, a.model, a.env), ("claude", ("b",), "m", (("X", "1"),)))
        b = load_bottle(self.home, "b")
        self.assertEqual((b.backend, b.dir, b.env, b.network), ("bwrap", "/tmp", ("TERM",), "host"))

    def test_bad_manifests_name_file_and_key(self):
        cases = [
            ("agents", 'provider="claude"\nbottles=["b"]\ncolour="red"\n', "colour"),
            ("agents", 'provider="emacs"\nbottles=["b"]\n', "provider"),
            ("agents", 'bottles=["b"]\n', "provider"),
            ("agents", 'provider="claude"\nbottles="b"\n', "bottles"),
            ("agents", 'provider="command"\nbottles=["b"]\n', "command"),
            ("agents", 'provider = [\n', "malformed TOML"),
            ("bottles", 'repo="x"\ndir="y"\n', "at most one"),
            ("bottles", 'dir="y"\nnetwork="lan"\n', "network"),
            ("bottles", 'dir="y"\nenv={A="b"}\n', "env"),
            ("bottles", 'dir = [\n', "malformed TOML"),
            ("bottles", 'dir="y"\ncolour="red"\n', "colour"),
            ("bottles", 'dir="y"\nbackend="podman"\n', "backend"),
            ("bottles", 'dir="y"\ntimeout=0\n', "timeout"),
            ("bottles", 'dir="y"\ntimeout="10"\n', "timeout"),
            ("agents", 'provider="claude"\nbottles=["b"]\ntimeout=true\n', "timeout"),
            ("agents", 'provider="claude"\nbottles=["b"]\ntimeout=1.5\n', "timeout"),
            ("agents", 'provider="claude"\nbottles=["b"]\ntools="/usr"\n', "tools"),
            ("agents", 'provider="claude"\nbottles=["b"]\ntools=["bin"]\n', "tools"),
            ("agents", 'provider="claude"\nbottles=["b"]\ntools=["/usr/../etc"]\n', "tools"),
            ("agents", 'provider="claude"\nbottles=["b"]\ntools=["/no/such/tool/dir"]\n', "does not exist"),
            ("agents", 'provider="claude"\nbottles=["b"]\ntools=["/usr:/etc"]\n', "tools"),
            ("agents", 'provider="claude"\nbottles=["b"]\npath=["opt/bin"]\n', "path"),
            ("agents", 'provider="claude"\nbottles=["b"]\npath=["/opt/../bin"]\n', "path"),
            ("agents", 'provider="claude"\nbottles=["b"]\npath=["/a:/b"]\n', "path"),
            ("agents", 'provider="claude"\nbottles=["b"]\nskills=["../x"]\n', "skills"),
            ("agents", 'provider="claude"\nbottles=["b"]\nmodel=3\n', "model"),
            ("agents", 'provider="claude"\nbottles=["b"]\nskills="x"\n', "skills"),
            ("agents", 'provider="claude"\nbottles=["b"]\nenv={"1X"="v"}\n', "env"),
            ("agents", 'provider="claude"\nbottles=["../b"]\n', "bottles"),
            ("bottles", 'egress="pypi.org"\n', "egress"),
            ("bottles", 'egress=["169.254.169.254"]\n', "is an IP address"),
            ("bottles", 'egress=["127.1"]\n', "is an IP address"),
            ("bottles", 'egress=["*.com"]\n', "wildcard"),
            ("bottles", 'egress=["https://pypi.org"]\n', "must be a hostname"),
            ("bottles", 'egress=["pypi.org"]\nnetwork="none"\n', "needs network = \"egress\""),
            ("bottles", 'egress=["pypi.org"]\nnetwork="host"\n', "needs network"),
        ]
        for kind, text, word in cases:
            with self.subTest(text=text):
                self.write(kind, "x", text)
                load = load_agent if kind == "agents" else load_bottle
                with self.assertRaises(ManifestError) as cm:
                    load(self.home, "x")
                self.assertIn(word, str(cm.exception))
                self.assertIn("x.toml", str(cm.exception))

    def test_timeout_tools_and_path_parse_with_tilde_as_the_invoking_users_home(self):
        user = self.home / "user"
        (user / ".local" / "bin").mkdir(parents=True)
        self.write("agents", "a", 'provider="pi"\nbottles=["b"]\ntimeout=30\n'
                   'tools=["~/.local/bin", "/usr/bin/"]\npath=["~/.local/bin", "/opt/node/bin"]\n')
        a = load_agent(self.home, "a", str(user))
        self.assertEqual(a.timeout, 30)
        self.assertEqual(a.tools, (str(user / ".local" / "bin"), "/usr/bin"))
        self.assertEqual(a.path, (str(user / ".local" / "bin"), "/opt/node/bin"))
        with self.assertRaisesRegex(ManifestError, r"a\.toml: key 'tools' entry '~/.local/bin' uses '~'"):
            load_agent(self.home, "a", None)
        self.write("bottles", "b", 'timeout=5\n')
        self.assertEqual(load_bottle(self.home, "b").timeout, 5)

    def test_a_bottle_may_be_settings_only(self):
        self.write("bottles", "b", 'network="host"\n')
        b = load_bottle(self.home, "b")
        self.assertEqual((b.repo, b.dir, b.network, b.timeout), (None, None, "host", None))

    def test_network_is_unset_unless_the_bottle_says_and_an_egress_list_implies_egress(self):
        for text, network, egress in [('dir="y"\n', None, ()),
                                      ('network="egress"\n', "egress", ()),
                                      ('network="none"\n', "none", ()),
                                      ('egress=["PyPI.org", "*.pythonhosted.org", "pypi.org"]\n', "egress",
                                       ("pypi.org", "*.pythonhosted.org")),
                                      ('network="egress"\negress=["pypi.org"]\n', "egress", ("pypi.org",))]:
            with self.subTest(text=text):
                self.write("bottles", "b", text)
                b = load_bottle(self.home, "b")
                self.assertEqual((b.network, b.egress), (network, egress))

    def test_kubernetes_backend_and_its_resources(self):
        self.write("bottles", "b", 'backend="kubernetes"\nimage="python:3-slim"\ncpu="500m"\nmemory="2Gi"\n')
        b = load_bottle(self.home, "b")
        self.assertEqual((b.backend, b.cpu, b.memory), ("kubernetes", "500m", "2Gi"))
        self.write("bottles", "b", 'backend="kubernetes"\n')
        self.assertEqual((load_bottle(self.home, "b").cpu, load_bottle(self.home, "b").memory), (None, None))
        for text, word in [('backend="kubernetes"\ncpu=2\n', "quantity"),
                           ('backend="kubernetes"\ncpu="2 cores"\n', "quantity"),
                           ('backend="kubernetes"\nmemory="1GB"\n', "quantity"),
                           ('backend="kubernetes"\nmemory="0"\n', "above zero"),
                           ('backend="kubernetes"\ncpu="0m"\n', "above zero"),
                           ('backend="kubernetes"\ncpu="-1"\n', "quantity"),
                           ('backend="kubernetes"\ncpu="1;rm"\n', "quantity"),
                           ('cpu="1"\n', 'needs backend = "kubernetes"'),
                           ('backend="docker"\nmemory="1Gi"\n', 'needs backend = "kubernetes"'),
                           ('backend="k8s"\n', "'bwrap', 'docker' or 'kubernetes'")]:
            with self.subTest(text=text):
                self.write("bottles", "x", text)
                with self.assertRaises(ManifestError) as cm:
                    load_bottle(self.home, "x")
                self.assertIn(word, str(cm.exception))
                self.assertIn("x.toml", str(cm.exception))

    def test_missing_manifest_and_bad_name(self):
        with self.assertRaisesRegex(ManifestError, "not found"):
            load_agent(self.home, "nope")
        with self.assertRaises(UsageError):
            load_bottle(self.home, "../etc")


if __name__ == "__main__":
    unittest.main()
