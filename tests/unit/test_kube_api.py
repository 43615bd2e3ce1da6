"""Unit tests of bot_bottle.backend.kube_api against the fake API server (real HTTPS): the
settings, TLS pinned to the configured CA, the token read per request and never shown, Status
messages in errors, 404 on delete, no proxy from the environment."""

import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from bot_bottle.backend import kube_objects as ko
from bot_bottle.backend.kube_api import ApiError, KubeApi, KubeConfig
from bot_bottle.errors import BackendError
from tests.support.fake_kube import FakeKube, make_tls


class ConfigTest(unittest.TestCase):
    def test_server_must_be_https_and_in_cluster_defaults_apply(self):
        for bad in ("http://10.0.0.1:6443", "https://", "https://h/path", "https://u@h", "ftp://h"):
            with self.subTest(bad=bad), self.assertRaises(BackendError):
                KubeConfig.from_environ({"BOT_BOTTLE_KUBE_SERVER": bad})
        with self.assertRaisesRegex(BackendError, "BOT_BOTTLE_KUBE_SERVER is not set"):
            KubeConfig.from_environ({})
        cfg = KubeConfig.from_environ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443",
                                       "BOT_BOTTLE_KUBE_NAMESPACE": "bots"})
        self.assertEqual((cfg.server, cfg.namespace), ("https://[fd00::1]:443", "bots"))
        self.assertEqual(cfg.token_file, "/var/run/secrets/kubernetes.io/serviceaccount/token")
        self.assertEqual(cfg.ca_file, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kube = FakeKube(namespace="bots")
        cls.kube.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.kube.close()

    def api(self, **extra):
        return KubeApi(KubeConfig.from_environ(self.kube.environ(**extra)))

    def test_another_ca_is_refused_in_one_line(self):
        with tempfile.TemporaryDirectory() as d:
            other_ca = make_tls(Path(d))[0]
            with self.assertRaises(BackendError) as ctx:
                self.api(BOT_BOTTLE_KUBE_CA=str(other_ca)).version()
        self.assertIn("does not answer", str(ctx.exception))
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(ctx.exception))
        self.assertNotIn("\n", str(ctx.exception))

    def test_the_token_is_read_per_request_and_never_shown(self):
        api = self.api()
        self.assertEqual(api.version()["major"], "1")
        old = self.kube.token
        try:
            self.kube.token = "rotated-token-value"
            with self.assertRaises(ApiError) as ctx:
                api.version()
            self.assertEqual(ctx.exception.code, 401)
            self.assertNotIn(old, str(ctx.exception))
            self.kube.token_file.write_text("rotated-token-value")
            self.assertEqual(api.version()["major"], "1")
        finally:
            self.kube.token = old
            self.kube.token_file.write_text(old)

    def test_errors_carry_the_status_message_and_delete_tolerates_404(self):
        api = self.api()
        settings = ko.PodSettings(namespace="bots")
        cm = ko.config_map("api-test", settings, {"a": "b"})
        api.create(cm)
        with self.assertRaises(ApiError) as ctx:
            api.create(cm)
        self.assertEqual(ctx.exception.code, 409)
        self.assertIn('configmaps "bb-api-test-scripts" already exists', str(ctx.exception))
        self.assertTrue(api.delete("ConfigMap", "bb-api-test-scripts"))
        self.assertFalse(api.delete("ConfigMap", "bb-api-test-scripts"))
        self.assertIsNone(api.get("ConfigMap", "bb-api-test-scripts"))
        bad = dict(cm, spec={})
        with self.assertRaisesRegex(ApiError, 'strict decoding error: unknown field "spec"'):
            api.create(bad)

    def test_no_proxy_from_the_environment(self):
        with mock.patch.dict(os.environ, {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}):
            self.assertEqual(self.api().version()["major"], "1")


if __name__ == "__main__":
    unittest.main()
