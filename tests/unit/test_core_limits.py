"""bot_bottle.backend.limits: the settings and their errors, the mechanism chosen (a cgroup v2
subtree that delegates pids, else rlimits with RLIMIT_NPROC), and the real wrapper joining the
cgroup and setting the rlimits before it execs the program (same pid, so nothing ran first)."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend import limits
from bot_bottle.backend.sandbox import run_sandbox
from bot_bottle.errors import BackendError, UsageError


class SettingsTest(unittest.TestCase):
    def test_defaults_are_1024_pids_and_no_memory_or_cpu_limit(self):
        self.assertEqual(limits.settings({}, 99), limits.Limits(pids=1024, fsize=99))

    def test_settings_are_read_from_the_environment(self):
        env = {"BOT_BOTTLE_MAX_PIDS": "64", "BOT_BOTTLE_MAX_MEMORY_BYTES": str(2 ** 30),
               "BOT_BOTTLE_MAX_CPUS": "1.5"}
        self.assertEqual(limits.settings(env, 5), limits.Limits(64, 5, 2 ** 30, 1.5))

    def test_a_bad_setting_is_a_usage_error_naming_it(self):
        for name, value in (("BOT_BOTTLE_MAX_PIDS", "lots"), ("BOT_BOTTLE_MAX_PIDS", "2"),
                            ("BOT_BOTTLE_MAX_MEMORY_BYTES", "-1"), ("BOT_BOTTLE_MAX_CPUS", "nan"),
                            ("BOT_BOTTLE_MAX_CPUS", "0")):
            with self.subTest(name=name, value=value), self.assertRaises(UsageError) as cm:
                limits.settings({name: value}, 1)
            self.assertIn(name, str(cm.exception))


class MechanismTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name) / "cgroup"
        self.proc = Path(tmp.name) / "proc-self-cgroup"
        self.proc.write_text("0::/svc\n")
        (self.root / "svc").mkdir(parents=True)
        (self.root / "cgroup.controllers").write_text("cpu memory pids\n")

    def prepare(self, lim):
        return limits.prepare("b-1", lim, root=self.root, proc=self.proc)

    def delegate(self, controllers: str):
        (self.root / "svc" / "cgroup.subtree_control").write_text(controllers + "\n")

    def test_a_delegated_v2_subtree_gets_a_cgroup_per_bottle_with_its_limits(self):
        self.delegate("cpu memory pids")
        applied = self.prepare(limits.Limits(64, 100, 2 ** 30, 1.5))
        group = self.root / "svc" / f"bot-bottle-b-1-{os.getpid()}"
        self.assertEqual(applied.cgroup, group)
        self.assertEqual({f: (group / f).read_text() for f in ("pids.max", "memory.max", "cpu.max")},
                         {"pids.max": "64", "memory.max": str(2 ** 30), "cpu.max": "150000 100000"})
        self.assertEqual(applied.args, ("--cgroup", str(group / "cgroup.procs"),
                                        "--rlimit", "core=0", "--rlimit", "fsize=100"))
        self.assertTrue(applied.summary.startswith(f"cgroup v2 {group} (pids=64"), applied.summary)

    def test_without_delegated_pids_it_falls_back_to_rlimits_with_nproc(self):
        self.delegate("")
        applied = self.prepare(limits.Limits(64, 100))
        self.assertIsNone(applied.cgroup)
        self.assertEqual(applied.args, ("--rlimit", "nproc=64", "--rlimit", "core=0",
                                        "--rlimit", "fsize=100"))
        self.assertIn("rlimits nproc=64, core=0, fsize=100", applied.summary)
        self.assertEqual(sorted(p.name for p in (self.root / "svc").iterdir()), ["cgroup.subtree_control"])


class WrapperTest(unittest.TestCase):
    def test_the_wrapper_joins_the_cgroup_and_sets_rlimits_then_execs_in_the_same_process(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        procs = Path(tmp.name) / "cgroup.procs"
        procs.write_text("")
        applied = limits.Applied(("--cgroup", str(procs), "--rlimit", "nproc=4000",
                                  "--rlimit", "core=0", "--rlimit", "fsize=12345"), "")
        probe = ("import json, os, resource as r; print(json.dumps([os.getpid(), "
                 "r.getrlimit(r.RLIMIT_NPROC), r.getrlimit(r.RLIMIT_CORE), r.getrlimit(r.RLIMIT_FSIZE)]))")
        out = subprocess.run(limits.wrap_argv(applied, [sys.executable, "-c", probe]),
                             capture_output=True, text=True, check=True, timeout=30).stdout
        pid, nproc, core, fsize = json.loads(out)
        self.assertEqual(procs.read_text(), str(pid))
        self.assertEqual((nproc, core, fsize), ([4000, 4000], [0, 0], [12345, 12345]))

    def test_a_wrapper_that_cannot_join_its_cgroup_never_runs_the_program(self):
        r = subprocess.run(limits.wrap_argv(limits.Applied(("--cgroup", "/nonexistent/cgroup.procs"), ""),
                                            [sys.executable, "-c", "print('ran')"]),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (127, ""))
        self.assertIn("bot-bottle: limits:", r.stderr)

    def test_a_sandbox_whose_wrapper_fails_is_a_backend_error_and_never_reported_started(self):
        applied = limits.Applied(("--cgroup", "/nonexistent/cgroup.procs"), "")
        pids = []
        with self.assertRaises(BackendError) as cm:
            run_sandbox([sys.executable, "-c", "print('ran')"], {}, pids.append,
                        wrap=lambda fd: limits.wrap_argv(applied, [sys.executable, "-c", "print('ran')"], fd))
        self.assertIn("/nonexistent/cgroup.procs", str(cm.exception))
        self.assertEqual(pids, [])

    def test_a_sandbox_behind_the_wrapper_runs_and_its_output_arrives(self):
        applied = limits.Applied(("--rlimit", "core=0"), "")
        out = []
        argv = [sys.executable, "-c", "import resource as r; print(r.getrlimit(r.RLIMIT_CORE))"]
        exit_ = run_sandbox(argv, {}, lambda pid: None, output=out.append,
                            wrap=lambda fd: limits.wrap_argv(applied, argv, fd))
        self.assertEqual((exit_.code, b"".join(out)), (0, b"(0, 0)\n"))


if __name__ == "__main__":
    unittest.main()
