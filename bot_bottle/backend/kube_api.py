"""A small Kubernetes REST client on urllib: JSON in and out, bearer token, TLS pinned to the
configured CA, errors as BackendError carrying the API's Status message (clipped).

Config comes from the core CLI's environment (`KubeConfig.from_environ`): BOT_BOTTLE_KUBE_SERVER,
_CA, _TOKEN_FILE, _NAMESPACE; without a server, the in-cluster service account. The token is
read from its file on each request (a projected token rotates), sent only in the Authorization
header, never logged and never put in argv or a message. Requests go to the configured server
only: no proxy from the environment, no redirects followed.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ..errors import BackendError

IN_CLUSTER = "/var/run/secrets/kubernetes.io/serviceaccount"
MESSAGE_MAX = 300
_PER_REQUEST = object()   # `_open`'s default timeout: the client's; None blocks (log streams)

# resource path segments: (group/version prefix, plural)
CORE = "/api/v1"
PATHS = {"Pod": (CORE, "pods"), "Secret": (CORE, "secrets"), "ConfigMap": (CORE, "configmaps"),
         "PersistentVolumeClaim": (CORE, "persistentvolumeclaims"),
         "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
         "VolumeSnapshot": ("/apis/snapshot.storage.k8s.io/v1", "volumesnapshots")}


@dataclass(frozen=True)
class KubeConfig:
    server: str
    ca_file: str
    token_file: str
    namespace: str

    @classmethod
    def from_environ(cls, environ) -> "KubeConfig":
        server = environ.get("BOT_BOTTLE_KUBE_SERVER", "")
        if not server:   # in a pod: the service account's files and the service's address
            host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
            if not host or not port:
                raise BackendError("kubernetes backend: BOT_BOTTLE_KUBE_SERVER is not set "
                                   "(and this is not a pod: no KUBERNETES_SERVICE_HOST)")
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        ns = environ.get("BOT_BOTTLE_KUBE_NAMESPACE")
        if not ns:
            ns = _read_small(os.path.join(IN_CLUSTER, "namespace"), "") or "default"
        parsed = urllib.parse.urlsplit(server)
        if parsed.scheme != "https" or not parsed.hostname or parsed.path not in ("", "/") \
                or parsed.query or parsed.username:
            raise BackendError(f"BOT_BOTTLE_KUBE_SERVER must be an https://host[:port] URL, "
                               f"got {server[:100]!r}")
        return cls(server=server.rstrip("/"),
                   ca_file=environ.get("BOT_BOTTLE_KUBE_CA") or os.path.join(IN_CLUSTER, "ca.crt"),
                   token_file=environ.get("BOT_BOTTLE_KUBE_TOKEN_FILE")
                   or os.path.join(IN_CLUSTER, "token"),
                   namespace=ns.strip())


def _read_small(path: str, default=None) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(4096).strip()
    except OSError:
        return default


def clip(text: str, limit: int = MESSAGE_MAX) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None   # the token goes to the configured server, nowhere else


class KubeApi:
    """Calls on one namespace. `timeout` bounds each request (not a log stream's length)."""

    def __init__(self, config: KubeConfig, timeout: float = 30.0):
        self.config = config
        self.timeout = timeout
        try:
            self._tls = ssl.create_default_context(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise BackendError(f"kubernetes: cannot load the CA file {config.ca_file}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._tls),
            _NoRedirect())

    def _token(self) -> str:
        token = _read_small(self.config.token_file)
        if not token:
            raise BackendError(f"kubernetes: cannot read the token file {self.config.token_file}")
        return token

    def path(self, kind: str, name: str | None = None) -> str:
        prefix, plural = PATHS[kind]
        base = f"{prefix}/namespaces/{urllib.parse.quote(self.config.namespace, safe='')}/{plural}"
        return base if name is None else f"{base}/{urllib.parse.quote(name, safe='')}"

    def _open(self, method: str, path: str, body=None, query=None, timeout=_PER_REQUEST):
        url = self.config.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token()}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            return self._opener.open(req, timeout=self.timeout if timeout is _PER_REQUEST else timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read(65536)
            raise ApiError(exc.code, _status_message(raw, exc.code), method, path) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"kubernetes API {self.config.server} does not answer: "
                               f"{clip(str(reason), 160)}") from None

    def call(self, method: str, path: str, body=None, query=None) -> dict:
        with self._open(method, path, body, query) as resp:
            raw = resp.read()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise BackendError(f"kubernetes: {method} {path} answered with no JSON") from None

    # the operations the backend needs
    def create(self, obj: dict) -> dict:
        return self.call("POST", self.path(obj["kind"]), obj, {"fieldValidation": "Strict"})

    def get(self, kind: str, name: str) -> dict | None:
        try:
            return self.call("GET", self.path(kind, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def delete(self, kind: str, name: str, grace: int | None = None) -> bool:
        """False when it was not there (404 is not an error for a delete)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if grace is not None:
            body["gracePeriodSeconds"] = int(grace)
        try:
            self.call("DELETE", self.path(kind, name), body)
            return True
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise

    def list(self, kind: str, label_selector: str) -> list[dict]:
        return self.call("GET", self.path(kind), query={"labelSelector": label_selector}).get("items") or []

    def delete_collection(self, kind: str, label_selector: str) -> None:
        try:
            self.call("DELETE", self.path(kind), query={"labelSelector": label_selector})
        except ApiError as exc:
            if exc.code != 404:   # 404: the API group is not served (no snapshot CRDs)
                raise

    def version(self) -> dict:
        return self.call("GET", "/version")

    def has_group_version(self, group_version: str) -> bool:
        """Whether the API serves `group/version` (e.g. snapshot.storage.k8s.io/v1)."""
        try:
            self.call("GET", f"/apis/{group_version}")
            return True
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise

    def wait_pod(self, name: str, done, deadline: float, interval: float = 0.2) -> dict:
        """Poll the pod until `done(pod)`; BackendError at the (monotonic) deadline or when
        the pod is gone."""
        while True:
            pod = self.get("Pod", name)
            if pod is None:
                raise PodGone(f"kubernetes: pod {name} is gone")
            if done(pod):
                return pod
            if time.monotonic() >= deadline:
                raise StillWaiting(f"kubernetes: pod {name} did not get there in time "
                                   f"(phase {pod.get('status', {}).get('phase')})")
            time.sleep(interval)

    def log_tail(self, name: str, container: str, lines: int = 3) -> str:
        """The container's last log lines (for an error message), '' when there are none."""
        try:
            with self._open("GET", self.path("Pod", name) + "/log",
                            query={"container": container, "tailLines": str(lines)}) as resp:
                return resp.read(4096).decode("utf-8", "replace")
        except BackendError:
            return ""

    def stream_log(self, name: str, container: str, output, since: str | None = None) -> None:
        """Follow the container's log (from `since`, an RFC 3339 time, when given), handing
        what comes to `output(bytes)` as it comes, until the server ends the stream. No read
        timeout: an agent may be silent for hours; the caller's watchdog ends a stuck run."""
        query = {"follow": "true", "container": container}
        if since:
            query["sinceTime"] = since
        with self._open("GET", self.path("Pod", name) + "/log", query=query, timeout=None) as resp:
            try:   # read1, not readline: http.client's readline takes a cut chunked stream
                while data := resp.read1(65536):   # for its end; read1 raises IncompleteRead
                    output(data)
            except (OSError, http.client.HTTPException) as exc:   # cut short (IncompleteRead, reset)
                raise BackendError(f"kubernetes: the log of pod {name} broke: "
                                   f"{clip(type(exc).__name__, 60)}") from None


class PodGone(BackendError):
    """The pod waited on no longer exists (deleted by commit or destroy)."""


class StillWaiting(BackendError):
    """The deadline of `wait_pod` passed with the pod still short of what was waited for."""


class ApiError(BackendError):
    """The API answered with an error status; `code` is the HTTP status."""

    def __init__(self, code: int, message: str, method: str, path: str):
        super().__init__(f"kubernetes API {method} {path}: {code} {message}")
        self.code = code


def _status_message(raw: bytes, code: int) -> str:
    try:
        status = json.loads(raw)
        if isinstance(status, dict) and status.get("kind") == "Status":
            return clip(status.get("message") or status.get("reason") or "")
    except ValueError:
        pass
    return {401: "Unauthorized (check the token)", 403: "Forbidden"}.get(code, "error")
