"""How much the bottles' work yields the CPU to the service's own threads (webhook acks, the
dispatcher): a start's clone and core CLI (and the agent, which inherits it) run `nice`d by
`BOT_BOTTLE_BOTTLE_NICE`. Under a launch storm or busy agents the service comes first; an idle
machine gives the bottles all of it anyway.
"""

from __future__ import annotations

import logging
import shutil

log = logging.getLogger(__name__)


def niced(cli: list[str], nice: int) -> list[str]:
    """`cli` run through `nice -n NICE` (coreutils; exec'd, so the pid stays the CLI's), or
    as it is when `nice` is 0 or not installed. (A child in a session of its own is also in an
    autogroup of its own where the kernel has them, outside systemd's cgroups: the core's
    `sandbox.renice_group`, which the sandbox applies too.)"""
    program = shutil.which("nice") if nice else None
    if nice and program is None:
        log.warning("nice not found: bottles run at the service's own priority")
    return [program, "-n", str(nice), *cli] if program else list(cli)
