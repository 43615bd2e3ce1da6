"""Config.from_env: defaults, all problems reported at once, secrets kept out of repr."""

import sys
import unittest

from bot_bottle.orchestrator.config import Config, ConfigError

GOOD = {"HOME": "/home/u", "PATH": "/usr/bin", "FORGE_GITEA_URL": "https://git.example.com/",
        "FORGE_TOKEN": "tok-123", "FORGE_AGENT_ORG": "bots", "FORGE_WEBHOOK_SECRET": "s3cret"}


class ConfigTests(unittest.TestCase):
    def test_defaults_are_derived_from_home(self):
        config = Config.from_env(GOOD)
        self.assertEqual(config.home, "/home/u/.bot-bottle")
        self.assertEqual(config.db_path, "/home/u/.bot-bottle/orchestrator.db")
        self.assertEqual(config.webhook_port, 8477)
        self.assertEqual(config.gitea_url, "https://git.example.com")
        self.assertEqual(config.cli, (sys.executable, "-m", "bot_bottle"))
        self.assertEqual((config.gitea_timeout, config.outbox_backoff), (10.0, 30.0))

    def test_timing_knobs_are_seconds_and_checked(self):
        config = Config.from_env({**GOOD, "FORGE_GITEA_TIMEOUT": "0.5", "FORGE_OUTBOX_BACKOFF": "2"})
        self.assertEqual((config.gitea_timeout, config.outbox_backoff), (0.5, 2.0))
        with self.assertRaises(ConfigError) as caught:
            Config.from_env({**GOOD, "FORGE_GITEA_TIMEOUT": "-1", "FORGE_OUTBOX_BACKOFF": "x"})
        self.assertIn("FORGE_GITEA_TIMEOUT", str(caught.exception))
        self.assertIn("FORGE_OUTBOX_BACKOFF", str(caught.exception))

    def test_the_bottle_operations_pool_and_its_retries_are_settings(self):
        config = Config.from_env(GOOD)
        self.assertEqual((config.bottle_workers, config.bottle_retry_delays), (4, (5.0, 30.0)))
        config = Config.from_env({**GOOD, "BOT_BOTTLE_BOTTLE_WORKERS": "2",
                                  "BOT_BOTTLE_BOTTLE_RETRY": "0.5, 2,10"})
        self.assertEqual((config.bottle_workers, config.bottle_retry_delays), (2, (0.5, 2.0, 10.0)))
        self.assertEqual(Config.from_env({**GOOD, "BOT_BOTTLE_BOTTLE_RETRY": "none"})
                         .bottle_retry_delays, ())
        for workers, retry in (("0", "5"), ("65", "5"), ("x", "5"), ("4", "-1"), ("4", "nan"),
                               ("4", "5,,5"), ("4", "3601"), ("4", ",".join(["1"] * 11))):
            with self.subTest(workers=workers, retry=retry), self.assertRaises(ConfigError) as caught:
                Config.from_env({**GOOD, "BOT_BOTTLE_BOTTLE_WORKERS": workers,
                                 "BOT_BOTTLE_BOTTLE_RETRY": retry})
            self.assertEqual(len(caught.exception.problems), 1)

    def test_how_many_starts_run_at_once_is_a_setting_defaulting_to_the_cpus(self):
        import os
        self.assertEqual(Config.from_env(GOOD).starts_at_once, max(2, os.cpu_count() or 2))
        self.assertEqual(Config.from_env({**GOOD, "BOT_BOTTLE_STARTS_AT_ONCE": "8"}).starts_at_once, 8)
        for bad in ("0", "257", "x"):
            with self.subTest(starts=bad), self.assertRaises(ConfigError):
                Config.from_env({**GOOD, "BOT_BOTTLE_STARTS_AT_ONCE": bad})

    def test_the_bottles_cpu_priority_is_a_setting(self):
        self.assertEqual(Config.from_env(GOOD).bottle_nice, 10)
        self.assertEqual(Config.from_env({**GOOD, "BOT_BOTTLE_BOTTLE_NICE": "0"}).bottle_nice, 0)
        for bad in ("-1", "20", "x"):
            with self.subTest(nice=bad), self.assertRaises(ConfigError):
                Config.from_env({**GOOD, "BOT_BOTTLE_BOTTLE_NICE": bad})

    def test_allowed_hosts_are_parsed_once_and_the_public_url_host_is_one(self):
        self.assertEqual(Config.from_env(GOOD).allowed_hosts, ())
        config = Config.from_env({**GOOD, "FORGE_ALLOWED_HOSTS": " Bots.Example.com, proxy:8443,",
                                  "FORGE_PUBLIC_URL": "https://runs.example.com/"})
        self.assertEqual(config.allowed_hosts,
                         ("bots.example.com", "proxy:8443", "runs.example.com"))
        for bad in ("http://x", "a b", "x:99999", "x:", "/x", "[::1"):
            with self.subTest(bad=bad), self.assertRaises(ConfigError) as caught:
                Config.from_env({**GOOD, "FORGE_ALLOWED_HOSTS": bad})
            self.assertIn("FORGE_ALLOWED_HOSTS", str(caught.exception))

    def test_the_issue_s_repository_is_cloned_unless_turned_off(self):
        config = Config.from_env(GOOD)
        self.assertEqual((config.clone_workspace, config.clone_timeout), (True, 600.0))
        for off in ("0", "false", "No", "off"):
            with self.subTest(off=off):
                self.assertFalse(Config.from_env({**GOOD, "FORGE_CLONE_WORKSPACE": off}).clone_workspace)
        config = Config.from_env({**GOOD, "FORGE_CLONE_WORKSPACE": "yes", "FORGE_CLONE_TIMEOUT": "90"})
        self.assertEqual((config.clone_workspace, config.clone_timeout), (True, 90.0))
        with self.assertRaises(ConfigError) as caught:
            Config.from_env({**GOOD, "FORGE_CLONE_WORKSPACE": "maybe", "FORGE_CLONE_TIMEOUT": "0"})
        self.assertIn("FORGE_CLONE_WORKSPACE must be one of 1/0", str(caught.exception))
        self.assertIn("FORGE_CLONE_TIMEOUT", str(caught.exception))

    def test_a_gitea_url_carrying_credentials_is_refused(self):
        with self.assertRaisesRegex(ConfigError, "must not carry a user or password"):
            Config.from_env({**GOOD, "FORGE_GITEA_URL": "https://bot:pw@git.example.com"})

    def test_every_problem_is_reported_in_one_error(self):
        env = {"FORGE_GITEA_URL": "ftp://x", "FORGE_WEBHOOK_PORT": "70000",
               "FORGE_WATCHDOG_TIMEOUT": "soon", "BOT_BOTTLE_CLI": "'unclosed"}
        with self.assertRaises(ConfigError) as caught:
            Config.from_env(env)
        text = str(caught.exception)
        for needle in ("FORGE_TOKEN", "FORGE_AGENT_ORG", "FORGE_WEBHOOK_SECRET", "http",
                       "FORGE_WEBHOOK_PORT", "FORGE_WATCHDOG_TIMEOUT", "BOT_BOTTLE_CLI"):
            self.assertIn(needle, text)

    def test_status_does_not_require_forge_settings(self):
        config = Config.from_env({"HOME": "/h"}, for_run=False)
        self.assertEqual(config.queue_dir, "/h/.bot-bottle/queue")

    def test_secrets_are_neither_in_repr_nor_in_child_env(self):
        config = Config.from_env(dict(GOOD, BOT_BOTTLE_CLI="bb --x 'a b'"))
        self.assertNotIn("tok-123", repr(config))
        self.assertNotIn("s3cret", repr(config))
        self.assertNotIn("FORGE_TOKEN", config.child_env)
        self.assertNotIn("FORGE_WEBHOOK_SECRET", config.child_env)
        self.assertEqual(config.child_env["PATH"], "/usr/bin")
        self.assertEqual(config.cli, ("bb", "--x", "a b"))

    def test_child_env_is_ours_minus_forge_settings_and_systemd_variables(self):
        env = {**GOOD, "ANTHROPIC_API_KEY": "sk-1", "NOTIFY_SOCKET": "/run/n",
               "WATCHDOG_USEC": "1", "FORGE_SOMETHING_NEW": "x"}
        child = Config.from_env(env).child_env
        self.assertEqual(child["ANTHROPIC_API_KEY"], "sk-1")
        self.assertEqual(child["BOT_BOTTLE_HOME"], "/home/u/.bot-bottle")
        self.assertFalse([k for k in child if k.startswith("FORGE_")])
        self.assertNotIn("NOTIFY_SOCKET", child)
        self.assertNotIn("WATCHDOG_USEC", child)


if __name__ == "__main__":
    unittest.main()
