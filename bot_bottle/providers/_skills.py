"""Copying skill folders (each holds a SKILL.md) into the place a CLI reads them from."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping


def install_skills(skills: Mapping[str, Path], dest: Path) -> None:
    """Replace `dest/<name>` by a copy of each skill folder (symlinks copied as links)."""
    for name, src in skills.items():
        target = dest / name
        if target.exists() or target.is_symlink():
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, target, symlinks=True)
