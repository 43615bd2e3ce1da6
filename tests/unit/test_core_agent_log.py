"""bot_bottle.agent_log: redaction across chunk boundaries, the size cap keeping the tail,
our own lines on lines of their own, file modes, and printing the log or its last lines."""

import io
import stat
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from bot_bottle.agent_log import AgentLog, Redactor, copy_log


def redact_in_pieces(secrets, text: bytes, cuts) -> bytes:
    r = Redactor(secrets)
    out, prev = [], 0
    for c in [*cuts, len(text)]:
        out.append(r.feed(text[prev:c]))
        prev = c
    return b"".join(out) + r.flush()


class RedactorTest(unittest.TestCase):
    def test_a_secret_split_at_every_possible_point_is_still_redacted(self):
        text = b"key=sk-abcdef-123456; again sk-abcdef-123456!"
        want = b"key=[redacted]; again [redacted]!"
        for a in range(len(text) + 1):
            for b in range(a, len(text) + 1, 3):
                with self.subTest(a=a, b=b):
                    self.assertEqual(redact_in_pieces(["sk-abcdef-123456"], text, [a, b]), want)

    def test_byte_by_byte_feeding_and_overlapping_secrets_take_the_longest(self):
        secrets = ["token-12345678", "token-12345678-extended", "ab" * 8]
        text = b"x token-12345678-extended y token-12345678 z " + b"ab" * 9
        want = b"x [redacted] y [redacted] z [redacted]ab"
        self.assertEqual(redact_in_pieces(secrets, text, range(1, len(text))), want)
        self.assertEqual(redact_in_pieces(secrets, text, []), want)

    def test_values_shorter_than_eight_characters_are_not_redacted(self):
        self.assertEqual(redact_in_pieces(["1", "debug", "seven77"], b"1 debug seven77", [3]),
                         b"1 debug seven77")
        self.assertEqual(redact_in_pieces(["eight888"], b"eight888", [4]), b"[redacted]")

    def test_non_ascii_secrets_are_matched_as_utf8_bytes(self):
        secret = "pässwörd-geheim"
        self.assertEqual(redact_in_pieces([secret], f"<{secret}>".encode(), [3]), b"<[redacted]>")

    def test_without_secrets_data_passes_unchanged_and_nothing_is_held_back(self):
        r = Redactor([])
        self.assertEqual(r.feed(b"abc"), b"abc")
        self.assertEqual(r.flush(), b"")


class AgentLogTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def read(self):
        out = io.BytesIO()
        copy_log(self.dir, out)
        return out.getvalue()

    def test_log_is_0600_and_our_lines_start_on_a_line_of_their_own(self):
        log = AgentLog(self.dir, ["sk-abcdef-123456"])
        log.note("run 1 (start) at T")
        log.write(b"no newline sk-abc")
        log.write(b"def-123456 at the end")
        log.note("exit 3")
        log.close()
        self.assertEqual(self.read(), b"--- bot-bottle: run 1 (start) at T ---\n"
                                      b"no newline [redacted] at the end\n--- bot-bottle: exit 3 ---\n")
        self.assertEqual(stat.S_IMODE((self.dir / "agent.log").stat().st_mode), 0o600)
        log = AgentLog(self.dir, [])   # the next run appends
        log.note("run 2 (resume) at U")
        log.close()
        self.assertTrue(self.read().endswith(b"--- bot-bottle: exit 3 ---\n--- bot-bottle: run 2 (resume) at U ---\n"))

    def test_the_cap_holds_for_both_files_together_and_the_tail_is_kept(self):
        cap = 4096
        log = AgentLog(self.dir, [], cap=cap)
        data = b"".join(b"line %06d\n" % i for i in range(5000))
        for i in range(0, len(data), 777):
            log.write(data[i:i + 777])
        log.close()
        total = sum(p.stat().st_size for p in self.dir.iterdir())
        self.assertLessEqual(total, cap)
        self.assertGreaterEqual(total, cap // 2)
        text = self.read()
        self.assertTrue(data.endswith(text), "the log is exactly the tail of what was written")
        self.assertEqual(stat.S_IMODE((self.dir / "agent.log.1").stat().st_mode), 0o600)

    def test_one_write_larger_than_the_cap_keeps_its_tail(self):
        log = AgentLog(self.dir, [], cap=2048)
        data = bytes(range(256)) * 40
        log.write(data)
        log.close()
        self.assertTrue(data.endswith(self.read()))
        self.assertLessEqual(len(self.read()), 2048)

    def test_a_full_disk_silences_the_log_instead_of_raising(self):
        # a real write failure: a file size limit (EFBIG) in a child process
        code = (
            "import resource, signal, sys\n"
            "from pathlib import Path\n"
            "from bot_bottle.agent_log import AgentLog\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))\n"
            "log = AgentLog(Path(sys.argv[1]), [])\n"
            "log.write(b'x' * 1000)\n"
            "log.note('exit 0')\n"
            "log.close()\n"
            "print(type(log.failed).__name__)\n")
        r = subprocess.run([sys.executable, "-W", "error", "-c", code, str(self.dir)], capture_output=True,
                           text=True, timeout=30, cwd=str(Path(__file__).resolve().parents[2]))
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "OSError\n", ""))
        self.assertEqual((self.dir / "agent.log").stat().st_size, 100)


class TailTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def tail(self, n):
        out = io.BytesIO()
        copy_log(self.dir, out, n)
        return out.getvalue()

    def test_tail_counts_lines_across_both_files(self):
        (self.dir / "agent.log.1").write_bytes(b"a\nb\nc")
        (self.dir / "agent.log").write_bytes(b"d\ne\n")
        self.assertEqual(self.tail(1), b"e\n")
        self.assertEqual(self.tail(2), b"cd\ne\n")
        self.assertEqual(self.tail(3), b"b\ncd\ne\n")
        self.assertEqual(self.tail(100), b"a\nb\ncd\ne\n")
        self.assertEqual(self.tail(0), b"")
        self.assertEqual(self.tail(None), b"a\nb\ncd\ne\n")

    def test_tail_of_a_last_line_without_newline_and_of_an_empty_current_file(self):
        (self.dir / "agent.log.1").write_bytes(b"x\ny\n")
        (self.dir / "agent.log").write_bytes(b"")
        self.assertEqual(self.tail(1), b"y\n")
        (self.dir / "agent.log").write_bytes(b"z")
        self.assertEqual(self.tail(1), b"z")
        self.assertEqual(self.tail(2), b"y\nz")

    def test_tail_of_long_lines_reads_backwards_in_blocks(self):
        big = b"q" * 200000
        (self.dir / "agent.log").write_bytes(b"first\n" + big + b"\n" + big + b"\nlast")
        self.assertEqual(self.tail(2), big + b"\nlast")
        self.assertEqual(self.tail(3), big + b"\n" + big + b"\nlast")

    def test_no_log_prints_nothing(self):
        self.assertEqual(self.tail(None), b"")
        self.assertEqual(self.tail(5), b"")


if __name__ == "__main__":
    unittest.main()
