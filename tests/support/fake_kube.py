"""A fake Kubernetes API server for the kubernetes backend's tests: real HTTPS on 127.0.0.1 port 0
(a test CA and server certificate made by `openssl`), a bearer token checked on every request,
objects stored per kind, every object sent checked against tests/data/kubernetes/schemas.json
(`kube_schema`: unknown fields and wrong types refused like strict field validation), 404/409/
401/422 answered with Status objects, labelSelector on list and deletecollection, and a
"kubelet": a created Pod's containers run as real local processes under bwrap, with its volumes
(the PVC a local dir, the Secret's and ConfigMap's items files, emptyDirs) bound at their mount
paths, its uid/gid, and the host's network (pods dial the bridge on 127.0.0.1). Only the
scheduler, the image (the host's /usr, plus `images[name]` binds) and the CNI are not real.
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.fake_kubelet import Kubelet, kill, now as _now
from tests.support.kube_schema import Invalid, Validator

PLURALS = {"pods": ("v1", "Pod"), "secrets": ("v1", "Secret"), "configmaps": ("v1", "ConfigMap"),
           "persistentvolumeclaims": ("v1", "PersistentVolumeClaim"),
           "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy"),
           "volumesnapshots": ("snapshot.storage.k8s.io/v1", "VolumeSnapshot")}

# the release schemas.json and the contract test's client are of (tests/data/kubernetes/README.md);
# every field the real VersionInfo requires, as a 1.35 server answers
VERSION = {"major": "1", "minor": "35", "emulationMajor": "1", "emulationMinor": "35",
           "minCompatibilityMajor": "1", "minCompatibilityMinor": "34", "gitVersion": "v1.35.0-fake",
           "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2025-12-17T00:00:00Z",
           "goVersion": "go1.25.5", "compiler": "gc", "platform": "linux/amd64"}


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server cert, server key): a throw-away CA and a cert for 127.0.0.1."""
    def run(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=directory)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=fake-kube-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": "Success" if code < 400 else "Failure", "message": message,
           "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def matches(obj: dict, selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKube:
    """`with FakeKube(snapshots=True) as kube:` ... `kube.environ()` gives the backend's settings."""

    def __init__(self, *, snapshots: bool = True, namespace: str = "bots",
                 images: dict | None = None):
        self.snapshots, self.namespace = snapshots, namespace
        self.images = images or {}            # image name -> {path in pod: host dir} (read-only)
        self.store: dict[str, dict[str, dict]] = {p: {} for p in PLURALS}
        self.requests: list[tuple[str, str]] = []
        self.queries: list[tuple[str, str, list[str]]] = []   # (method, path, query parameter names)
        self.created: list[dict] = []          # every object stored, as it was stored
        self.cut_logs = 0                      # this many log streams drop after their first chunk
        self.log_marks: dict = {}              # (pod, container) -> [(time sent, file offset)]
        self.lock = threading.Condition()
        self.validator = Validator()
        self.kubelet = Kubelet(self)
        self._rv = 100
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-kube-")
        self.root = Path(self._tmp.name)
        self.ca, cert, key = make_tls(self.root)
        self.token = base64.urlsafe_b64encode(os.urandom(24)).decode()
        self.token_file = self.root / "token"
        self.token_file.write_text(self.token)
        os.chmod(self.token_file, 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for proc in list(self.kubelet.procs.values()):
            kill(proc, 0)
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
        subprocess.run(["chmod", "-R", "u+rwX", str(self.root)], capture_output=True)
        self._tmp.cleanup()

    def environ(self, **extra) -> dict:
        return {"BOT_BOTTLE_KUBE_SERVER": f"https://127.0.0.1:{self.port}",
                "BOT_BOTTLE_KUBE_CA": str(self.ca), "BOT_BOTTLE_KUBE_TOKEN_FILE": str(self.token_file),
                "BOT_BOTTLE_KUBE_NAMESPACE": self.namespace, "BOT_BOTTLE_KUBE_BRIDGE_HOST": "127.0.0.1",
                **extra}

    def names(self, plural: str) -> list[str]:
        with self.lock:
            return sorted(self.store[plural])

    def pvc_dir(self, claim: str) -> Path:
        return self.root / "pvc" / claim

    # ---- the API
    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create(self, plural: str, ns: str, obj: dict) -> tuple[int, dict]:
        api_version, kind = PLURALS[plural]
        if obj.get("kind") != kind or obj.get("apiVersion") != api_version:
            return 400, status(400, "BadRequest", f"the API version in the data ({obj.get('apiVersion')}) "
                               f"and kind ({obj.get('kind')}) do not match {api_version}/{kind}")
        try:
            self.validator.validate_kind(obj)
        except Invalid as exc:
            if exc.unknown:
                return 400, status(400, "BadRequest", f'strict decoding error: unknown field "{exc.field.lstrip(".")}"')
            return 422, _invalid(kind, obj, exc.field.lstrip("."), exc.why)
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        from bot_bottle.backend.kube_objects import DNS1123
        if not name or len(name) > 253 or not DNS1123.match(name):
            return 422, _invalid(kind, obj, "metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
        if meta.get("namespace", ns) != ns:
            return 400, status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        with self.lock:
            if name in self.store[plural]:
                return 409, status(409, "AlreadyExists", f'{plural} "{name}" already exists',
                                   {"name": name, "kind": plural})
            stored = json.loads(json.dumps(obj))
            stored["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion=self.next_rv(),
                                      creationTimestamp=_now())
            if kind == "Pod":
                stored["status"] = {"phase": "Pending"}
            if kind == "PersistentVolumeClaim":
                self.pvc_dir(name).mkdir(parents=True)
            self.store[plural][name] = stored
            self.created.append(json.loads(json.dumps(stored)))
            self.lock.notify_all()
        if kind == "Pod":
            threading.Thread(target=self.kubelet.run_pod, args=(name,), daemon=True).start()
        return 201, stored

    def delete(self, plural: str, name: str, grace: int | None) -> tuple[int, dict]:
        with self.lock:
            obj = self.store[plural].get(name)
            if obj is None:
                return 404, status(404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural})
            if plural != "pods":
                del self.store[plural][name]
                if plural == "persistentvolumeclaims":
                    shutil.rmtree(self.pvc_dir(name), ignore_errors=True)
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": name, "kind": plural, "uid": obj["metadata"]["uid"]}}
            if grace is None:
                grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
            obj["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=grace,
                                   resourceVersion=self.next_rv())
            proc = self.kubelet.procs.get(name)
        threading.Thread(target=self._remove_pod, args=(name, proc, grace), daemon=True).start()
        return 200, obj

    def _remove_pod(self, name: str, proc, grace: int) -> None:
        if proc is not None:
            kill(proc, grace)
        with self.lock:
            while name in self.kubelet.procs:   # the kubelet thread records the end first
                self.lock.wait(5)
            self.store["pods"].pop(name, None)
            self.lock.notify_all()

    # ---- the kubelet
def _invalid(kind: str, obj: dict, field: str, why: str) -> dict:
    name = (obj.get("metadata") or {}).get("name", "")
    return status(422, "Invalid", f'{kind} "{name}" is invalid: {field}: {why}',
                  {"name": name, "kind": kind, "causes": [{"reason": "FieldValueInvalid",
                                                           "message": why, "field": field}]})


def _handler(kube: FakeKube):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out as two writes: with Nagle on, a keep-alive client (the official
        # one) waits out the delayed ACK, about 40 ms per request
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n)) if n else None

        def _route(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            kube.requests.append((method, url.path))
            kube.queries.append((method, url.path, sorted(query)))
            if self.headers.get("Authorization") != f"Bearer {kube.token}":
                return self._send(401, status(401, "Unauthorized", "Unauthorized"))
            parts = url.path.strip("/").split("/")
            if url.path in ("/version", "/version/"):   # the official client asks with the slash
                return self._send(200, VERSION)
            if url.path.rstrip("/") == "/apis/snapshot.storage.k8s.io/v1":
                if not kube.snapshots:
                    return self._send(404, status(404, "NotFound", "the server could not find the requested resource"))
                return self._send(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                        "groupVersion": "snapshot.storage.k8s.io/v1",
                                        "resources": [{"name": "volumesnapshots", "namespaced": True,
                                                       "kind": "VolumeSnapshot", "singularName": "volumesnapshot",
                                                       "verbs": ["create", "delete", "deletecollection",
                                                                 "get", "list", "patch", "update", "watch"]}]})
            prefix = 2 if parts[0] == "api" else 3
            rest = parts[prefix:]
            if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in PLURALS:
                return self._send(404, status(404, "NotFound", "the server could not find the requested resource"))
            api_version = "/".join(parts[1:prefix])
            ns, plural, name = rest[1], rest[2], (rest[3] if len(rest) > 3 else None)
            if PLURALS[plural][0] != api_version or (plural == "volumesnapshots" and not kube.snapshots):
                return self._send(404, status(404, "NotFound", "the server could not find the requested resource"))
            if ns != kube.namespace:   # the token's RBAC is for its namespace only
                return self._send(403, status(403, "Forbidden", f'{plural} is forbidden in namespace "{ns}"'))
            if len(rest) == 5 and rest[4] == "log" and method == "GET" and plural == "pods":
                return self._log(name, query)
            if len(rest) > 5 or (len(rest) == 5 and (rest[4] != "status" or method != "GET")):
                return self._send(404, status(404, "NotFound", "the server could not find the requested resource"))
            if method == "POST" and name is None:
                if query.get("fieldValidation") != "Strict":
                    return self._send(400, status(400, "BadRequest", "the fake wants fieldValidation=Strict"))
                return self._send(*kube.create(plural, ns, self._body()))
            if method == "GET" and name is None:
                with kube.lock:
                    items = [o for o in kube.store[plural].values() if matches(o, query.get("labelSelector", ""))]
                    rv = str(kube._rv)
                return self._send(200, {"kind": PLURALS[plural][1] + "List", "apiVersion": api_version,
                                        "metadata": {"resourceVersion": rv}, "items": items})
            if method == "GET":
                with kube.lock:
                    obj = kube.store[plural].get(name)
                if obj is None:
                    return self._send(404, status(404, "NotFound", f'{plural} "{name}" not found',
                                                  {"name": name, "kind": plural}))
                return self._send(200, obj)
            if method == "DELETE":
                body = self._body() or {}
                if body:
                    try:
                        kube.validator.validate_kind(body)
                    except Invalid as exc:
                        return self._send(400, status(400, "BadRequest", str(exc)))
                # DeleteOptions come in the body or, from clients that send none, the query
                grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
                grace = None if grace is None else int(grace)
                if name is None:
                    with kube.lock:
                        found = [n for n, o in kube.store[plural].items() if matches(o, query.get("labelSelector", ""))]
                    deleted = [kube.delete(plural, n, grace)[1] for n in found]
                    return self._send(200, {"kind": PLURALS[plural][1] + "List", "apiVersion": api_version,
                                            "metadata": {"resourceVersion": str(kube._rv)},
                                            "items": [d for d in deleted if d.get("kind") != "Status"]})
                return self._send(*kube.delete(plural, name, grace))
            return self._send(405, status(405, "MethodNotAllowed", "the server does not allow this method"))

        def _log(self, name: str, query: dict) -> None:
            source = kube.kubelet.log_source(name, query.get("container", ""))
            if source is None:
                return self._send(400, status(400, "BadRequest",
                                              f'container "{query.get("container")}" in pod "{name}" is waiting to start'))
            path, proc = source
            if "tailLines" in query and query.get("follow") != "true":
                lines = path.read_bytes().splitlines(keepends=True)[-int(query["tailLines"]):]
                data = b"".join(lines)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            marks = kube.log_marks.setdefault((name, query.get("container", "")), [])
            start = 0
            if "sinceTime" in query:   # what was sent before that second was written before it
                since = calendar.timegm(time.strptime(query["sinceTime"], "%Y-%m-%dT%H:%M:%SZ"))
                start = max([offset for at, offset in marks if at < since], default=0)
            with kube.lock:
                cut = query.get("follow") == "true" and kube.cut_logs > 0
                kube.cut_logs -= cut
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with open(path, "rb") as fh:
                fh.seek(start)
                while True:
                    data = fh.read(65536)
                    if data:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        marks.append((time.time(), fh.tell()))
                        if cut:   # the connection drops mid-stream, as a proxy or node may
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        continue
                    if proc.poll() is not None:
                        if not (data := fh.read()):
                            break
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    elif query.get("follow") != "true":
                        break
                    else:
                        time.sleep(0.02)   # a file has no readiness to wait on: the kubelet polls too
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_DELETE(self):
            self._route("DELETE")

    return Handler
