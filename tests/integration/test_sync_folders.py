#!/usr/bin/env python3
"""Folder patterns in tributary_<acct>_folders, against the real remote
Dovecot: `*` and `%` are expanded with LIST; a pattern never picks the
special-use folders \\Trash and \\Sent (nor \\Noselect parents), a name
given as such always is fetched, each folder once, and every message
arrives once with its remote folder in its trace header.

The local user is carol; her account `pat` reads the remote alice's
mailbox, where this test makes Lists/Dev (2 messages), Lists/Ann (1),
Lists/Dev/Deep (1), Trash (1) and Sent (1) beside INBOX. Run under
tests/harness/with-servers.sh (test-sync-folders.sh does), as root."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from synctest import (DIR, ENV, REMOTE_USER, harness, install_account, main,
                      maildir_messages, remote_ids, run, seed)

CAROL_MAILDIR = os.path.join(DIR, "local", "home", "carol", "Maildir")
CAROL_DELIVERED = os.path.join(DIR, "local", "home", "carol",
                               ".tributary.delivered")
SEEDS = (("Lists/Dev", 2), ("Lists/Ann", 1), ("Lists/Dev/Deep", 1),
         ("Trash", 1), ("Sent", 1))


def local_traces():
    """(remote folder from the trace header, Message-ID) of every message
    in carol's maildir."""
    out = []
    for data in maildir_messages(CAROL_MAILDIR):
        head = re.split(rb"\r?\n\r?\n", data, 1)[0]
        folder = re.search(rb"^X-Tributary-Trace: .*?; f=([^;]+);", head,
                           re.M)
        mid = re.search(rb"^Message-ID:[ \t]*(\S+)", head, re.I | re.M)
        out.append((folder.group(1).decode() if folder else None,
                    mid.group(1).decode() if mid else None))
    return sorted(out)


def remote_folders():
    out = subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                          "mailbox", "list", "-u", REMOTE_USER],
                         check=True, capture_output=True, text=True).stdout
    return [x.strip() for x in out.splitlines() if x.strip()]


class TestSyncFolders(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sync-folders.")
        for folder, count in SEEDS:
            seed(folder, count)
        run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]])

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        shutil.rmtree(CAROL_MAILDIR, ignore_errors=True)
        shutil.rmtree(os.path.join(ENV["TRIB_TEST_LOCAL_STATE_DIR"], "carol"),
                      ignore_errors=True)
        # and the LMTP plugin's record of what she was delivered, or the
        # same messages fetched again are (rightly) not stored again
        try:
            os.unlink(CAROL_DELIVERED)
        except FileNotFoundError:
            pass

    def account(self, folders):
        install_account("carol", "pat", {"folders": folders}, self.tmp)

    def sync_expect(self, folders, expected):
        self.account(folders)
        code, out, err = run(["sync", "-c", ENV["TRIB_TEST_LOCAL_CONF"],
                              "-u", "carol", "pat"])
        self.assertEqual(code, 0, out + err)
        want = sorted((f, mid[0].strip()) for f in expected
                      for mid in remote_ids(f))
        self.assertEqual(local_traces(), want)
        m = re.search(r"carol/pat: (\d+) new, (\d+) delivered", out)
        self.assertEqual((int(m.group(1)), int(m.group(2))),
                         (len(want), len(want)), out)
        # nothing new the second time
        code, out, err = run(["sync", "-c", ENV["TRIB_TEST_LOCAL_CONF"],
                              "-u", "carol", "pat"])
        self.assertIn("carol/pat: 0 new, 0 delivered", out, err)

    def test_star_skips_trash_and_sent(self):
        every = remote_folders()
        for name in ("INBOX", "Lists/Dev", "Lists/Ann", "Lists/Dev/Deep",
                     "Trash", "Sent"):
            self.assertIn(name, every)
        self.sync_expect("*", [f for f in every
                               if f not in ("Trash", "Sent")])

    def test_percent_stops_at_the_separator(self):
        self.sync_expect("Lists/%", ["Lists/Dev", "Lists/Ann"])

    def test_names_and_patterns_each_folder_once(self):
        # Trash named explicitly is fetched; INBOX named and matched by
        # the pattern is fetched once.
        self.sync_expect("INBOX,Trash,*,Lists/Dev",
                         [f for f in remote_folders() if f != "Sent"])

    def test_pattern_matching_nothing(self):
        self.account("Nope/*")
        code, out, err = run(["sync", "-c", ENV["TRIB_TEST_LOCAL_CONF"],
                              "-u", "carol", "pat"])
        self.assertEqual(code, 0, out + err)
        self.assertIn("carol/pat: 0 new, 0 delivered", out)
        self.assertEqual(local_traces(), [])


if __name__ == "__main__":
    main("test_sync_folders")
