"""Test helper: a private, real dockerd for one test module, and base images for it.

The engine lives in a temp dir D (data, exec root, socket, pidfile) and is started with flags
that keep it off the host's firewall, forwarding and interfaces. No registry and no network is
needed: every image is a tar of the host's own files, `docker import`ed into this engine only
(nothing is cached elsewhere): `import_busybox()` is Debian's static busybox with its applet
links (`.ci/setup` installs it and docker.io); `python_image()` adds the host's Debian python3
(binary, standard library, the shared libraries `ldd` names), made once per engine, in about
3 s; `setuid_image()` adds a setuid-root GNU `id`. `Dockerd.start()` raises when the engine does
not come up, so the tests that need it fail rather than skip; `stop()` (SIGTERM, wait, SIGKILL
as the last resort) removes D whatever the tests did.
"""

import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

IMAGE = "bot-bottle-test/busybox:1"
PYTHON_IMAGE = "bot-bottle-test/python:1"
SETUID_IMAGE = "bot-bottle-test/setuid:1"
PYTHON = Path("/usr/bin/python3")   # Debian's (python3-minimal), not a tool manager's shim
# what the bottles never need from the standard library: its tests, GUI and build helpers
PYTHON_SKIP = {"__pycache__", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
               "lib2to3", "pydoc_data", "site-packages", "dist-packages"}
START_TIMEOUT = 30.0


def stray_files() -> set:
    """What an engine would leave in the host's temp dir (containerd's stack dumps)."""
    return set(Path(tempfile.gettempdir()).glob("containerd.*.stacks.log"))


def check_nothing_left(before: set) -> None:
    """A module cleanup: no engine of this module left a file in the host's temp dir."""
    left = stray_files() - before
    if left:
        raise AssertionError(f"the engine left {sorted(map(str, left))}")


class Dockerd:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bb-dockerd-"))
        self.sock = self.dir / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.proc = None
        self._python = None

    def docker(self, *args, check=True, timeout=60, env=None):
        """The docker CLI against this engine only."""
        r = subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, env=env)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
        return r

    def start(self) -> None:
        d = self.dir
        self._log = open(d / "dockerd.log", "wb")
        (d / "tmp").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
             "-H", self.host, "--pidfile", str(d / "dockerd.pid"), "--iptables=false",
             "--ip-forward=false", "--bridge=none"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # containerd dumps its stacks into the temp dir when it is stopped: ours, not /tmp
            env={**os.environ, "TMPDIR": str(d / "tmp")}, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (d / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd did not start (exit {self.proc.poll()}):\n{log}")
            time.sleep(0.1)

    def import_busybox(self, tag: str = IMAGE, user: str | None = None) -> str:
        """The busybox image as `tag`; `user`: the image's USER (`docker import --change`)."""
        path = self.dir / "busybox.tar"
        if not path.exists():
            with tarfile.open(path, "w") as tar:
                _add_busybox(tar)
        self.docker("import", *(["--change", f"USER {user}"] if user else []), str(path), tag)
        return tag

    def python_image(self) -> str:
        """An image with the host's Debian python3 (its binary, its standard library without
        tests and byte code, the shared libraries `ldd` names for it and its extension
        modules) and busybox for a shell; made once per engine, from the host's files only."""
        if self._python is None:
            path = self.dir / "python.tar"
            with tarfile.open(path, "w") as tar:
                _add_busybox(tar)
                _add_python(tar)
            self.docker("import", str(path), PYTHON_IMAGE)
            path.unlink()
            self._python = PYTHON_IMAGE
        return self._python

    def setuid_image(self) -> str:
        """busybox plus a setuid-root copy of GNU `id` at /usr/local/bin/suid-id (and the
        libraries it needs): `suid-id -u` prints 0 wherever setuid takes effect."""
        path = self.dir / "setuid.tar"
        binary = Path(shutil.which("id") or "/usr/bin/id").resolve()
        with tarfile.open(path, "w") as tar:
            _add_busybox(tar)
            info = tar.gettarinfo(str(binary), arcname="usr/local/bin/suid-id")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o4755
            with open(binary, "rb") as fh:
                tar.addfile(info, fh)
            for lib in sorted(_libraries([binary])):
                tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
        self.docker("import", str(path), SETUID_IMAGE)
        return SETUID_IMAGE

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        finally:
            if getattr(self, "_log", None):
                self._log.close()
            # dockerd leaves its overlay/netns mounts behind only when killed; unmount what is left
            mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                      if line.split()[1].startswith(str(self.dir))]
            for m in sorted(mounts, reverse=True):
                subprocess.run(["umount", "-l", m], capture_output=True, stdin=subprocess.DEVNULL)
            shutil.rmtree(self.dir, ignore_errors=True)


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_busybox(tar: tarfile.TarFile) -> None:
    """Debian's static busybox at /bin/busybox with its applet links, /tmp and /etc."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found (.ci/setup installs busybox-static)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    tar.add(busybox, arcname="bin/busybox")
    for name in applets:
        if name != "busybox" and "/" not in name:
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    _dir(tar, "tmp", 0o1777)
    _dir(tar, "etc")


def _libraries(binaries: list[Path]) -> set[str]:
    """The absolute paths `ldd` resolves for these binaries (the loader included)."""
    found = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            words = line.split()
            if "=>" in words and len(words) > words.index("=>") + 1:
                words = words[words.index("=>") + 1:]
            if words and words[0].startswith("/"):
                found.add(words[0])
    return found


def _add_python(tar: tarfile.TarFile) -> None:
    exe = PYTHON.resolve()
    if not exe.is_file():
        raise RuntimeError(f"{PYTHON} not found (Debian's python3 package)")
    stdlib = Path("/usr/lib") / exe.name
    if not (stdlib / "os.py").is_file():
        raise RuntimeError(f"no standard library at {stdlib}")
    tar.add(exe, arcname=str(exe).lstrip("/"))
    info = tarfile.TarInfo(str(PYTHON).lstrip("/"))
    info.type, info.linkname = tarfile.SYMTYPE, exe.name
    tar.addfile(info)
    modules = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in PYTHON_SKIP)
        here = Path(root)
        _dir(tar, str(here).lstrip("/"))
        for name in sorted(files):
            path = here / name
            if path.is_symlink() and not path.exists():
                continue   # Debian's sitecustomize links to /etc, which the image lacks
            tar.add(path.resolve(), arcname=str(path).lstrip("/"))
            if name.endswith(".so"):
                modules.append(path)
    for lib in sorted(_libraries([exe, *modules])):
        tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
