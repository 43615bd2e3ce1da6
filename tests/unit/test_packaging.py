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


if __name__ == "__main__":
    unittest.main()
