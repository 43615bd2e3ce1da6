"""Contract: what kube_objects builds validates against the schemas copied from the Kubernetes
OpenAPI spec (tests/data/kubernetes), and the fake API server's answers have the real API's
shapes (Status on errors, lists with kind/apiVersion/items/metadata.resourceVersion, strict
field validation). The fake is held to the spec, not to our client."""

import json
import ssl
import unittest
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

    def test_version_and_discovery(self):
        code, body = self.call("GET", "/version")
        self.assertEqual((code, body["major"]), (200, "1"))
        code, body = self.call("GET", "/apis/snapshot.storage.k8s.io/v1")
        self.assertEqual((code, body["kind"], body["groupVersion"]), (200, "APIResourceList", "snapshot.storage.k8s.io/v1"))


if __name__ == "__main__":
    unittest.main()
