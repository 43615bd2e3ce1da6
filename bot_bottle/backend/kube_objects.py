"""The Kubernetes objects of a bottle, as plain dicts in the API's own shapes (pure functions).

A bottle `<slug>` is: the PVC `bb-<slug>` (workspace and home), the NetworkPolicy `bb-<slug>`
(no ingress; egress only to the host's bridge), the ConfigMap `bb-<slug>-scripts` (the in-pod
relay), and per run `n` the Secret `bb-<slug>-run-<n>` (env values, bridge token and CA, the
prompt) and the Pod `bb-<slug>-run-<n>`. Every object carries `LABELS` plus the slug label, so
`destroy` removes them all by one selector. The pod runs restricted: non-root uid/gid from the
config, no privilege escalation, no capabilities, RuntimeDefault seccomp, a read-only root, no
service-account token. Secret values never appear in the pod spec: each variable is a
`secretKeyRef` to the run's Secret (key `env.<NAME>`), so `kubectl get pod -o yaml` shows names only.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass

from .. import state
from ..errors import BackendError, UsageError
from ..manifest import QUANTITY_RE as QUANTITY
from .base import IN_HOME, IN_RUN, IN_WORKSPACE

MANAGED_BY = ("app.kubernetes.io/managed-by", "bot-bottle")
SLUG_LABEL = "bot-bottle/slug"
RUN_LABEL = "bot-bottle/run"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

IN_SCRIPTS = "/opt/bot-bottle"            # the ConfigMap: pod_relay.py (+ what it imports)
IN_SECRETS = "/etc/bot-bottle/run"        # the run's Secret: token, ca.pem, prompt.txt
IN_SEED = "/bottle"                       # the whole PVC, for the seed init container only
RELAY = IN_SCRIPTS + "/pod_relay.py"
TOKEN_KEY, CA_KEY, PROMPT_KEY = "token", "ca.pem", "prompt.txt"


@dataclass(frozen=True)
class PodSettings:
    """What the operator configures (see kubernetes.KubeConfig) for every bottle's pod."""
    namespace: str
    run_as: tuple[int, int] = (1000, 1000)
    storage_class: str | None = None
    volume_size: str = "10Gi"
    grace_seconds: int = 30


def check_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > 253 or not DNS1123.match(name):
        raise BackendError(f"invalid Kubernetes object name {name!r}")
    return name


def check_slug(slug: str) -> str:
    """`state.check_slug`, as the backend's error (exit 4: a slug reaching here was checked)."""
    try:
        return state.check_slug(slug)
    except UsageError as exc:
        raise BackendError(str(exc)) from None


def check_quantity(value: str, what: str) -> str:
    if not isinstance(value, str) or not QUANTITY.match(value):
        raise BackendError(f"{what} {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")
    return value


def labels(slug: str, run: int | None = None) -> dict:
    out = {MANAGED_BY[0]: MANAGED_BY[1], SLUG_LABEL: check_slug(slug)}
    if run is not None:
        out[RUN_LABEL] = str(int(run))
    return out


def selector(slug: str) -> str:
    """The labelSelector that finds everything of the bottle."""
    return f"{MANAGED_BY[0]}={MANAGED_BY[1]},{SLUG_LABEL}={check_slug(slug)}"


def volume_name(slug: str) -> str:
    return check_name(f"bb-{check_slug(slug)}")


def run_name(slug: str, run: int) -> str:
    if not isinstance(run, int) or run < 1:
        raise BackendError(f"invalid run number {run!r}")
    return check_name(f"bb-{check_slug(slug)}-run-{run}")


def scripts_name(slug: str) -> str:
    return check_name(f"bb-{check_slug(slug)}-scripts")


def _meta(name: str, settings: PodSettings, slug: str, run: int | None = None) -> dict:
    return {"name": check_name(name), "namespace": check_name(settings.namespace),
            "labels": labels(slug, run)}


def pvc(slug: str, settings: PodSettings) -> dict:
    spec = {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": check_quantity(settings.volume_size,
                                                                 "volume size")}}}
    if settings.storage_class:
        spec["storageClassName"] = check_name(settings.storage_class)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(volume_name(slug), settings, slug), "spec": spec}


def _b64(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def secret(slug: str, run: int, settings: PodSettings, *, env: dict, token: str, ca_pem: str,
           prompt: bytes) -> dict:
    """The run's Secret: `env.<NAME>` per variable, the bridge's token and CA, the prompt."""
    data = {TOKEN_KEY: _b64(token), CA_KEY: _b64(ca_pem), PROMPT_KEY: _b64(prompt)}
    for key, value in env.items():
        if not ENV_NAME.match(key):
            raise BackendError(f"invalid variable name {key!r} for the bottle's environment")
        data[f"env.{key}"] = _b64(value)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(run_name(slug, run), settings, slug, run), "data": data}


def config_map(slug: str, settings: PodSettings, scripts: dict[str, str]) -> dict:
    for key in scripts:
        if not re.match(r"^[-._a-zA-Z0-9]+$", key):
            raise BackendError(f"invalid script name {key!r}")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(scripts_name(slug), settings, slug), "data": dict(scripts)}


def network_policy(slug: str, settings: PodSettings, bridge_ip: str, bridge_port: int) -> dict:
    """No ingress at all; egress only to the bridge (its IP /32 or /128, its TCP port)."""
    try:
        ip = ipaddress.ip_address(bridge_ip)
    except ValueError:
        raise BackendError(f"the bridge host must be an IP address for the NetworkPolicy, "
                           f"got {bridge_ip!r}") from None
    cidr = f"{ip}/{32 if ip.version == 4 else 128}"
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(volume_name(slug), settings, slug),
            "spec": {"podSelector": {"matchLabels": labels(slug)},
                     "policyTypes": ["Ingress", "Egress"], "ingress": [],
                     "egress": [{"to": [{"ipBlock": {"cidr": cidr}}],
                                 "ports": [{"protocol": "TCP", "port": int(bridge_port)}]}]}}


def _container_security(settings: PodSettings) -> dict:
    uid, gid = settings.run_as
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "privileged": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": uid, "runAsGroup": gid, "seccompProfile": {"type": "RuntimeDefault"}}


def _resources(resources: dict) -> dict:
    """{"requests": {"cpu": .., "memory": ..}, "limits": {..}} with every value checked."""
    out = {}
    for part in ("requests", "limits"):
        values = resources.get(part) or {}
        checked = {k: check_quantity(v, f"{part}.{k}") for k, v in values.items()
                   if k in ("cpu", "memory", "ephemeral-storage")}
        if len(checked) != len(values):
            raise BackendError(f"unknown resource in {part}: {sorted(set(values) - set(checked))}")
        if checked:
            out[part] = checked
    return out


def pod(slug: str, run: int, settings: PodSettings, *, image: str, agent_argv, env_names,
        bridge: str, egress: bool, seed: bool, resources: dict | None = None,
        timeout: int | None = None, proxy_port: int = 3128) -> dict:
    """The run's Pod: the `seed` init container on the first run, then the `agent` container
    (the relay in front of the agent's argv, exactly as the interface file of the design says)."""
    name = run_name(slug, run)
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        raise BackendError(f"invalid image {image!r}")
    run_files = ["--bridge", bridge, "--ca", f"{IN_SECRETS}/{CA_KEY}",
                 "--token-file", f"{IN_SECRETS}/{TOKEN_KEY}"]
    # the relay always listens there (as under bwrap, the agent is told of it only when the
    # orchestrator gave a sidecar: BOT_BOTTLE_FORGE_SOCKET); the bridge refuses it otherwise
    relay = ["python3", "-I", RELAY, "run", *run_files, "--forge-socket", f"{IN_RUN}/forge.sock"]
    if egress:
        relay += ["--proxy-port", str(int(proxy_port))]
    relay += ["--stdin", f"{IN_SECRETS}/{PROMPT_KEY}", "--", *agent_argv]
    env = []
    for key in sorted(env_names):
        if not ENV_NAME.match(key):
            raise BackendError(f"invalid variable name {key!r} for the bottle's environment")
        env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": f"env.{key}"}}})
    run_mount = {"name": "run", "mountPath": IN_SECRETS, "readOnly": True}
    scripts_mount = {"name": "scripts", "mountPath": IN_SCRIPTS, "readOnly": True}
    tmp_mount = {"name": "tmp", "mountPath": "/tmp"}
    agent = {"name": "agent", "image": image, "imagePullPolicy": "IfNotPresent",
             "command": relay, "workingDir": IN_WORKSPACE, "env": env,
             "volumeMounts": [
                 {"name": "bottle", "mountPath": IN_WORKSPACE, "subPath": "workspace"},
                 {"name": "bottle", "mountPath": IN_HOME, "subPath": "home"},
                 run_mount, scripts_mount, tmp_mount,
                 {"name": "sockets", "mountPath": IN_RUN},
                 # the agent finds its prompt where it does under bwrap and docker
                 {"name": "run", "mountPath": f"{IN_RUN}/{PROMPT_KEY}", "subPath": PROMPT_KEY,
                  "readOnly": True}],
             "securityContext": _container_security(settings),
             "resources": _resources(resources or {})}
    uid, gid = settings.run_as
    spec = {"restartPolicy": "Never", "automountServiceAccountToken": False,
            "enableServiceLinks": False, "terminationGracePeriodSeconds": settings.grace_seconds,
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid,
                                "fsGroup": gid, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [agent],
            "volumes": [
                {"name": "bottle", "persistentVolumeClaim": {"claimName": volume_name(slug)}},
                {"name": "run", "secret": {"secretName": name, "defaultMode": 0o440, "items": [
                    {"key": k, "path": k} for k in (TOKEN_KEY, CA_KEY, PROMPT_KEY)]}},
                {"name": "scripts", "configMap": {"name": scripts_name(slug), "defaultMode": 0o444}},
                {"name": "sockets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "tmp", "emptyDir": {}}]}
    if timeout is not None:
        spec["activeDeadlineSeconds"] = int(timeout)
    if seed:
        spec["initContainers"] = [{
            "name": "seed", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-I", RELAY, "seed", *run_files, "--into", IN_SEED],
            "volumeMounts": [{"name": "bottle", "mountPath": IN_SEED}, run_mount, scripts_mount,
                             tmp_mount],
            "securityContext": _container_security(settings),
            "resources": _resources(resources or {})}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, settings, slug, run),
            "spec": spec}


def volume_snapshot(slug: str, settings: PodSettings, stamp: str,
                    snapshot_class: str | None = None) -> dict:
    """A VolumeSnapshot of the bottle's PVC (snapshot.storage.k8s.io/v1)."""
    spec = {"source": {"persistentVolumeClaimName": volume_name(slug)}}
    if snapshot_class:
        spec["volumeSnapshotClassName"] = check_name(snapshot_class)
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": _meta(f"bb-{check_slug(slug)}-{stamp}", settings, slug), "spec": spec}
