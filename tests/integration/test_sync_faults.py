#!/usr/bin/env python3
"""`tributary sync` under faults: scripted fake LMTP and IMAP servers
(127.0.0.1 only, started and stopped by each test) around the harness's
real Dovecots. Each test asserts that nothing is lost (the message comes
on a later pass), nothing is duplicated, the error is one clear line
naming user/account and cause, and the exit code is right (75 deferred
or temporary, 0 ok).

  - LMTP answers 451 to the first message's data, 250 after: deferred,
    delivered on the next pass, accepted exactly once.
  - LMTP answers 5xx to one message: rejected, shown, never retried.
  - The LMTP connection closes in the middle of a message's data: it
    and the rest of that session's messages are deferred, not half
    delivered, and come once on the next pass.
  - The remote IMAP server drops the connection in the middle of a
    message's literal: the message before it is delivered once, the cut
    one not at all (nothing partial), and the next pass brings it once.

The fake LMTP server is reached through a config file that !includes
$TRIB_TEST_LOCAL_CONF and then overrides plugin/tributary_lmtp (same
base_dir, so the same userdb socket). The fake IMAP server speaks
implicit TLS with the harness's `valid` certificate; alice gets an extra
account `fake` pointing at it (harness.py accounts; the fixture is
restored afterwards).

Run under tests/harness/with-servers.sh (test-sync-faults.sh does), as
root like test_sync.py."""

import base64
import os
import re
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest

ENV = os.environ
BUILDDIR = ENV.get("top_builddir", ".")
TRIBUTARY = os.path.join(BUILDDIR, "fetcher", "tributary")
DIR = ENV.get("TRIB_TEST_DIR", "")
LOCAL_MAILDIR = os.path.join(DIR, "local", "home", "alice", "Maildir")
PASSWORD_FILE = os.path.join(DIR, "local", "secrets", "alice-home.password")
PYTHON = ENV.get("TRIB_TEST_PYTHON", sys.executable)


def run(args, check=None):
    proc = subprocess.run([TRIBUTARY] + args, capture_output=True, text=True,
                          timeout=300)
    if check is not None and proc.returncode != check:
        raise AssertionError("%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), proc.returncode, check,
                                proc.stdout, proc.stderr))
    return proc.returncode, proc.stdout, proc.stderr


def sync(conf, account, check=None):
    return run(["sync", "-c", conf, "-u", "alice", account], check=check)


def harness(*args):
    return subprocess.run([PYTHON, ENV["TRIB_TEST_HARNESS"]] + list(args),
                          check=True, capture_output=True, text=True,
                          timeout=120)


def summary(out, account):
    m = re.search(r"alice/%s: (\d+) new, (\d+) delivered, (\d+) rejected, "
                  r"(\d+) deferred" % account, out)
    if m is None:
        raise AssertionError("no summary line in: %r" % out)
    return tuple(int(x) for x in m.groups())


def message_id(data):
    m = re.search(rb"^Message-ID:[ \t]*(\S+)",
                  re.split(rb"\r?\n\r?\n", data, 1)[0], re.I | re.M)
    return m.group(1) if m else None


def maildir_files(root):
    out = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) in ("new", "cur", "tmp"):
            out.extend(os.path.join(dirpath, f) for f in files)
    return out


def local_count(needle):
    """How many files in alice's local maildir (new, cur and tmp of every
    folder) contain `needle`."""
    n = 0
    for path in maildir_files(LOCAL_MAILDIR):
        with open(path, "rb") as fh:
            if needle in fh.read():
                n += 1
    return n


def error_lines(err):
    return [x for x in err.splitlines() if x.strip()]


# ---- a scripted LMTP server ----

class FakeLmtp:
    """LMTP on 127.0.0.1 with PIPELINING and CHUNKING (BDAT) and DATA.
    `decide(body, index)` gives the final reply to each message's data
    (index counts messages over all sessions, from 0); the log holds
    (body, reply) per message. Nothing is forwarded."""

    def __init__(self, decide):
        self.decide = decide
        # bytes: the first message whose data holds them has its
        # connection closed after its first chunk, with no reply
        self.cut_marker = None
        self.cut_done = False
        self.lock = threading.Lock()
        self.log = []
        self.count = 0
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                fake.session(self.rfile, self.wfile)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def final(self, body):
        with self.lock:
            index = self.count
            self.count += 1
            reply = self.decide(body, index)
            self.log.append((body, reply))
        return reply

    def session(self, rfile, wfile):
        def send(s):
            wfile.write(s.encode() + b"\r\n")
            wfile.flush()

        send("220 fake-lmtp ready")
        chunks = []
        while True:
            line = rfile.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("latin-1")
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "LHLO":
                wfile.write(b"250-fake-lmtp\r\n250-PIPELINING\r\n"
                            b"250-CHUNKING\r\n250-8BITMIME\r\n"
                            b"250 ENHANCEDSTATUSCODES\r\n")
                wfile.flush()
            elif verb == "MAIL":
                chunks = []
                send("250 2.1.0 OK")
            elif verb == "RCPT":
                send("250 2.1.5 OK")
            elif verb == "RSET":
                chunks = []
                send("250 2.0.0 OK")
            elif verb == "NOOP":
                send("250 2.0.0 OK")
            elif verb == "QUIT":
                send("221 2.0.0 bye")
                return
            elif verb == "DATA":
                send("354 go ahead")
                body = []
                while True:
                    d = rfile.readline()
                    if not d:
                        return
                    if d == b".\r\n":
                        break
                    body.append(d[1:] if d.startswith(b".") else d)
                send(self.final(b"".join(body)))
            elif verb == "BDAT":
                parts = cmd.split()
                size = int(parts[1])
                data = rfile.read(size)
                if len(data) != size:
                    return
                chunks.append(data)
                if self.cut_now(b"".join(chunks)):
                    return
                if len(parts) > 2 and parts[2].upper() == "LAST":
                    body = b"".join(chunks)
                    chunks = []
                    send(self.final(body))
                else:
                    send("250 2.0.0 %d octets received" % size)
            else:
                send("500 5.5.1 unknown command")

    def cut_now(self, data):
        with self.lock:
            if (self.cut_marker is None or self.cut_done or
                    self.cut_marker not in data):
                return False
            self.cut_done = True
            return True

    def accepted(self):
        """Message-ID -> number of 250s its data got."""
        out = {}
        for body, reply in self.log:
            if reply.startswith("250"):
                mid = message_id(body)
                out[mid] = out.get(mid, 0) + 1
        return out

    def offered(self, mid):
        return sum(1 for body, _ in self.log if message_id(body) == mid)


# ---- a scripted IMAP server ----

def parse_set(text, max_uid):
    uids = set()
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":", 1)
            a = max_uid if a == "*" else int(a)
            b = max_uid if b == "*" else int(b)
            lo, hi = min(a, b), max(a, b)
            uids.update(range(lo, hi + 1))
        else:
            uids.add(max_uid if part == "*" else int(part))
    return uids


class FakeImap:
    """Implicit-TLS IMAP on 127.0.0.1 serving one INBOX of `messages`
    (UIDs 1..n, CRLF bytes). With `cut_uid` set, a body FETCH sends that
    message's literal only half and then drops the connection."""

    UIDVALIDITY = 424242

    def __init__(self, messages, cert, key):
        self.messages = messages
        self.cut_uid = None
        self.lock = threading.Lock()
        self.log = []  # commands received (tags stripped)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    conn = fake.ctx.wrap_socket(self.request,
                                                server_side=True)
                except (ssl.SSLError, OSError):
                    return
                try:
                    fake.session(conn)
                except (ssl.SSLError, OSError, ValueError):
                    pass
                finally:
                    conn.close()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def session(self, conn):
        rfile = conn.makefile("rb")

        def send(data):
            conn.sendall(data if isinstance(data, bytes)
                         else data.encode() + b"\r\n")

        send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] fake ready")
        n = len(self.messages)
        while True:
            line = rfile.readline()
            if not line:
                return
            text = line.rstrip(b"\r\n").decode("latin-1")
            tag, _, rest = text.partition(" ")
            verb = rest.split(" ", 1)[0].upper()
            with self.lock:
                self.log.append(rest)
            if verb == "CAPABILITY":
                send("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR")
                send("%s OK done" % tag)
            elif verb == "AUTHENTICATE":
                args = rest.split(" ")
                if len(args) >= 3:
                    resp = args[2]
                else:
                    send("+ ")
                    resp = rfile.readline().strip().decode()
                creds = base64.b64decode(resp).split(b"\0")
                if creds[1:] == [b"alice@example.com",
                                 ENV["TRIB_TEST_APP_PASSWORD"].encode()]:
                    send("%s OK [CAPABILITY IMAP4rev1] logged in" % tag)
                else:
                    send("%s NO [AUTHENTICATIONFAILED] no" % tag)
            elif verb in ("EXAMINE", "SELECT"):
                send("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen "
                     "\\Draft)")
                send("* %d EXISTS" % n)
                send("* 0 RECENT")
                send("* OK [UIDVALIDITY %d] ok" % self.UIDVALIDITY)
                send("* OK [UIDNEXT %d] ok" % (n + 1))
                send("%s OK [READ-ONLY] examined" % tag)
            elif verb == "UID" and rest.split(" ")[1].upper() == "FETCH":
                _, _, uidset, items = rest.split(" ", 3)
                uids = sorted(u for u in parse_set(uidset, n)
                              if 1 <= u <= n)
                if "HEADER.FIELDS" in items.upper():
                    for u in uids:
                        msg = self.messages[u - 1]
                        hdr = b"Message-ID: " + message_id(msg) + \
                            b"\r\n\r\n"
                        send(b"* %d FETCH (UID %d RFC822.SIZE %d "
                             b"INTERNALDATE \"02-Jan-2024 03:04:05 +0000\" "
                             b"FLAGS () BODY[HEADER.FIELDS (MESSAGE-ID)] "
                             b"{%d}\r\n" % (u, u, len(msg), len(hdr))
                             + hdr + b")\r\n")
                else:
                    for u in uids:
                        msg = self.messages[u - 1]
                        head = b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (
                            u, u, len(msg))
                        if u == self.cut_uid:
                            send(head + msg[:len(msg) // 2])
                            conn.shutdown(socket.SHUT_RDWR)
                            conn.close()
                            return
                        send(head + msg + b")\r\n")
                send("%s OK fetched" % tag)
            elif verb == "LOGOUT":
                send("* BYE bye")
                send("%s OK bye" % tag)
                return
            else:
                send("%s OK ok" % tag)

    def fetched_bodies(self):
        with self.lock:
            return [c for c in self.log
                    if c.upper().startswith("UID FETCH") and
                    "BODY.PEEK[]" in c.upper()]


def make_message(n, body_size):
    mid = b"<fault.%d.alice.at.example.com@tributary.test>" % n
    line = b"fault message %d filler line 0123456789abcdefghij\r\n" % n
    body = line * (body_size // len(line) + 1)
    return (b"From: Fault Test <faults@tributary.test>\r\n"
            b"To: alice@example.com\r\n"
            b"Subject: Fault %d\r\n"
            b"Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n"
            b"Message-ID: " + mid + b"\r\n\r\n" + body[:body_size] +
            b"END-OF-FAULT-%d\r\n" % n), mid


# ---- the tests ----

class TestSyncFaults(unittest.TestCase):
    """Runs in name order: each pass builds on the one before."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        code, out, err = run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]])
        if code != 0:
            raise AssertionError("init: %d %s %s" % (code, out, err))

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sync-faults-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])

    def lmtp_conf(self, lmtp):
        """A config: the local one, then tributary_lmtp at the fake."""
        path = os.path.join(self.tmp, "dovecot.conf")
        with open(path, "w") as f:
            f.write("!include %s\nplugin {\n  tributary_lmtp = "
                    "127.0.0.1:%d\n}\n" % (ENV["TRIB_TEST_LOCAL_CONF"],
                                           lmtp.port))
        got = subprocess.run(["doveconf", "-c", path, "-h",
                              "plugin/tributary_lmtp"],
                             capture_output=True, text=True)
        self.assertEqual(got.stdout.strip(), "127.0.0.1:%d" % lmtp.port,
                         got.stderr)
        for key in ("base_dir", "plugin/tributary_state_dir"):
            a = subprocess.run(["doveconf", "-c", path, "-h", key],
                               capture_output=True, text=True).stdout
            b = subprocess.run(["doveconf", "-c", ENV["TRIB_TEST_LOCAL_CONF"],
                                "-h", key], capture_output=True,
                               text=True).stdout
            self.assertEqual(a, b, key)
        return path

    def start_lmtp(self, decide):
        lmtp = FakeLmtp(decide)
        self.addCleanup(lmtp.stop)
        return lmtp

    def test_1_lmtp_4xx_then_250(self):
        lmtp = self.start_lmtp(
            lambda body, i: "451 4.3.0 fake: try again later" if i == 0
            else "250 2.0.0 fake: saved")
        conf = self.lmtp_conf(lmtp)
        code, out, err = sync(conf, "home")
        self.assertEqual(code, 75, out + err)
        new, delivered, rejected, deferred = summary(out, "home")
        self.assertGreaterEqual(new, 3)
        self.assertEqual((delivered, rejected, deferred), (new - 1, 0, 1),
                         out + err)
        lines = error_lines(err)
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], r"^tributary: alice/home: INBOX UID \d+ "
                         r"deferred: .*451.*try again later")
        first = message_id(lmtp.log[0][0])
        self.assertTrue(lmtp.log[0][1].startswith("451"))
        self.assertNotIn(first, lmtp.accepted())

        code, out, err = sync(conf, "home", check=0)
        self.assertEqual(summary(out, "home"), (1, 1, 0, 0), out + err)
        self.assertEqual(err.strip(), "")
        accepted = lmtp.accepted()
        self.assertEqual(len(accepted), new, accepted)
        self.assertIn(first, accepted)
        self.assertEqual(set(accepted.values()), {1}, accepted)
        self.assertEqual(len(lmtp.log), new + 1)  # the 451 and n 250s

        code, out, err = sync(conf, "home", check=0)
        self.assertEqual(summary(out, "home"), (0, 0, 0, 0), out + err)
        self.assertEqual(len(lmtp.log), new + 1)

    def test_2_lmtp_5xx_rejects_one(self):
        harness("seed", DIR, "--user", "alice@example.com", "--mailbox",
                "INBOX", "--count", "3", "--start", "101")
        marker = b"Seed INBOX #102"
        lmtp = self.start_lmtp(
            lambda body, i: "550 5.7.1 fake: refused by policy"
            if marker in body else "250 2.0.0 fake: saved")
        conf = self.lmtp_conf(lmtp)
        code, out, err = sync(conf, "home")
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "home"), (3, 2, 1, 0), out + err)
        self.assertIn("1 rejected", out)
        lines = error_lines(err)
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], r"^tributary: alice/home: INBOX UID \d+ "
                         r"rejected: .*550.*refused by policy")
        self.assertEqual(len(lmtp.log), 3)
        rejected = [b for b, r in lmtp.log if r.startswith("550")]
        self.assertEqual(len(rejected), 1)
        self.assertIn(marker, rejected[0])

        # not retried; the others not delivered again
        code, out, err = sync(conf, "home", check=0)
        self.assertEqual(summary(out, "home"), (0, 0, 0, 0), out + err)
        self.assertEqual(len(lmtp.log), 3)
        accepted = lmtp.accepted()
        self.assertEqual(len(accepted), 2)
        self.assertEqual(set(accepted.values()), {1})
        self.assertEqual(lmtp.offered(message_id(rejected[0])), 1)

    def test_4_lmtp_drops_mid_message(self):
        """The LMTP connection closes in the middle of a message's data
        (a crashed LMTP process, a restarted Dovecot): that message and
        whatever else that session had in flight are deferred, never
        half delivered; the next pass brings them, each exactly once."""
        harness("seed", DIR, "--user", "alice@example.com", "--mailbox",
                "INBOX", "--count", "6", "--start", "301", "--size",
                "200000")
        lmtp = self.start_lmtp(lambda body, i: "250 2.0.0 fake: saved")
        lmtp.cut_marker = b"Seed INBOX #303"
        conf = self.lmtp_conf(lmtp)
        code, out, err = sync(conf, "home")
        self.assertEqual(code, 75, out + err)
        new, delivered, rejected, deferred = summary(out, "home")
        self.assertTrue(lmtp.cut_done)
        self.assertGreaterEqual(deferred, 1, out)
        self.assertEqual(delivered + deferred, new, out)
        self.assertEqual(rejected, 0, out)
        lines = error_lines(err)
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], r"^tributary: alice/home: (INBOX UID \d+ "
                         r"deferred: |LMTP: ).*(closed|reset)")
        accepted = lmtp.accepted()
        self.assertEqual(len(accepted), delivered)
        self.assertNotIn(b"<seed.inbox.000303.alice.at.example.com"
                         b"@tributary.test>", accepted)

        code, out, err = sync(conf, "home", check=0)
        self.assertEqual(summary(out, "home"), (deferred, deferred, 0, 0),
                         out + err)
        accepted = lmtp.accepted()
        self.assertEqual(len(accepted), new, accepted)
        self.assertEqual(set(accepted.values()), {1}, accepted)
        code, out, err = sync(conf, "home", check=0)
        self.assertEqual(summary(out, "home"), (0, 0, 0, 0), out + err)

    def fake_account(self, port):
        with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
            text = f.read()
        out = []
        for line in text.splitlines():
            if line.startswith("alice:"):
                line = line.replace("userdb_tributary_accounts=work,home",
                                    "userdb_tributary_accounts=work,home,"
                                    "fake")
                line += " " + " ".join("userdb_tributary_fake_%s=%s" % kv
                                       for kv in [
                    ("provider", "imap"), ("host", "127.0.0.1"),
                    ("port", port), ("tls", "implicit"),
                    ("ca_file", ENV["TRIB_TEST_CA"]),
                    ("login", "alice@example.com"),
                    ("auth", "password_file"),
                    ("password_file", PASSWORD_FILE)])
            out.append(line)
        path = os.path.join(self.tmp, "accounts")
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")
        self.addCleanup(harness, "accounts", DIR, "--fixture")
        harness("accounts", DIR, path)

    def test_3_imap_drops_mid_literal(self):
        certs = os.path.join(DIR, "certs")
        first, first_id = make_message(1, 2000)
        # over LMTP's pipeline_max_size (1 MiB): its body goes out in
        # chunks before the cut, so the abort really has to take it back
        second, second_id = make_message(2, 1500000)
        imap = FakeImap([first, second], os.path.join(certs, "valid.pem"),
                        os.path.join(certs, "valid.key"))
        self.addCleanup(imap.stop)
        imap.cut_uid = 2
        self.fake_account(imap.port)
        conf = ENV["TRIB_TEST_LOCAL_CONF"]

        code, out, err = sync(conf, "fake")
        self.assertEqual(code, 75, out + err)
        self.assertEqual(summary(out, "fake"), (2, 1, 0, 1), out + err)
        lines = error_lines(err)
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], r"^tributary: alice/fake: fetching "
                         r"bodies: ")
        self.assertEqual(local_count(first_id), 1)
        self.assertEqual(local_count(second_id), 0)
        self.assertEqual(local_count(b"fault message 2 filler"), 0)
        self.assertEqual(len(imap.fetched_bodies()), 1)

        imap.cut_uid = None
        code, out, err = sync(conf, "fake", check=0)
        self.assertEqual(summary(out, "fake"), (1, 1, 0, 0), out + err)
        self.assertEqual(err.strip(), "")
        self.assertEqual(imap.fetched_bodies()[-1].split(" ")[2], "2")
        self.assertEqual(local_count(first_id), 1)
        self.assertEqual(local_count(second_id), 1)
        self.assertEqual(local_count(b"END-OF-FAULT-2"), 1)

        code, out, err = sync(conf, "fake", check=0)
        self.assertEqual(summary(out, "fake"), (0, 0, 0, 0), out + err)
        self.assertEqual(local_count(first_id), 1)
        self.assertEqual(local_count(second_id), 1)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("test_sync_faults: needs root")
        sys.exit(1)
    result = unittest.main(verbosity=2, exit=False).result
    total = result.testsRun
    failed = len(result.failures) + len(result.errors)
    print("test_sync_faults: %d passed, %d failed" % (total - failed, failed))
    sys.exit(0 if result.wasSuccessful() else 1)
