"""Test helper: a core CLI whose `start` waits at a gate before it makes anything.

`BOT_BOTTLE_CLI="<python> -m tests.integration._gated_cli <module>"` runs `<module>` (say
`bot_bottle` or `tests.support.fake_core_cli`) for every command; `start` first writes
`$BOT_BOTTLE_HOME/gate/waiting.<pid>` and then waits until `$BOT_BOTTLE_HOME/gate/open`
exists, so a test can act while a run is `starting` and no bottle exists yet (close the
issue, kill the service) and then let the launch go on. The process execs the target in
place: its pid stays the one the orchestrator spawned.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

OPEN = "open"
WAITING = "waiting."


def gate_dir(home: Path) -> Path:
    return Path(home) / "gate"


def waiting_pids(home: Path) -> list[int]:
    """The pids of gated starts that reached the gate (open or not)."""
    d = gate_dir(home)
    return sorted(int(p.name[len(WAITING):]) for p in d.glob(WAITING + "*")) if d.is_dir() else []


def ended(pid: int) -> bool:
    """True once the gated process (or what it exec'd) is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2:].split()[0] == b"Z"


def open_gate(home: Path) -> None:
    d = gate_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    (d / OPEN).touch()


def main(argv: list[str]) -> int:
    target, args = argv[0], argv[1:]
    if args[:1] == ["start"]:
        d = gate_dir(Path(os.environ["BOT_BOTTLE_HOME"]))
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{WAITING}{os.getpid()}").touch()
        while not (d / OPEN).exists():  # the test opens it; polling a file is all we need
            time.sleep(0.02)
    os.execv(sys.executable, [sys.executable, "-m", target, *args])
    return 127  # unreachable: execv replaced us


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
