"""Every webhook sample in tests/data/gitea verifies with our signature check."""

from __future__ import annotations

import http.server
import re
import threading
import unittest

from bot_bottle.contrib.gitea.signature import sign, verify_signature
from bot_bottle.demo_support.fake_gitea import deliver
from ._gitea_helpers import GITEA_DATA

SECRET = b"test-webhook-secret"


def reference_signatures() -> dict[str, str]:
    text = (GITEA_DATA / "REFERENCE.md").read_text()
    return dict(re.findall(r"\| `([\w-]+\.json)` \| `[0-9a-f-]{36}` \| \d+ \| `([0-9a-f]{64})`", text))


class SampleSignatureTests(unittest.TestCase):
    def test_every_sample_verifies_with_the_reference_signature(self):
        sigs = reference_signatures()
        files = sorted(f for f in GITEA_DATA.glob("*.json") if f.name != "swagger.v1.json")
        self.assertEqual(len(files), 19)
        self.assertEqual(set(sigs), {f.name for f in files})
        for f in files:
            with self.subTest(f.name):
                body = f.read_bytes()
                self.assertTrue(verify_signature(SECRET, body, sigs[f.name]))
                self.assertFalse(verify_signature(b"wrong", body, sigs[f.name]))
                self.assertFalse(verify_signature(SECRET, body + b" ", sigs[f.name]))

    def test_secret_used_is_the_one_the_reference_names(self):
        text = (GITEA_DATA / "REFERENCE.md").read_text()
        named = re.search(r"\| webhook secret used for the signatures below \| `([^`]+)` \|", text)
        self.assertIsNotNone(named)
        self.assertEqual(named.group(1).encode(), SECRET)

    def test_empty_signature_or_secret_never_verifies(self):
        self.assertFalse(verify_signature(SECRET, b"{}", ""))
        self.assertFalse(verify_signature(b"", b"{}", sign(b"", b"{}")))

    def test_a_non_ascii_signature_is_false_not_an_exception(self):
        self.assertFalse(verify_signature(b"k", b"body", "\u00e9" * 64))

    def test_sample_delivered_verbatim_with_gitea_headers(self):
        got = {}

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got["body"] = self.rfile.read(int(self.headers["Content-Length"]))
                got["headers"] = self.headers
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass
        srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02})
        t.start()
        self.addCleanup(lambda: (srv.shutdown(), srv.server_close(), t.join()))
        body = (GITEA_DATA / "issues-opened.json").read_bytes()
        status, _ = deliver(f"http://127.0.0.1:{srv.server_address[1]}/webhook", "issues",
                            "issues", body, SECRET)
        h = got["headers"]
        self.assertEqual((status, got["body"]), (200, body))
        self.assertEqual(h["X-Gitea-Signature"], reference_signatures()["issues-opened.json"])
        self.assertEqual(h["X-Hub-Signature-256"], "sha256=" + h["X-Gitea-Signature"])
        self.assertEqual(h["X-Gitea-Delivery"], h["X-GitHub-Delivery"])
        self.assertEqual((h["X-Gitea-Event"], h["X-Gogs-Event-Type"]), ("issues", "issues"))
