#!/usr/bin/env python3
"""`tributary_<acct>_remote = delete`: fetched mail is removed from the
remote server, only once the state that records it is committed, only
what was delivered (a deferred message stays, and so does a message
someone else flagged \\Deleted: UID EXPUNGE, never a plain EXPUNGE), and
a pass cut between its commit and its EXPUNGE is made up for by the
next one. Nothing is lost, nothing is delivered twice.

The local user is carol; her one account, `move`, reads the remote
alice's folder MoveMe. Run under tests/harness/with-servers.sh
(test-sync-remove.sh does), as root."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ENV = os.environ
BUILDDIR = ENV.get("top_builddir", ".")
TRIBUTARY = os.path.join(BUILDDIR, "fetcher", "tributary")
DIR = ENV.get("TRIB_TEST_DIR", "")
PYTHON = ENV.get("TRIB_TEST_PYTHON", sys.executable)
CAROL_MAILDIR = os.path.join(DIR, "local", "home", "carol", "Maildir")
PASSWORD_FILE = os.path.join(DIR, "local", "secrets", "alice-home.password")
REMOTE_USER = "alice@example.com"
FOLDER = "MoveMe"


def run(args, env=None):
    proc = subprocess.run([TRIBUTARY] + args, capture_output=True, text=True,
                          timeout=300, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def sync(crash_at=None):
    env = dict(ENV)
    env.pop("TRIBUTARY_CRASH_AT", None)
    if crash_at is not None:
        env["TRIBUTARY_CRASH_AT"] = crash_at
    return run(["sync", "-c", ENV["TRIB_TEST_LOCAL_CONF"], "-u", "carol",
                "move"], env=env)


def harness(*args):
    return subprocess.run([PYTHON, ENV["TRIB_TEST_HARNESS"]] + list(args),
                          check=True, capture_output=True, text=True,
                          timeout=120)


def seed(count, start, flags=""):
    """Message-IDs come from the index (start ...): give it, since the
    seeder's default (MESSAGES + 1) repeats once mail is removed."""
    args = ["seed", DIR, "--user", REMOTE_USER, "--mailbox", FOLDER,
            "--count", str(count), "--start", str(start)]
    if flags:
        args += ["--flags", flags]
    harness(*args)


def remote_messages():
    """Message-ID -> flags of what the remote MoveMe holds."""
    out = subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                          "-f", "tab", "fetch", "-u", REMOTE_USER,
                          "flags hdr.message-id", "mailbox", FOLDER, "all"],
                         check=True, capture_output=True, text=True).stdout
    msgs = {}
    for line in out.splitlines()[1:]:
        flags, _, mid = line.partition("\t")
        msgs[mid.strip()] = flags
    return msgs


def message_id(data):
    m = re.search(rb"^Message-ID:[ \t]*(\S+)",
                  re.split(rb"\r?\n\r?\n", data, 1)[0], re.I | re.M)
    return m.group(1).decode() if m else None


def local_ids():
    out = {}
    for dirpath, _, files in os.walk(CAROL_MAILDIR):
        if os.path.basename(dirpath) not in ("new", "cur"):
            continue
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                mid = message_id(fh.read())
            out[mid] = out.get(mid, 0) + 1
    return out


def seeded_id(i):
    return "<seed.%s.%06d.alice.at.example.com@tributary.test>" % (
        FOLDER.lower(), i)


def summary(out):
    m = re.search(r"carol/move: (\d+) new, (\d+) delivered, (\d+) rejected, "
                  r"(\d+) deferred", out)
    if m is None:
        raise AssertionError("no summary line in: %r" % out)
    return tuple(int(x) for x in m.groups())


class TestSyncRemove(unittest.TestCase):
    """Runs in name order: each step builds on the one before."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sync-remove.")
        run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]])

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def account(self, remote):
        with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
            lines = [x for x in f.read().splitlines()
                     if not x.startswith("carol:")]
        lines.append("carol:::::::" + " ".join(
            "userdb_tributary_%s=%s" % kv for kv in [
                ("accounts", "move"),
                ("move_provider", "imap"), ("move_host", "127.0.0.1"),
                ("move_port", ENV["TRIB_TEST_IMAPS_PORT"]),
                ("move_tls", "implicit"),
                ("move_ca_file", ENV["TRIB_TEST_CA"]),
                ("move_login", REMOTE_USER),
                ("move_auth", "password_file"),
                ("move_password_file", PASSWORD_FILE),
                ("move_folders", FOLDER),
                ("move_remote", remote)]))
        path = os.path.join(self.tmp, "accounts")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        harness("accounts", DIR, path)

    def assert_local(self, count):
        ids = local_ids()
        self.assertEqual(ids, {seeded_id(i): 1 for i in range(1, count + 1)})

    def test_1_keep_leaves_the_remote_alone(self):
        self.account("keep")
        seed(2, 1)
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out), (2, 2, 0, 0), err)
        self.assertEqual(sorted(remote_messages()),
                         [seeded_id(1), seeded_id(2)])
        self.assert_local(2)

    def test_2_delete_removes_only_what_is_done(self):
        # Message 3 is flagged \Deleted by someone else and cannot be
        # delivered in this pass (the LMTP socket is away): the two
        # delivered before go, it stays.
        self.account("delete")
        seed(1, 3, flags="\\Deleted")
        sock = ENV["TRIB_TEST_LOCAL_LMTP_SOCKET"]
        os.rename(sock, sock + ".away")
        try:
            code, out, err = sync()
        finally:
            os.rename(sock + ".away", sock)
        self.assertEqual(code, 75, out + err)
        self.assertEqual(summary(out), (1, 0, 0, 1), err)
        remote = remote_messages()
        self.assertEqual(list(remote), [seeded_id(3)])
        self.assertIn("\\Deleted", remote[seeded_id(3)])
        self.assert_local(2)

    def test_3_next_pass_delivers_then_removes(self):
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out), (1, 1, 0, 0), err)
        self.assertEqual(remote_messages(), {})
        self.assert_local(3)

    def crash_then_rerun(self, point, first):
        seed(2, first)
        code, out, err = sync(crash_at=point)
        self.assertEqual(code, -9, "%s: %s%s" % (point, out, err))
        # delivered and committed, not yet removed
        self.assertEqual(sorted(remote_messages()),
                         [seeded_id(first), seeded_id(first + 1)])
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out), (0, 0, 0, 0), err)
        self.assertEqual(remote_messages(), {})
        self.assert_local(first + 1)

    def test_4_killed_after_commit_before_store(self):
        if not crash_points():
            self.skipTest("no crash points in this build")
        self.crash_then_rerun("sync-folder-done", 4)

    def test_5_killed_between_store_and_expunge(self):
        if not crash_points():
            self.skipTest("no crash points in this build")
        self.crash_then_rerun("sync-remove-flagged", 6)

    def test_6_killed_before_commit_nothing_removed(self):
        """Delivered (LMTP said 250) but not committed: nothing may be
        removed yet. The re-run sends both again; the LMTP plugin's
        record stores neither twice; then they go."""
        if not crash_points():
            self.skipTest("no crash points in this build")
        seed(2, 8)
        code, out, err = sync(crash_at="sync-before-commit")
        self.assertEqual(code, -9, out + err)
        self.assertEqual(sorted(remote_messages()),
                         [seeded_id(8), seeded_id(9)])
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out), (2, 2, 0, 0), err)
        self.assertEqual(remote_messages(), {})
        self.assert_local(9)


def crash_points():
    with open(os.path.join(BUILDDIR, "tributary-config.h")) as f:
        return re.search(r"^#define TRIB_CRASH_POINTS 1", f.read(),
                         re.M) is not None


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("test_sync_remove: needs root")
        sys.exit(1)
    result = unittest.main(verbosity=2, exit=False).result
    total = result.testsRun
    failed = len(result.failures) + len(result.errors)
    print("test_sync_remove: %d passed, %d failed" % (total - failed, failed))
    sys.exit(0 if result.wasSuccessful() else 1)
