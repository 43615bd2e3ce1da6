"""The fake API server's "kubelet" (tests/support/fake_kube.py): a created Pod's containers run
as real local processes under bwrap, init containers first, with the pod's volumes bound at
their mount paths (the PVC a local directory, the Secret's and ConfigMap's items written as
files, emptyDirs fresh directories; missing sub-paths made as the real kubelet makes them), the
pod's uid/gid (`setpriv` as root, a user namespace otherwise), the env and secretKeyRefs, and the
host's network namespace (pods dial the bridge on 127.0.0.1). The image is the host's /usr, /etc
and friends plus `images[name]` binds; an unknown image waits in ErrImagePull as a real one
would. Status moves Pending → Running → Succeeded/Failed (DeadlineExceeded past
activeDeadlineSeconds) with containerStatuses as the real API reports them."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")


class Kubelet:
    def __init__(self, kube):
        self.kube = kube              # FakeKube: its store, lock, images, root
        self.store, self.lock = kube.store, kube.lock
        self.procs: dict = {}         # pod name -> the running container's process
        self.logs: dict = {}          # (pod, container) -> (log file, process)

    def run_pod(self, name: str) -> None:
        self._kubelet(name)

    def _set(self, name: str, **status_fields) -> dict | None:
        with self.lock:
            pod = self.store["pods"].get(name)
            if pod is not None:
                pod["status"].update(status_fields)
                pod["metadata"]["resourceVersion"] = self.kube.next_rv()
                self.lock.notify_all()
            return pod

    def _kubelet(self, name: str) -> None:
        with self.lock:
            pod = json.loads(json.dumps(self.store["pods"][name]))
        spec = pod["spec"]
        workdir = Path(tempfile.mkdtemp(dir=self.kube.root, prefix=f"pod-{name}-"))
        try:
            volumes = self._volumes(spec, workdir)
        except KeyError as exc:
            self._set(name, phase="Pending", reason="FailedMount", message=f"missing {exc}")
            return
        deadline = spec.get("activeDeadlineSeconds")
        started = time.monotonic()
        # as the real kubelet reports them: every container waiting until its turn
        statuses = {key: [_cstatus(c, {"waiting": {"reason": "PodInitializing"}}) for c in cs]
                    for key, cs in (("initContainerStatuses", spec.get("initContainers") or []),
                                    ("containerStatuses", spec["containers"]))}
        if not statuses["initContainerStatuses"]:
            del statuses["initContainerStatuses"]
        for key, containers in (("initContainerStatuses", spec.get("initContainers") or []),
                                ("containerStatuses", spec["containers"])):
            for i, c in enumerate(containers):
                image = c.get("image", "")
                if image not in self.kube.images:
                    statuses[key][i]["state"] = {"waiting": {"reason": "ErrImagePull",
                                                             "message": f"image {image!r} not found"}}
                    self._set(name, **statuses)
                    return
                log = workdir / f"{c['name']}.log"
                argv, env = self._argv(spec, c, volumes, image), self._env(c)
                with open(log, "wb") as out:
                    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                with self.lock:
                    self.procs[name] = proc
                    self.logs[(name, c["name"])] = (log, proc)
                entry = statuses[key][i] = _cstatus(c, {"running": {"startedAt": now()}})
                phase = "Running" if key == "containerStatuses" else "Pending"
                self._set(name, phase=phase, **statuses)
                left = None if deadline is None else max(0.0, deadline - (time.monotonic() - started))
                try:
                    rc = proc.wait(timeout=left)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    kill(proc, spec.get("terminationGracePeriodSeconds", 30))
                    rc, timed_out = proc.wait(), True
                code = 128 - rc if rc < 0 else rc
                entry["state"] = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed",
                                                 "startedAt": entry["state"]["running"]["startedAt"],
                                                 "finishedAt": now()}}
                with self.lock:
                    self.procs.pop(name, None)
                    self.lock.notify_all()
                if timed_out:
                    self._set(name, phase="Failed", reason="DeadlineExceeded",
                              message="Pod was active on the node longer than the specified deadline", **statuses)
                    return
                if code != 0 or key == "containerStatuses":
                    self._set(name, phase="Succeeded" if code == 0 else "Failed", **statuses)
                    if code != 0:
                        return

    def _volumes(self, spec: dict, workdir: Path) -> dict[str, Path]:
        uid, gid = _ids(spec, {})
        out = {}
        for v in spec.get("volumes") or []:
            path = workdir / "volumes" / v["name"]
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                with self.lock:
                    if claim not in self.store["persistentvolumeclaims"]:
                        raise KeyError(f"persistentvolumeclaim {claim}")
                path = self.kube.pvc_dir(claim)
                _own(path, 0, spec.get("securityContext", {}).get("fsGroup", gid), 0o2775)
            elif "secret" in v or "configMap" in v:
                src = v.get("secret") or v["configMap"]
                plural, ref = ("secrets", src.get("secretName")) if "secret" in v else ("configmaps", src["name"])
                with self.lock:
                    obj = self.store[plural].get(ref)
                if obj is None:
                    raise KeyError(f"{plural} {ref}")
                data = {k: base64.b64decode(x) for k, x in (obj.get("data") or {}).items()} \
                    if plural == "secrets" else {k: x.encode() for k, x in (obj.get("data") or {}).items()}
                path.mkdir(parents=True)
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    (path / item["path"]).write_bytes(data[item["key"]])
                    _own(path / item["path"], 0, spec.get("securityContext", {}).get("fsGroup", gid),
                         item.get("mode", src.get("defaultMode", 0o644)))
                _own(path, 0, gid, 0o755)
            elif "emptyDir" in v:
                path.mkdir(parents=True)
                os.chmod(path, 0o777)
            else:
                raise KeyError(f"volume type of {v['name']}")
            out[v["name"]] = path
        return out

    def _argv(self, spec: dict, c: dict, volumes: dict, image: str) -> list[str]:
        uid, gid = _ids(spec, c.get("securityContext") or {})
        root = os.getuid() == 0
        argv = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--perms", "0755", "--dir", "/run"]
        if not root:
            argv += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]
        for d in SYSTEM:
            if d == "/etc":   # entry by entry, so the pod's own mounts can go under /etc too,
                argv += ["--perms", "0755", "--dir", "/etc"]   # as an image's layer allows
                for entry in sorted(os.listdir("/etc")):
                    path = os.path.join("/etc", entry)
                    try:   # -try: a file the host replaces meanwhile (useradd's /etc/shadow+) may go
                        argv += ["--symlink", os.readlink(path), path] if os.path.islink(path) \
                            else ["--ro-bind-try", path, path]
                    except OSError:   # gone (or no longer a link) between listdir and here
                        continue
            elif os.path.exists(d):
                argv += ["--ro-bind", d, d]
        points = [*self.kube.images[image], *(m["mountPath"] for m in c.get("volumeMounts") or [])]
        made = set(SYSTEM) | {"/run", "/tmp", "/proc", "/dev"}
        for point in points:   # as root, bwrap would make the parents 0700: root's alone
            parts = point.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                parent = "/" + "/".join(parts[:i])
                bound = any(parent.startswith(s + "/") for s in SYSTEM) and \
                    (not parent.startswith("/etc/") or os.path.lexists(parent))
                if parent not in made and not bound:
                    made.add(parent)
                    argv += ["--perms", "0755", "--dir", parent]
        for dst, src in self.kube.images[image].items():
            argv += ["--ro-bind", str(src), dst]
        for m in c.get("volumeMounts") or []:
            src = volumes[m["name"]]
            if m.get("subPath"):
                src = src / m["subPath"]
                if not src.exists():   # the kubelet makes a missing subPath as a directory
                    src.mkdir(parents=True)
                    _own(src, uid, gid, 0o2775)
            argv += ["--ro-bind" if m.get("readOnly") else "--bind", str(src), m["mountPath"]]
        argv += ["--chdir", c.get("workingDir") or "/", "--"]
        if root:
            argv += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        return argv + list(c.get("command") or []) + list(c.get("args") or [])

    def _env(self, c: dict) -> dict:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        for var in c.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                with self.lock:
                    data = self.store["secrets"][ref["name"]]["data"]
                env[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def log_source(self, name: str, container: str):
        with self.lock:
            return self.logs.get((name, container))



def _ids(spec: dict, csc: dict) -> tuple[int, int]:
    psc = spec.get("securityContext") or {}
    return (csc.get("runAsUser", psc.get("runAsUser", 0)), csc.get("runAsGroup", psc.get("runAsGroup", 0)))


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    if os.getuid() == 0:
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def kill(proc: subprocess.Popen, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _cstatus(c: dict, state: dict) -> dict:
    return {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": "running" in state,
            "restartCount": 0, "started": "running" in state, "state": state}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
