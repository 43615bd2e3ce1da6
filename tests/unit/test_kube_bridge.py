"""The Kubernetes bridge's seed, both ends, without a network: the host's tar stream of a bottle
(kube_seed.seed_chunks) and the pod's extractor (pod_relay.extract), which must take what the
host sends and refuse a hostile archive whole, writing nothing outside its directory. Also the
name that goes into the bridge's certificate."""

import io
import os
import shutil
import stat
import tarfile
import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend.kube_bridge import subject_alt_name
from bot_bottle.backend.kube_seed import seed_chunks
from bot_bottle.errors import BackendError
from bot_bottle.gate import pod_relay


def member(name, kind=tarfile.REGTYPE, data=b"", linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, mode, len(data)
    return info, data


def archive(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


class ExtractTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.into = self.root / "into"

    def extract(self, blob: bytes) -> None:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r|") as tar:
            pod_relay.extract(tar, str(self.into))

    def everything_outside_into(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if self.into not in (p, *p.parents))

    def test_the_hosts_stream_of_a_bottle_extracts_to_the_same_tree(self):
        seed = self.root / "seed"
        (seed / "workspace" / "src").mkdir(parents=True)
        (seed / "workspace" / "empty").mkdir()
        (seed / "home" / ".config").mkdir(parents=True)
        (seed / "workspace" / "src" / "main.py").write_bytes(b"print('hi')\n" * 20000)
        (seed / "workspace" / "run.sh").write_text("#!/bin/sh\n")
        (seed / "workspace" / "run.sh").chmod(0o4755)   # setuid: must not survive
        (seed / "workspace" / "nothing").write_bytes(b"")
        os.symlink("src/main.py", seed / "workspace" / "link")
        os.symlink("../workspace", seed / "home" / "work")
        os.mkfifo(seed / "workspace" / "fifo")          # not a file: left out
        (seed / "outside").write_text("not in workspace/ or home/")

        with self.assertLogs("bot_bottle.backend.kube_bridge", "WARNING") as logs:
            blob = b"".join(seed_chunks(seed))
        self.assertEqual(logs.output, ["WARNING:bot_bottle.backend.kube_bridge:kube bridge: the seed "
                                       "leaves out workspace/fifo (not a file, directory or symlink)"])
        self.assertEqual(len(blob) % tarfile.RECORDSIZE, 0)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r|") as tar:
            owners = {(m.uid, m.gid, m.uname, m.gname) for m in tar}
        self.assertEqual(owners, {(0, 0, "", "")})
        self.extract(blob)

        ws = self.into / "workspace"
        self.assertEqual((ws / "src" / "main.py").read_bytes(), b"print('hi')\n" * 20000)
        self.assertEqual(os.readlink(ws / "link"), "src/main.py")
        self.assertEqual(os.readlink(self.into / "home" / "work"), "../workspace")
        self.assertTrue((ws / "empty").is_dir())
        self.assertEqual((ws / "nothing").read_bytes(), b"")
        self.assertEqual(stat.S_IMODE((ws / "run.sh").stat().st_mode), 0o755)
        self.assertTrue((self.into / "home" / ".config").is_dir())
        self.assertFalse(os.path.lexists(ws / "fifo"))
        self.assertFalse(os.path.lexists(self.into / "outside"))

    def test_a_hostile_archive_is_refused_whole_and_writes_nothing_outside(self):
        hostile = {
            "an absolute name": [member(str(self.root / "evil"), data=b"x")],
            "a name with '..'": [member("workspace/../../evil", data=b"x")],
            "a name outside workspace/ and home/": [member("etc/passwd", data=b"x")],
            "a directory a symlink leading out would replace": [
                member("workspace/up", tarfile.SYMTYPE, linkname="../.."),
                member("workspace/up/evil", data=b"x")],
            "a link, device or special file": [member("workspace/null", tarfile.CHRTYPE)],
            "a hard link": [member("workspace/f", data=b"x"),
                            member("workspace/h", tarfile.LNKTYPE, linkname="workspace/f")],
        }
        for what, members in hostile.items():
            with self.subTest(what):
                with self.assertRaises(pod_relay.RelayError) as caught:
                    self.extract(archive(*members))
                self.assertIn("refusing the seed", str(caught.exception))
                self.assertEqual(self.everything_outside_into(), [])

    def test_a_member_under_a_symlink_is_not_written_through_it(self):
        """The link stays inside DIR, but writing through a link is refused all the same."""
        blob = archive(member("workspace", tarfile.DIRTYPE, mode=0o755),
                       member("workspace/sub", tarfile.DIRTYPE, mode=0o755),
                       member("workspace/l", tarfile.SYMTYPE, linkname="sub"),
                       member("workspace/l/x", data=b"x"))
        with self.assertRaises(pod_relay.RelayError):
            self.extract(blob)
        self.assertFalse((self.into / "workspace" / "sub" / "x").exists())

    def test_symlinks_pointing_anywhere_are_kept_as_links_and_never_written_through(self):
        """As bwrap's snapshots keep them (a virtualenv's python -> /usr/bin/python3): made
        last, so neither a link's own text nor two links together lead a write out."""
        for data_filter in (True, False):
            with self.subTest(data_filter=data_filter):
                if not data_filter:
                    saved = tarfile.data_filter
                    del tarfile.data_filter
                    self.addCleanup(setattr, tarfile, "data_filter", saved)
                shutil.rmtree(self.into, ignore_errors=True)
                blob = archive(member("workspace/python", tarfile.SYMTYPE,
                                      linkname="/usr/bin/python3"),
                               member("workspace/root", tarfile.SYMTYPE, linkname="/"),
                               member("workspace/chain", tarfile.SYMTYPE, linkname="up/../.."),
                               member("workspace/up", tarfile.SYMTYPE, linkname=".."),
                               member("workspace/after", data=b"inside"))
                self.extract(blob)
                ws = self.into / "workspace"
                self.assertEqual(os.readlink(ws / "python"), "/usr/bin/python3")
                self.assertEqual(os.readlink(ws / "root"), "/")
                self.assertEqual(os.readlink(ws / "chain"), "up/../..")
                self.assertEqual((ws / "after").read_bytes(), b"inside")
                self.assertEqual(self.everything_outside_into(), [])

    def test_the_checks_hold_without_pythons_data_filter(self):
        """Python before 3.11.4 has no tarfile.data_filter: the relay's own checks decide."""
        saved = tarfile.data_filter
        del tarfile.data_filter
        self.addCleanup(setattr, tarfile, "data_filter", saved)
        with self.assertRaises(pod_relay.RelayError):
            self.extract(archive(member("workspace/../../x", data=b"x")))
        with self.assertRaises(pod_relay.RelayError):
            self.extract(archive(member("workspace/l", tarfile.SYMTYPE, linkname="../.."),
                                 member("workspace/l/x", data=b"x")))
        self.assertEqual(self.everything_outside_into(), [])
        shutil.rmtree(self.into, ignore_errors=True)
        self.extract(archive(member("workspace/ok", tarfile.SYMTYPE, linkname="../home/x")))
        self.assertEqual(os.readlink(self.into / "workspace" / "ok"), "../home/x")


class SubjectAltNameTest(unittest.TestCase):
    def test_an_ip_or_a_dns_name_and_nothing_that_could_add_names(self):
        self.assertEqual(subject_alt_name("10.0.0.7"), "IP:10.0.0.7")
        self.assertEqual(subject_alt_name("fd00::1"), "IP:fd00::1")
        self.assertEqual(subject_alt_name("bridge.example.org"), "DNS:bridge.example.org")
        for bad in ("10.0.0.7,DNS:evil.org", "a b", "", "-x.org", "x" * 300):
            with self.subTest(bad):
                with self.assertRaises(BackendError):
                    subject_alt_name(bad)


if __name__ == "__main__":
    unittest.main()
