"""limits.enter_leaf and the bottles' place under systemd's cgroup v2 delegation, on a cgroup
tree in a temp dir (this host has no delegated v2): the service moves its processes into
`<unit>/supervisor` and enables the delegated pids/memory/cpu on the unit's cgroup; a caller
in that leaf puts bottles' cgroups under the unit, beside the leaf; anything it cannot do is
one line, never an exception. On the real host, in a child process: the line agrees with the
mechanism `prepare` really picks."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend import limits

UNIT = "system.slice/bot-bottle-orchestrator.service"
REPO_ROOT = Path(__file__).resolve().parents[2]


class LeafTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name) / "cgroup"
        self.proc = Path(tmp.name) / "proc-self-cgroup"
        self.unit = self.root / UNIT
        self.unit.mkdir(parents=True)
        (self.root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        self.files(self.unit, controllers="cpu io memory pids", subtree_control="",
                   procs=f"{os.getpid()}\n4242\n")

    @staticmethod
    def files(group: Path, **content):
        for name, text in content.items():
            (group / f"cgroup.{name}").write_text(text)

    def enter(self, own: str) -> str:
        self.proc.write_text(f"0::/{own}\n")
        return limits.enter_leaf(root=self.root, proc=self.proc)

    def test_the_service_moves_into_its_leaf_and_enables_the_delegated_controllers(self):
        leaf = self.unit / "supervisor"
        leaf.mkdir()   # as the kernel does, its cgroup.procs exists from the start
        self.files(leaf, procs="")
        line = self.enter(UNIT)
        self.assertEqual((leaf / "cgroup.procs").read_text(), f"{os.getpid()}\n4242\n")
        self.assertEqual((self.unit / "cgroup.subtree_control").read_text(), "+pids +memory +cpu")
        self.assertTrue(line.startswith(f"the service runs in {leaf}; pids, memory, cpu enabled "
                                        f"for bottles in {self.unit}; bottles get "), line)

    def test_only_the_delegated_controllers_are_enabled(self):
        self.files(self.unit, controllers="io pids")
        (self.unit / "supervisor").mkdir()
        self.files(self.unit / "supervisor", procs="")
        self.assertIn("pids enabled for bottles", self.enter(UNIT))
        self.assertEqual((self.unit / "cgroup.subtree_control").read_text(), "+pids")

    def test_in_the_leaf_bottles_go_under_the_unit_beside_it(self):
        leaf = self.unit / "supervisor"
        leaf.mkdir()
        self.files(leaf, procs=f"{os.getpid()}\n", subtree_control="")
        # what the kernel shows once enter_leaf has run (or DelegateSubgroup= put us there)
        self.files(self.unit, subtree_control="cpu memory pids\n", procs="")
        line = self.enter(f"{UNIT}/supervisor")
        self.assertEqual((self.unit / "cgroup.subtree_control").read_text(), "cpu memory pids\n")
        self.assertTrue(line.endswith(f"bottles get a cgroup v2 each under {self.unit} "
                                      "(pids, memory, cpu)"), line)
        applied = limits.prepare("b-1", limits.Limits(64, 100, 2 ** 30, 1.5), root=self.root,
                                 proc=self.proc)
        group = self.unit / f"bot-bottle-b-1-{os.getpid()}"
        self.assertEqual(applied.cgroup, group)
        self.assertEqual([(group / f).read_text() for f in ("pids.max", "memory.max", "cpu.max")],
                         ["64", str(2 ** 30), "150000 100000"])
        self.assertEqual(sorted(p.name for p in self.unit.iterdir() if p.is_dir()),
                         [group.name, "supervisor"])

    def test_what_it_cannot_do_is_one_line_and_rlimits(self):
        scope = "user.slice/user-1000.slice/session-1.scope"
        (self.root / scope).mkdir(parents=True)
        cases = {
            "not a service": (scope, None, "is not a systemd service's: left as it is"),
            "no pids delegated": (UNIT, {"controllers": "cpu io memory"},
                                  "has no pids controller delegated"),
            "a write refused": (UNIT, {"subtree_control": None}, "cgroup v2 leaf not entered: "),
        }
        for what, (own, change, words) in cases.items():
            with self.subTest(what):
                self.setUp()
                (self.root / scope).mkdir(parents=True)
                (self.unit / "supervisor").mkdir()
                self.files(self.unit / "supervisor", procs="")
                for name, text in (change or {}).items():
                    if text is None:   # a directory where the file should be: EISDIR
                        (self.unit / f"cgroup.{name}").unlink()
                        (self.unit / f"cgroup.{name}").mkdir()
                    else:
                        self.files(self.unit, **{name: text})
                line = self.enter(own)
                self.assertIn(words, line)
                self.assertTrue(line.endswith("; bottles get rlimits (no writable delegated "
                                              "cgroup)"), line)
                self.assertEqual(len(line.splitlines()), 1)
        self.assertFalse((self.root / scope / "supervisor").exists())

    def test_without_a_v2_hierarchy_nothing_is_entered(self):
        (self.root / "cgroup.controllers").unlink()
        (self.root / "pids").mkdir()
        self.files(self.root / "pids", procs="")
        self.proc.write_text("8:pids:/\n0::/\n")
        line = limits.enter_leaf(root=self.root, proc=self.proc)
        self.assertEqual(line, f"no cgroup v2 hierarchy at {self.root} (v1 or hybrid): nothing "
                               f"to enter; bottles get a cgroup v1 each under {self.root / 'pids'} "
                               "(pids)")
        self.assertFalse((self.unit / "supervisor").exists())


class RealHostTest(unittest.TestCase):
    def test_the_line_names_the_mechanism_prepare_picks(self):
        # a child process: were this run inside a delegated service, only the child moves
        code = ("import json, sys\n"
                f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
                "from bot_bottle.backend import limits\n"
                "line = limits.enter_leaf()\n"
                "applied = limits.prepare('leaf-probe', limits.Limits(64, 100))\n"
                "limits.remove_cgroup(applied.cgroup)\n"
                "print(json.dumps([line, str(applied.cgroup or '')]))\n")
        r = subprocess.run([sys.executable, "-B", "-W", "error", "-c", code],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        line, group = json.loads(r.stdout)
        self.assertEqual(len(line.splitlines()), 1)
        if group:
            self.assertIn("bottles get a cgroup ", line)
            self.assertIn(f" each under {Path(group).parent} (", line)
            self.assertFalse(Path(group).exists())
        else:
            self.assertTrue(line.endswith("bottles get rlimits (no writable delegated cgroup)"))


if __name__ == "__main__":
    unittest.main()
