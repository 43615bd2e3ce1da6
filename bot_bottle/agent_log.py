"""The per-bottle agent log: `state/<slug>/agent.log` and its older half `agent.log.1`.

The sandbox's merged stdout and stderr are written here as they come (`AgentLog.write`),
secrets redacted, the whole capped: when `agent.log` reaches half the cap it becomes
`agent.log.1` (replacing the older one), so the two files together never exceed the cap and
the tail is always kept. Files are 0600 and live outside `bottle/`, so the agent cannot read
them. `AgentLog.note` writes our own `--- bot-bottle: ... ---` lines (run header, exit).
`copy_log` prints the log, or its last N lines, for `bot-bottle logs`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO, Iterable

LOG_NAME = "agent.log"
OLD_NAME = "agent.log.1"
DEFAULT_CAP = 10 * 1024 * 1024
MIN_SECRET = 8               # shorter values are not redacted (too many false hits)
REDACTED = b"[redacted]"


class Redactor:
    """Streaming replacement of secret values by `[redacted]`, correct across chunk
    boundaries: it holds back at most (longest secret - 1) bytes that might begin one."""

    def __init__(self, secrets: Iterable[str]):
        values = sorted({s.encode("utf-8", "surrogateescape") for s in secrets if len(s) >= MIN_SECRET},
                        key=len, reverse=True)   # longest first: the regex takes the first that fits
        self._re = re.compile(b"|".join(re.escape(v) for v in values)) if values else None
        self._keep = len(values[0]) - 1 if values else 0
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        if self._re is None:
            return data
        buf = self._pending + data
        safe_end = len(buf) - self._keep   # a secret starting before this lies wholly in buf
        out, pos = [], 0
        for m in self._re.finditer(buf):
            if m.start() >= safe_end:
                break
            out += [buf[pos:m.start()], REDACTED]
            pos = m.end()
        cut = max(pos, safe_end)
        out.append(buf[pos:cut])
        self._pending = buf[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        return self._re.sub(REDACTED, data) if self._re is not None else data


class AgentLog:
    """The writer for one run. `write` never raises: a full disk must not stop the agent,
    so a failing log goes quiet (the pipe keeps being drained)."""

    def __init__(self, state_dir: Path, secrets: Iterable[str] = (), cap: int = DEFAULT_CAP):
        self._path, self._old = state_dir / LOG_NAME, state_dir / OLD_NAME
        self._half = max(cap // 2, 1)
        self._redactor = Redactor(secrets)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._line_start = self._size == 0 or os.pread(self._fd, 1, self._size - 1) == b"\n"
        self.failed: OSError | None = None

    def _open(self) -> int:
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def _rotate(self) -> None:
        os.close(self._fd)
        os.replace(self._path, self._old)
        self._fd, self._size = self._open(), 0

    def _emit(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.failed is None:
            if self._size >= self._half:
                self._rotate()
            try:
                n = os.write(self._fd, view[:self._half - self._size])
            except OSError as exc:
                self.failed = exc
                return
            self._size += n
            self._line_start = view[n - 1:n] == b"\n"
            view = view[n:]

    def write(self, data: bytes) -> None:
        try:
            self._emit(self._redactor.feed(data))
        except OSError as exc:   # rotation failed
            self.failed = exc

    def note(self, text: str) -> None:
        """One line of ours, on a line of its own."""
        self.write(b"")
        try:
            self._emit(self._redactor.flush())
            self._emit((b"" if self._line_start else b"\n") + f"--- bot-bottle: {text} ---\n".encode())
        except OSError as exc:
            self.failed = exc

    def close(self) -> None:
        try:
            self._emit(self._redactor.flush())
        except OSError as exc:
            self.failed = exc
        os.close(self._fd)


def log_files(state_dir: Path) -> list[Path]:
    """The log's files, oldest first."""
    return [p for p in (state_dir / OLD_NAME, state_dir / LOG_NAME) if p.exists()]


def _tail_start(files: list[Path], lines: int) -> tuple[int, int]:
    """(file index, offset) where the last `lines` lines begin, reading backwards in blocks."""
    sizes = [f.stat().st_size for f in files]
    last = next((i for i in range(len(files) - 1, -1, -1) if sizes[i]), None)
    if last is None:
        return 0, 0
    with open(files[last], "rb") as fh:
        fh.seek(sizes[last] - 1)
        ends_with_newline = fh.read(1) == b"\n"
    target = lines + ends_with_newline   # a final newline ends the last line
    seen = 0
    for i in range(last, -1, -1):
        with open(files[i], "rb") as fh:
            end = sizes[i]
            while end > 0:
                start = max(0, end - 65536)
                fh.seek(start)
                block = fh.read(end - start)
                j = len(block)
                while (j := block.rfind(b"\n", 0, j)) != -1:
                    seen += 1
                    if seen == target:
                        return i, start + j + 1
                end = start
    return 0, 0


def copy_log(state_dir: Path, out: BinaryIO, tail: int | None = None) -> None:
    """Write the log (both files, in order), or only its last `tail` lines, to `out`."""
    files = log_files(state_dir)
    if tail is not None and tail <= 0 or not files:
        return
    first, offset = (0, 0) if tail is None else _tail_start(files, tail)
    for i, path in enumerate(files[first:], start=first):
        with open(path, "rb") as fh:
            fh.seek(offset if i == first else 0)
            while chunk := fh.read(65536):
                out.write(chunk)
