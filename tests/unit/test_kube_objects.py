"""Unit tests of bot_bottle.backend.kube_objects: the restricted pod, secrets kept out of the pod
spec, the NetworkPolicy allowing only the bridge, resources, names and labels."""

import base64
import json
import unittest

from bot_bottle.backend import kube_objects as ko
from bot_bottle.errors import BackendError

SETTINGS = ko.PodSettings(namespace="bots", run_as=(1234, 2345), storage_class="fast", volume_size="5Gi")
SECRET_VALUE = "sk-very-secret-value"


def make_pod(**kw):
    args = dict(image="python:3-slim", agent_argv=("python3", "agent.py"),
                env_names={"ANTHROPIC_API_KEY": 1, "PATH": 1}, bridge="10.0.0.5:4443", egress=True,
                seed=True, resources={"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "500m", "memory": "1Gi"}}, timeout=600)
    args.update(kw)
    return ko.pod("my-run", 3, SETTINGS, **args)


class PodTest(unittest.TestCase):
    def test_restricted_security_context_on_every_container(self):
        pod = make_pod()
        spec = pod["spec"]
        self.assertIs(spec["automountServiceAccountToken"], False)
        self.assertEqual(spec["restartPolicy"], "Never")
        self.assertEqual(spec["activeDeadlineSeconds"], 600)
        self.assertEqual(spec["securityContext"], {"runAsNonRoot": True, "runAsUser": 1234, "runAsGroup": 2345,
                                                   "fsGroup": 2345, "seccompProfile": {"type": "RuntimeDefault"}})
        containers = spec["initContainers"] + spec["containers"]
        self.assertEqual([c["name"] for c in containers], ["seed", "agent"])
        for c in containers:
            sc = c["securityContext"]
            self.assertIs(sc["allowPrivilegeEscalation"], False)
            self.assertIs(sc["privileged"], False)
            self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
            self.assertIs(sc["runAsNonRoot"], True)
            self.assertIs(sc["readOnlyRootFilesystem"], True)
            self.assertEqual((sc["runAsUser"], sc["runAsGroup"]), (1234, 2345))
            self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"})
            self.assertEqual(c["resources"], {"requests": {"cpu": "500m", "memory": "1Gi"},
                                              "limits": {"cpu": "500m", "memory": "1Gi"}})

    def test_no_secret_value_in_the_pod_and_every_variable_from_the_run_secret(self):
        secret = ko.secret("my-run", 3, SETTINGS, env={"ANTHROPIC_API_KEY": SECRET_VALUE, "PATH": "/usr/bin"},
                           token="tok-123", ca_pem="-----BEGIN CERTIFICATE-----", prompt=b"hello")
        pod = make_pod()
        text = json.dumps(pod)
        for value in (SECRET_VALUE, "tok-123", "hello"):
            self.assertNotIn(value, text)
        env = pod["spec"]["containers"][0]["env"]
        self.assertEqual(env, [{"name": k, "valueFrom": {"secretKeyRef": {"name": "bb-my-run-run-3", "key": f"env.{k}"}}}
                               for k in ("ANTHROPIC_API_KEY", "PATH")])
        self.assertNotIn("envFrom", pod["spec"]["containers"][0])
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        self.assertEqual(decoded, {"env.ANTHROPIC_API_KEY": SECRET_VALUE, "env.PATH": "/usr/bin", "token": "tok-123",
                                   "ca.pem": "-----BEGIN CERTIFICATE-----", "prompt.txt": "hello"})
        self.assertEqual(secret["metadata"]["name"], pod["metadata"]["name"])

    def test_relay_command_and_mounts(self):
        agent = make_pod()["spec"]["containers"][0]
        self.assertEqual(agent["command"], [
            "python3", "-I", "/opt/bot-bottle/pod_relay.py", "run", "--bridge", "10.0.0.5:4443",
            "--ca", "/etc/bot-bottle/run/ca.pem", "--token-file", "/etc/bot-bottle/run/token",
            "--forge-socket", "/run/bot-bottle/forge.sock", "--proxy-port", "3128",
            "--stdin", "/etc/bot-bottle/run/prompt.txt", "--", "python3", "agent.py"])
        mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
        self.assertEqual((mounts["/workspace"]["subPath"], mounts["/home/agent"]["subPath"]), ("workspace", "home"))
        self.assertTrue(mounts["/etc/bot-bottle/run"]["readOnly"])
        self.assertEqual(mounts["/run/bot-bottle/prompt.txt"]["subPath"], "prompt.txt")
        no_egress = make_pod(egress=False, seed=False)
        self.assertNotIn("--proxy-port", no_egress["spec"]["containers"][0]["command"])
        self.assertNotIn("initContainers", no_egress["spec"])
        self.assertNotIn("activeDeadlineSeconds", make_pod(timeout=None)["spec"])

    def test_bad_inputs_refused(self):
        for kw in ({"image": "a b"}, {"image": ""}, {"env_names": {"BAD-NAME": 1}},
                   {"resources": {"requests": {"cpu": "lots"}}}, {"resources": {"limits": {"gpu": "1"}}}):
            with self.subTest(kw=kw), self.assertRaises(BackendError):
                make_pod(**kw)
        for slug in ("Bad", "-x", "a" * 64, "a/b"):
            with self.subTest(slug=slug), self.assertRaises(BackendError):
                ko.pvc(slug, SETTINGS)
        with self.assertRaises(BackendError):
            ko.pod("ok", 0, SETTINGS, image="i", agent_argv=(), env_names={}, bridge="h:1", egress=False, seed=False)


class OtherObjectsTest(unittest.TestCase):
    def test_network_policy_allows_only_the_bridge(self):
        np = ko.network_policy("my-run", SETTINGS, "10.0.0.5", 4443)
        self.assertEqual(np["spec"]["podSelector"], {"matchLabels": ko.labels("my-run")})
        self.assertEqual(np["spec"]["policyTypes"], ["Ingress", "Egress"])
        self.assertEqual(np["spec"]["ingress"], [])
        self.assertEqual(np["spec"]["egress"], [{"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}],
                                                 "ports": [{"protocol": "TCP", "port": 4443}]}])
        self.assertEqual(ko.network_policy("x", SETTINGS, "fd00::1", 1)["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
                         "fd00::1/128")
        with self.assertRaises(BackendError):
            ko.network_policy("x", SETTINGS, "bridge.example", 1)

    def test_labels_on_everything_and_the_selector_finds_them(self):
        objs = [ko.pvc("my-run", SETTINGS), ko.config_map("my-run", SETTINGS, {"pod_relay.py": "x"}),
                ko.network_policy("my-run", SETTINGS, "10.0.0.5", 1), make_pod(),
                ko.secret("my-run", 3, SETTINGS, env={}, token="t", ca_pem="c", prompt=b""),
                ko.volume_snapshot("my-run", SETTINGS, "20261130050000")]
        for obj in objs:
            labels = obj["metadata"]["labels"]
            self.assertEqual(labels["app.kubernetes.io/managed-by"], "bot-bottle")
            self.assertEqual(labels["bot-bottle/slug"], "my-run")
            self.assertEqual(obj["metadata"]["namespace"], "bots")
        self.assertEqual(ko.selector("my-run"), "app.kubernetes.io/managed-by=bot-bottle,bot-bottle/slug=my-run")

    def test_pvc_size_and_class(self):
        spec = ko.pvc("my-run", SETTINGS)["spec"]
        self.assertEqual(spec, {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                                "storageClassName": "fast"})


if __name__ == "__main__":
    unittest.main()
