"""The composition-root rule: only `orchestrator/bootstrap.py` imports the Gitea adapter
(`bot_bottle.contrib.gitea`); every other orchestrator module sees the forge through the port."""

from __future__ import annotations

import ast
import unittest
from pathlib import Path

import bot_bottle.orchestrator as orchestrator_pkg

ADAPTER = "bot_bottle.contrib.gitea"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


class LayeringTest(unittest.TestCase):
    def test_only_bootstrap_imports_the_gitea_adapter(self) -> None:
        package_dir = Path(orchestrator_pkg.__file__).parent
        offenders = sorted(p.name for p in package_dir.glob("*.py") if p.name != "bootstrap.py"
                           and any(m == ADAPTER or m.startswith(ADAPTER + ".")
                                   for m in imported_modules(p)))
        self.assertEqual(offenders, [])
        self.assertTrue(any(m.startswith(ADAPTER) for m in
                            imported_modules(package_dir / "bootstrap.py")))




class PackageExportsTest(unittest.TestCase):
    def test_every_exported_name_imports_from_the_package(self) -> None:
        import importlib
        package = importlib.import_module("bot_bottle.orchestrator")
        for name in package.__all__:
            self.assertIsNotNone(getattr(package, name), name)
        with self.assertRaises(AttributeError):
            package.NoSuchThing  # noqa: B018
        from bot_bottle.orchestrator.dispatcher import Orchestrator
        self.assertIs(package.Orchestrator, Orchestrator)


if __name__ == "__main__":
    unittest.main()
