"""Per-bottle process limits: which mechanism applies, the small wrapper that applies them to
the sandbox before bwrap (and so the agent) starts, and the service's own move into a leaf
cgroup that makes cgroup v2 limits possible under systemd.

Settings (the caller's environment): `BOT_BOTTLE_MAX_PIDS` (processes and threads, default
1024), `BOT_BOTTLE_MAX_MEMORY_BYTES` and `BOT_BOTTLE_MAX_CPUS` (cgroup v2 only; unset = no
limit); the largest file is the snapshot cap (`BOT_BOTTLE_MAX_SNAPSHOT_BYTES`, see snapshot.py).

Mechanism, chosen per bottle (`prepare`):
- a cgroup of the bottle's own, `bot-bottle-<slug>-<pid of the CLI>`, when there is a writable
  place for it: on cgroup v2 (pids.max, memory.max, cpu.max) the caller's cgroup if it
  delegates the pids controller (`cgroup.subtree_control`) — or, when the caller sits in the
  leaf `supervisor` that `enter_leaf` made, that leaf's parent, so bottles are its siblings;
  else the cgroup v1 `pids` hierarchy (pids.max) under the caller's pids cgroup;
- otherwise RLIMIT_NPROC = the pid limit, which counts every process of the real uid (not of
  the bottle alone) and which the kernel does not apply to root.
RLIMIT_CORE 0 and RLIMIT_FSIZE = the snapshot cap apply in every case.

`enter_leaf` (the orchestrator, once at start-up): cgroup v2 lets a cgroup enable controllers
for its children only while no process sits in it ("no internal processes"), and systemd
starts a `Delegate=yes` service in the unit's cgroup itself. So the service moves its
processes into `<unit cgroup>/supervisor` and enables pids, memory and cpu (those delegated)
in the unit's `cgroup.subtree_control`. It never raises: what it cannot do is said in its
one line, and bottles then get what `prepare` finds (a v1 pids cgroup or rlimits).

The wrapper (this file run as a script, `wrap_argv`) joins the cgroup and sets the rlimits in
its own process, then execs bwrap: nothing of the bottle runs before both hold, and no
`preexec_fn` runs in a threaded parent.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PIDS_VAR = "BOT_BOTTLE_MAX_PIDS"
MEMORY_VAR = "BOT_BOTTLE_MAX_MEMORY_BYTES"
CPUS_VAR = "BOT_BOTTLE_MAX_CPUS"
DEFAULT_PIDS = 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
LEAF = "supervisor"                       # the service's own cgroup under its unit's
V2_CONTROLLERS = ("pids", "memory", "cpu")
RLIMITS = {"nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE,
           "fsize": resource.RLIMIT_FSIZE}


@dataclass(frozen=True)
class Limits:
    pids: int
    fsize: int
    memory: int | None = None
    cpus: float | None = None


@dataclass(frozen=True)
class Applied:
    """What `prepare` set up for one bottle: the wrapper's arguments and a one-line summary."""
    args: tuple[str, ...]
    summary: str
    cgroup: Path | None = None


def _whole(environ, name, minimum):
    raw = environ.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < minimum:
        from ..errors import UsageError
        raise UsageError(f"{name} must be a whole number >= {minimum}, got {raw!r}")
    return int(raw)


def settings(environ, fsize: int) -> Limits:
    """The limits from the caller's environment; a bad value is a UsageError naming it."""
    cpus = environ.get(CPUS_VAR)
    if cpus is not None:
        try:
            value = float(cpus)
        except ValueError:
            value = 0.0
        if not 0.01 <= value <= 4096:
            from ..errors import UsageError
            raise UsageError(f"{CPUS_VAR} must be a number of CPUs (e.g. 1.5), got {cpus!r}")
        cpus = value
    return Limits(pids=_whole(environ, PIDS_VAR, 8) or DEFAULT_PIDS, fsize=fsize,
                  memory=_whole(environ, MEMORY_VAR, 16 * 1024 * 1024), cpus=cpus)


def _own_cgroups(proc: Path = PROC_CGROUP) -> dict[str, str]:
    """The caller's cgroup path per hierarchy ('' = the v2 one), from /proc/self/cgroup."""
    found = {}
    try:
        text = proc.read_text()
    except OSError:
        return found
    for line in text.splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            found[c] = path
    return found


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _delegates(group: Path) -> bool:
    return "pids" in _words(group / "cgroup.subtree_control")


def _parent(own: dict, root: Path = CGROUP_ROOT) -> tuple[str, Path] | None:
    """Where bottle cgroups can go: ('v2', dir) or ('v1', dir of the pids hierarchy)."""
    if (root / "cgroup.controllers").exists() and "" in own:
        base = root / own[""].lstrip("/")
        if base.name == LEAF and not _delegates(base):
            base = base.parent   # the service's leaf (enter_leaf): bottles go beside it
        return ("v2", base) if _delegates(base) and _writable(base) else None
    if "pids" in own:
        base = root / "pids" / own["pids"].lstrip("/")
        return ("v1", base) if _writable(base) and (base / "cgroup.procs").exists() else None
    return None


def _move_all(unit: Path, leaf: Path) -> None:
    """Every process of `unit` itself into `leaf` (one pid per write, as the kernel wants)."""
    for pid in _words(unit / "cgroup.procs"):
        fd = os.open(leaf / "cgroup.procs", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, f"{pid}\n".encode())
        except ProcessLookupError:
            pass   # it exited meanwhile
        finally:
            os.close(fd)


def _enter(root: Path, proc: Path) -> str:
    if not (root / "cgroup.controllers").exists():
        return f"no cgroup v2 hierarchy at {root} (v1 or hybrid): nothing to enter"
    own = _own_cgroups(proc).get("")
    if own is None:
        return "this process is in no cgroup v2: nothing to enter"
    base = root / own.lstrip("/")
    if base.name == LEAF:   # entered before (a restart's leftover, or DelegateSubgroup=)
        unit = base.parent
    elif base.name.endswith(".service"):
        unit = base
    else:
        return f"cgroup {own} is not a systemd service's: left as it is"
    if not _writable(unit):
        return f"cgroup {unit} is not writable (Delegate=yes missing?)"
    wanted = [c for c in V2_CONTROLLERS if c in _words(unit / "cgroup.controllers")]
    if "pids" not in wanted:
        return f"cgroup {unit} has no pids controller delegated"
    leaf = unit / LEAF
    leaf.mkdir(mode=0o755, exist_ok=True)
    _move_all(unit, leaf)
    missing = [c for c in wanted if c not in _words(unit / "cgroup.subtree_control")]
    for attempt in range(5):
        if not missing:
            break
        try:
            (unit / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
            break
        except OSError as exc:
            # EBUSY: a process arrived in the unit's cgroup (a child forked before it moved),
            # or the kernel has not finished the move yet
            if exc.errno != errno.EBUSY or attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
            _move_all(unit, leaf)
    return f"the service runs in {leaf}; {', '.join(wanted)} enabled for bottles in {unit}"


def _outlook(root: Path, proc: Path) -> str:
    found = _parent(_own_cgroups(proc), root)
    if found is None:
        return "rlimits (no writable delegated cgroup)"
    kind, base = found
    what = "pids" if kind == "v1" else ", ".join(
        c for c in V2_CONTROLLERS if c in _words(base / "cgroup.subtree_control"))
    return f"a cgroup {kind} each under {base} ({what})"


def enter_leaf(root: Path = CGROUP_ROOT, proc: Path = PROC_CGROUP) -> str:
    """Move this service into its unit's leaf cgroup and enable the bottles' controllers
    (see the module's docstring); one line for the start-up log. Never raises."""
    try:
        note = _enter(root, proc)
    except Exception as exc:   # a service that cannot set up cgroups still starts
        note = f"cgroup v2 leaf not entered: {exc}"
    try:
        outlook = _outlook(root, proc)
    except Exception as exc:
        outlook = f"rlimits ({exc})"
    return f"{note}; bottles get {outlook}"


def _make_cgroup(kind: str, base: Path, slug: str, lim: Limits) -> tuple[Path, str]:
    """Create the bottle's cgroup and write its limits."""
    # the slug matched the name pattern (no '/' or '..'); our pid keeps two homes' bottles
    # of the same slug (or a crashed run's leftover) apart
    group = base / f"bot-bottle-{slug}-{os.getpid()}"
    group.mkdir(mode=0o755, exist_ok=True)
    try:
        (group / "pids.max").write_text(str(lim.pids))
        parts = [f"pids={lim.pids}"]
        if kind == "v2":
            enabled = _words(base / "cgroup.subtree_control")
            if "memory" in enabled:
                (group / "memory.max").write_text(str(lim.memory) if lim.memory else "max")
                parts.append(f"memory={lim.memory or 'max'}")
            if "cpu" in enabled:
                quota = f"{int(lim.cpus * 100000)} 100000" if lim.cpus else "max 100000"
                (group / "cpu.max").write_text(quota)
                parts.append(f"cpus={lim.cpus or 'max'}")
    except OSError:
        remove_cgroup(group)
        raise
    return group, f"cgroup {kind} {group} ({', '.join(parts)})"


def prepare(slug: str, lim: Limits, root: Path = CGROUP_ROOT,
            proc: Path = PROC_CGROUP) -> Applied:
    """The mechanism for one bottle; a cgroup that cannot be made falls back to rlimits."""
    rl = ["core=0", f"fsize={lim.fsize}"]
    found = _parent(_own_cgroups(proc), root)
    if found is not None:
        try:
            group, summary = _make_cgroup(*found, slug, lim)
        except OSError:
            pass
        else:
            args = ("--cgroup", str(group / "cgroup.procs"), *(a for r in rl for a in ("--rlimit", r)))
            return Applied(args, f"{summary}; rlimits {', '.join(rl)}", group)
    rl.insert(0, f"nproc={lim.pids}")
    # the kernel counts nproc per real uid: as root every bottle runs as the one agent user,
    # so the limit is shared by all bottles (a cgroup per bottle is the real per-bottle limit)
    note = " (shared by every bottle of the agent user)" if os.getuid() == 0 else ""
    return Applied(tuple(a for r in rl for a in ("--rlimit", r)),
                   f"rlimits {', '.join(rl)}{note}; no writable delegated cgroup")


def wrap_argv(applied: Applied, argv: list[str], status_fd: int | None = None) -> list[str]:
    """`argv` behind the wrapper, run by this Python (-I: no PYTHON* variables or user site);
    `status_fd` (inherited) receives the reason if it cannot start `argv`."""
    status = ("--status-fd", str(status_fd)) if status_fd is not None else ()
    return [sys.executable, "-I", os.path.abspath(__file__), *status, *applied.args, "--", *argv]


def remove_cgroup(group: Path | None, wait: float = 5.0) -> None:
    """rmdir the bottle's cgroup once its last process has gone (EBUSY until then)."""
    if group is None:
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.05)   # the pid namespace's processes are still exiting


def _main(args: list[str]) -> None:
    """The wrapper: --status-fd FD [--cgroup PROCS] [--rlimit NAME=N]... -- PROGRAM ARGS...
    A failure (joining the cgroup, an rlimit, the exec itself) is written to FD; a successful
    exec closes FD (close-on-exec), which is how the parent knows the program started."""
    split = args.index("--")
    opts, program = args[:split], args[split + 1:]
    status = None
    try:
        for flag, value in zip(opts[::2], opts[1::2]):
            if flag == "--status-fd":
                status = int(value)
                os.set_inheritable(status, False)
            elif flag == "--cgroup":
                with open(value, "w") as fh:   # this process first: its children follow
                    fh.write(str(os.getpid()))
            elif flag == "--rlimit":
                name, _, n = value.partition("=")
                hard = resource.getrlimit(RLIMITS[name])[1]   # never above what we were given
                n = int(n) if hard == resource.RLIM_INFINITY else min(int(n), hard)
                resource.setrlimit(RLIMITS[name], (n, n))
        os.execv(program[0], program)
    except (OSError, ValueError, KeyError) as exc:
        message = f"limits: {exc}"
        if status is not None:
            os.write(status, message.encode("utf-8", "replace")[:4096])
        else:
            print(f"bot-bottle: {message}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    _main(sys.argv[1:])
