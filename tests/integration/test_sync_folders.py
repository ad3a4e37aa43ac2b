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
SEEDS = (("Lists/Dev", 2), ("Lists/Ann", 1), ("Lists/Dev/Deep", 1),
         ("Trash", 1), ("Sent", 1))


def run(args):
    proc = subprocess.run([TRIBUTARY] + args, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def harness(*args):
    return subprocess.run([PYTHON, ENV["TRIB_TEST_HARNESS"]] + list(args),
                          check=True, capture_output=True, text=True,
                          timeout=120)


def local_traces():
    """(remote folder from the trace header, Message-ID) of every message
    in carol's maildir."""
    out = []
    for dirpath, _, files in os.walk(CAROL_MAILDIR):
        if os.path.basename(dirpath) not in ("new", "cur"):
            continue
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                head = re.split(rb"\r?\n\r?\n", fh.read(), 1)[0]
            folder = re.search(rb"^X-Tributary-Trace: .*?; f=([^;]+);", head,
                               re.M)
            mid = re.search(rb"^Message-ID:[ \t]*(\S+)", head, re.I | re.M)
            out.append((folder.group(1).decode() if folder else None,
                        mid.group(1).decode() if mid else None))
    return sorted(out)


def remote_ids(folder):
    out = subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                          "-f", "tab", "fetch", "-u", REMOTE_USER,
                          "hdr.message-id", "mailbox", folder, "all"],
                         check=True, capture_output=True, text=True).stdout
    return [x.strip() for x in out.splitlines()[1:] if x.strip()]


def remote_folders():
    out = subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                          "mailbox", "list", "-u", REMOTE_USER],
                         check=True, capture_output=True, text=True).stdout
    return [x.strip() for x in out.splitlines() if x.strip()]


def pct(folder):
    """The trace header's folder spelling (docs/trace-header.md: '/' is
    unreserved, so these names stand as they are)."""
    return folder


class TestSyncFolders(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sync-folders.")
        for folder, count in SEEDS:
            harness("seed", DIR, "--user", REMOTE_USER, "--mailbox", folder,
                    "--count", str(count))
        run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]])

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        shutil.rmtree(CAROL_MAILDIR, ignore_errors=True)
        shutil.rmtree(os.path.join(ENV["TRIB_TEST_LOCAL_STATE_DIR"], "carol"),
                      ignore_errors=True)

    def account(self, folders):
        with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
            lines = [x for x in f.read().splitlines()
                     if not x.startswith("carol:")]
        lines.append("carol:::::::" + " ".join(
            "userdb_tributary_%s=%s" % kv for kv in [
                ("accounts", "pat"),
                ("pat_provider", "imap"), ("pat_host", "127.0.0.1"),
                ("pat_port", ENV["TRIB_TEST_IMAPS_PORT"]),
                ("pat_tls", "implicit"),
                ("pat_ca_file", ENV["TRIB_TEST_CA"]),
                ("pat_login", REMOTE_USER),
                ("pat_auth", "password_file"),
                ("pat_password_file", PASSWORD_FILE),
                # passwd-file expands %-variables in extra fields: a
                # literal % is written %%
                ("pat_folders", folders.replace("%", "%%"))]))
        path = os.path.join(self.tmp, "accounts")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        harness("accounts", DIR, path)

    def sync_expect(self, folders, expected):
        self.account(folders)
        code, out, err = run(["sync", "-c", ENV["TRIB_TEST_LOCAL_CONF"],
                              "-u", "carol", "pat"])
        self.assertEqual(code, 0, out + err)
        want = sorted((pct(f), mid) for f in expected for mid in remote_ids(f))
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
    if os.geteuid() != 0:
        print("test_sync_folders: needs root")
        sys.exit(1)
    result = unittest.main(verbosity=2, exit=False).result
    total = result.testsRun
    failed = len(result.failures) + len(result.errors)
    print("test_sync_folders: %d passed, %d failed" % (total - failed, failed))
    sys.exit(0 if result.wasSuccessful() else 1)
