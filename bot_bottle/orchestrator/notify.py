"""systemd `sd_notify` without libsystemd: one datagram to `$NOTIFY_SOCKET` (the path is passed
in by `__main__`; a leading '@' means an abstract socket). A missing socket is a no-op."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self._address = address or None

    def notify(self, message: str) -> bool:
        if self._address is None:
            return False
        addr = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), addr)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", message.split("=")[0], exc)
            return False
        return True
