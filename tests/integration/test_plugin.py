#!/usr/bin/env python3
"""The LMTP plugin (plugin/, lib95_tributary_lmtp_plugin.so) in the
harness's local Dovecot, which loads it from the build tree together
with Pigeonhole Sieve: messages go in over LMTP (smtplib.LMTP), signed
trace headers come from tests/integration/trace-tool (Python never
computes a MAC), and the delivered record is read with the same tool.

  - a traced message delivered twice: one copy, both answered 250, the
    second logged once by its id; also with +detail (LMTP's default
    mailbox);
  - a forged trace header (bad MAC, a changed field) and a valid header
    for another recipient (bob's, delivered to alice): untraced, stored
    both times byte for byte, not recorded;
  - Sieve `fileinto :copy "X"; keep;`: both copies the first time,
    nothing the second (the plugin's hook wraps Sieve's);
  - Sieve `discard`: nothing stored, recorded once, nothing the second
    time either;
  - only the topmost trace header counts: a valid one lower down is not
    recorded, and under a forged topmost one the message is untraced;
  - an unreadable or corrupt record, a missing key file: traced mail is
    deferred (LMTP 4xx naming the file), untraced mail is delivered; the
    key problem is logged once per process; all well again once fixed;
  - two LMTP sessions delivering 200 distinct traced messages each to one
    user at the same time: 400 stored, 400 ids recorded; both sessions
    again: nothing more stored;
  - tributary_delivered_path = ~/records/%u.delivered (set in the config,
    reloaded): the record goes there, ~/ and %u expanded;
  - one traced message sent by six sessions at the same instant (what a
    killed fetcher's last transaction and its re-send look like): stored
    once, all six answered 250.

Run under tests/harness/with-servers.sh (test-plugin.sh does), as root."""

import os
import re
import smtplib
import subprocess
import sys
import threading
import time
import unittest

ENV = os.environ
BUILDDIR = ENV.get("top_builddir", ".")
TOOL = os.path.join(BUILDDIR, "tests", "integration", "trace-tool")
DIR = ENV.get("TRIB_TEST_DIR", "")
HOMES = os.path.join(DIR, "local", "home")
MAIL_UID = 65534

LMTP_LINE = re.compile(rb"^(Return-Path|Delivered-To|Received):", re.I)


def doveconf(*args):
    return subprocess.run(["doveconf", "-c", ENV["TRIB_TEST_LOCAL_CONF"]]
                          + list(args), check=True, capture_output=True,
                          text=True).stdout.strip()


def tool(*args, check=True):
    return subprocess.run([TOOL] + [str(a) for a in args], check=check,
                          capture_output=True, text=True)


def key_file():
    return doveconf("-h", "plugin/tributary_trace_key_file")


def headers(recipient, uid, n=1, account="home", folder="INBOX", uv=7):
    """[(trace id, header line)] for UIDs uid..uid+n-1."""
    out = tool("headers", key_file(), recipient, account, folder, uv, uid,
               n).stdout
    return [tuple(x.split("\t", 1)) for x in out.splitlines()]


def message(msgid, top=(), middle=(), subject="plugin test"):
    """A message: the lines of top first (trace headers), then a
    header with middle among its fields, CRLF line ends."""
    lines = list(top) + [
        "From: Remote Sender <sender@remote.example>",
        "To: alice@example.com",
        "Subject: %s" % subject] + list(middle) + [
        "Message-ID: %s" % msgid,
        "Date: Tue, 02 Jan 2024 03:04:05 +0000",
        "",
        "Body of %s." % msgid,
        ""]
    return "\r\n".join(lines).encode()


class Session:
    """One LMTP connection (TCP): MAIL, RCPT, DATA per message."""

    def __init__(self):
        self.c = smtplib.LMTP(ENV["TRIB_TEST_LOCAL_LMTP_HOST"],
                              int(ENV["TRIB_TEST_LOCAL_LMTP_PORT"]),
                              timeout=60)

    def send(self, rcpt, msg):
        """(code, text) of the reply to the data."""
        code, text = self.c.mail("")
        if code != 250:
            return code, text.decode(errors="replace")
        code, text = self.c.rcpt(rcpt)
        if code != 250:
            self.c.rset()
            return code, text.decode(errors="replace")
        code, text = self.c.data(msg)
        return code, text.decode(errors="replace")

    def close(self):
        try:
            self.c.quit()
        except smtplib.SMTPException:
            pass


def deliver(rcpt, msg):
    s = Session()
    try:
        return s.send(rcpt, msg)
    finally:
        s.close()


def maildir_copies(user, msgid):
    """[(folder dir name, stored bytes)] of every copy of msgid."""
    root = os.path.join(HOMES, user, "Maildir")
    out = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) not in ("new", "cur"):
            continue
        folder = os.path.basename(os.path.dirname(dirpath))
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                data = fh.read()
            if b"\nMessage-ID: %s\n" % msgid.encode() in data:
                out.append((folder, data))
    return sorted(out)


def original(stored):
    """The stored message without the lines LMTP put before it."""
    lines = stored.split(b"\n")
    i = 0
    while i < len(lines) and (LMTP_LINE.match(lines[i]) or
                              (i > 0 and lines[i][:1] in (b" ", b"\t"))):
        i += 1
    return b"\n".join(lines[i:])


def record_path(user):
    return os.path.join(HOMES, user, ".tributary.delivered")


def record_count(user):
    if not os.path.exists(record_path(user)):
        return 0
    return int(tool("count", record_path(user)).stdout.split()[0])


def recorded(user, trace_id):
    return recorded_at(record_path(user), trace_id)


def recorded_at(path, trace_id):
    r = tool("has", path, trace_id, check=False)
    if r.returncode not in (0, 1):
        raise AssertionError("trace-tool has: %s" % r.stderr)
    return r.returncode == 0


def set_sieve(user, name, text):
    """Make sieve/NAME.sieve the user's active script (a new name per
    script, so no stale compiled binary is used)."""
    home = os.path.join(HOMES, user)
    sdir = os.path.join(home, "sieve")
    os.makedirs(sdir, exist_ok=True)
    path = os.path.join(sdir, name + ".sieve")
    with open(path, "w") as f:
        f.write(text)
    os.chown(sdir, MAIL_UID, MAIL_UID)
    os.chown(path, MAIL_UID, MAIL_UID)
    link = os.path.join(home, ".dovecot.sieve")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink("sieve/%s.sieve" % name, link)
    os.lchown(link, MAIL_UID, MAIL_UID)


def clear_sieve(user):
    link = os.path.join(HOMES, user, ".dovecot.sieve")
    if os.path.lexists(link):
        os.unlink(link)


def log_size():
    return os.path.getsize(ENV["TRIB_TEST_LOCAL_LOG"])


def log_since(offset, pattern, wait_for=0):
    """Lines of the local log after offset matching pattern; waits up to
    5 s for at least wait_for of them (the log process may lag)."""
    deadline = time.time() + 5
    while True:
        with open(ENV["TRIB_TEST_LOCAL_LOG"], "rb") as f:
            f.seek(offset)
            lines = [x.decode(errors="replace") for x in f.read()
                     .split(b"\n") if re.search(pattern.encode(), x)]
        if len(lines) >= wait_for or time.time() > deadline:
            return lines
        time.sleep(0.05)


class TestPlugin(unittest.TestCase):
    """Runs in name order; each test uses its own UIDs and Message-IDs."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(key_file()):
            tool("keygen", key_file())

    def assert_stored_once_exact(self, user, msgid, msg, folder="Maildir"):
        copies = maildir_copies(user, msgid)
        self.assertEqual([c[0] for c in copies], [folder], msgid)
        self.assertEqual(original(copies[0][1]),
                         msg.replace(b"\r\n", b"\n"))

    def test_01_loaded_with_sieve(self):
        plugins = doveconf("-f", "protocol=lmtp", "-h", "mail_plugins")
        self.assertEqual(plugins.split()[-2:], ["sieve", "tributary_lmtp"])
        link = os.path.join(doveconf("-h", "mail_plugin_dir"),
                            "lib95_tributary_lmtp_plugin.so")
        self.assertEqual(os.path.realpath(link), os.path.realpath(
            os.path.join(BUILDDIR, "plugin", ".libs",
                         "lib95_tributary_lmtp_plugin.so")))

    def test_02_duplicate_stored_once(self):
        (tid, line), = headers("alice", 1)
        msgid = "<dup.1@plugin.test>"
        msg = message(msgid, top=[line])
        before = record_count("alice")
        offset = log_size()
        self.assertEqual(deliver("alice", msg)[0], 250)
        self.assertTrue(recorded("alice", tid))
        code, text = deliver("alice", msg)
        self.assertEqual(code, 250, text)
        self.assert_stored_once_exact("alice", msgid, msg)
        self.assertEqual(record_count("alice"), before + 1)
        dup = log_since(offset, "was delivered before", 1)
        self.assertEqual(len(dup), 1, dup)
        self.assertIn("lmtp(alice)", dup[0])
        self.assertIn("Info: tributary: trace id %s was delivered before"
                      % tid, dup[0])

    def test_03_duplicate_detail_mailbox(self):
        (tid, line), = headers("alice", 2)
        msgid = "<dup.2@plugin.test>"
        msg = message(msgid, top=[line])
        for _ in range(2):
            code, text = deliver("alice+Traced", msg)
            self.assertEqual(code, 250, text)
        self.assert_stored_once_exact("alice", msgid, msg, ".Traced")
        self.assertTrue(recorded("alice", tid))

    def check_untraced(self, user, msgid, msg, ids):
        before = record_count(user)
        for _ in range(2):
            code, text = deliver(user, msg)
            self.assertEqual(code, 250, text)
        copies = maildir_copies(user, msgid)
        self.assertEqual(len(copies), 2, msgid)
        for _, data in copies:
            self.assertEqual(original(data), msg.replace(b"\r\n", b"\n"))
        self.assertEqual(record_count(user), before)
        for tid in ids:
            self.assertFalse(recorded(user, tid))

    def test_04_forged_header_untraced(self):
        (tid, line), = headers("alice", 3)
        # the MAC's last character changed
        last = line[-1]
        forged = line[:-1] + ("A" if last != "A" else "B")
        self.check_untraced("alice", "<forged.1@plugin.test>",
                            message("<forged.1@plugin.test>", top=[forged]),
                            [tid])
        # a field changed, the MAC kept
        forged = line.replace("; u=3;", "; u=4;")
        self.assertNotEqual(forged, line)
        self.check_untraced("alice", "<forged.2@plugin.test>",
                            message("<forged.2@plugin.test>", top=[forged]),
                            [tid])
        # garbage
        self.check_untraced("alice", "<forged.3@plugin.test>",
                            message("<forged.3@plugin.test>",
                                    top=["X-Tributary-Trace: v=1; nonsense"]),
                            [])

    def test_05_other_recipient_untraced(self):
        (tid, line), = headers("bob", 4)
        bob_before = record_count("bob")
        self.check_untraced("alice", "<bobs.1@plugin.test>",
                            message("<bobs.1@plugin.test>", top=[line]),
                            [tid])
        self.assertEqual(record_count("bob"), bob_before)
        # the header itself is good: to bob it is traced
        msg = message("<bobs.2@plugin.test>", top=[line])
        for _ in range(2):
            self.assertEqual(deliver("bob", msg)[0], 250)
        self.assert_stored_once_exact("bob", "<bobs.2@plugin.test>", msg)
        self.assertTrue(recorded("bob", tid))

    def test_06_sieve_copy_and_keep(self):
        set_sieve("alice", "copykeep", 'require ["fileinto", "copy"];\n'
                  'fileinto :copy "X";\nkeep;\n')
        try:
            (tid, line), = headers("alice", 5)
            msgid = "<sieve.copy@plugin.test>"
            msg = message(msgid, top=[line])
            self.assertEqual(deliver("alice", msg)[0], 250)
            self.assertEqual([c[0] for c in maildir_copies("alice", msgid)],
                             [".X", "Maildir"])
            self.assertEqual(deliver("alice", msg)[0], 250)
            copies = maildir_copies("alice", msgid)
            self.assertEqual([c[0] for c in copies], [".X", "Maildir"])
            for _, data in copies:
                self.assertEqual(original(data),
                                 msg.replace(b"\r\n", b"\n"))
            self.assertTrue(recorded("alice", tid))
        finally:
            clear_sieve("alice")

    def test_07_sieve_discard(self):
        set_sieve("alice", "discard", "discard;\n")
        try:
            (tid, line), = headers("alice", 6)
            msgid = "<sieve.discard@plugin.test>"
            msg = message(msgid, top=[line])
            before = record_count("alice")
            offset = log_size()
            self.assertEqual(deliver("alice", msg)[0], 250)
            self.assertEqual(maildir_copies("alice", msgid), [])
            self.assertTrue(recorded("alice", tid))
            self.assertEqual(record_count("alice"), before + 1)
            self.assertEqual(deliver("alice", msg)[0], 250)
            self.assertEqual(maildir_copies("alice", msgid), [])
            self.assertEqual(record_count("alice"), before + 1)
            self.assertEqual(len(log_since(offset, "trace id %s was "
                                           "delivered before" % tid, 1)), 1)
        finally:
            clear_sieve("alice")
        # without the script: still a duplicate, still nothing stored
        self.assertEqual(deliver("alice", msg)[0], 250)
        self.assertEqual(maildir_copies("alice", msgid), [])
        self.assertEqual(record_count("alice"), before + 1)

    def test_08_topmost_only(self):
        (ta, la), (tb, lb) = headers("alice", 20, 2)
        # a valid A on top, a valid B further down: A counts, B does not
        msgid = "<topmost.1@plugin.test>"
        msg = message(msgid, top=[la], middle=[lb])
        for _ in range(2):
            self.assertEqual(deliver("alice", msg)[0], 250)
        self.assert_stored_once_exact("alice", msgid, msg)
        self.assertTrue(recorded("alice", ta))
        self.assertFalse(recorded("alice", tb))
        # so B on top is new
        msgid = "<topmost.2@plugin.test>"
        msg = message(msgid, top=[lb])
        self.assertEqual(deliver("alice", msg)[0], 250)
        self.assertEqual(len(maildir_copies("alice", msgid)), 1)
        self.assertTrue(recorded("alice", tb))
        # a forged header on top hides a valid one below: untraced
        (tc, lc), = headers("alice", 22)
        forged = lc.replace("; uv=7;", "; uv=8;")
        self.check_untraced("alice", "<topmost.3@plugin.test>",
                            message("<topmost.3@plugin.test>",
                                    top=[forged], middle=[lc]), [tc])
        # the name in any case, a folded value: still the same header
        (td, ld), = headers("alice", 23)
        name, value = ld.split(": ", 1)
        head, tail = value.split("; a=", 1)
        folded = "x-TRIBUTARY-trace: %s;\r\n a=%s" % (head, tail)
        msgid = "<topmost.4@plugin.test>"
        msg = message(msgid, top=[folded])
        for _ in range(2):
            self.assertEqual(deliver("alice", msg)[0], 250)
        self.assert_stored_once_exact("alice", msgid, msg)
        self.assertTrue(recorded("alice", td))

    def test_09_unreadable_record(self):
        path = record_path("alice")
        self.assertTrue(os.path.exists(path))
        (tid, line), = headers("alice", 30)
        traced = message("<unreadable.1@plugin.test>", top=[line])
        os.chmod(path, 0)
        try:
            code, text = deliver("alice", traced)
            self.assertEqual(code // 100, 4, text)
            self.assertIn(path, text)
            self.assertIn("Permission denied", text)
            msg = message("<unreadable.2@plugin.test>")
            self.assertEqual(deliver("alice", msg)[0], 250)
            self.assert_stored_once_exact("alice",
                                          "<unreadable.2@plugin.test>", msg)
        finally:
            os.chmod(path, 0o600)
        self.assertEqual(maildir_copies("alice",
                                        "<unreadable.1@plugin.test>"), [])
        # the fetcher's retry, once the file is readable again
        self.assertEqual(deliver("alice", traced)[0], 250)
        self.assertEqual(deliver("alice", traced)[0], 250)
        self.assertEqual(len(maildir_copies(
            "alice", "<unreadable.1@plugin.test>")), 1)
        self.assertTrue(recorded("alice", tid))

    def test_10_corrupt_record(self):
        path = record_path("alice")
        with open(path, "rb") as f:
            good = f.read()
        bad = b"NOTMINE!" + good[8:]
        with open(path, "wb") as f:
            f.write(bad)
        (tid, line), = headers("alice", 31)
        traced = message("<corrupt.1@plugin.test>", top=[line])
        try:
            code, text = deliver("alice", traced)
            self.assertEqual(code // 100, 4, text)
            self.assertIn(path, text)
            self.assertIn("corrupt", text)
            msg = message("<corrupt.2@plugin.test>")
            self.assertEqual(deliver("alice", msg)[0], 250)
            self.assertEqual(len(maildir_copies(
                "alice", "<corrupt.2@plugin.test>")), 1)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), bad, "never reset")
        finally:
            with open(path, "wb") as f:
                f.write(good)
        self.assertEqual(maildir_copies("alice", "<corrupt.1@plugin.test>"),
                         [])
        self.assertEqual(deliver("alice", traced)[0], 250)
        self.assertEqual(len(maildir_copies("alice",
                                            "<corrupt.1@plugin.test>")), 1)

    def test_11_missing_key_file(self):
        key = key_file()
        (t1, l1), (t2, l2), (t3, l3) = headers("alice", 40, 3)
        msgs = [message("<nokey.%d@plugin.test>" % i, top=[x])
                for i, x in enumerate((l1, l2, l3))]
        os.rename(key, key + ".away")
        offset = log_size()
        try:
            s = Session()
            try:
                for m in msgs:
                    code, text = s.send("alice", m)
                    self.assertEqual(code // 100, 4, text)
                    self.assertIn(key, text)
                plain = message("<nokey.plain@plugin.test>")
                self.assertEqual(s.send("alice", plain)[0], 250)
            finally:
                s.close()
        finally:
            os.rename(key + ".away", key)
        errors = log_since(offset, "Error: tributary: trace key", 1)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(key, errors[0])
        self.assertEqual(len(maildir_copies("alice",
                                            "<nokey.plain@plugin.test>")), 1)
        for i, m in enumerate(msgs):
            msgid = "<nokey.%d@plugin.test>" % i
            self.assertEqual(maildir_copies("alice", msgid), [])
            self.assertEqual(deliver("alice", m)[0], 250)
            self.assertEqual(len(maildir_copies("alice", msgid)), 1)
        for tid in (t1, t2, t3):
            self.assertTrue(recorded("alice", tid))

    def test_12_parallel_sessions(self):
        user = "carol"
        self.assertFalse(os.path.exists(record_path(user)))
        batches = [headers(user, 1000, 200, account="par"),
                   headers(user, 2000, 200, account="par")]
        msgs = [[(tid, "<par.%d.%d@plugin.test>" % (b, i),
                  message("<par.%d.%d@plugin.test>" % (b, i), top=[line]))
                 for i, (tid, line) in enumerate(batch)]
                for b, batch in enumerate(batches)]

        def run_all():
            results = [[], []]

            def session(b):
                s = Session()
                try:
                    for _, _, m in msgs[b]:
                        results[b].append(s.send(user, m)[0])
                finally:
                    s.close()
            threads = [threading.Thread(target=session, args=(b,))
                       for b in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return results

        results = run_all()
        self.assertEqual(results, [[250] * 200, [250] * 200])
        stored = [m for m in maildir_copies_all(user)]
        self.assertEqual(len(stored), 400)
        self.assertEqual(record_count(user), 400)
        for batch in msgs:
            for tid, msgid, _ in batch[::20]:
                self.assertTrue(recorded(user, tid))
        capacity = int(tool("count", record_path(user)).stdout.split()[1])
        self.assertGreaterEqual(capacity, 1024)   # grew under them

        results = run_all()
        self.assertEqual(results, [[250] * 200, [250] * 200])
        self.assertEqual(len(maildir_copies_all(user)), 400)
        self.assertEqual(record_count(user), 400)

    def test_12b_same_message_at_once(self):
        user, sessions, rounds = "bob", 6, 15
        for r in range(rounds):
            (tid, line), = headers(user, 5000 + r, account="race")
            msgid = "<race.%d@plugin.test>" % r
            msg = message(msgid, top=[line])
            conns = [Session() for _ in range(sessions)]
            for c in conns:
                c.c.ehlo_or_helo_if_needed()
            barrier = threading.Barrier(sessions)
            codes = []

            def send(c):
                barrier.wait()
                codes.append(c.send(user, msg)[0])
            threads = [threading.Thread(target=send, args=(c,))
                       for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c in conns:
                c.close()
            self.assertEqual(codes, [250] * sessions)
            self.assertEqual(len(maildir_copies(user, msgid)), 1, msgid)
            self.assertTrue(recorded(user, tid))

    def test_13_delivered_path_setting(self):
        conf = ENV["TRIB_TEST_LOCAL_CONF"]
        with open(conf) as f:
            saved = f.read()
        records = os.path.join(HOMES, "bob", "records")
        os.makedirs(records, exist_ok=True)
        os.chown(records, MAIL_UID, MAIL_UID)
        path = os.path.join(records, "bob.delivered")
        try:
            with open(conf, "a") as f:
                f.write("\n# test_plugin.py\nplugin {\n"
                        "  tributary_delivered_path = ~/records/%u.delivered"
                        "\n}\n")
            self.assertEqual(doveconf("-h",
                                      "plugin/tributary_delivered_path"),
                             "~/records/%u.delivered")
            reload_local()
            # LMTP processes from before the reload may take a connection
            # for a moment: deliver until one lands in the new record
            deadline = time.time() + 20
            uid = 100
            while True:
                (tid, line), = headers("bob", uid)
                msg = message("<path.%d@plugin.test>" % uid, top=[line])
                self.assertEqual(deliver("bob", msg)[0], 250)
                if os.path.exists(path) and recorded_at(path, tid):
                    break
                self.assertLess(time.time(), deadline, "never used %s"
                                % path)
                uid += 1
            (tid, line), = headers("bob", 200)
            msgid = "<path.200@plugin.test>"
            msg = message(msgid, top=[line])
            for _ in range(2):
                self.assertEqual(deliver("bob", msg)[0], 250)
            self.assert_stored_once_exact("bob", msgid, msg)
            self.assertTrue(recorded_at(path, tid))
            self.assertFalse(recorded("bob", tid))
            self.assertEqual(os.stat(path).st_uid, MAIL_UID)
        finally:
            with open(conf, "w") as f:
                f.write(saved)
            reload_local()


def reload_local():
    """doveadm reload; returns once the master logged it."""
    log = ENV["TRIB_TEST_LOCAL_LOG"]
    offset = os.path.getsize(log)
    subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_LOCAL_CONF"], "reload"],
                   check=True, capture_output=True)
    if not log_since(offset, "SIGHUP received - reloading configuration",
                     1):
        raise AssertionError("the local Dovecot did not reload")


def maildir_copies_all(user):
    root = os.path.join(HOMES, user, "Maildir")
    out = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) in ("new", "cur"):
            out.extend(os.path.join(dirpath, f) for f in files)
    return out


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("test_plugin: needs root")
        sys.exit(1)
    result = unittest.main(verbosity=2, exit=False).result
    total = result.testsRun
    failed = len(result.failures) + len(result.errors)
    print("test_plugin: %d passed, %d failed" % (total - failed, failed))
    sys.exit(0 if result.wasSuccessful() else 1)
