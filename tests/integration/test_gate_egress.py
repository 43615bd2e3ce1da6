"""Integration: a real bwrap bottle with `network = "egress"` (the claude provider's default),
its agent a stand-in `claude` program (a python script on the agent's tools path) that probes
the gate from inside, against real servers on the host's loopback: a plain HTTP server and an
HTTPS "model API" with a certificate made by `openssl`, both reachable only through pins.

What it proves, in one run: the allowlisted hosts work through HTTP_PROXY and through
HTTPS_PROXY (CONNECT, TLS verified end to end); another host, 169.254.169.254, the host's
127.0.0.1 and a name resolving to loopback are refused with 403 and the reason (on the CLI's
stderr and in the agent log too); nothing resolves inside; the provider's base URL reaches the
HTTPS upstream with the real key while no readable file, environment or /proc entry in the
bottle holds it; a streamed response's first bytes reach the agent before the upstream ends.
"""

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import unittest
from pathlib import Path

from bot_bottle.gate import PLACEHOLDER
from tests.integration._core_home import cli, make_home
from tests.integration._gate_servers import Server, counting_listener, make_cert, tls_server

KEY_PREFIX = "sk-ant-api03-"

PROBE = r'''#!/usr/bin/python3 -I
import hashlib, http.client, json, os, re, socket, ssl, stat, sys, urllib.error, urllib.request
HOST_PORT = %(host_port)d
report = {"argv": sys.argv[1:], "env": dict(os.environ)}

def fetch(url, **kw):
    try:
        with urllib.request.urlopen(url, timeout=15, **kw) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode()]
    except Exception as e:
        return ["error", repr(e)]

def through_proxy(line):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=15)
    s.sendall(line.encode())
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return [int(head.split()[1]), body]

def connect(target):
    return through_proxy(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")

def direct(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return "connected"
    except OSError as e:
        return repr(e)

report["plain"] = fetch("http://plain.test/hello")
ctx = ssl.create_default_context(cafile="/workspace/ca.pem")
report["https"] = fetch("https://upstream.test/hello", context=ctx)
report["refused_connect"] = {t: connect(t) for t in
    ["example.com:443", "169.254.169.254:80", f"127.0.0.1:{HOST_PORT}", f"localhost:{HOST_PORT}"]}
report["refused_http"] = {u: through_proxy(f"GET {u} HTTP/1.1\r\nHost: x\r\n\r\n") for u in
    ["http://169.254.169.254/latest/meta-data/", f"http://127.0.0.1:{HOST_PORT}/", "http://example.com/"]}
report["direct"] = direct(HOST_PORT)
dns = {}
for name in ("pypi.org", "upstream.test", "api.anthropic.com"):
    try:
        dns[name] = socket.getaddrinfo(name, 443)[0][4][0]
    except OSError as e:
        dns[name] = None
report["dns"] = dns

base = os.environ["ANTHROPIC_BASE_URL"]
req = urllib.request.Request(base + "/v1/messages", data=b'{"model": "m"}', method="POST",
    headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"], "content-type": "application/json",
             "anthropic-version": "2023-06-01"})
report["messages"] = fetch(req)

# streaming: read the first chunk, acknowledge it on another request, then read the rest
conn = http.client.HTTPConnection("127.0.0.1", 3128, timeout=30)
conn.request("GET", "/_upstream/anthropic/v1/stream", headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"]})
resp = conn.getresponse()
first = resp.read1(64)
report["ack"] = fetch(base + "/v1/ack")
report["stream"] = [first.decode(), resp.read().decode(), resp.getheader("connection")]

# every string shaped like the key, anywhere this bottle can read
shape = re.compile(rb"%(prefix)s[A-Za-z0-9]+")
found, scanned = {}, 0
def scan(path):
    global scanned
    try:
        st = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return
    scanned += 1
    for m in shape.finditer(data):
        found.setdefault(hashlib.sha256(m.group()).hexdigest(), []).append(path)
SKIP = {"/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"}
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP]
    for f in files:
        scan(os.path.join(root, f))
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for part in ("environ", "cmdline"):
        scan(f"/proc/{pid}/{part}")
report["key_shapes"] = found
report["scanned"] = scanned
report["env_has_prefix"] = [k for k, v in os.environ.items() if "%(prefix)s" in v]
with open("/workspace/REPORT.json", "w") as fh:
    json.dump(report, fh)
'''


class EgressBottleTest(unittest.TestCase):
    def test_an_egress_bottle_reaches_only_its_allowlist_and_never_holds_the_key(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        work = Path(tmp.name)
        cert, key_file = make_cert(work)
        tls = tls_server(cert, key_file, self.addCleanup)
        plain = Server("plain").start(self.addCleanup)
        host_port, accepted = counting_listener(self.addCleanup)
        api_key = KEY_PREFIX + secrets.token_hex(24)

        home = make_home(self)
        (home / "src" / "ca.pem").write_bytes(cert.read_bytes())
        bindir = work / "bin"
        bindir.mkdir()
        (bindir / "claude").write_text(PROBE % {"host_port": host_port, "prefix": KEY_PREFIX})
        os.chmod(bindir / "claude", 0o755)   # as root the bottle runs as the agent user
        (home / "agents" / "claude.toml").write_text(
            f'provider = "claude"\nbottles = ["web"]\ntools = ["{bindir}"]\npath = ["{bindir}"]\n')
        # no `network`: the claude provider's default is egress
        (home / "bottles" / "web.toml").write_text(
            f'dir = "{home / "src"}"\negress = ["upstream.test", "plain.test", "localhost"]\n')
        env = {"ANTHROPIC_API_KEY": api_key, "ANTHROPIC_BASE_URL": f"https://localhost:{tls.port}",
               "BOT_BOTTLE_EGRESS_CA_FILE": str(cert),
               "BOT_BOTTLE_EGRESS_PIN": f"upstream.test=127.0.0.1:{tls.port},plain.test=127.0.0.1:{plain.port}"}

        r = cli(home, "start", "claude", "--headless", "--prompt", "probe", extra_env=env, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr + cli(home, "logs", "claude").stdout[-3000:])
        state = home / "state" / "claude"
        rep = json.loads((state / "bottle" / "workspace" / "REPORT.json").read_text())

        # the bottle's variables: the proxy, the gate's base URL, a placeholder for the key
        self.assertEqual({k: rep["env"].get(k) for k in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")},
                         {"HTTPS_PROXY": "http://127.0.0.1:3128", "HTTP_PROXY": "http://127.0.0.1:3128",
                          "NO_PROXY": "127.0.0.1,localhost"})
        self.assertEqual(rep["env"]["ANTHROPIC_BASE_URL"], "http://127.0.0.1:3128/_upstream/anthropic")
        self.assertEqual(rep["env"]["ANTHROPIC_API_KEY"], PLACEHOLDER)

        # allowlisted (pinned) hosts work through HTTP_PROXY and HTTPS_PROXY
        self.assertEqual(rep["plain"], [200, "hello from plain /hello"])
        self.assertEqual(rep["https"], [200, "hello from tls /hello"])

        # everything else: 403 with the reason
        why = {"example.com:443": "not on the bottle's egress allowlist",
               "169.254.169.254:80": "an IP address",
               f"127.0.0.1:{host_port}": "an IP address",
               f"localhost:{host_port}": "resolves to 127.0.0.1, a loopback address"}
        for target, reason in why.items():
            with self.subTest(connect=target):
                status, body = rep["refused_connect"][target]
                self.assertEqual(status, 403)
                self.assertIn(f"refused {target}: {reason}", body)
                self.assertIn(f"bot-bottle: egress refused: {target}: {reason}", r.stderr)
        for url, status_body in rep["refused_http"].items():
            with self.subTest(http=url):
                self.assertEqual(status_body[0], 403)
                self.assertIn("not on the bottle's egress allowlist" if "example" in url else "an IP address",
                              status_body[1])
        self.assertIn("Connection refused", rep["direct"])
        self.assertEqual(accepted, [], "something reached the host's 127.0.0.1")
        log = cli(home, "logs", "claude").stdout
        self.assertIn("--- bot-bottle: egress refused: example.com:443: not on the bottle's egress allowlist ---",
                      log)
        self.assertEqual(rep["dns"], {"pypi.org": None, "upstream.test": None, "api.anthropic.com": None})

        # the provider's base URL: the real key reached the HTTPS upstream, the placeholder did not
        self.assertEqual(rep["messages"][0], 200, rep["messages"])
        posts = [q for q in tls.requests if q["method"] == "POST"]
        self.assertEqual([q["path"] for q in posts], ["/v1/messages"])
        self.assertEqual(posts[0]["headers"]["x-api-key"], api_key)
        self.assertEqual(posts[0]["headers"]["anthropic-version"], "2023-06-01")
        self.assertEqual(posts[0]["body"], b'{"model": "m"}')
        self.assertNotIn(PLACEHOLDER, json.dumps(posts[0]["headers"]))

        # ...and it is nowhere in the bottle: no key-shaped string at all among the files read
        self.assertGreater(rep["scanned"], 100)
        self.assertEqual(rep["key_shapes"], {}, "key-shaped strings in the bottle")
        self.assertNotIn(hashlib.sha256(api_key.encode()).hexdigest(), rep["key_shapes"])
        self.assertEqual(rep["env_has_prefix"], [])
        for path in (state / "bottle").rglob("*"):
            if path.is_file():
                self.assertNotIn(api_key.encode(), path.read_bytes(), path)
        self.assertNotIn(api_key, log)
        self.assertNotIn(api_key, r.stderr)

        # the stream's first bytes arrived before its end: the upstream waited for the ack
        self.assertEqual(rep["stream"], ["first\n", "last\n", "close"])
        self.assertTrue(tls.acked_in_time, "the first chunk did not reach the agent before the stream ended")

    def test_a_command_bottle_with_an_egress_list_under_a_deep_home_reaches_its_host_on_start_and_resume(self):
        """An `egress` list alone turns the gate on (the command provider's default is no
        network), and a state dir too deep for a unix socket path (108 bytes) still works."""
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        plain = Server("plain").start(self.addCleanup)
        deep = Path(tmp.name, *["a-rather-long-directory-name"] * 4)
        deep.mkdir(parents=True)
        home = make_home(self)
        home = Path(shutil.copytree(home, deep / "home", symlinks=True))
        fetch = ("import urllib.request; open('/workspace/GOT', 'w').write("
                 "urllib.request.urlopen('http://plain.test/deep', timeout=15).read().decode())")
        (home / "agents" / "fetch.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = ["python3", "-c", {json.dumps(fetch)}]\n')
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\negress = ["plain.test"]\n')
        self.assertGreater(len(str(home / "state" / "fetch" / "egress.sock")), 108)
        r = cli(home, "start", "fetch", "--headless", "--prompt", "p",
                extra_env={"BOT_BOTTLE_EGRESS_PIN": f"plain.test=127.0.0.1:{plain.port}"})
        self.assertEqual(r.returncode, 0, r.stderr + cli(home, "logs", "fetch").stdout)
        got = home / "state" / "fetch" / "bottle" / "workspace" / "GOT"
        self.assertEqual(got.read_text(), "hello from plain /deep")
        self.assertFalse((home / "state" / "fetch" / "egress.sock").exists(), "the gate outlived the run")
        # a resume serves the gate again, for exactly its own run
        got.unlink()
        self.assertEqual(cli(home, "commit", "fetch").returncode, 0)
        r = cli(home, "resume", "fetch", "--headless", "--prompt", "again",
                extra_env={"BOT_BOTTLE_EGRESS_PIN": f"plain.test=127.0.0.1:{plain.port}"})
        self.assertEqual(r.returncode, 0, r.stderr + cli(home, "logs", "fetch").stdout)
        self.assertEqual(got.read_text(), "hello from plain /deep")
        self.assertEqual([q["path"] for q in plain.requests], ["/deep", "/deep"])

    def test_the_dry_run_shows_the_network_the_allowlist_and_the_proxy_but_no_key(self):
        home = make_home(self)
        (home / "agents" / "c.toml").write_text('provider = "codex"\nbottles = ["b1"]\n')
        (home / "bottles" / "b1.toml").write_text('egress = ["pypi.org", "*.pythonhosted.org"]\n')
        r = cli(home, "start", "c", "--headless", "--prompt", "p", "--dry-run",
                extra_env={"OPENAI_API_KEY": "sk-proj-dry-run-secret-value"})
        self.assertEqual(r.returncode, 0, r.stderr)
        plan = json.loads(r.stdout)
        self.assertEqual(plan["network"], "egress")
        self.assertEqual(plan["egress"]["allow"], ["pypi.org", "*.pythonhosted.org"])  # key injected
        self.assertEqual(plan["egress"]["upstreams"],
                         {"openai": {"base_url": "https://api.openai.com/v1", "key_injected": True}})
        env = plan["environment"]
        self.assertEqual((env["HTTPS_PROXY"], env["NO_PROXY"], env["OPENAI_BASE_URL"], env["OPENAI_API_KEY"]),
                         ("http://127.0.0.1:3128", "127.0.0.1,localhost",
                          "http://127.0.0.1:3128/_upstream/openai", PLACEHOLDER))
        i = plan["argv"].index("/opt/bot-bottle/bot_bottle/gate/forwarder.py")
        self.assertEqual(plan["argv"][i - 2:i + 6], ["python3", "-I", "/opt/bot-bottle/bot_bottle/gate/forwarder.py",
                                                     "--port", "3128", "--socket", "/run/bot-bottle/egress.sock", "--"])
        self.assertNotIn("sk-proj-dry-run-secret-value", r.stdout)


if __name__ == "__main__":
    unittest.main()
