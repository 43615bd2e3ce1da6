"""Contract: the fake API server and our objects, held to the official Kubernetes Python client.

tests/unit/test_kube_contract.py holds them to tests/data/kubernetes/schemas.json, which was
typed by hand; this holds all three to a client generated from the real OpenAPI spec. The client
lives in its own venv, .ci/kube-client/ (made by .ci/kube-client.sh, which .ci/setup runs), never
in the interpreter running the suite: tests/support/kube_client_probe.py runs under the venv's
python as a subprocess, against the fake over real TLS with the fake's token, and reports in JSON.
A missing venv fails here (with the command that makes it); it is never a skip.
"""

import json
import re
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from bot_bottle.backend import kube_objects as ko
from bot_bottle.backend.kube_api import KubeApi, KubeConfig
from tests.support.fake_kube import FakeKube
from tests.support.kube_schema import SCHEMAS

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".ci" / "kube-client" / "bin" / "python"
PROBE = REPO / "tests" / "support" / "kube_client_probe.py"
CLIENT_VERSION = "35.0.0"   # .ci/kube-client-requirements.txt
NS = "bots"
PROBE_IMAGE = "probe:1"
POD_LOG = "probe-log-line\n"
# schemas.json's deliberate reductions (tests/data/kubernetes/README.md): properties the real
# model has and our subset leaves out. Open objects ({"type": "object"}) need no entry here.
REDUCTIONS = ()
# query parameters the real API server takes but the OpenAPI spec (and so the client) does not
# declare: PodLogOptions.sinceTime is decoded from the query like the others (`kubectl logs
# --since-time` sends it), yet the spec lists only sinceSeconds (kubernetes/kubernetes#108498).
UNDECLARED = {("GET", "/api/v1/namespaces/{namespace}/pods/{name}/log"): {"sinceTime"}}


def plans() -> list[tuple[str, dict]]:
    """Every object kube_objects builds, for plans that differ where the builders branch."""
    plain = ko.PodSettings(namespace=NS)
    full = ko.PodSettings(namespace=NS, run_as=(2000, 3000), storage_class="fast-ssd",
                          volume_size="1500Mi", grace_seconds=5)
    out = [("pvc", ko.pvc("p1", plain)), ("pvc with class", ko.pvc("p2", full)),
           ("config map", ko.config_map("p1", plain, {"pod_relay.py": "print('relay')\n"})),
           ("secret", ko.secret("p1", 1, plain, env={"API_KEY": "k", "B": ""}, token="tok",
                                ca_pem="-----BEGIN CERTIFICATE-----\n", prompt=b"do \xe2\x9c\x93")),
           ("secret without env", ko.secret("p1", 2, full, env={}, token="t", ca_pem="c", prompt=b"")),
           ("network policy v4", ko.network_policy("p1", plain, "10.0.0.7", 40123)),
           ("network policy v6", ko.network_policy("p2", full, "fd00::7", 443)),
           ("snapshot", ko.volume_snapshot("p1", plain, "20261130t050000z")),
           ("snapshot with class", ko.volume_snapshot("p2", full, "20261130t050001z", "csi-snaps"))]
    argv = ("python3", "/srv/agent/scripted_agent.py", "--exit-code", "7")
    for run, (label, settings, kw) in enumerate((
            ("pod: first run, egress, resources, timeout", full,
             dict(egress=True, seed=True, timeout=600, env_names={"API_KEY", "B"},
                  resources={"requests": {"cpu": "500m", "memory": "256Mi"},
                             "limits": {"cpu": "500m", "memory": "256Mi"}})),
            ("pod: resumed, no egress, no resources", plain,
             dict(egress=False, seed=False, env_names=set())),
            ("pod: first run, no egress, cpu only", plain,
             dict(egress=False, seed=True, env_names={"X"}, resources={"limits": {"cpu": "2"}}))), start=3):
        out.append((label, ko.pod("p1", run, settings, image="registry.example/agent:1", agent_argv=argv,
                                  bridge="10.0.0.7:40123", **kw)))
    return out


def api_objects() -> list[dict]:
    """One object per kind for the client's calls, all of slug `cc` (the pod one the fake runs)."""
    s = ko.PodSettings(namespace=NS)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": ko.run_name("cc", 1), "namespace": NS,
                                                          "labels": ko.labels("cc", 1)},
           "spec": {"restartPolicy": "Never", "containers": [
               {"name": "main", "image": PROBE_IMAGE, "command": ["/bin/sh", "-c", f"printf '{POD_LOG}'"]}]}}
    return [ko.pvc("cc", s), ko.secret("cc", 1, s, env={"A": "b"}, token="t", ca_pem="c", prompt=b"p"),
            ko.config_map("cc", s, {"pod_relay.py": "print()\n"}), ko.network_policy("cc", s, "10.0.0.7", 9),
            ko.volume_snapshot("cc", s, "20261130t050000z"), pod]


def run_probe(testcase, checks, kube=None) -> tuple[int, dict, str]:
    if not VENV_PYTHON.exists():
        testcase.fail(f"{VENV_PYTHON} is missing: run .ci/kube-client.sh (.ci/setup does) to install "
                      f"the official Kubernetes client {CLIENT_VERSION} this contract test needs")
    tmp = tempfile.TemporaryDirectory(prefix="kube-probe-")
    testcase.addCleanup(tmp.cleanup)
    spec = {"checks": list(checks), "namespace": NS, "selector": ko.selector("cc"), "pod_log": POD_LOG,
            "schemas": str(SCHEMAS), "reductions": list(REDUCTIONS),
            "objects": [{"label": label, "object": obj} for label, obj in plans()],
            "api_objects": api_objects(), "plan_selectors": [ko.selector("p1"), ko.selector("p2")]}
    if kube is not None:
        spec.update(server=f"https://127.0.0.1:{kube.port}", ca=str(kube.ca), token_file=str(kube.token_file))
    else:   # the model checks make no call; the client still wants a configuration
        spec.update(server="https://127.0.0.1:1", ca="", token_file=str(Path(tmp.name) / "token"))
        (Path(tmp.name) / "token").write_text("unused")
    path = Path(tmp.name) / "input.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run([str(VENV_PYTHON), "-I", str(PROBE), str(path)], capture_output=True, text=True,
                       timeout=120, cwd=tmp.name)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        testcase.fail(f"the probe printed no report (exit {r.returncode}): {r.stderr[-2000:]}")
    return r.returncode, report, r.stderr


class OfficialClientTest(unittest.TestCase):
    def test_the_venv_holds_the_pinned_client_and_the_suite_does_not(self):
        _, report, _ = run_probe(self, ())
        self.assertEqual(report["client"], CLIENT_VERSION)
        with self.assertRaises(ImportError):   # bot-bottle must never come to depend on it
            __import__("kubernetes")

    def test_our_objects_are_what_the_official_models_hold(self):
        code, report, stderr = run_probe(self, ("objects",))
        self.assertEqual(report["failures"], [], stderr)
        self.assertEqual(code, 0)
        labels = [o["label"] for o in report["objects"]]
        self.assertEqual(labels, [label for label, obj in plans() if obj["kind"] != "VolumeSnapshot"])

    def test_the_probe_names_a_field_the_models_do_not_know(self):
        """The check can fail: a field of ours the real API lacks, and a wrong type, are named."""
        import tests.unit.test_kube_client_contract as me
        original = me.plans

        def broken():
            out = original()
            pod = out[-1][1]
            pod["spec"]["containers"][0]["secretEnv"] = {}
            pod["spec"]["securityContext"]["runAsUser"] = "1000"
            return out
        me.plans = broken
        self.addCleanup(setattr, me, "plans", original)
        code, report, _ = run_probe(self, ("objects",))
        self.assertEqual(code, 1)
        failures = sorted(report["failures"])
        self.assertEqual(len(failures), 2, failures)
        self.assertIn(".spec.containers[0].secretEnv: unknown field (the model drops it)", failures[0])
        self.assertIn(".spec.securityContext.runAsUser: ours '1000' (str), the model gives 1000 (int)",
                      failures[1])

    def test_schemas_json_agrees_with_the_generated_models(self):
        code, report, stderr = run_probe(self, ("schemas",))
        self.assertEqual(report["failures"], [], stderr)
        self.assertEqual(code, 0)
        self.assertGreaterEqual(len(report["schemas"]["checked"]), 45)
        self.assertEqual(len(report["schemas"]["not_in_client"]), 4)   # VolumeSnapshot: the CRD

    def test_the_fake_answers_the_official_client(self):
        with FakeKube(namespace=NS, images={PROBE_IMAGE: {}}) as kube:
            code, report, stderr = run_probe(self, ("api",), kube)
            left = {plural: kube.names(plural) for plural in kube.store if kube.names(plural)}
        self.assertEqual(report["failures"], [], stderr)
        self.assertEqual(code, 0)
        api = report["api"]
        self.assertEqual(sorted(api), ["ConfigMap", "NetworkPolicy", "PersistentVolumeClaim", "Pod",
                                       "Secret", "VolumeSnapshot", "accepted", "discovery", "errors"])
        self.assertEqual((api["Pod"]["phase"], api["Pod"]["exit_code"], api["Pod"]["log"]),
                         ("Succeeded", 0, POD_LOG))
        self.assertEqual({k: (v["status"], v["reason"]) for k, v in api["errors"].items()},
                         {"missing": (404, "NotFound"), "duplicate": (409, "AlreadyExists"),
                          "unknown_field": (400, "BadRequest"), "delete_missing": (404, "NotFound"),
                          "invalid": (422, "Invalid"), "unauthorized": (401, "Unauthorized")})
        self.assertEqual(api["discovery"]["snapshot_resources"], ["volumesnapshots"])
        self.assertEqual(api["accepted"], [label for label, _ in plans()])
        self.assertEqual(left, {})


    def test_every_request_our_client_sends_is_an_operation_of_the_official_client(self):
        """kube_api's method, path and query parameters, as the fake saw them, against the
        operations the client was generated with (its path templates and query parameters)."""
        objs = api_objects()
        with FakeKube(namespace=NS, images={PROBE_IMAGE: {}}) as kube:
            api = KubeApi(KubeConfig.from_environ(kube.environ()))
            api.version()
            self.assertTrue(api.has_group_version("snapshot.storage.k8s.io/v1"))
            for obj in objs:
                api.create(obj)
            pod = objs[-1]["metadata"]["name"]
            api.wait_pod(pod, lambda p: p["status"].get("phase") == "Succeeded", time.monotonic() + 30)
            self.assertEqual(api.log_tail(pod, "main"), POD_LOG)
            streamed = []
            api.stream_log(pod, "main", streamed.append, since="2026-01-01T00:00:00Z")
            self.assertEqual(b"".join(streamed), POD_LOG.encode())
            for obj in objs:
                self.assertIsNotNone(api.get(obj["kind"], obj["metadata"]["name"]))
                self.assertEqual(len(api.list(obj["kind"], ko.selector("cc"))), 1)
                self.assertTrue(api.delete(obj["kind"], obj["metadata"]["name"], grace=0))
                api.delete_collection(obj["kind"], ko.selector("cc"))
            sent = list(kube.queries)
        _, report, stderr = run_probe(self, ("operations",))
        self.assertEqual(report["failures"], [], stderr)
        operations = report["operations"]
        self.assertGreater(len(operations), 100)
        undeclared_seen = set()
        for method, path, query in sent:
            with self.subTest(method=method, path=path):
                matches = [op for op in operations if op["method"] == method and re.fullmatch(
                    re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(op["path"].rstrip("/"))), path.rstrip("/"))]
                self.assertTrue(matches, f"no operation of the official client is {method} {path}")
                best = min(matches, key=lambda op: op["path"].count("{"))
                extra = set(query) - set(best["query"]) - UNDECLARED.get((method, best["path"]), set())
                self.assertEqual(extra, set(), f"{best['operation']} declares no {sorted(extra)}")
                undeclared_seen |= set(query) & UNDECLARED.get((method, best["path"]), set())
        self.assertEqual(undeclared_seen, {"sinceTime"})
        self.assertGreaterEqual(len(sent), 35)   # 2 + 6 creates + polls + 2 logs + 6 x 4


if __name__ == "__main__":
    unittest.main()
