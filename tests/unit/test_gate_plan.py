"""Unit tests of how manifests and the CLI's environment become a bottle's network and egress
plan (bot_bottle.resolve with bot_bottle.gate.plan): each provider's default, the variables the
agent gets, where the real key comes from, and the settings refused before anything exists."""

import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend.lookup import Found
from bot_bottle.errors import BackendError, ManifestError, UsageError
from bot_bottle.gate import PLACEHOLDER
from bot_bottle.resolve import check_program, resolve, safe_names, secret_values

KEY = "sk-ant-api03-the-real-key-0123456789"
PROXY = "http://127.0.0.1:3128"


class PlanTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        (self.home / "agents").mkdir()
        (self.home / "bottles").mkdir()

    def plan(self, provider="claude", bottle="", agent_extra="", environ=None, bottles=None):
        command = 'command = ["true"]\n' if provider == "command" else ""
        (self.home / "agents" / "a.toml").write_text(
            f'provider = "{provider}"\nbottles = ["b"]\n{command}{agent_extra}')
        (self.home / "bottles" / "b.toml").write_text(bottle)
        for name, text in (bottles or {}).items():
            (self.home / "bottles" / f"{name}.toml").write_text(text)
        return resolve(self.home, "a", list(bottles or []) or None, environ or {}, "a")[2]

    def test_each_provider_gets_its_default_network(self):
        for provider, network in [("claude", "egress"), ("codex", "egress"), ("pi", "egress"),
                                  ("command", "none")]:
            with self.subTest(provider=provider):
                plan = self.plan(provider)
                self.assertEqual(plan.network, network)
                self.assertEqual(plan.egress is not None, network == "egress")
                self.assertEqual("HTTPS_PROXY" in plan.env, network == "egress")

    def test_the_bottle_can_say_otherwise(self):
        self.assertEqual(self.plan("claude", 'network = "none"\n').network, "none")
        plan = self.plan("claude", 'network = "host"\n', environ={"ANTHROPIC_API_KEY": KEY})
        self.assertEqual((plan.network, plan.egress), ("host", None))
        self.assertNotIn("ANTHROPIC_API_KEY", plan.env, "host mode copies only what the manifests name")
        self.assertEqual(self.plan("command", 'egress = ["pypi.org"]\n').network, "egress")

    def test_bottles_must_agree_on_the_network_they_end_up_with(self):
        with self.assertRaisesRegex(ManifestError, r"disagree on network \(egress, none\)"):
            self.plan("claude", bottles={"x": 'network = "none"\n', "y": ""})
        plan = self.plan("claude", bottles={"x": 'egress = ["pypi.org"]\n', "y": 'egress = ["*.github.com"]\n'})
        self.assertEqual(plan.egress.allow, ("api.anthropic.com", "pypi.org", "*.github.com"))

    def test_the_agent_gets_the_proxy_the_gates_base_url_and_a_placeholder(self):
        plan = self.plan("claude", environ={"ANTHROPIC_API_KEY": KEY})
        want = {"HTTPS_PROXY": PROXY, "HTTP_PROXY": PROXY, "https_proxy": PROXY, "http_proxy": PROXY,
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "ANTHROPIC_BASE_URL": PROXY + "/_upstream/anthropic", "ANTHROPIC_API_KEY": PLACEHOLDER}
        self.assertEqual({k: plan.env.get(k) for k in want}, want)
        [up] = plan.egress.upstreams
        self.assertEqual((up.route, up.base_url, up.key), ("anthropic", "https://api.anthropic.com", KEY))
        self.assertNotIn(KEY, plan.env.values())
        self.assertTrue(set(want) <= safe_names(plan))
        self.assertIn(KEY, secret_values(plan))
        self.assertNotIn(PLACEHOLDER, secret_values(plan))

    def test_with_an_injected_key_the_providers_hosts_leave_the_connect_allowlist(self):
        # a tunnel of its own to the API would let the agent use another account's key
        self.assertEqual(self.plan("claude", 'egress = ["pypi.org"]\n',
                                   environ={"ANTHROPIC_API_KEY": KEY}).egress.allow, ("pypi.org",))
        self.assertEqual(self.plan("codex", environ={"OPENAI_API_KEY": "sk-proj-x1234567"}).egress.allow, ())
        self.assertEqual(self.plan("claude", 'egress = ["api.anthropic.com"]\n',
                                   environ={"ANTHROPIC_API_KEY": KEY}).egress.allow,
                         ("api.anthropic.com",), "the operator may still list it")
        self.assertEqual(self.plan("pi").egress.allow, ("api.anthropic.com",), "no key injected")

    def test_the_key_comes_from_the_agent_table_then_the_bottles_names_then_the_environment(self):
        other = "sk-ant-api03-from-the-agent-manifest"
        plan = self.plan("claude", 'env = ["ANTHROPIC_API_KEY"]\n', f'[env]\nANTHROPIC_API_KEY = "{other}"\n',
                         environ={"ANTHROPIC_API_KEY": KEY})
        self.assertEqual((plan.egress.upstreams[0].key, plan.env["ANTHROPIC_API_KEY"]), (other, PLACEHOLDER))
        plan = self.plan("claude", 'env = ["ANTHROPIC_API_KEY"]\n', environ={"ANTHROPIC_API_KEY": KEY})
        self.assertEqual((plan.egress.upstreams[0].key, plan.env["ANTHROPIC_API_KEY"]), (KEY, PLACEHOLDER))

    def test_without_a_key_on_the_host_no_placeholder_is_set(self):
        plan = self.plan("pi")
        self.assertNotIn("ANTHROPIC_API_KEY", plan.env)
        self.assertEqual(plan.env["ANTHROPIC_BASE_URL"], PROXY + "/_upstream/anthropic")
        self.assertEqual(plan.egress.upstreams[0].key, "")

    def test_a_run_of_the_orchestrator_gets_the_git_route_to_its_sidecar_socket(self):
        self.assertIsNone(self.plan("command", 'network = "egress"\n').egress.git)
        plan = self.plan("command", 'network = "egress"\n', environ={
            "BOT_BOTTLE_FORGE_SOCKET": "/srv/bb/forge.sock", "BOT_BOTTLE_FORGE_RUN_TOKEN": "rt-123"})
        self.assertEqual((plan.egress.git.socket, plan.egress.git.token), ("/srv/bb/forge.sock", "rt-123"))
        self.assertTrue(plan.egress.public()["git"])
        self.assertNotIn("rt-123", repr(plan.egress) + repr(plan.egress.public()))

    def test_the_operators_base_url_is_the_upstream(self):
        plan = self.plan("codex", environ={"OPENAI_API_KEY": "sk-proj-x1234567", "OPENAI_BASE_URL": "https://llm.internal/v1/"})
        [up] = plan.egress.upstreams
        self.assertEqual((up.route, up.base_url, up.header), ("openai", "https://llm.internal/v1", "authorization"))
        self.assertEqual(plan.env["OPENAI_BASE_URL"], PROXY + "/_upstream/openai")

    def test_bad_gate_settings_are_refused_naming_the_setting(self):
        cases = [({"ANTHROPIC_BASE_URL": "http://api.example.com"}, "ANTHROPIC_BASE_URL"),
                 ({"ANTHROPIC_API_KEY": "two words"}, "ANTHROPIC_API_KEY"),
                 ({"BOT_BOTTLE_EGRESS_PIN": "x.test=nowhere"}, "BOT_BOTTLE_EGRESS_PIN"),
                 ({"BOT_BOTTLE_EGRESS_CA_FILE": str(self.home / "none.pem")}, "BOT_BOTTLE_EGRESS_CA_FILE")]
        for environ, name in cases:
            with self.subTest(name=name):
                with self.assertRaises(UsageError) as cm:
                    self.plan("claude", environ=environ)
                self.assertIn(name, str(cm.exception))
                self.assertTrue(str(cm.exception).startswith("egress gate: "))

    def test_an_egress_bottle_without_python3_is_refused_before_it_is_made(self):
        class NoPython:
            def locate(self, plan, program):
                return Found(None) if program == "python3" else Found("/usr/bin/" + program)
        plan = self.plan("command")
        check_program(NoPython(), plan)   # no gate: no forwarder to run
        plan = self.plan("command", 'egress = ["pypi.org"]\n')
        with self.assertRaisesRegex(BackendError, "needs python3 in the bottle"):
            check_program(NoPython(), plan)


if __name__ == "__main__":
    unittest.main()
