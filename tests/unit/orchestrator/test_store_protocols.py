"""`SqliteRunStore` is every role `store_protocols` names, with the same signatures (a role's
method renamed or re-typed in one place and not the other fails here), and it is composed:
its parts get the shared `StoreDb` and no part reaches into another's attributes."""

from __future__ import annotations

import inspect
import re
import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator import store_protocols as P
from bot_bottle.orchestrator.store import SqliteRunStore

ROLES = (P.RunStore, P.DeliveryStore, P.DoneEventStore, P.OutboxStore, P.StoreFile)


def members(protocol: type) -> dict[str, object]:
    return {name: value for name, value in vars(protocol).items()
            if callable(value) and not name.startswith("_")}


class ProtocolConformanceTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.store = SqliteRunStore(Path(tmp.name) / "o.db")
        self.addCleanup(self.store.close)

    def test_the_store_has_every_roles_methods_with_their_signatures(self) -> None:
        for role in ROLES:
            for name, method in members(role).items():
                with self.subTest(role=role.__name__, method=name):
                    want = inspect.signature(method)
                    want = want.replace(parameters=list(want.parameters.values())[1:])
                    self.assertEqual(inspect.signature(getattr(self.store, name)), want)

    def test_the_whole_store_protocol_is_the_union_of_the_roles(self) -> None:
        union = set().union(*(members(role) for role in ROLES))
        self.assertGreater(len(union), 30)
        self.assertEqual({n for n in dir(P.OrchestratorStore)
                          if not n.startswith("_") and callable(getattr(P.OrchestratorStore, n))},
                         union)

    def test_no_two_roles_claim_the_same_method(self) -> None:
        seen: dict[str, str] = {}
        for role in ROLES:
            for name in members(role):
                self.assertNotIn(name, seen, f"{name} in {seen.get(name)} and {role.__name__}")
                seen[name] = role.__name__

    def test_every_public_method_of_the_store_belongs_to_a_role(self) -> None:
        union = set().union(*(members(role) for role in ROLES))
        public = {n for n in dir(self.store)
                  if not n.startswith("_") and callable(getattr(self.store, n))}
        self.assertEqual(public - union, set())


def reaches_in(code: str) -> list[str]:
    """Attribute chains that use a private name of anything but `self` (`self._db._wconn`,
    `store._lock`); comments and docstring lines are left out."""
    lines = [line.split("#")[0] for line in code.splitlines()
             if not line.lstrip().startswith(('"', "`"))]
    found = []
    for chain in re.findall(r"(?<![\w.])[A-Za-z_]\w*(?:\.\w+)+", "\n".join(lines)):
        parts = chain.split(".")
        private = [i for i, part in enumerate(parts) if i and part.startswith("_")
                   and not part.startswith("__")]
        if private and private != [1] or private == [1] and parts[0] != "self":
            found.append(chain)
    return found


class CompositionTest(unittest.TestCase):
    def test_the_check_sees_a_reach_into_another_objects_private_attribute(self) -> None:
        self.assertEqual(reaches_in("x = self._db._wconn\nstore._lock\nself._db.atomic()"),
                         ["self._db._wconn", "store._lock"])

    def test_no_store_part_reaches_into_a_private_attribute_of_another_object(self) -> None:
        package = Path(inspect.getfile(SqliteRunStore)).parent
        parts = sorted(package.glob("store*.py"))
        self.assertGreaterEqual(len(parts), 8)
        for path in parts:
            with self.subTest(path.name):
                self.assertEqual(reaches_in(path.read_text()), [])


if __name__ == "__main__":
    unittest.main()
