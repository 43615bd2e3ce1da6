"""The kubernetes backend's settings, all from the core CLI's environment (docs/kubernetes.md
lists them), each checked before anything is created; and what the pods get from this host:
the relay script for the ConfigMap (the bottles' `cpu`/`memory` come in `RunPlan.resources`)."""

from __future__ import annotations

import ipaddress

from ..errors import BackendError
from . import kube_objects as objects
from .base import PKG_DIR
from .kube_api import KubeConfig

SCRIPTS = ("pod_relay.py",)   # from bot_bottle/gate/, into the ConfigMap (it imports nothing of ours)


def int_setting(environ, name: str, default: int, low: int = 1) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < low:
        raise BackendError(f"{name} must be a whole number >= {low}, got {raw[:40]!r}")
    return int(raw)


def settings(environ) -> tuple[objects.PodSettings, str, str]:
    """(pod settings, bridge advertise IP, bridge listen address) from the environment."""
    config = KubeConfig.from_environ(environ)   # first: without a server nothing else matters
    raw = environ.get("BOT_BOTTLE_KUBE_RUN_AS", "1000:1000")
    uid, _, gid = raw.partition(":")
    if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0 or int(gid) == 0:
        raise BackendError(f"BOT_BOTTLE_KUBE_RUN_AS must be uid:gid, both non-zero, got {raw[:40]!r}")
    host = environ.get("BOT_BOTTLE_KUBE_BRIDGE_HOST", "")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise BackendError("BOT_BOTTLE_KUBE_BRIDGE_HOST must be this host's IP address that "
                           f"pods can reach, got {host[:60]!r}") from None
    size = environ.get("BOT_BOTTLE_KUBE_VOLUME_SIZE") or "10Gi"
    objects.check_quantity(size, "BOT_BOTTLE_KUBE_VOLUME_SIZE")
    storage = environ.get("BOT_BOTTLE_KUBE_STORAGE_CLASS") or None
    if storage:
        objects.check_name(storage)
    pod = objects.PodSettings(namespace=objects.check_name(config.namespace),
                              run_as=(int(uid), int(gid)), storage_class=storage,
                              volume_size=size,
                              grace_seconds=int_setting(environ, "BOT_BOTTLE_KUBE_GRACE", 30, 0))
    return pod, host, environ.get("BOT_BOTTLE_KUBE_BRIDGE_LISTEN") or host


def scripts() -> dict[str, str]:
    """The ConfigMap's data: the in-pod relay, read from the installed package."""
    out = {}
    for name in SCRIPTS:
        path = PKG_DIR / "gate" / name
        if path.exists():
            out[name] = path.read_text(encoding="utf-8")
    if "pod_relay.py" not in out:
        raise BackendError("kubernetes: bot_bottle/gate/pod_relay.py is missing from the package")
    return out
