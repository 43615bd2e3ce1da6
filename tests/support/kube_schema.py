"""The schema subset of tests/data/kubernetes/schemas.json and a strict validator for it: what the
fake API server checks every object against (unknown fields and wrong types refused the way the
real API server's strict field validation refuses them), and what the contract test holds our
objects and the fake's answers to. `oneOf` is either a choice of types (Quantity, IntOrString) or,
beside `type: object`, a CRD's choice of required properties (exactly one must be met)."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "kubernetes" / "schemas.json"
# the top-level definition of each kind we send or receive
KINDS = {
    ("v1", "Pod"): "io.k8s.api.core.v1.Pod",
    ("v1", "Secret"): "io.k8s.api.core.v1.Secret",
    ("v1", "ConfigMap"): "io.k8s.api.core.v1.ConfigMap",
    ("v1", "PersistentVolumeClaim"): "io.k8s.api.core.v1.PersistentVolumeClaim",
    ("networking.k8s.io/v1", "NetworkPolicy"): "io.k8s.api.networking.v1.NetworkPolicy",
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"): "io.k8s.storage.snapshot.v1.VolumeSnapshot",
    ("v1", "Status"): "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    ("v1", "DeleteOptions"): "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
}


class Invalid(Exception):
    """`field` (a JSON path like .spec.containers[0].name) and why."""

    def __init__(self, field: str, why: str, unknown: bool = False):
        super().__init__(f"{field}: {why}")
        self.field, self.why, self.unknown = field, why, unknown


def load() -> dict:
    return json.loads(SCHEMAS.read_text(encoding="utf-8"))["definitions"]


class Validator:
    def __init__(self):
        self.defs = load()

    def validate_kind(self, obj) -> str:
        """Check a whole object by its apiVersion/kind; returns the definition name."""
        if not isinstance(obj, dict):
            raise Invalid("", "expected an object")
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in KINDS:
            raise Invalid(".kind", f"no kind {key[1]!r} is registered for version {key[0]!r}")
        self.validate(obj, KINDS[key])
        return KINDS[key]

    def validate(self, value, name: str, at: str = "") -> None:
        self._check(value, self.defs[name], at)

    def _check(self, value, schema: dict, at: str) -> None:
        if "$ref" in schema:
            return self._check(value, self.defs[schema["$ref"].rsplit("/", 1)[-1]], at)
        if "oneOf" in schema and "type" not in schema:   # Quantity, IntOrString: one of two types
            for choice in schema["oneOf"]:
                try:
                    return self._check(value, choice, at)
                except Invalid:
                    continue
            raise Invalid(at, f"expected one of {[c.get('type') for c in schema['oneOf']]}, "
                              f"got {type(value).__name__}")
        kind = schema.get("type")
        if kind == "string":
            if not isinstance(value, str):
                raise Invalid(at, f"expected string, got {type(value).__name__}")
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise Invalid(at, f"expected integer, got {type(value).__name__}")
            bits = {"int32": 31, "int64": 63}.get(schema.get("format"), 63)
            if not -(1 << bits) <= value < (1 << bits):
                raise Invalid(at, f"out of range for {schema.get('format')}")
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Invalid(at, f"expected number, got {type(value).__name__}")
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise Invalid(at, f"expected boolean, got {type(value).__name__}")
        elif kind == "array":
            if not isinstance(value, list):
                raise Invalid(at, f"expected array, got {type(value).__name__}")
            for i, item in enumerate(value):
                self._check(item, schema["items"], f"{at}[{i}]")
        elif kind == "object":
            if not isinstance(value, dict):
                raise Invalid(at, f"expected object, got {type(value).__name__}")
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if props is not None and key in props:
                    self._check(item, props[key], f"{at}.{key}")
                elif extra is not None:
                    self._check(item, extra, f"{at}[{key}]" if props is None else f"{at}.{key}")
                elif props is not None:
                    raise Invalid(f"{at}.{key}", "field not declared in schema", unknown=True)
            for key in schema.get("required", ()):
                if key not in value:
                    raise Invalid(f"{at}.{key}", "Required value")
            if "oneOf" in schema:   # a CRD's `oneOf: [{required: [a]}, {required: [b]}]`: one, not both
                met = [c["required"] for c in schema["oneOf"] if all(k in value for k in c["required"])]
                if len(met) != 1:
                    raise Invalid(at, f"must validate one and only one schema (oneOf), {len(met)} do")
        elif kind is not None:
            raise AssertionError(f"schema type {kind!r} at {at} is not handled")
