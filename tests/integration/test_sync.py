#!/usr/bin/env python3
"""`tributary sync`: one pass from the harness's remote Dovecot (alice's
account `home`, password_file) into the local Dovecot over LMTP, against
the real servers. Every delivered message must start (after the lines
LMTP adds) with the X-Tributary-Trace header, followed by exactly the
remote's bytes; passes after the first must not deliver anything twice.

Both Dovecots store messages with LF line ends (mail_save_crlf = no), so
a local message is compared, from the line after its trace header on,
with the remote's stored file byte for byte.

Run under tests/harness/with-servers.sh (test-sync.sh does). The CLI runs
as root in this pass (it reads the root:tributary-trace trace key)."""

import fcntl
import json
import os
import re
import subprocess
import sys
import time
import unittest

ENV = os.environ
BUILDDIR = ENV.get("top_builddir", ".")
TRIBUTARY = os.path.join(BUILDDIR, "fetcher", "tributary")
DIR = ENV.get("TRIB_TEST_DIR", "")
LOCAL_MAILDIR = os.path.join(DIR, "local", "home", "alice", "Maildir")
PASSWORD_FILE = os.path.join(DIR, "local", "secrets", "alice-home.password")


def run(args, check=None):
    """Run the CLI; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([TRIBUTARY] + args, capture_output=True, text=True,
                          timeout=300)
    if check is not None and proc.returncode != check:
        raise AssertionError("%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), proc.returncode, check,
                                proc.stdout, proc.stderr))
    return proc.returncode, proc.stdout, proc.stderr


def conf_args():
    return ["-c", ENV["TRIB_TEST_LOCAL_CONF"]]


def sync(extra=(), check=None):
    return run(["sync"] + conf_args() + ["-u", "alice"] + list(extra),
               check=check)


_next_index = None


def seed(count, size=None):
    """Append count messages to the remote alice's INBOX; returns the
    harness's JSON report (uidnext ...). Message-IDs come from an index
    that goes on from the last seed's (the seeder's default, MESSAGES + 1,
    would repeat indices once messages were expunged)."""
    global _next_index
    args = [ENV.get("TRIB_TEST_PYTHON", sys.executable),
            ENV["TRIB_TEST_HARNESS"], "seed", DIR, "--user",
            "alice@example.com", "--mailbox", "INBOX", "--count", str(count)]
    if _next_index is not None:
        args += ["--start", str(_next_index)]
    if size is not None:
        args += ["--size", str(size)]
    proc = subprocess.run(args, check=True, capture_output=True,
                          timeout=120, text=True)
    report = json.loads(proc.stdout)
    _next_index = report["first_index"] + count
    return report


def remote_logouts_since(offset):
    """The remote log's "Logged out" lines of alice@example.com's IMAP
    sessions written after byte offset (the log process may lag a
    moment behind the client: wait up to 10 s for one)."""
    deadline = time.time() + 10
    while True:
        with open(ENV["TRIB_TEST_REMOTE_LOG"], "rb") as f:
            f.seek(offset)
            lines = [x.decode(errors="replace") for x in f.read().split(b"\n")
                     if b"imap(alice@example.com)" in x and b"Logged out" in x]
        if lines or time.time() > deadline:
            return lines
        time.sleep(0.05)


def maildir_files(root):
    """Every message file under a maildir tree (all folders)."""
    out = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) in ("new", "cur"):
            out.extend(os.path.join(dirpath, f) for f in files)
    return out


def message_id(data):
    m = re.search(rb"^Message-ID:[ \t]*(\S+)", data.split(b"\n\n", 1)[0],
                  re.I | re.M)
    return m.group(1) if m else None


def remote_inbox():
    """Message-ID -> stored bytes of the remote alice's INBOX (LAYOUT=fs:
    INBOX's new/ and cur/ are at the top of the maildir)."""
    homes = os.path.join(DIR, "remote", "home")
    root = os.path.join(homes, "alice@example.com", "Maildir")
    if not os.path.isdir(root):
        for name in os.listdir(homes):
            if name.startswith("alice"):
                root = os.path.join(homes, name, "Maildir")
    msgs = {}
    for sub in ("new", "cur"):
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            continue
        for f in os.listdir(d):
            with open(os.path.join(d, f), "rb") as fh:
                data = fh.read()
            msgs[message_id(data)] = data
    return msgs


LMTP_LINE = re.compile(rb"^(Return-Path|Delivered-To|Received):", re.I)


def split_local(data):
    """(trace line, the bytes after it) of a delivered message, checking
    that only LMTP's own lines come before the trace header."""
    lines = data.split(b"\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(b"X-Tributary-Trace: "):
            return line, b"\n".join(lines[i + 1:])
        if not (LMTP_LINE.match(line) or line[:1] in (b" ", b"\t")):
            return None, data
        i += 1
    return None, data


def local_traced():
    """Message-ID -> list of (trace line, bytes after it)."""
    out = {}
    for path in maildir_files(LOCAL_MAILDIR):
        with open(path, "rb") as fh:
            data = fh.read()
        trace, rest = split_local(data)
        if trace is None:
            continue
        out.setdefault(message_id(rest), []).append((trace, rest))
    return out


def summary(out):
    m = re.search(r"alice/home: (\d+) new, (\d+) delivered, (\d+) rejected, "
                  r"(\d+) deferred", out)
    if m is None:
        raise AssertionError("no summary line in: %r" % out)
    return tuple(int(x) for x in m.groups())


def state_snapshot():
    root = os.path.join(ENV["TRIB_TEST_LOCAL_STATE_DIR"], "alice")
    snap = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f in ("lock", "status"):
                # the pid of the last opener; what the last pass did
                continue
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                snap[path] = fh.read()
    return snap


class TestSync(unittest.TestCase):
    """Runs in name order: each pass builds on the one before."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        code, out, err = run(["init"] + conf_args())
        if code != 0:
            raise AssertionError("init: %d %s %s" % (code, out, err))
        cls.init_out = out

    def check_all_delivered_once(self):
        remote = remote_inbox()
        local = local_traced()
        self.assertEqual(sorted(local), sorted(remote))
        for mid, copies in local.items():
            self.assertEqual(len(copies), 1, "duplicate %r" % mid)
            trace, rest = copies[0]
            self.assertIn(b"; r=alice; a=home; p=imap; f=INBOX; ", trace)
            self.assertEqual(rest, remote[mid], "bytes differ: %r" % mid)
        return len(local)

    def test_1_init_made_the_trace_key(self):
        self.assertIn("trace key", self.init_out)
        self.assertIn("vault key", self.init_out)
        code, out, _ = run(["init"] + conf_args(), check=0)
        self.assertIn("exists already", out)

    def test_2_first_sync_delivers_inbox(self):
        before = len(remote_inbox())
        self.assertGreaterEqual(before, int(ENV.get("TRIB_TEST_INBOX_COUNT",
                                                    "3")))
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (before, before, 0, 0), err)
        self.assertEqual(self.check_all_delivered_once(), before)

    def test_3_second_sync_nothing_new(self):
        n = len(maildir_files(LOCAL_MAILDIR))
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (0, 0, 0, 0), err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n)
        self.check_all_delivered_once()

    def test_4_fifty_more(self):
        n = len(maildir_files(LOCAL_MAILDIR))
        seed(50)
        _, out, err = sync(["home", "--lmtp-sessions", "3"], check=0)
        self.assertEqual(summary(out), (50, 50, 0, 0), err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n + 50)
        self.check_all_delivered_once()

    def test_4b_large_messages_one_session(self):
        # 3 MB each: over LMTP's pipeline_max_size and its high watermark,
        # so the IMAP side must pause reading until LMTP drains.
        n = len(maildir_files(LOCAL_MAILDIR))
        seed(3, size=3000000)
        _, out, err = sync(["home", "--lmtp-sessions", "1", "-v"], check=0)
        self.assertEqual(summary(out), (3, 3, 0, 0), err)
        self.assertIn("IMAP reading paused", err)
        self.assertIn("IMAP reading resumed", err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n + 3)
        self.check_all_delivered_once()

    def test_4c_progress_line_on_a_terminal(self):
        """With stderr on a terminal, a progress line (messages, bytes,
        rate) is drawn with carriage returns and wiped at the end of the
        folder; stdout keeps its summary. Without a terminal (the other
        tests) stderr stays empty on success."""
        import pty
        seed(20)
        master, slave = pty.openpty()
        env = dict(ENV, TERM="xterm")
        proc = subprocess.Popen([TRIBUTARY, "sync"] + conf_args() +
                                ["-u", "alice", "home"], stdout=subprocess.PIPE,
                                stderr=slave, env=env)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            seen += chunk
        os.close(master)
        out = proc.stdout.read().decode()
        proc.stdout.close()
        proc.wait(timeout=60)
        self.assertEqual(proc.returncode, 0, out + seen.decode())
        self.assertEqual(summary(out), (20, 20, 0, 0))
        self.assertIn(b"\r\x1b[Kalice/home INBOX: ", seen)
        self.assertRegex(seen, rb"\d+/20 messages, [0-9.]+ kB/[0-9.]+ kB")
        self.assertTrue(seen.endswith(b"\r\x1b[K"), seen[-80:])
        _, out, err = sync(["home"], check=0)
        self.assertEqual(err, "")

    def test_5_wrong_password(self):
        snap = state_snapshot()
        with open(PASSWORD_FILE) as f:
            saved = f.read()
        try:
            with open(PASSWORD_FILE, "w") as f:
                f.write("not-the-password\n")
            code, out, err = sync(["home"])
        finally:
            with open(PASSWORD_FILE, "w") as f:
                f.write(saved)
        self.assertEqual(code, 77, out + err)
        self.assertIn("alice/home: authentication failed", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(state_snapshot(), snap)

    def test_6_lock_held_elsewhere(self):
        lock = os.path.join(ENV["TRIB_TEST_LOCAL_STATE_DIR"], "alice", "lock")
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            code, out, err = sync(["home"])
        finally:
            os.close(fd)
        self.assertEqual(code, 75, out + err)
        self.assertIn("locked", err)

    def test_6b_lmtp_down_defers(self):
        n = len(maildir_files(LOCAL_MAILDIR))
        seed(5)
        sock = ENV["TRIB_TEST_LOCAL_LMTP_SOCKET"]
        os.rename(sock, sock + ".away")
        try:
            code, out, err = sync(["home"])
        finally:
            os.rename(sock + ".away", sock)
        self.assertEqual(code, 75, out + err)
        self.assertEqual(summary(out), (5, 0, 0, 5), err)
        self.assertIn("alice/home: ", err)
        self.assertIn("LMTP", err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n)
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (5, 5, 0, 0), err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n + 5)
        self.check_all_delivered_once()

    def test_7_two_syncs_at_once(self):
        lock = os.path.join(ENV["TRIB_TEST_LOCAL_STATE_DIR"], "alice", "lock")
        ino = os.stat(lock).st_ino
        n = len(maildir_files(LOCAL_MAILDIR))
        seed(1000)
        first = subprocess.Popen([TRIBUTARY, "sync"] + conf_args() +
                                 ["-u", "alice", "home"],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        # Wait until the first holds the lock (/proc/locks names it).
        deadline = time.time() + 30
        held = False
        while time.time() < deadline and first.poll() is None:
            with open("/proc/locks") as f:
                if any(line.split()[5].endswith(":%d" % ino)
                       for line in f if len(line.split()) > 5):
                    held = True
                    break
            time.sleep(0.005)
        self.assertTrue(held, "the first sync never held the lock")
        code, out, err = sync(["home"])
        out1, err1 = first.communicate(timeout=300)
        self.assertEqual(code, 75, out + err)
        self.assertIn("locked by pid %d" % first.pid, err)
        self.assertEqual(first.returncode, 0, out1 + err1)
        self.assertEqual(summary(out1), (1000, 1000, 0, 0), err1)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n + 1000)
        self.check_all_delivered_once()

    def test_7a_uidvalidity_change_remaps(self):
        n = len(maildir_files(LOCAL_MAILDIR))
        count = len(remote_inbox())
        subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                        "mailbox", "update", "-u", "alice@example.com",
                        "--uid-validity", "12345", "INBOX"],
                       check=True, capture_output=True)
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (count, 0, 0, 0), err)
        self.assertIn(", %d re-mapped" % count, out)
        self.assertIn("UIDVALIDITY changed to 12345", err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n)
        self.check_all_delivered_once()

    def test_7b_expunged_gaps_then_nothing_to_fetch(self):
        """Messages expunged on the remote before they were fetched leave
        gaps below UIDNEXT, one of them at the very end: the pass
        delivers the rest and moves its cursor past the gaps, so the
        next pass sends no FETCH at all (the remote's logout line counts
        no header and no body fetched)."""
        n = len(maildir_files(LOCAL_MAILDIR))
        uidnext = seed(10)["uidnext"]
        for uids in ("%d:%d" % (uidnext - 8, uidnext - 5), str(uidnext - 1)):
            subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                            "expunge", "-u", "alice@example.com", "mailbox",
                            "INBOX", "uid", uids],
                           check=True, capture_output=True)
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (5, 5, 0, 0), err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n + 5)
        self.check_all_delivered_once()
        offset = os.path.getsize(ENV["TRIB_TEST_REMOTE_LOG"])
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (0, 0, 0, 0), err)
        logouts = remote_logouts_since(offset)
        self.assertEqual(len(logouts), 1, logouts)
        self.assertIn(" hdr_count=0 ", logouts[0])
        self.assertIn(" body_count=0", logouts[0])
        self.assertNotIn("fetch=", logouts[0])

    def test_7c_many_new_in_windows_with_a_wide_gap(self):
        """1,500 new messages of which 1,100 in the middle were expunged
        before the pass: the metadata pass goes by UID windows (so memory
        stays flat however many messages are new) and widens them over
        the sparse part; the 400 left arrive once, the gap is stepped
        over, and the next pass fetches nothing."""
        n = len(maildir_files(LOCAL_MAILDIR))
        uidnext = seed(1500)["uidnext"]
        subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                        "expunge", "-u", "alice@example.com", "mailbox",
                        "INBOX", "uid", "%d:%d" % (uidnext - 1300,
                                                   uidnext - 201)],
                       check=True, capture_output=True)
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (400, 400, 0, 0), err)
        self.assertEqual(len(maildir_files(LOCAL_MAILDIR)), n + 400)
        self.check_all_delivered_once()
        offset = os.path.getsize(ENV["TRIB_TEST_REMOTE_LOG"])
        _, out, err = sync(["home"], check=0)
        self.assertEqual(summary(out), (0, 0, 0, 0), err)
        logouts = remote_logouts_since(offset)
        self.assertEqual(len(logouts), 1, logouts)
        self.assertIn(" hdr_count=0 ", logouts[0])

    def test_8_json_and_other_accounts(self):
        # every account: `work` is OAuth with no refresh token in the
        # vault yet: it needs `tributary authorize`
        code, out, err = sync(["--json"])
        self.assertEqual(code, 77, out + err)
        self.assertIn("alice/work: reauthorization required: run `tributary "
                      "authorize -u alice work` (no refresh token in the "
                      "vault)", err)
        doc = json.loads(out)
        self.assertEqual(doc["user"], "alice")
        self.assertEqual(doc["exit"], 77)
        home = [a for a in doc["accounts"] if a["account"] == "home"][0]
        self.assertEqual((home["new"], home["delivered"], home["deferred"]),
                         (0, 0, 0))

    def test_9_missing_trace_key(self):
        key = os.path.join(DIR, "local", "keys", "trace.key")
        out = subprocess.run(["doveconf", "-c", ENV["TRIB_TEST_LOCAL_CONF"],
                              "-h", "plugin/tributary_trace_key_file"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            key = out.stdout.strip()
        os.rename(key, key + ".away")
        try:
            code, out, err = sync(["home"])
        finally:
            os.rename(key + ".away", key)
        self.assertEqual(code, 78, out + err)
        self.assertIn("tributary init", err)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("test_sync: needs root")
        sys.exit(1)
    result = unittest.main(verbosity=2, exit=False).result
    total = result.testsRun
    failed = len(result.failures) + len(result.errors)
    print("test_sync: %d passed, %d failed" % (total - failed, failed))
    sys.exit(0 if result.wasSuccessful() else 1)
