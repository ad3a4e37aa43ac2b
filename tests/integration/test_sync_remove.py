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
import shutil
import tempfile
import unittest

from synctest import (DIR, ENV, crash_points, harness, install_account,
                      local_ids, main, remote_ids, run, seed, seeded_id,
                      summary)
import synctest

CAROL_MAILDIR = os.path.join(DIR, "local", "home", "carol", "Maildir")
FOLDER = "MoveMe"


def sync(crash_at=None):
    return synctest.sync("carol", "move", crash_at=crash_at)


def remote_messages():
    """Message-ID -> flags of what the remote MoveMe holds."""
    return {mid.strip(): flags for flags, mid in
            remote_ids(FOLDER, "flags hdr.message-id")}


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
        install_account("carol", "move", {"folders": FOLDER,
                                          "remote": remote}, self.tmp)

    def assert_local(self, count):
        self.assertEqual(local_ids(CAROL_MAILDIR),
                         {seeded_id(FOLDER, i): 1
                          for i in range(1, count + 1)})

    def test_1_keep_leaves_the_remote_alone(self):
        self.account("keep")
        seed(FOLDER, 2, start=1)
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/move"), (2, 2, 0, 0), err)
        self.assertEqual(sorted(remote_messages()),
                         [seeded_id(FOLDER, 1), seeded_id(FOLDER, 2)])
        self.assert_local(2)

    def test_2_delete_removes_only_what_is_done(self):
        # Message 3 is flagged \Deleted by someone else and cannot be
        # delivered in this pass (the LMTP socket is away): the two
        # delivered before go, it stays.
        self.account("delete")
        seed(FOLDER, 1, start=3, flags="\\Deleted")
        sock = ENV["TRIB_TEST_LOCAL_LMTP_SOCKET"]
        os.rename(sock, sock + ".away")
        try:
            code, out, err = sync()
        finally:
            os.rename(sock + ".away", sock)
        self.assertEqual(code, 75, out + err)
        self.assertEqual(summary(out, "carol/move"), (1, 0, 0, 1), err)
        remote = remote_messages()
        self.assertEqual(list(remote), [seeded_id(FOLDER, 3)])
        self.assertIn("\\Deleted", remote[seeded_id(FOLDER, 3)])
        self.assert_local(2)

    def test_3_next_pass_delivers_then_removes(self):
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/move"), (1, 1, 0, 0), err)
        self.assertEqual(remote_messages(), {})
        self.assert_local(3)

    def crash_then_rerun(self, point, first):
        seed(FOLDER, 2, start=first)
        code, out, err = sync(crash_at=point)
        self.assertEqual(code, -9, "%s: %s%s" % (point, out, err))
        # delivered and committed, not yet removed
        self.assertEqual(sorted(remote_messages()),
                         [seeded_id(FOLDER, first),
                          seeded_id(FOLDER, first + 1)])
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/move"), (0, 0, 0, 0), err)
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
        seed(FOLDER, 2, start=8)
        code, out, err = sync(crash_at="sync-before-commit")
        self.assertEqual(code, -9, out + err)
        self.assertEqual(sorted(remote_messages()),
                         [seeded_id(FOLDER, 8), seeded_id(FOLDER, 9)])
        code, out, err = sync()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/move"), (2, 2, 0, 0), err)
        self.assertEqual(remote_messages(), {})
        self.assert_local(9)


if __name__ == "__main__":
    main("test_sync_remove")
