#!/usr/bin/env python3
"""kill -9 of `tributary sync` at every crash point of a pass, each
followed by a clean re-run: afterwards every remote message is in the
local mailbox exactly once (0 missing, 0 duplicates), and a further pass
finds nothing new.

The kill points are the sync's own (fetcher/sync*.c: after login, after
EXAMINE, in the metadata pass, at a window, at the start, in the middle
and at the end of a streamed literal, between LMTP's 250 and the state
write, around each commit) and the state commit's (shared/state*.c),
chosen with TRIBUTARY_CRASH_AT (docs/crash-points.md), never by timing.
A point that is never reached fails the case (the process must die of
SIGKILL). The points between LMTP's 250 and the state write are the ones
that need the LMTP plugin's delivered record: the re-run sends those
messages again and the plugin answers 250 without storing them.

The local user is carol (no accounts of her own in the fixture): she
gets one account, `crash`, reading the remote alice's folders Crash1
(3 messages of 300 KB first, so a literal spans many reads, then 30
small ones) and Crash2 (20 small). Before each case her maildir, her
delivered record and her Tributary state are removed.

Run under tests/harness/with-servers.sh (test-sync-crash.sh does), as
root, from a build configured with --enable-crash-points (otherwise it
exits 77: skipped)."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from synctest import (DIR, ENV, crash_points, harness, install_account,
                      local_ids, main, run, seed, seeded_id, summary)
import synctest

CAROL_HOME = os.path.join(DIR, "local", "home", "carol")
CAROL_MAILDIR = os.path.join(CAROL_HOME, "Maildir")

FOLDERS = (("Crash1", 3, 300000, 30), ("Crash2", 0, 0, 20))

# (crash point, what it stands for). "name:N" is the Nth time the point
# is reached in the pass (crash.h).
POINTS = [
    ("sync-after-login", "logged in, nothing examined"),
    ("sync-after-examine", "first folder examined"),
    ("sync-after-examine:2", "second folder examined, first committed"),
    ("sync-meta-message:10", "in the middle of the metadata pass"),
    ("sync-meta-done", "metadata fetched, no body asked for"),
    ("sync-body-window", "first window of bodies asked for"),
    ("sync-body-begin", "first message's LMTP transaction begun"),
    ("sync-body-data:2", "in the middle of a 300 KB literal"),
    ("sync-body-data:12", "further into a 300 KB literal"),
    ("sync-body-end:2", "second literal complete, no LMTP answer yet"),
    ("sync-body-begin:20", "a later message begun, earlier ones answered"),
    ("sync-lmtp-250", "first 250 from LMTP, not yet recorded"),
    ("sync-lmtp-250:17", "17th 250, earlier ones uncommitted"),
    ("sync-lmtp-recorded:25", "25th delivery recorded, not committed"),
    ("sync-lmtp-250:45", "in the second folder, uncommitted"),
    ("sync-before-commit", "first folder done, before its commit"),
    ("sync-after-commit", "first folder committed"),
    ("sync-folder-done", "first folder finished"),
    ("sync-before-commit:2", "second folder done, before its commit"),
    ("sync-folder-done:2", "everything committed, before the end"),
    ("index-append-mid", "dedupe index half written"),
    ("index-append-before-fsync", "dedupe index written, not synced"),
    ("state-before-temp", "indexes durable, before state.tmp"),
    ("state-temp-mid", "state.tmp half written"),
    ("state-temp-before-fsync", "state.tmp written, not synced"),
    ("state-before-rename", "state.tmp synced, not renamed"),
    ("state-before-dir-fsync", "renamed, directory not synced"),
    ("state-after-commit", "committed, before old files are removed"),
    ("state-temp-mid:2", "second commit's state.tmp half written"),
]


def sync(crash_at=None, check=None):
    return synctest.sync("carol", "crash", crash_at=crash_at, check=check)


def tree_snapshot(root):
    """path -> bytes of every file under root but the filler and the
    lock (which holds the pid of its last holder)."""
    snap = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f in ("filler", "lock"):
                continue
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                snap[os.path.relpath(path, root)] = fh.read()
    return snap


class TestSyncCrash(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sync-crash.")
        cls.expected = set()
        for folder, big, big_size, small in FOLDERS:
            if big:
                seed(folder, big, size=big_size)
            seed(folder, small)
            cls.expected.update(seeded_id(folder, i)
                                for i in range(1, big + small + 1))
        install_account("carol", "crash",
                        {"folders": ",".join(f[0] for f in FOLDERS)},
                        cls.tmp)
        run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]])

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def reset(self):
        shutil.rmtree(CAROL_MAILDIR, ignore_errors=True)
        for name in os.listdir(CAROL_HOME) if os.path.isdir(CAROL_HOME) \
                else []:
            if name.startswith(".tributary"):
                path = os.path.join(CAROL_HOME, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        shutil.rmtree(os.path.join(ENV["TRIB_TEST_LOCAL_STATE_DIR"], "carol"),
                      ignore_errors=True)

    def check_exactly_once(self, what):
        ids = local_ids(CAROL_MAILDIR)
        missing = sorted(self.expected - set(ids))
        extra = sorted(set(ids) - self.expected)
        dups = sorted(m for m, n in ids.items() if n > 1)
        self.assertEqual((missing, dups, extra), ([], [], []),
                         "%s: missing %d, duplicated %d, unexpected %d"
                         % (what, len(missing), len(dups), len(extra)))

    def test_1_clean_pass(self):
        """The control: no crash, everything once; a second pass finds
        nothing new."""
        self.reset()
        _, out, err = sync(check=0)
        n = len(self.expected)
        self.assertEqual(summary(out, "carol/crash"), (n, n, 0, 0), err)
        self.check_exactly_once("clean pass")
        _, out, err = sync(check=0)
        self.assertEqual(summary(out, "carol/crash"), (0, 0, 0, 0), err)

    def test_2_kill_matrix(self):
        failures = []
        for point, what in POINTS:
            with self.subTest(point=point):
                self.reset()
                code, out, err = sync(crash_at=point)
                if code != -9:
                    failures.append(point)
                    self.fail("%s (%s): not killed there: exit %d\n%s%s"
                              % (point, what, code, out, err))
                before = sum(local_ids(CAROL_MAILDIR).values())
                code, out, err = sync()
                self.assertEqual(code, 0, "%s: re-run: %s%s"
                                 % (point, out, err))
                self.check_exactly_once("%s (%s)" % (point, what))
                code, out, err = sync()
                self.assertEqual(summary(out, "carol/crash"), (0, 0, 0, 0),
                                 "%s: third pass: %s" % (point, err))
                print("  %-26s killed with %2d stored, re-run: all %d once"
                      % (point, before, len(self.expected)))

    def test_3_kill_twice_in_a_row(self):
        """Two kills before a clean run: the second pass is itself cut
        after delivering more than the first committed."""
        self.reset()
        code, _, err = sync(crash_at="sync-lmtp-250:10")
        self.assertEqual(code, -9, err)
        code, _, err = sync(crash_at="sync-lmtp-recorded:30")
        self.assertEqual(code, -9, err)
        sync(check=0)
        self.check_exactly_once("two kills")

    def test_4_state_disk_full(self):
        """The disk under carol's state dir fills up during the pass: the
        commit fails with a clear error naming the cause, the pass
        stops (exit 75), the state on disk is the last good one; once
        there is room again a re-run leaves everything exactly once."""
        self.reset()
        state = os.path.join(ENV["TRIB_TEST_LOCAL_STATE_DIR"], "carol")
        os.makedirs(state)
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700",
                            "tmpfs", state], check=True, capture_output=True)
        except (subprocess.CalledProcessError, OSError) as e:
            self.skipTest("cannot mount a tmpfs: %s" % e)
        self.addCleanup(subprocess.run, ["umount", "-l", state],
                        capture_output=True)
        # A first pass with room commits (lock file, state, indexes) ...
        code, out, err = sync(crash_at="sync-after-examine:2")
        self.assertEqual(code, -9, out + err)
        # ... then the rest of the disk is taken.
        filler = os.path.join(state, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 1024) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        snap = tree_snapshot(state)
        code, out, err = sync()
        self.assertEqual(code, 75, out + err)
        self.assertIn("carol/crash: cannot save the state, stopping:", err)
        self.assertIn("No space left on device", err)
        after = tree_snapshot(state)
        self.assertEqual(after, snap, "the state on disk changed")
        os.unlink(filler)
        sync(check=0)
        self.check_exactly_once("disk full, then room again")


if __name__ == "__main__":
    if not crash_points():
        print("test_sync_crash: skipped: this build has no crash points "
              "(configure --enable-crash-points)")
        sys.exit(77)
    main("test_sync_crash")
