"""sd_notify over a real datagram socket, path and abstract addresses."""

from __future__ import annotations

import os
import socket
import tempfile
import unittest

from bot_bottle.orchestrator.notify import Notifier


class NotifierTest(unittest.TestCase):
    def listen(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(5)
        return sock

    def test_ready_reaches_a_path_socket(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        path = os.path.join(tmp.name, "notify")
        sock = self.listen(path)
        self.assertTrue(Notifier(path).notify("READY=1"))
        self.assertEqual(sock.recv(100), b"READY=1")

    def test_abstract_address_with_at_sign_is_supported(self) -> None:
        name = f"bot-bottle-test-{os.getpid()}-{id(self)}"
        sock = self.listen("\0" + name)
        self.assertTrue(Notifier("@" + name).notify("WATCHDOG=1"))
        self.assertEqual(sock.recv(100), b"WATCHDOG=1")

    def test_without_notify_socket_nothing_is_sent(self) -> None:
        self.assertFalse(Notifier(None).notify("READY=1"))


if __name__ == "__main__":
    unittest.main()
