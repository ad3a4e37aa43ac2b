#!/usr/bin/env python3
"""Remote messages that carry a forged X-Tributary-Trace header at their
top are fetched like any other: each arrives exactly once, byte for byte,
with Tributary's own trace header above the forged one, none is taken for
a duplicate of another, and a re-run delivers nothing. With the LMTP
plugin loaded (as the drop-in and the harness load it) and without it.

The forged headers, each at the very top of a remote message (so right
below Tributary's own once fetched):
  - bad MAC: a real header of the user's with its MAC changed; and one
    with a UID changed under the old MAC;
  - another user's: bob's real header, copied from a message Tributary
    delivered to him (valid MAC, recipient bob);
  - the user's own, valid: the header of a message already delivered to
    them (its trace id is in the plugin's record), copied verbatim, also
    folded over two lines and with the name in lower case (readers join
    folds and ignore case: still valid);
  - the user's own, valid, for a message still to come: signed here with
    the local trace key for the same account and folder and the UID the
    next message will get (so a fetcher or plugin that read the forged
    header would drop that next message as a duplicate).
Two copies of most, on messages of different kinds (tests/harness/
messages.py), between ordinary ones.

With the plugin: local alice, account `home`, remote INBOX (the fixture's
3 messages first). Without it: local carol, account `forged`, remote
folder ForCarol (3 generated messages first); the local Dovecot's config
gets `protocol lmtp { mail_plugins }` without the plugin appended and is
reloaded (until a probe shows it: a copy of bob's delivered message,
straight into LMTP to bob+Probe, is stored, where the plugin drops it),
and put back (and reloaded) afterwards. With the plugin, the same probe
with the user's own delivered header is dropped.

Run under tests/harness/with-servers.sh (test-sync-forged.sh does), as
root."""

import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

from synctest import (BUILDDIR, DIR, ENV, harness, install_account, main,
                      run, summary)
import synccheck

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "harness"))
import messages  # noqa: E402

CONF = ENV.get("TRIB_TEST_LOCAL_CONF", "")
PLUGIN = "tributary_lmtp"
KINDS = ["plain", "utf8", "multipart", "binary", "dots", "no-eol", "folded",
         "latin1", "broken-base64", "no-body", "long-lines", "no-colon"]


def sync(user, account):
    return run(["sync", "-c", CONF, "-u", user, account])


def lmtp_plugins():
    return subprocess.run(["doveconf", "-c", CONF, "-f", "protocol=lmtp",
                           "-h", "mail_plugins"], check=True,
                          capture_output=True, text=True).stdout.split()


def reload_local():
    """doveadm reload, and wait for the master to have read the config
    (its log line); the probe then tells what LMTP really does."""
    log = ENV["TRIB_TEST_LOCAL_LOG"]
    offset = os.path.getsize(log)
    subprocess.run(["doveadm", "-c", CONF, "reload"], check=True,
                   capture_output=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(offset)
            if b"SIGHUP received - reloading configuration" in f.read():
                return
        time.sleep(0.05)
    raise AssertionError("the local Dovecot did not reload")


class PluginUnloaded:
    """The local Dovecot without the LMTP plugin, for a while: its config
    gets a protocol lmtp block without the plugin appended, and is
    reloaded; put back and reloaded on the way out."""

    def __init__(self, user, trace):
        self.user, self.trace = user, trace

    def __enter__(self):
        with open(CONF) as f:
            self.saved = f.read()
        keep = [p for p in lmtp_plugins() if p != PLUGIN]
        try:
            with open(CONF, "a") as f:
                f.write("\n# test_sync_forged.py: the LMTP plugin unloaded\n"
                        "protocol lmtp {\n  mail_plugins = %s\n}\n"
                        % " ".join(keep))
            if PLUGIN in lmtp_plugins():
                raise AssertionError("could not unload the plugin")
            reload_local()
            # Old LMTP processes may still take a connection for a
            # moment after the reload (and drop it when the master's
            # SIGQUIT arrives): wait until a copy of a recorded message is
            # stored (the plugin would drop it), twice in a row.
            deadline = time.monotonic() + 30
            n, stored = 100, 0
            while True:
                try:
                    stored = stored + 1 if probe(self.user, self.trace,
                                                 n) else 0
                except (smtplib.SMTPException, OSError):
                    stored = 0
                if stored == 2:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("the plugin still drops copies")
                n += 1
                time.sleep(0.1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        with open(CONF, "w") as f:
            f.write(self.saved)
        reload_local()


def probe(user, trace, tag):
    """Deliver a message topped by trace (a header of user's that the
    plugin has recorded) to user+Probe straight over LMTP; True if it was
    stored."""
    msg = messages.make("plain", 2000, seed="probe", index=tag,
                        top=trace + b"\r\n")
    with smtplib.LMTP(ENV["TRIB_TEST_LOCAL_LMTP_SOCKET"]) as s:
        refused = s.sendmail("", ["%s+Probe" % user], msg.data)
    if refused:
        raise AssertionError("probe refused: %r" % refused)
    return any(d.msgid == msg.msgid and d.folder == "Probe"
               for d in synccheck.local_delivered(user))


def fold(line):
    """The header folded before its MAC: "...;" CRLF " m=..."."""
    i = line.rindex(b" m=")
    return line[:i] + b"\r\n" + line[i:]


class TestSyncForged(unittest.TestCase):

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sync-forged.")
        run(["init", "-c", CONF], check=0)
        cls.keys = synccheck.trace_keys()
        # bob: one message through his own account, for his real header
        install_account("bob", "relay", {"folders": "ForBob"}, cls.tmp)
        install_account("carol", "forged", {"folders": "ForCarol"}, cls.tmp)
        messages.append_messages(ENV, synccheck.REMOTE_USER, "ForBob", [
            messages.make("plain", 3000, seed="bob", index=1)])
        code, out, err = sync("bob", "relay")
        if code != 0 or summary(out, "bob/relay") != (1, 1, 0, 0):
            raise AssertionError("bob's sync: %d %s %s" % (code, out, err))
        got = [d.trace for d in synccheck.local_delivered("bob")
               if d.fields is not None and d.fields["r"] == "bob"]
        if len(got) != 1 or not synccheck.mac_ok(
                synccheck.parse_trace(got[0]), cls.keys):
            raise AssertionError("no valid trace header at bob's: %r" % got)
        cls.bob_trace = got[0]

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def scenario(self, user, account, folder, plugin):
        # 1. the user's first mail, for their own real header
        if folder != "INBOX":
            messages.append_messages(ENV, synccheck.REMOTE_USER, folder, [
                messages.make("plain", 2000 + i, seed=user, index=i)
                for i in range(1, 4)])
        code, out, err = sync(user, account)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "%s/%s" % (user, account)),
                         (3, 3, 0, 0), err)
        first = [d for d in synccheck.local_delivered(user)
                 if d.fields is not None and d.fields["a"] == account]
        self.assertEqual(len(first), 3)
        own = min(first, key=lambda d: d.fields["u"]).trace
        self.assertTrue(synccheck.mac_ok(synccheck.parse_trace(own),
                                         self.keys))
        # the plugin is (or is not) at work: it drops a copy of a
        # message it recorded
        self.assertEqual(probe(user, own, 1), not plugin)

        # 2. the forged ones, between ordinary messages
        st = synccheck.remote_status(folder)
        uv, uid = st["uidvalidity"], st["uidnext"]
        m_at = own.rindex(b"; m=") + 4
        bad_mac = own[:m_at] + (b"B" if own[m_at:m_at + 1] == b"A"
                                else b"A") + own[m_at + 1:]
        f = synccheck.parse_trace(own)
        bad_uid = own.replace(b"; u=%d;" % f["u"], b"; u=%d;" % (uid + 1))
        self.assertNotEqual(bad_uid, own)
        tops = [
            ("bad MAC", bad_mac), ("bad MAC", bad_mac),
            ("UID changed under the MAC", bad_uid),
            ("bob's", self.bob_trace), ("bob's", self.bob_trace),
            ("own, delivered", own), ("own, delivered", own),
            ("own, delivered, folded", fold(own)),
            ("own, delivered, lower case", b"x-tributary-trace" +
             own[len(b"X-Tributary-Trace"):]),
            ("own, for the next UID", "next"),
            ("own, for the next UID", "next"),
        ]
        # each forged one followed by an ordinary one
        msgs = []
        for i, (what, top) in enumerate(tops):
            msgs.append((what, top, KINDS[i % len(KINDS)]))
            msgs.append((None, None, KINDS[(i + 5) % len(KINDS)]))
        made = []
        for n, (what, top, kind) in enumerate(msgs):
            if top == "next":
                top = synccheck.sign(self.keys, user, account, folder, uv,
                                     uid + n + 1, "; fl=")
            top = (top + b"\r\n") if top else b""
            m = messages.make(kind, messages.KINDS[kind][0] + len(top) +
                              1000 + 97 * n, seed="forged-" + user, index=n,
                              top=top)
            made.append((what, top.rstrip(b"\r\n") or None, m))
        r = messages.append_messages(ENV, synccheck.REMOTE_USER, folder,
                                     [m for _, _, m in made])
        self.assertEqual([u for _, u in r["uids"]],
                         list(range(uid, uid + len(made))))
        forged = sum(1 for what, _, _ in made if what is not None)

        # 3. one pass: every one once, ours on top, the forged one below
        code, out, err = sync(user, account)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "%s/%s" % (user, account)),
                         (len(made), len(made), 0, 0), err)
        self.check(user, account, folder, made)
        print("forged (%s): %d messages, %d with a forged header on top, "
              "each delivered once" % ("plugin loaded" if plugin else
                                       "no plugin", len(made), forged))

        # 4. a re-run delivers nothing
        before = sorted(p for _, p in synccheck.local_files(user))
        code, out, err = sync(user, account)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "%s/%s" % (user, account)),
                         (0, 0, 0, 0), err)
        self.assertEqual(sorted(p for _, p in synccheck.local_files(user)),
                         before)
        self.check(user, account, folder, made)

    def check(self, user, account, folder, made):
        remote = synccheck.remote_messages(folder)
        uv, uids = synccheck.remote_uids(folder)
        local = {}
        for d in synccheck.local_delivered(user):
            if d.folder == "Probe":
                continue
            self.assertIsNotNone(d.fields, "%s: no trace of ours" % d.path)
            local.setdefault(d.msgid, []).append(d)
        self.assertEqual(sorted(local), sorted(remote))
        self.assertEqual({mid: len(c) for mid, c in local.items()
                          if len(c) != 1}, {})
        for what, top, m in made:
            with self.subTest(msgid=m.msgid, forged=what):
                copies = local[m.msgid]
                self.assertEqual(len(copies), 1, "%d copies" % len(copies))
                d = copies[0]
                self.assertEqual(d.folder, "INBOX")
                self.assertEqual(remote[m.msgid], [m.stored()])
                self.assertTrue(d.rest == m.stored(), "%s: bytes differ"
                                % d.path)
                self.assertEqual(synccheck.trace_problems(
                    d, self.keys, user, account, folder, uv,
                    uids[m.msgid]), [])
                if top is not None:
                    # the forged header is the first line below ours
                    self.assertTrue(d.rest.startswith(
                        top.replace(b"\r\n", b"\n") + b"\n"))

    def test_signer_agrees_with_trace_tool(self):
        """The headers signed here are the core's: tests/integration/
        trace-tool signs the same fields to the same line."""
        tool = os.path.join(BUILDDIR, "tests", "integration", "trace-tool")
        if not os.path.exists(tool):
            self.skipTest("no %s" % tool)
        key = synccheck.trace_key_file()
        out = subprocess.run([tool, "headers", key, "carol", "forged",
                              "ForCarol", "77", "5", "2"], check=True,
                             capture_output=True).stdout.splitlines()
        self.assertEqual([x.split(b"\t", 1)[1] for x in out],
                         [synccheck.sign(self.keys, "carol", "forged",
                                         "ForCarol", 77, u) for u in (5, 6)])

    def test_with_the_plugin(self):
        self.assertIn(PLUGIN, lmtp_plugins())
        self.scenario("alice", "home", "INBOX", plugin=True)

    def test_without_the_plugin(self):
        with PluginUnloaded("bob", self.bob_trace):
            self.scenario("carol", "forged", "ForCarol", plugin=False)


if __name__ == "__main__":
    main("test_sync_forged")
