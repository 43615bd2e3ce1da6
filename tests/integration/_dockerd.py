"""Test helper: a private, real dockerd for one test module, and a busybox base image for it.

The engine lives in a temp dir D (data, exec root, socket, pidfile) and is started with flags
that keep it off the host's firewall, forwarding and interfaces. No registry is needed: the
base image is Debian's static busybox (`.ci/setup` installs it and docker.io) put in a tar with
its applet links and `docker import`ed. `Dockerd.start()` raises when the engine does not come
up, so the tests that need it fail rather than skip; `stop()` (SIGTERM, wait, SIGKILL as the
last resort) removes D whatever the tests did.
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
START_TIMEOUT = 30.0


class Dockerd:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bb-dockerd-"))
        self.sock = self.dir / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.proc = None

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
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
             "-H", self.host, "--pidfile", str(d / "dockerd.pid"), "--iptables=false",
             "--ip-forward=false", "--bridge=none"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (d / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd did not start (exit {self.proc.poll()}):\n{log}")
            time.sleep(0.1)

    def import_busybox(self) -> str:
        busybox = shutil.which("busybox")
        if busybox is None:
            raise RuntimeError("busybox not found (.ci/setup installs busybox-static)")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        tar_path = self.dir / "busybox.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(busybox, arcname="bin/busybox")
            for name in applets:
                if name != "busybox" and "/" not in name:
                    info = tarfile.TarInfo(f"bin/{name}")
                    info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(info)
            for name in ("tmp", "etc"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
        self.docker("import", str(tar_path), IMAGE)
        return IMAGE

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
