"""No import cycle among bot_bottle's modules: every module imports alone in a fresh
interpreter, and the graph of their imports (parsed with `ast`, function-level imports
included, since a lazy import only hides a cycle until the function runs) has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import bot_bottle

ROOT = Path(bot_bottle.__file__).parent
PACKAGE = "bot_bottle"


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The bot_bottle modules `name` imports anywhere in its text."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                # `from pkg import module` imports the module; `from mod import name` the module
                targets.add(full if full in modules else base)
    # a name that is not a module (an attribute of a package) resolves to its nearest module
    resolved = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target.split(".")[0] == PACKAGE and target != name:
            resolved.add(target)
    return resolved


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that starts and ends with the same module, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, black) == grey:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt) == white:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(graph):
        if colour[node] == white:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


class ImportGraphTest(unittest.TestCase):
    def test_the_cycle_finder_finds_a_cycle_through_several_modules(self) -> None:
        self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}),
                         ["a", "b", "c", "a"])
        self.assertIsNone(find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}))

    def test_function_level_and_relative_imports_are_edges(self) -> None:
        modules = {"bot_bottle": ROOT / "__init__.py", "bot_bottle.x": Path("x.py"),
                   "bot_bottle.y": Path("y.py"), "bot_bottle.z": Path("z.py")}
        source = ("import os\n"
                  "def f():\n    from bot_bottle import y\n"
                  "def g():\n    from .z import thing\n")
        tmpdir = tempfile.TemporaryDirectory()
        self.addCleanup(tmpdir.cleanup)
        tmp = Path(tmpdir.name) / "x.py"
        tmp.write_text(source)
        modules["bot_bottle.x"] = tmp
        self.assertEqual(imports_of("bot_bottle.x", tmp, modules), {"bot_bottle.y", "bot_bottle.z"})

    def test_no_module_of_bot_bottle_is_part_of_an_import_cycle(self) -> None:
        modules = module_names()
        self.assertIn("bot_bottle.orchestrator.dispatcher", modules)
        graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
        self.assertIn("bot_bottle.orchestrator.lifecycle",
                      graph["bot_bottle.orchestrator.executor"]
                      | graph["bot_bottle.orchestrator.dispatcher"])
        self.assertIsNone(find_cycle(graph), "import cycle")

    def test_every_module_imports_alone_in_a_fresh_interpreter(self) -> None:
        names = [n for n in module_names() if not n.endswith("__main__")]
        script = ("import importlib, sys\n"
                  "failed = []\n"
                  "for name in sys.argv[1:]:\n"
                  "    try:\n"
                  "        importlib.import_module(name)\n"
                  "    except Exception as exc:\n"
                  "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
                  "print('\\n'.join(failed))\n"
                  "sys.exit(1 if failed else 0)\n")
        done = subprocess.run([sys.executable, "-c", script, *names],
                              cwd=ROOT.parent, capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


if __name__ == "__main__":
    unittest.main()
