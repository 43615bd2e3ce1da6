"""Filling a new bottle: its home, and its workspace from the bottles' sources and `--workspace`.

Without a given workspace, one source fills `workspace/` itself and several go to
`workspace/<bottle>`; no source leaves it empty. With `--workspace DIR`, DIR becomes the
workspace (renamed in when it is on the same filesystem, else copied and then removed), every
source goes to `workspace/<bottle>`, and those names are listed in the checkout's
`.git/info/exclude` so they never show up as changes of the repository.

The sources are cloned or copied first, into `bottle/.sources/`: DIR is moved only once
nothing else can fail, so a failed clone never costs the caller its directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import BackendError, UsageError
from ..state import CHECKOUTS
from .base import find_program


def check_workspace(raw: str, home: Path, names) -> Path:
    """The absolute path of a usable `--workspace` DIR, or a UsageError saying why not."""
    path = Path(os.path.abspath(raw))
    if not os.path.lexists(path):
        raise UsageError(f"--workspace {raw}: no such directory")
    if path.is_symlink():
        raise UsageError(f"--workspace {raw}: is a symlink (give the directory itself)")
    if not path.is_dir():
        raise UsageError(f"--workspace {raw}: not a directory")
    real, home_real = os.path.realpath(path), os.path.realpath(home)
    # the orchestrator prepares checkouts in $BOT_BOTTLE_HOME/checkouts/<name> (same filesystem,
    # so the move is a rename); anything else in the home (state, manifests) is refused
    prepared = os.path.dirname(real) == os.path.join(home_real, CHECKOUTS)
    if real == "/" or home_real == real or home_real.startswith(real + "/") \
            or (real.startswith(home_real + "/") and not prepared):
        raise UsageError(f"--workspace {raw}: must lie outside $BOT_BOTTLE_HOME (except "
                         f"$BOT_BOTTLE_HOME/{CHECKOUTS}/<name>) and not contain it")
    for name in names:
        if os.path.lexists(path / name):
            raise UsageError(f"--workspace {raw}: already has an entry {name!r} (bottle {name}'s source)")
    return path


def _fetch(git_path: str, name: str, kind: str, loc: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "repo":
        git = find_program("git", git_path, "git not found on PATH; install it: apt-get install git")
        # --no-hardlinks: a local clone would otherwise share the source's object files with
        # the bottle, whose agent could rewrite them in place (its own uid, or once given them)
        r = subprocess.run([git, "clone", "--quiet", "--no-hardlinks", "--", loc, str(target)],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise BackendError(f"git clone {loc} failed: {last}")
    else:
        if not os.path.isdir(loc):
            raise BackendError(f"bottle {name}: dir {loc} is not a directory")
        shutil.copytree(loc, target, symlinks=True)


def _move_in(src: Path, dest: Path) -> None:
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise BackendError(f"cannot move the workspace {src} into the bottle: {exc}") from exc
        shutil.copytree(src, dest, symlinks=True)
        shutil.rmtree(src, ignore_errors=True)  # the copy is complete: the bottle owns it now


def _exclude(ws: Path, names) -> None:
    info = ws / ".git" / "info"
    if not names or not (ws / ".git").is_dir():
        return
    info.mkdir(exist_ok=True)
    exclude = info / "exclude"
    old = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
    lines = "".join(f"/{n}/\n" for n in names)
    exclude.write_text(old + ("" if not old or old.endswith("\n") else "\n") + lines, encoding="utf-8")


def fill(bottle: Path, sources: list, workspace: Path | None, git_path: str) -> None:
    """sources: [(name, kind, location)], kind 'repo' or 'dir'; `workspace`: a checked DIR."""
    ws = bottle / "workspace"
    (bottle / "home").mkdir(parents=True, exist_ok=True)
    if workspace is None:
        for name, kind, loc in sources:
            _fetch(git_path, name, kind, loc, ws if len(sources) == 1 else ws / name)
        ws.mkdir(parents=True, exist_ok=True)
        return
    staging = bottle / ".sources"
    for name, kind, loc in sources:
        _fetch(git_path, name, kind, loc, staging / name)
    _move_in(workspace, ws)
    for name, _, _ in sources:
        os.rename(staging / name, ws / name)
    if staging.exists():
        staging.rmdir()
    _exclude(ws, [name for name, _, _ in sources])
