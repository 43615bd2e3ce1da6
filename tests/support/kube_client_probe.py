"""Holds the fake API server and our objects to the official Kubernetes Python client.

Run by the python of .ci/kube-client/ (the venv .ci/kube-client.sh makes), never by the suite's
interpreter and never imported by bot-bottle: `python kube_client_probe.py INPUT.json`, where the
input (written by tests/unit/test_kube_client_contract.py) names the fake's URL, CA, token file
and namespace, our objects as kube_objects builds them, and schemas.json. Three checks, one JSON
report on stdout, exit 1 on any failure:
- `api`: CoreV1Api, NetworkingV1Api and CustomObjectsApi create, read, list by label selector,
  delete and deletecollection each kind the backend uses on the fake, read a pod's status and
  log, and get its errors as the client expects them (ApiException 404 / 409 with a Status body);
  every object the fake answers is also held to the client's model (unknown fields, types).
- `objects`: each of our objects deserialized into its official model and serialized back: a key
  the model drops is a field the real API does not know, a changed value a wrong type.
- `schemas`: every definition of schemas.json against the generated model's `openapi_types` and
  `attribute_map` (made from the real OpenAPI spec): property names, types, required.
"""

from __future__ import annotations

import datetime
import inspect
import json
import re
import sys
import time

import kubernetes
from dateutil import parser as dateparser
from kubernetes import client
from kubernetes.client.rest import ApiException

# definitions with no model of their own: the client's type for them
SCALARS = {"io.k8s.apimachinery.pkg.api.resource.Quantity": "str",
           "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "object",
           "io.k8s.apimachinery.pkg.apis.meta.v1.Time": "datetime"}
OPEN = "<open object>"   # schemas.json's deliberate reduction: an object not checked inside
KIND_MODELS = {"Pod": "V1Pod", "Secret": "V1Secret", "ConfigMap": "V1ConfigMap",
               "PersistentVolumeClaim": "V1PersistentVolumeClaim", "NetworkPolicy": "V1NetworkPolicy",
               "Status": "V1Status"}


class Probe:
    def __init__(self, spec: dict):
        self.spec = spec
        self.failures: list[str] = []
        cfg = client.Configuration()
        cfg.host = spec["server"]
        cfg.ssl_ca_cert = spec["ca"]
        with open(spec["token_file"], encoding="utf-8") as fh:
            cfg.api_key = {"authorization": fh.read().strip()}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.ns = spec["namespace"]

    def fail(self, what: str) -> None:
        self.failures.append(what)

    # ---- deserialize into the official model and back
    def model(self, data, klass: str):
        return self.api._ApiClient__deserialize(data, klass)

    def roundtrip(self, data: dict, klass: str, label: str) -> list[str]:
        """What the model loses or changes of `data`; each is recorded as a failure."""
        try:
            back = self.api.sanitize_for_serialization(self.model(json.loads(json.dumps(data)), klass))
        except (ValueError, TypeError, AttributeError) as exc:
            problems = [f"{label}: the {klass} model refuses it: {exc}"]
        else:
            problems = [f"{label} ({klass}): {p}" for p in diff(data, back, "")]
        for p in problems:
            self.fail(p)
        return problems

    def raw(self, call, *args, **kw) -> dict:
        """An API call's answer as the server sent it, before the client makes a model of it."""
        resp = call(*args, _preload_content=False, **kw)
        return json.loads(resp.data)

    # ---- the API against the fake
    def run_api(self) -> dict:
        out = {}
        label = self.spec["selector"]
        objs = {o["kind"]: o for o in self.spec["api_objects"]}
        core = [("PersistentVolumeClaim", "persistent_volume_claim"), ("Secret", "secret"),
                ("ConfigMap", "config_map")]
        for kind, snake in core:
            out[kind] = self.crud(kind, objs[kind],
                                  create=getattr(self.core, f"create_namespaced_{snake}"),
                                  read=getattr(self.core, f"read_namespaced_{snake}"),
                                  listing=getattr(self.core, f"list_namespaced_{snake}"),
                                  delete=getattr(self.core, f"delete_namespaced_{snake}"),
                                  collection=getattr(self.core, f"delete_collection_namespaced_{snake}"),
                                  label=label)
        out["NetworkPolicy"] = self.crud(
            "NetworkPolicy", objs["NetworkPolicy"], create=self.net.create_namespaced_network_policy,
            read=self.net.read_namespaced_network_policy, listing=self.net.list_namespaced_network_policy,
            delete=self.net.delete_namespaced_network_policy,
            collection=self.net.delete_collection_namespaced_network_policy, label=label)
        out["VolumeSnapshot"] = self.snapshots(objs["VolumeSnapshot"], label)
        out["Pod"] = self.pod(objs["Pod"], label)
        out["errors"] = self.errors(objs["ConfigMap"])
        out["discovery"] = self.discovery()
        out["accepted"] = self.accept()
        return out

    def accept(self) -> list:
        """Each of our objects, sent by the client as its model, is accepted by the fake's strict
        validation (then removed by the bottle's selector, as `destroy` does)."""
        creators = {"PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
                    "Secret": self.core.create_namespaced_secret, "ConfigMap": self.core.create_namespaced_config_map,
                    "NetworkPolicy": self.net.create_namespaced_network_policy,
                    "Pod": self.core.create_namespaced_pod}
        accepted = []
        for item in self.spec["objects"]:
            obj = item["object"]
            try:
                if obj["kind"] == "VolumeSnapshot":
                    self.custom.create_namespaced_custom_object("snapshot.storage.k8s.io", "v1", self.ns,
                                                                "volumesnapshots", obj, field_validation="Strict")
                else:
                    creators[obj["kind"]](self.ns, self.model(json.loads(json.dumps(obj)), KIND_MODELS[obj["kind"]]),
                                          field_validation="Strict")
                accepted.append(item["label"])
            except ApiException as exc:
                self.fail(f"{item['label']}: the fake refused what the client sent: {exc.status} {exc.body}")
        for selector in self.spec["plan_selectors"]:
            for collection in (self.core.delete_collection_namespaced_persistent_volume_claim,
                               self.core.delete_collection_namespaced_secret,
                               self.core.delete_collection_namespaced_config_map,
                               self.net.delete_collection_namespaced_network_policy,
                               self.core.delete_collection_namespaced_pod):
                collection(self.ns, label_selector=selector)
            self.custom.delete_collection_namespaced_custom_object(
                "snapshot.storage.k8s.io", "v1", self.ns, "volumesnapshots", label_selector=selector)
        deadline = time.monotonic() + 30
        while self.core.list_namespaced_pod(self.ns).items and time.monotonic() < deadline:
            time.sleep(0.05)   # pods leave once the kubelet has let them go
        return accepted

    def discovery(self) -> dict:
        """/version and the snapshot group's resource list, as the client's models hold them."""
        version = self.raw(client.VersionApi(self.api).get_code)
        self.roundtrip(version, "VersionInfo", "/version")
        resources = self.raw(self.custom.get_api_resources, "snapshot.storage.k8s.io", "v1")
        self.roundtrip(resources, "V1APIResourceList", "/apis/snapshot.storage.k8s.io/v1")
        return {"version": version.get("gitVersion"),
                "snapshot_resources": [r.get("name") for r in resources.get("resources", ())]}

    def crud(self, kind, obj, *, create, read, listing, delete, collection, label) -> dict:
        ns, klass = self.ns, KIND_MODELS[kind]
        name = obj["metadata"]["name"]
        body = self.model(json.loads(json.dumps(obj)), klass)   # sent as the client's model
        made = create(ns, body, field_validation="Strict")
        if made.metadata.name != name or not made.metadata.uid:
            self.fail(f"{kind}: create answered {made.metadata.name!r} uid {made.metadata.uid!r}")
        self.roundtrip(self.raw(read, name, ns), klass, f"{kind} as the fake answers it")
        got = read(name, ns)
        if got.metadata.labels != obj["metadata"]["labels"]:
            self.fail(f"{kind}: read back labels {got.metadata.labels}")
        listed = listing(ns, label_selector=label)
        names = sorted(i.metadata.name for i in listed.items)
        self.roundtrip(self.raw(listing, ns, label_selector=label), klass + "List", f"{kind}List")
        if names != [name] or listed.metadata.resource_version is None:
            self.fail(f"{kind}: list by {label} gave {names}")
        other = listing(ns, label_selector="bot-bottle/slug=nobody").items
        if other:
            self.fail(f"{kind}: a selector matching nothing listed {len(other)}")
        deleted = self.raw(delete, name, ns)   # the deleted object, or a Status when it is gone
        answer = KIND_MODELS.get(deleted.get("kind"), f"<{deleted.get('kind')}>")
        self.roundtrip(deleted, answer, f"{kind} delete's answer")
        if self.exists(read, name):
            self.fail(f"{kind}: still there after delete")
        create(ns, body, field_validation="Strict")
        self.roundtrip(self.raw(collection, ns, label_selector=label), klass + "List",
                       f"{kind} deletecollection's answer")
        left = [i.metadata.name for i in listing(ns).items]
        if left:
            self.fail(f"{kind}: deletecollection by {label} left {left}")
        return {"created": name, "listed": names, "delete_answer": deleted.get("kind")}

    def exists(self, read, name, *args) -> bool:
        try:
            read(name, self.ns, *args)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def snapshots(self, obj: dict, label: str) -> dict:
        group, version = obj["apiVersion"].split("/")
        ns, plural, name = self.ns, "volumesnapshots", obj["metadata"]["name"]
        made = self.custom.create_namespaced_custom_object(group, version, ns, plural, obj,
                                                           field_validation="Strict")
        got = self.custom.get_namespaced_custom_object(group, version, ns, plural, name)
        if made["metadata"]["name"] != name or got["spec"] != obj["spec"]:
            self.fail(f"VolumeSnapshot: read back {got}")
        listed = self.custom.list_namespaced_custom_object(group, version, ns, plural, label_selector=label)
        names = [i["metadata"]["name"] for i in listed["items"]]
        if names != [name] or listed.get("kind") != "VolumeSnapshotList":
            self.fail(f"VolumeSnapshot: list gave {listed.get('kind')} {names}")
        self.custom.delete_namespaced_custom_object(group, version, ns, plural, name)
        try:
            self.custom.get_namespaced_custom_object(group, version, ns, plural, name)
            self.fail("VolumeSnapshot: still there after delete")
        except ApiException as exc:
            if exc.status != 404:
                self.fail(f"VolumeSnapshot: read after delete gave {exc.status}")
        self.custom.create_namespaced_custom_object(group, version, ns, plural, obj, field_validation="Strict")
        self.custom.delete_collection_namespaced_custom_object(group, version, ns, plural, label_selector=label)
        left = self.custom.list_namespaced_custom_object(group, version, ns, plural)["items"]
        if left:
            self.fail(f"VolumeSnapshot: deletecollection left {len(left)}")
        return {"created": name, "listed": names}

    def pod(self, obj: dict, label: str) -> dict:
        ns, name = self.ns, obj["metadata"]["name"]
        self.core.create_namespaced_pod(ns, self.model(json.loads(json.dumps(obj)), "V1Pod"),
                                        field_validation="Strict")
        deadline = time.monotonic() + 30
        while True:   # the API has no event for this but a watch, which the fake does not serve
            status = self.core.read_namespaced_pod_status(name, ns).status
            if status.phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.roundtrip(self.raw(self.core.read_namespaced_pod, name, ns), "V1Pod", "Pod as the fake answers it")
        term = status.container_statuses[0].state.terminated if status.container_statuses else None
        if status.phase != "Succeeded" or term is None or term.exit_code != 0 \
                or not isinstance(term.finished_at, datetime.datetime):
            self.fail(f"Pod: ended {status.phase} {term}")
        log = self.core.read_namespaced_pod_log(name, ns, container=obj["spec"]["containers"][0]["name"])
        if log != self.spec["pod_log"]:
            self.fail(f"Pod: log {log!r}")
        listed = [p.metadata.name for p in self.core.list_namespaced_pod(ns, label_selector=label).items]
        # the client sends DeleteOptions as query parameters (ours sends a body): both are the API's
        deleted = self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        if not isinstance(deleted, client.V1Pod) or deleted.metadata.deletion_timestamp is None \
                or deleted.metadata.deletion_grace_period_seconds != 0:
            self.fail(f"Pod: delete with gracePeriodSeconds=0 answered {type(deleted).__name__} "
                      f"{deleted.metadata.deletion_timestamp} grace {deleted.metadata.deletion_grace_period_seconds}")
        deadline = time.monotonic() + 30
        while self.exists(self.core.read_namespaced_pod, name) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.core.delete_collection_namespaced_pod(ns, label_selector=label)
        left = [p.metadata.name for p in self.core.list_namespaced_pod(ns).items]
        if left or listed != [name]:
            self.fail(f"Pod: listed {listed}, left {left}")
        return {"phase": status.phase, "exit_code": term.exit_code if term else None, "log": log,
                "listed": listed}

    def errors(self, cm: dict) -> dict:
        out = {}
        try:
            self.core.read_namespaced_config_map("no-such-object", self.ns)
            self.fail("a missing object was read")
        except ApiException as exc:
            out["missing"] = self.status_of(exc, 404, "NotFound")
        body = self.model(json.loads(json.dumps(cm)), "V1ConfigMap")
        self.core.create_namespaced_config_map(self.ns, body, field_validation="Strict")
        try:
            self.core.create_namespaced_config_map(self.ns, body, field_validation="Strict")
            self.fail("a duplicate was created")
        except ApiException as exc:
            out["duplicate"] = self.status_of(exc, 409, "AlreadyExists")
        unknown = dict(json.loads(json.dumps(cm)), colour="red")
        unknown["metadata"]["name"] += "-unknown"
        try:   # a dict goes out as it is: the server's strict validation must refuse the field
            self.core.create_namespaced_config_map(self.ns, unknown, field_validation="Strict")
            self.fail("an unknown field was accepted")
        except ApiException as exc:
            out["unknown_field"] = self.status_of(exc, 400, "BadRequest")
        invalid = json.loads(json.dumps(cm))
        invalid["metadata"]["name"] = "Not_A_Name"
        try:
            self.core.create_namespaced_config_map(self.ns, invalid, field_validation="Strict")
            self.fail("an invalid name was accepted")
        except ApiException as exc:
            out["invalid"] = self.status_of(exc, 422, "Invalid")
        wrong = client.Configuration()
        wrong.host, wrong.ssl_ca_cert = self.spec["server"], self.spec["ca"]
        wrong.api_key, wrong.api_key_prefix = {"authorization": "not-the-token"}, {"authorization": "Bearer"}
        try:
            client.CoreV1Api(client.ApiClient(wrong)).list_namespaced_config_map(self.ns)
            self.fail("a wrong token was accepted")
        except ApiException as exc:
            out["unauthorized"] = self.status_of(exc, 401, "Unauthorized")
        self.core.delete_namespaced_config_map(cm["metadata"]["name"], self.ns)
        try:
            self.core.delete_namespaced_config_map("no-such-object", self.ns)
            self.fail("deleting a missing object succeeded")
        except ApiException as exc:
            out["delete_missing"] = self.status_of(exc, 404, "NotFound")
        return out

    def status_of(self, exc: ApiException, code: int, reason: str) -> dict:
        try:
            body = json.loads(exc.body)
        except (TypeError, ValueError):
            self.fail(f"{code}: the error body is not JSON: {exc.body!r}")
            return {}
        self.roundtrip(body, "V1Status", f"Status {code}")
        st = self.model(body, "V1Status")
        if (exc.status, exc.reason is not None, st.kind, st.status, st.code, st.reason) != \
                (code, True, "Status", "Failure", code, reason) or not st.message:
            self.fail(f"{code}: got {exc.status} {st}")
        return {"status": exc.status, "reason": st.reason, "message": st.message}

    # ---- our objects
    def run_objects(self) -> list:
        out = []
        for item in self.spec["objects"]:
            obj = item["object"]
            klass = KIND_MODELS.get(obj["kind"])
            if klass is None:   # the CRD has no model in the client: held to the CRD instead
                continue
            out.append({"label": item["label"], "model": klass,
                        "problems": self.roundtrip(obj, klass, item["label"])})
        return out

    # ---- schemas.json against the generated models
    def run_operations(self) -> list:
        return operations()

    def run_schemas(self) -> dict:
        with open(self.spec["schemas"], encoding="utf-8") as fh:
            defs = json.load(fh)["definitions"]
        reductions = set(self.spec.get("reductions", ()))
        checked, skipped = [], []
        for name, schema in sorted(defs.items()):
            if "properties" not in schema or name in SCALARS:
                continue
            if ".snapshot." in name:
                skipped.append(name)
                continue
            klass = model_class(name)
            if klass is None:
                self.fail(f"schemas.json {name}: no model in the client")
                continue
            checked.append(f"{name} = {klass.__name__}")
            by_json = {j: py for py, j in klass.attribute_map.items()}
            ours, theirs = set(schema["properties"]), set(by_json)
            for prop in sorted(ours - theirs):
                self.fail(f"schemas.json {name}.{prop}: not in {klass.__name__} (the real API has no such field)")
            for prop in sorted(theirs - ours):
                if f"{name}.{prop}" not in reductions:
                    self.fail(f"schemas.json {name}: lacks {prop} ({klass.openapi_types[by_json[prop]]})")
            for prop in sorted(ours & theirs):
                want = klass.openapi_types[by_json[prop]]
                have = type_of(schema["properties"][prop], defs)
                if not same_type(have, want):
                    self.fail(f"schemas.json {name}.{prop}: {have} but {klass.__name__} has {want}")
            required = required_of(klass)
            if set(schema.get("required", ())) != required:
                self.fail(f"schemas.json {name}: required {sorted(schema.get('required', ()))}, "
                          f"{klass.__name__} requires {sorted(required)}")
        return {"checked": checked, "not_in_client": skipped}


def operations() -> list:
    """Every operation of the APIs the backend uses: (method, path template, query names)."""
    out = []
    for api in (client.CoreV1Api, client.NetworkingV1Api, client.CustomObjectsApi, client.VersionApi):
        for attr in sorted(dir(api)):
            if not attr.endswith("_with_http_info"):
                continue
            src = inspect.getsource(getattr(api, attr))
            call = re.search(r"call_api\(\s*'([^']+)', '([A-Z]+)'", src)
            if call:
                out.append({"operation": f"{api.__name__}.{attr[:-len('_with_http_info')]}",
                            "path": call.group(1), "method": call.group(2),
                            "query": re.findall(r"query_params\.append\(\('([A-Za-z]+)'", src)})
    return out


def model_class(definition: str):
    """io.k8s.api.core.v1.Pod -> V1Pod (or CoreV1X where two groups share the name)."""
    parts = definition.split(".")
    kind, version = parts[-1], parts[-2].capitalize()
    group = parts[-3].capitalize() if definition.startswith("io.k8s.api.") else ""
    for name in (f"{group}{version}{kind}", f"{version}{kind}"):
        klass = getattr(client, name, None)
        if klass is not None and hasattr(klass, "openapi_types"):
            return klass
    return None


def type_of(schema: dict, defs: dict) -> str:
    """schemas.json's property as the client's type string (openapi_types' notation)."""
    if "$ref" in schema:
        ref = schema["$ref"].rsplit("/", 1)[-1]
        if ref in SCALARS:
            return SCALARS[ref]
        klass = model_class(ref)
        return klass.__name__ if klass else f"<{ref}>"
    kind = schema.get("type")
    if kind == "string":
        return "datetime" if schema.get("format") == "date-time" else "str"
    if kind in ("integer", "number", "boolean"):
        return {"integer": "int", "number": "float", "boolean": "bool"}[kind]
    if kind == "array":
        return f"list[{type_of(schema['items'], defs)}]"
    if kind == "object":
        if "additionalProperties" in schema:
            return f"dict(str, {type_of(schema['additionalProperties'], defs)})"
        return OPEN
    return f"<{schema}>"


def same_type(have: str, want: str) -> bool:
    if have == want:
        return True
    if have == OPEN:   # a reduction stands for a model (or a free-form object), never a scalar
        return want == "object" or (want[:1] in "VC" and "[" not in want and "(" not in want
                                    and want not in ("str",))
    for outer in ("list[", "dict(str, "):
        if have.startswith(outer) and want.startswith(outer):
            return same_type(have[len(outer):-1], want[len(outer):-1])
    return False


def required_of(klass) -> set:
    """The properties the generated model refuses to set to None (the spec's `required`)."""
    cfg = client.Configuration()
    cfg.client_side_validation = True
    out = set()
    for attr, json_name in klass.attribute_map.items():
        obj = klass.__new__(klass)
        obj.local_vars_configuration = cfg
        try:
            setattr(obj, attr, None)
        except ValueError:
            out.add(json_name)
    return out


def diff(ours, back, at: str) -> list[str]:
    """What the client's model changed of `ours` (after sanitize_for_serialization)."""
    if isinstance(ours, dict):
        if not isinstance(back, dict):
            return [f"{at or '.'}: ours is an object, the model gives {type(back).__name__}"]
        out = [f"{at}.{k}: unknown field (the model drops it)" for k in ours if k not in back]
        out += [f"{at}.{k}: added by the model" for k in back if k not in ours]
        for k in ours:
            if k in back:
                out += diff(ours[k], back[k], f"{at}.{k}")
        return out
    if isinstance(ours, list):
        if not isinstance(back, list) or len(back) != len(ours):
            return [f"{at}: ours is a list of {len(ours)}, the model gives {back!r:.80}"]
        return [p for i, (a, b) in enumerate(zip(ours, back)) for p in diff(a, b, f"{at}[{i}]")]
    if type(ours) is type(back) and ours == back:
        return []
    if isinstance(ours, str) and isinstance(back, str) and same_instant(ours, back):
        return []
    return [f"{at}: ours {ours!r} ({type(ours).__name__}), the model gives {back!r} ({type(back).__name__})"]


def same_instant(a: str, b: str) -> bool:
    try:
        return dateparser.isoparse(a) == dateparser.isoparse(b)
    except (ValueError, OverflowError):
        return False


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    probe = Probe(spec)
    report = {"client": kubernetes.__version__}
    for part in spec.get("checks", ("api", "objects", "schemas")):
        try:
            report[part] = getattr(probe, f"run_{part}")()
        except Exception as exc:   # noqa: BLE001 - any surprise is a failure in the report
            probe.fail(f"{part}: {type(exc).__name__}: {exc}")
    report["failures"] = probe.failures
    json.dump(report, sys.stdout, indent=1, default=str)
    return 1 if probe.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
