"""pyproject.toml: an SPDX license string with its LICENSE file, the version's one home
(`bot_bottle.__version__`), every module in a package the build finds, console scripts that
exist, and no test package in what is installed. (`python -m build` itself needs the package
index for its isolated environment, so it is checked by hand: docs/operator-guide.md §2.)"""

import importlib
import re
import tomllib
import unittest
from pathlib import Path

import bot_bottle

ROOT = Path(__file__).resolve().parents[2]


class PackagingTest(unittest.TestCase):
    def setUp(self):
        self.project = tomllib.loads((ROOT / "pyproject.toml").read_text())

    def test_the_license_is_an_spdx_string_with_its_file(self):
        meta = self.project["project"]
        self.assertEqual((meta["license"], meta["license-files"]), ("MIT", ["LICENSE"]))
        self.assertIn("Copyright (c) 2026 the bot-bottle authors", (ROOT / "LICENSE").read_text())
        # the SPDX string form needs setuptools >= 77 to build
        self.assertEqual(self.project["build-system"]["requires"], ["setuptools>=77"])

    def test_the_version_has_one_home(self):
        self.assertNotIn("version", self.project["project"])
        self.assertEqual(self.project["project"]["dynamic"], ["version"])
        self.assertEqual(self.project["tool"]["setuptools"]["dynamic"]["version"],
                         {"attr": "bot_bottle.__version__"})
        self.assertRegex(bot_bottle.__version__, r"^\d+\.\d+\.\d+")

    def test_every_module_is_in_a_package_the_build_finds(self):
        # `packages.find` skips a directory without __init__.py: its modules would be missing
        # from the wheel while every test run from the checkout still imports them
        for folder in sorted({p.parent for p in (ROOT / "bot_bottle").rglob("*.py")}):
            with self.subTest(folder=str(folder.relative_to(ROOT))):
                self.assertTrue((folder / "__init__.py").is_file())

    def test_the_console_scripts_name_functions_that_exist(self):
        scripts = self.project["project"]["scripts"]
        self.assertEqual(sorted(scripts), ["bot-bottle", "bot-bottle-orchestrator"])
        for name, target in scripts.items():
            module, _, attr = target.partition(":")
            with self.subTest(script=name):
                self.assertTrue(callable(getattr(importlib.import_module(module), attr)))

    def test_only_the_bot_bottle_package_is_installed(self):
        include = self.project["tool"]["setuptools"]["packages"]["find"]["include"]
        self.assertEqual(include, ["bot_bottle*"])
        self.assertFalse(any(re.match(p.replace("*", ".*"), "tests") for p in include))

    def test_the_package_ships_no_test_stand_ins_only_what_the_demo_uses(self):
        # test-only fakes live in tests/support; demo_support holds what the demo imports or
        # runs in its bottles, and nothing else
        pkg = ROOT / "bot_bottle"
        names = {p.stem for p in pkg.rglob("*.py")}
        self.assertFalse({"fake_anthropic", "fake_openai", "fake_forge", "fake_core_cli"} & names)
        self.assertFalse([p for p in pkg.rglob("*") if p.name in ("testing", "tests")
                          or p.name.startswith("test_")])
        used = _imported_from(pkg / "orchestrator" / "demo.py", "bot_bottle.demo_support")
        homes = (pkg / "demo_support" / "homes.py").read_text()
        in_bottles = set(re.findall(r"demo_support/(\w+)\.py", homes))
        shipped = {p.stem for p in (pkg / "demo_support").glob("*.py")} - {"__init__"}
        self.assertEqual(shipped, used | in_bottles)


def _imported_from(start: Path, prefix: str) -> set[str]:
    """The modules under `prefix` that `start` imports, directly or through them."""
    import ast
    seen: set[str] = set()
    todo = [start]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                module = f"{prefix}.{node.module}" if node.level else node.module  # sibling
                mods = [module] + [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for mod in mods:
                name = mod[len(prefix) + 1:].split(".")[0] if mod.startswith(prefix + ".") else ""
                path = ROOT / "bot_bottle" / "demo_support" / f"{name}.py"
                if name and name not in seen and path.is_file():
                    seen.add(name)
                    todo.append(path)
    return seen


if __name__ == "__main__":
    unittest.main()
