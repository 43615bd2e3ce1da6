"""Contract: what kube_objects builds validates against the schemas copied from the Kubernetes
OpenAPI spec (tests/data/kubernetes), and the fake API server's answers have the real API's
shapes (Status on errors, lists with kind/apiVersion/items/metadata.resourceVersion, strict
field validation). The fake is held to the spec, not to our client; test_kube_client_contract.py
holds the fake, our objects and these schemas to the official Kubernetes client in turn."""

import json
import os
import ssl
import unittest
from unittest import mock
import urllib.error
import urllib.request

from bot_bottle.backend import kube_objects as ko
from tests.support.fake_kube import FakeKube
from tests.support.kube_schema import Invalid, Validator

SETTINGS = ko.PodSettings(namespace="bots", storage_class="standard")


def every_object():
    pod = ko.pod("c1", 1, SETTINGS, image="img", agent_argv=("a",), env_names={"K": 1}, bridge="10.1.2.3:9",
                 egress=True, seed=True, resources={"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
                 timeout=60)
    return [pod, ko.pvc("c1", SETTINGS), ko.config_map("c1", SETTINGS, {"pod_relay.py": "print()"}),
            ko.secret("c1", 1, SETTINGS, env={"K": "v"}, token="t", ca_pem="c", prompt=b"p"),
            ko.network_policy("c1", SETTINGS, "10.1.2.3", 9), ko.volume_snapshot("c1", SETTINGS, "1", "csi")]


class SchemaTest(unittest.TestCase):
    def test_every_object_we_build_validates(self):
        v = Validator()
        kinds = [v.validate_kind(obj) for obj in every_object()]
        self.assertEqual(len(set(kinds)), 6)

    def test_the_validator_refuses_what_a_strict_server_refuses(self):
        v = Validator()
        pod = every_object()[0]
        pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = "1000"
        with self.assertRaises(Invalid) as ctx:
            v.validate_kind(pod)
        self.assertEqual(ctx.exception.field, ".spec.containers[0].securityContext.runAsUser")
        pod = every_object()[0]
        pod["spec"]["containers"][0]["secretEnv"] = {}
        with self.assertRaises(Invalid) as ctx:
            v.validate_kind(pod)
        self.assertTrue(ctx.exception.unknown)
        pod = every_object()[0]
        del pod["spec"]["containers"][0]["name"]
        with self.assertRaises(Invalid):
            v.validate_kind(pod)

    def test_a_snapshot_source_names_exactly_one_source(self):
        """The CRD's `oneOf` (tests/data/kubernetes/README.md): a PVC or an existing content."""
        v = Validator()
        for source in ({}, {"persistentVolumeClaimName": "a", "volumeSnapshotContentName": "b"}):
            snap = every_object()[5]
            snap["spec"]["source"] = source
            with self.subTest(source=source), self.assertRaises(Invalid) as ctx:
                v.validate_kind(snap)
            self.assertEqual(ctx.exception.field, ".spec.source")
        snap = every_object()[5]
        snap["spec"]["source"] = {"volumeSnapshotContentName": "b"}
        v.validate_kind(snap)


class FakeShapesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kube = FakeKube(namespace="bots")
        cls.kube.__enter__()
        cls.tls = ssl.create_default_context(cafile=str(cls.kube.ca))

    @classmethod
    def tearDownClass(cls):
        cls.kube.close()

    def call(self, method, path, body=None, token=None):
        req = urllib.request.Request(f"https://127.0.0.1:{self.kube.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token or self.kube.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.tls, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def assert_status(self, code, body, want_code, reason):
        self.assertEqual(code, want_code)
        Validator().validate_kind(body)
        self.assertEqual((body["kind"], body["apiVersion"], body["status"], body["code"], body["reason"]),
                         ("Status", "v1", "Failure", want_code, reason))
        self.assertTrue(body["message"])

    def test_errors_are_status_objects(self):
        base = "/api/v1/namespaces/bots/configmaps"
        cm = ko.config_map("shapes", SETTINGS, {"a": "b"})
        self.assert_status(*self.call("GET", base, token="wrong"), 401, "Unauthorized")
        self.assert_status(*self.call("GET", base + "/nope"), 404, "NotFound")
        self.assertEqual(self.call("POST", base + "?fieldValidation=Strict", cm)[0], 201)
        self.assert_status(*self.call("POST", base + "?fieldValidation=Strict", cm), 409, "AlreadyExists")
        bad = dict(cm, data={"a": 1})
        bad["metadata"] = dict(cm["metadata"], name="other")
        self.assertEqual(self.call("POST", base + "?fieldValidation=Strict", bad)[0], 422)
        unknown = dict(cm, colour="red")
        unknown["metadata"] = dict(cm["metadata"], name="other")
        code, body = self.call("POST", base + "?fieldValidation=Strict", unknown)
        self.assert_status(code, body, 400, "BadRequest")
        self.assertIn('unknown field "colour"', body["message"])
        badname = dict(cm, metadata=dict(cm["metadata"], name="Not_A_Name"))
        self.assert_status(*self.call("POST", base + "?fieldValidation=Strict", badname), 422, "Invalid")
        self.assert_status(*self.call("DELETE", base + "/nope"), 404, "NotFound")
        code, body = self.call("DELETE", base + "/bb-shapes-scripts")
        self.assertEqual((code, body["kind"], body["status"], body["details"]["name"]),
                         (200, "Status", "Success", "bb-shapes-scripts"))
        Validator().validate_kind(body)

    def test_lists_have_the_real_shape_and_selectors_filter(self):
        base = "/api/v1/namespaces/bots/secrets"
        for slug in ("s-one", "s-two"):
            self.assertEqual(self.call("POST", base + "?fieldValidation=Strict",
                                       ko.secret(slug, 1, SETTINGS, env={}, token="t", ca_pem="c", prompt=b""))[0], 201)
        code, body = self.call("GET", base + "?labelSelector=" + ko.selector("s-one").replace("/", "%2F"))
        self.assertEqual(code, 200)
        self.assertEqual((body["kind"], body["apiVersion"]), ("SecretList", "v1"))
        self.assertIsInstance(body["metadata"]["resourceVersion"], str)
        self.assertEqual([i["metadata"]["name"] for i in body["items"]], ["bb-s-one-run-1"])
        for item in body["items"]:
            Validator().validate_kind(item)
            self.assertTrue(item["metadata"]["uid"] and item["metadata"]["creationTimestamp"])
        code, body = self.call("DELETE", base + "?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dbot-bottle")
        self.assertEqual((code, body["kind"]), (200, "SecretList"))
        self.assertEqual(self.call("GET", base)[1]["items"], [])

    def test_an_unknown_subresource_is_not_found(self):
        base = "/api/v1/namespaces/bots/configmaps"
        self.assertEqual(self.call("POST", base + "?fieldValidation=Strict",
                                   ko.config_map("subres", SETTINGS, {"a": "b"}))[0], 201)
        self.assertEqual(self.call("GET", base + "/bb-subres-scripts")[0], 200)
        for path in ("/bb-subres-scripts/exec", "/bb-subres-scripts/log", "/bb-subres-scripts/status/x"):
            with self.subTest(path=path):
                self.assert_status(*self.call("GET", base + path), 404, "NotFound")
        self.assertEqual(self.call("DELETE", base + "/bb-subres-scripts")[0], 200)

    def test_version_and_discovery(self):
        code, body = self.call("GET", "/version")
        self.assertEqual((code, body["major"]), (200, "1"))
        code, body = self.call("GET", "/apis/snapshot.storage.k8s.io/v1")
        self.assertEqual((code, body["kind"], body["groupVersion"]), (200, "APIResourceList", "snapshot.storage.k8s.io/v1"))


class KubeletTest(unittest.TestCase):
    def test_a_file_leaving_etc_while_a_pod_starts_does_not_fail_the_pod(self):
        """The kubelet binds /etc entry by entry; useradd's `/etc/shadow+` (another test's, the
        host's) may be gone by the time bwrap binds it: that must not fail the pod."""
        real = os.listdir

        def listdir(path="."):
            return real(path) + (["bb-vanished+"] if path == "/etc" else [])
        with FakeKube(namespace="bots", images={"probe:1": {}}) as kube, \
                mock.patch("tests.support.fake_kubelet.os.listdir", listdir):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "etc-race", "labels": ko.labels("race")},
                   "spec": {"restartPolicy": "Never", "containers": [
                       {"name": "main", "image": "probe:1", "command": ["/bin/true"]}]}}
            self.assertEqual(kube.create("pods", "bots", pod)[0], 201)
            with kube.lock:
                phase = lambda: kube.store["pods"]["etc-race"]["status"].get("phase")   # noqa: E731
                self.assertTrue(kube.lock.wait_for(lambda: phase() in ("Succeeded", "Failed"), timeout=20))
                self.assertEqual(phase(), "Succeeded")


if __name__ == "__main__":
    unittest.main()
