"""The kubernetes backend: a bottle is a PVC in a configured namespace, each run a Pod on it.

Objects and their shapes are `kube_objects`'s, API calls `kube_api`'s, the host end of the
pod's connections `kube_bridge`'s (TLS, the run's token; the sidecar, the egress gate and the
seed stay on this host). One run: the bridge starts, then the ConfigMap (relay script),
NetworkPolicy (egress to the bridge only), Secret and Pod are made; the agent's log is streamed
into `output` as it comes; its exit code is the `agent` container's terminated.exitCode; the
Pod and Secret are deleted and the bridge closed whatever happened. The first run seeds the PVC
from the host-prepared bottle dir (init container `seed`); later runs find it there.

`on_pid` gets this process's own pid (the CLI streaming the run): it is alive exactly as long
as the run is followed, which is what `list` and `resume` ask of a pid; `commit` and `destroy`
never signal it here (they delete the Pod, and the stream here ends on its own).
freeze: the Pod is deleted with its grace period (the agent's SIGTERM handler runs), the PVC is
kept, a VolumeSnapshot is made where the API serves snapshot.storage.k8s.io/v1, and the host's
copy of the seed is archived as the other backends' `latest.tar` (which `resume` requires).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from pathlib import Path

from ..errors import BackendError
from . import kube_objects as objects
from .base import EGRESS_SOCKET, IN_RUN, RunPlan, snapshot
from .bwrap import BwrapBackend
from .kube_api import ApiError, KubeApi, KubeConfig, PodGone, StillWaiting, clip
from .kube_settings import int_setting, scripts, settings
from .sandbox import SandboxExit
from .snapshot import snapshot_cap

SNAPSHOT_GV = "snapshot.storage.k8s.io/v1"
STOPPED_EXIT = 143
API_LOST = 300   # seconds the API may stay unreachable while an agent runs
# a container waiting for one of these will not start by itself
STUCK = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError", "RunContainerError")
KINDS_BY_LABEL = ("Pod", "Secret", "ConfigMap", "NetworkPolicy", "PersistentVolumeClaim")


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def _container(pod: dict, name: str, init: bool = False) -> dict:
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in (pod.get("status") or {}).get(key) or []:
        if status.get("name") == name:
            return status.get("state") or {}
    return {}


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, environ: dict):
        self.environ = environ
        self._files = BwrapBackend(environ)   # the host-side preparation of the seed is shared
        self._api: KubeApi | None = None

    def api(self) -> KubeApi:
        if self._api is None:
            self._api = KubeApi(KubeConfig.from_environ(self.environ))
        return self._api

    def check(self) -> None:
        """Settings present and the API answering for our namespace (token, CA, RBAC)."""
        settings(self.environ)
        try:
            self.api().list("Pod", f"{objects.MANAGED_BY[0]}={objects.MANAGED_BY[1]}")
        except ApiError as exc:
            raise BackendError(f"the kubernetes API refuses us ({clip(str(exc), 200)}); check "
                               "BOT_BOTTLE_KUBE_TOKEN_FILE, the namespace and the Role") from None

    def locate(self, plan: RunPlan, program: str) -> None:
        return None   # the program is in the image, which only the cluster can see

    def create(self, plan: RunPlan, sources: list, workspace: Path | None = None) -> None:
        pod_settings = settings(self.environ)[0]
        self._files.create(plan, sources, workspace)
        self.api().create(objects.pvc(plan.slug, pod_settings))

    def mounts(self, plan: RunPlan) -> list[dict]:
        claim = objects.volume_name(plan.slug)
        return [{"src": f"pvc:{claim}/workspace", "dst": "/workspace", "mode": "rw"},
                {"src": f"pvc:{claim}/home", "dst": "/home/agent", "mode": "rw"},
                {"src": f"secret:{claim}-run-N/prompt.txt", "dst": f"{IN_RUN}/prompt.txt", "mode": "ro"},
                {"src": f"configmap:{objects.scripts_name(plan.slug)}", "dst": objects.IN_SCRIPTS,
                 "mode": "ro"}]

    def command(self, plan: RunPlan) -> list[str]:
        """The agent container's command, for --dry-run (the bridge's address is per run)."""
        return self._pod(plan, 1, "BRIDGE:PORT", seed=False, settings_=None)["spec"][
            "containers"][0]["command"]

    def _pod(self, plan: RunPlan, run: int, bridge: str, seed: bool, settings_) -> dict:
        pod_settings = settings_ or objects.PodSettings(namespace="default")
        return objects.pod(plan.slug, run, pod_settings, image=plan.image or "python:3-slim",
                           agent_argv=plan.agent_argv, env_names=plan.env, bridge=bridge,
                           egress=plan.network == "egress", seed=seed,
                           resources=self._resources(plan), timeout=plan.timeout)

    @staticmethod
    def _resources(plan: RunPlan) -> dict:
        """The bottles' `cpu` and `memory` (manifest), as the pod's requests and limits."""
        found = plan.resources
        return {"requests": dict(found), "limits": dict(found)} if found else {}

    def _run_number(self, plan: RunPlan) -> int:
        try:
            meta = json.loads((plan.state_dir / "metadata.json").read_text(encoding="utf-8"))
            return max(1, int((meta.get("session") or {}).get("runs") or 1))
        except (OSError, ValueError, TypeError):
            return 1

    def _replace(self, obj: dict) -> None:
        self.api().delete(obj["kind"], obj["metadata"]["name"])
        self.api().create(obj)

    def run(self, plan: RunPlan, on_pid, output) -> SandboxExit:
        from .kube_bridge import Bridge   # helper K2's module: the host end of the pod's links
        pod_settings, host, listen = settings(self.environ)
        api, run = self.api(), self._run_number(plan)
        seeded = plan.state_dir / "kube-seeded"
        seed = not seeded.exists()
        name = objects.run_name(plan.slug, run)
        bridge = Bridge(plan.state_dir, listen_host=listen, advertise_host=host,
                        forge_socket=plan.forge_socket,
                        egress_socket=str(plan.state_dir / EGRESS_SOCKET)
                        if plan.network == "egress" else None,
                        seed_dir=plan.state_dir / "bottle" if seed else None)
        try:
            info = bridge.start()
            self._replace(objects.config_map(plan.slug, pod_settings, scripts()))
            self._replace(objects.network_policy(plan.slug, pod_settings, info.host, info.port))
            prompt = plan.stdin.read_bytes() if plan.stdin else b""
            api.create(objects.secret(plan.slug, run, pod_settings, env=plan.env,
                                      token=info.token, ca_pem=info.ca_pem, prompt=prompt))
            api.create(self._pod(plan, run, f"{info.host}:{info.port}", seed, pod_settings))
            return self._follow(name, plan, seed, seeded, output, on_pid)
        except BackendError:
            if seed and not seeded.exists():   # a first run that never started: the CLI
                self._forget(plan.slug)        # removes the bottle's state, so its objects go too
            raise
        finally:
            try:
                if api.delete("Pod", name, grace=0):
                    self._gone(name, 30)   # the volume is free for the next pod once it is
                api.delete("Secret", name)
            finally:
                bridge.close()

    def _gone(self, name: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        while self.api().get("Pod", name) is not None:
            if time.monotonic() >= deadline:
                raise BackendError(f"kubernetes: pod {name} was not removed in {wait:.0f} s")
            time.sleep(0.2)

    def _forget(self, slug: str) -> None:
        try:
            self.destroy(Path(), slug)
        except BackendError:
            pass   # the error that got us here is the one to report

    def _follow(self, name: str, plan: RunPlan, seed: bool, seeded: Path, output,
                on_pid) -> SandboxExit:
        api = self.api()
        start_by = time.monotonic() + int_setting(self.environ, "BOT_BOTTLE_KUBE_START_TIMEOUT", 300)
        try:
            pod = api.wait_pod(name, self._started, start_by)
        except PodGone:   # deleted before the agent started (the lock kept commit out: a human)
            return SandboxExit(STOPPED_EXIT)
        init = _container(pod, "seed", init=True).get("terminated")
        agent = _container(pod, "agent")
        if not (agent.get("running") or agent.get("terminated")):   # the seed failed, or the
            # pod failed before the agent ran (its status then says `waiting: PodInitializing`)
            code = (init or {}).get("exitCode")
            if code is None:
                raise BackendError(f"kubernetes: pod {name} failed before the agent started: "
                                   f"{_reason(pod)}")
            said = (init or {}).get("message") or api.log_tail(name, "seed")
            raise BackendError(f"kubernetes: pod {name}: the seed exited {code}: {clip(said, 200)}")
        if seed:
            seeded.write_text("")
        # the lock `run_agent` holds until now kept commit and destroy out while the pod started
        on_pid(os.getpid())
        expired = threading.Event()
        watchdog = None
        if plan.timeout is not None:   # the pod's deadline is the cluster's; this one is ours,
            def expire():              # should the cluster not act on it
                expired.set()
                try:
                    api.delete("Pod", name, grace=0)
                except BackendError:
                    pass
            watchdog = threading.Timer(plan.timeout + settings(self.environ)[0].grace_seconds + 60,
                                       expire)
            watchdog.daemon = True
            watchdog.start()
        try:
            pod = self._stream(name, output)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if pod is None:   # deleted under us: by commit (a stop), or by our own watchdog
            return SandboxExit(STOPPED_EXIT, timed_out=expired.is_set())
        status = pod.get("status") or {}
        timed_out = status.get("reason") == "DeadlineExceeded"
        term = _container(pod, "agent").get("terminated") or {}
        code = term.get("exitCode")
        if code is None:
            code = STOPPED_EXIT if timed_out else 1
        return SandboxExit(int(code), timed_out)

    def _stream(self, name: str, output) -> dict | None:
        """Follow the agent's log until its pod has ended; the ended pod, None when it is gone.
        A stream that breaks while the agent runs is followed again from the second of the
        last line received (so a line may repeat, none is lost), after a line saying so. An
        API that stays unreachable for `API_LOST` seconds ends the run with a BackendError."""
        api = self.api()
        since, last, lines, lost_since = None, [time.time()], [0], None

        def seen(line: bytes) -> None:
            last[0] = time.time()
            lines[0] += 1
            output(line)

        while True:
            problem, before = None, lines[0]
            try:
                api.stream_log(name, "agent", seen, since=since)
            except PodGone:
                return None
            except BackendError as exc:
                problem = exc
            try:   # after a clean end the kubelet reports the exit shortly after the log's
                return api.wait_pod(name, _ended, time.monotonic() + (1 if problem else 30))
            except PodGone:
                return None
            except StillWaiting:
                pass   # the agent runs on: follow its log again
            except BackendError as exc:
                problem = exc
            if problem is None or lines[0] > before:   # the API answers, or the log moved on
                lost_since = None
            if problem is not None:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > API_LOST:
                    raise BackendError(f"kubernetes: lost the agent's pod {name}: {problem}")
                time.sleep(1)
            since = _dt.datetime.fromtimestamp(int(last[0]), _dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            output(b"\n--- bot-bottle: the log stream broke; following it again ---\n")

    @staticmethod
    def _started(pod: dict) -> bool:
        """The agent container runs or ran, or the pod will not get there (stuck or failed)."""
        status = pod.get("status") or {}
        if status.get("phase") in ("Running", "Succeeded", "Failed"):
            return True
        for key in ("initContainerStatuses", "containerStatuses"):
            for st in status.get(key) or []:
                reason = ((st.get("state") or {}).get("waiting") or {}).get("reason")
                if reason in STUCK:
                    raise BackendError(f"kubernetes: pod {(pod.get('metadata') or {}).get('name')} "
                                       f"cannot start: {reason}: "
                                       f"{clip(st['state']['waiting'].get('message') or '', 160)}")
        return False

    def freeze(self, state_dir: Path, pid) -> None:
        cap = snapshot_cap(self.environ)   # a bad setting fails before the bottle is stopped
        slug = objects.check_slug(state_dir.name)
        pod_settings = settings(self.environ)[0]
        api, sel = self.api(), objects.selector(slug)
        for pod in api.list("Pod", sel):
            api.delete("Pod", pod["metadata"]["name"], grace=pod_settings.grace_seconds)
        deadline = time.monotonic() + pod_settings.grace_seconds + 30
        while api.list("Pod", sel):
            if time.monotonic() >= deadline:
                raise BackendError(f"kubernetes: the pods of {slug} did not stop in time")
            time.sleep(0.2)
        api.delete_collection("Secret", sel)
        if api.has_group_version(SNAPSHOT_GV):
            api.create(objects.volume_snapshot(slug, pod_settings, _stamp(),
                                               self.environ.get("BOT_BOTTLE_KUBE_SNAPSHOT_CLASS")))
        snapshot(state_dir / "bottle", state_dir / "snapshots" / "latest.tar", cap)

    def restore(self, state_dir: Path) -> None:
        """Nothing to fetch: the PVC holds the bottle; the next run's pod mounts it again."""

    def destroy(self, state_dir: Path, slug: str, pid=None) -> None:
        api, sel = self.api(), objects.selector(slug)
        for kind in KINDS_BY_LABEL:
            api.delete_collection(kind, sel)
        if api.has_group_version(SNAPSHOT_GV):
            api.delete_collection("VolumeSnapshot", sel)


def _ended(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _reason(pod: dict) -> str:
    status = pod.get("status") or {}
    return clip(f"{status.get('phase')} {status.get('reason') or ''} {status.get('message') or ''}", 160)
