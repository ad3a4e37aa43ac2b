#!/usr/bin/env python3
"""`tributary sync` of a big, nasty mailbox in one pass, against the real
servers: 1,000 generated messages (tests/harness/messages.py: 1 KB to
25 MB, about 200 MB in all, 7-bit and raw 8-bit, base64 attachments,
malformed MIME, overlong lines, binary junk, folded headers, no body) are
APPENDed to the remote alice's INBOX beside its 3 fixture messages, and
the local alice's account `home` fetches them all in one pass, with her
Sieve script filing by header.

Checked:
  - the remote stored every generated message as generated (CRLF -> LF),
    so the mailbox really holds what the generator promises;
  - one pass: --json counts (new = delivered = 1,003, nothing rejected,
    deferred or re-mapped, no error, exit 0);
  - every remote message arrived exactly once, in Lists when it says
    X-Test-Folder: Lists (alice's Sieve script), in INBOX otherwise; its
    bytes are LMTP's Return-Path, Delivered-To and Received, then
    Tributary's trace header (7-bit, at most 998 bytes, for alice/home,
    INBOX, the remote's UIDVALIDITY and the message's UID, its MAC right
    under the local trace key), then exactly the remote's stored file;
  - a second pass delivers nothing (--json all zero) and changes no file;
  - a Sieve script doing `fileinto :copy "Copies"; keep;` gets both copies
    of each matching message, byte for byte the same (account `copy` of
    alice reading the remote folder SieveCopy; the fixture's accounts and
    the first script are put back afterwards).

The figures (messages, MB, seconds) are printed. Run under
tests/harness/with-servers.sh (test-sync-bulk.sh does), as root."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from synctest import (DIR, ENV, TRIBUTARY, harness, install_account, main,
                      run)
import synccheck

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "harness"))
import messages  # noqa: E402

COUNT = 1000
TOTAL = 200 * messages.MB
SEED = "bulk"
FIXTURE_INBOX = int(ENV.get("TRIB_TEST_INBOX_COUNT", "3"))
ALICE_HOME = os.path.join(DIR, "local", "home", "alice")
MAIL_UID = 65534

FILE_SIEVE = b"""require ["fileinto"];
if header :is "X-Test-Folder" "Lists" {
  fileinto "Lists";
}
"""
COPY_SIEVE = b"""require ["fileinto", "copy"];
if header :is "X-Test-Folder" "Lists" {
  fileinto :copy "Copies";
  keep;
}
"""


def say(fmt, *args):
    print("bulk: " + fmt % args)
    sys.stdout.flush()


def mb(n):
    return n / messages.MB


def install_sieve(name, script):
    """alice's active Sieve script: ~/sieve/NAME.sieve, ~/.dovecot.sieve
    a symlink to it, all owned by the mail uid."""
    sdir = os.path.join(ALICE_HOME, "sieve")
    os.makedirs(sdir, exist_ok=True)
    path = os.path.join(sdir, name + ".sieve")
    with open(path, "wb") as f:
        f.write(script)
    link = os.path.join(ALICE_HOME, ".dovecot.sieve")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.join("sieve", name + ".sieve"), link)
    for p in (sdir, path):
        os.chown(p, MAIL_UID, MAIL_UID)
    os.lchown(link, MAIL_UID, MAIL_UID)


def sieve_log():
    try:
        with open(os.path.join(ALICE_HOME, ".dovecot.sieve.log")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


# Runs argv[2:] and writes its max RSS (kB) to argv[1]. A child's
# ru_maxrss counts the memory of the process it was forked from, up to its
# exec: this small process is that one, not the test (which has held
# hundreds of MB by then).
MEASURE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(args):
    """Run the CLI; (exit code, stdout, stderr, seconds, its max RSS in
    kB)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", MEASURE, rss.name,
                               TRIBUTARY] + args, capture_output=True,
                              text=True, timeout=600)
        dt = time.monotonic() - t0
        return (proc.returncode, proc.stdout, proc.stderr, dt,
                int(rss.read() or 0))


def sync_json(account):
    """One pass of alice's account with --json: (exit, the account's
    entry, the document, stderr, seconds, max RSS in kB)."""
    code, out, err, dt, rss = run_measured(
        ["sync", "-c", ENV["TRIB_TEST_LOCAL_CONF"], "-u", "alice", account,
         "--json"])
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError("sync --json: exit %d, not JSON: %r\n%s"
                             % (code, out, err))
    acc = [a for a in doc["accounts"] if a["account"] == account]
    return code, (acc[0] if len(acc) == 1 else None), doc, err, dt, rss


def counts(entry):
    return {k: entry[k] for k in ("new", "delivered", "rejected",
                                  "deferred", "remapped", "errors")}


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def local_snapshot():
    return {path: os.path.getsize(path)
            for _, path in synccheck.local_files("alice")}


class TestSyncBulk(unittest.TestCase):
    """Runs in name order: the passes build on the seeding."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]], check=0)
        install_sieve("bulk", FILE_SIEVE)
        cls.plan = messages.mix_plan(COUNT, TOTAL, SEED)
        # where alice's Sieve script files each (INBOX if not named here)
        cls.folders = {
            messages.make_msgid(SEED, i + 1, kind): "Lists"
            for i, (kind, _, folder, _) in enumerate(cls.plan)
            if folder == "Lists"}
        t0 = time.monotonic()
        r = messages.append_messages(ENV, synccheck.REMOTE_USER, "INBOX",
                                     messages.mix(COUNT, TOTAL, SEED))
        cls.seed_seconds = time.monotonic() - t0
        cls.appended = r
        kinds = {}
        for kind, size, _, _ in cls.plan:
            kinds[kind] = kinds.get(kind, 0) + 1
        say("seeded %d messages, %.1f MB (%.1f MB the biggest, %.1f kB "
            "the smallest) in %.1f s; kinds: %s", r["count"], mb(r["bytes"]),
            mb(max(s for _, s, _, _ in cls.plan)),
            min(s for _, s, _, _ in cls.plan) / 1024, cls.seed_seconds,
            ", ".join("%s %d" % kv for kv in sorted(kinds.items())))

    def test_0_the_mix_is_what_was_asked(self):
        sizes = [s for _, s, _, _ in self.plan]
        kinds = {k for k, _, _, _ in self.plan}
        self.assertEqual(len(sizes), COUNT)
        self.assertEqual(sum(sizes), TOTAL)
        self.assertEqual(self.appended["count"], COUNT)
        self.assertEqual(self.appended["bytes"], TOTAL)
        self.assertEqual(kinds, set(messages.KINDS))
        self.assertIn(messages.MAX_SIZE, sizes)
        self.assertEqual(min(sizes), messages.KB)
        self.assertGreater(sum(1 for f in self.plan if f[2] == "Lists"), 0)
        self.assertEqual(len(self.appended["uids"]), COUNT)

    def assertNoProblems(self, problems, what):
        """One failure listing the first problems (of thousands, maybe)."""
        if problems:
            self.fail("%s: %d problems:\n  %s%s" % (
                what, len(problems), "\n  ".join(problems[:20]),
                "\n  ..." if len(problems) > 20 else ""))

    def test_1_remote_stored_what_was_generated(self):
        """Each generated message, its CRLFs turned into LF, is byte for
        byte the remote's stored file: what the remote Dovecot keeps is
        what the sync must bring, nasty parts included."""
        remote = synccheck.remote_messages("INBOX")
        self.assertEqual(len(remote), COUNT + FIXTURE_INBOX)
        problems = []
        n = 0
        for m in messages.mix(COUNT, TOTAL, SEED):
            n += 1
            got = remote.get(m.msgid)
            if got is None or len(got) != 1:
                problems.append("%s (%s): %d stored copies"
                                % (m.msgid, m.kind, len(got or [])))
            elif got[0] != m.stored():
                problems.append("%s (%s, %d bytes): stored %d bytes, "
                                "first difference at byte %d" % (
                                    m.msgid, m.kind, m.size, len(got[0]),
                                    first_difference(got[0], m.stored())))
        self.assertEqual(n, COUNT)
        self.assertNoProblems(problems, "remote INBOX")

    def test_2_one_pass_delivers_everything_once(self):
        code, acc, doc, err, dt, rss = sync_json("home")
        total = COUNT + FIXTURE_INBOX
        say("first pass: %d messages, %.1f MB in %.1f s (%.1f MB/s), max "
            "RSS of tributary %.1f MB", total, mb(TOTAL), dt,
            mb(TOTAL) / dt if dt else 0, rss / 1024)
        self.assertEqual(code, 0, err)
        self.assertEqual(doc["exit"], 0)
        self.assertEqual(doc["user"], "alice")
        self.assertEqual(counts(acc), {"new": total, "delivered": total,
                                       "rejected": 0, "deferred": 0,
                                       "remapped": 0, "errors": []}, err)
        self.check_delivered()
        self.assertEqual(sieve_log(), "")

    def check_delivered(self):
        """Every remote INBOX message once at alice's, where her Sieve
        script files it, byte for byte under a right trace header."""
        remote = synccheck.remote_messages("INBOX")
        uv, uids = synccheck.remote_uids("INBOX")
        keys = synccheck.trace_keys()
        local = {}
        problems = []
        for d in synccheck.local_delivered("alice"):
            if d.fields is None:
                problems.append("%s: no trace header of ours under LMTP's "
                                "lines" % d.path)
            elif d.fields["a"] == "home":
                local.setdefault(d.msgid, []).append(d)
        for mid in sorted(set(remote) - set(local)):
            problems.append("%s: not delivered" % mid)
        for mid in sorted(set(local) - set(remote)):
            problems.append("%s: delivered, not on the remote" % mid)
        lists = 0
        for mid, copies in sorted(local.items()):
            if len(copies) != 1:
                problems.append("%s: %d copies (%s)" % (
                    mid, len(copies), ", ".join(d.path for d in copies)))
                continue
            d = copies[0]
            if mid not in remote:
                continue
            if d.rest != remote[mid][0]:
                problems.append("%s: %d bytes, the remote's %d, first "
                                "difference at byte %d (%s)" % (
                                    mid, len(d.rest), len(remote[mid][0]),
                                    first_difference(d.rest, remote[mid][0]),
                                    d.path))
            for p in synccheck.trace_problems(d, keys, "alice", "home",
                                              "INBOX", uv, uids[mid]):
                problems.append("%s: %s" % (mid, p))
            names = sorted(x.split(b":")[0] for x in d.lmtp)
            if names != [b"Delivered-To", b"Received", b"Return-Path"]:
                problems.append("%s: LMTP's lines are %r" % (mid, names))
            want = self.folders.get(mid, "INBOX")
            lists += want == "Lists"
            if d.folder != want:
                problems.append("%s: in %s, not %s" % (mid, d.folder, want))
        self.assertNoProblems(problems, "alice's mail from alice/home")
        self.assertEqual(lists, sum(1 for f in self.plan if f[2] == "Lists"))
        self.assertEqual(len(local), COUNT + FIXTURE_INBOX)

    def test_3_second_pass_delivers_nothing(self):
        snap = local_snapshot()
        code, acc, doc, err, dt, _ = sync_json("home")
        say("second pass: %.2f s", dt)
        self.assertEqual(code, 0, err)
        self.assertEqual(counts(acc), {"new": 0, "delivered": 0,
                                       "rejected": 0, "deferred": 0,
                                       "remapped": 0, "errors": []}, err)
        self.assertEqual(local_snapshot(), snap)

    def test_4_sieve_copy_and_keep(self):
        """fileinto :copy "Copies"; keep; -> each matching message in
        Copies and in INBOX, the same bytes; the others in INBOX only."""
        tmp = tempfile.mkdtemp(prefix="sync-bulk.")
        try:
            install_account("alice", "copy", {"folders": "SieveCopy"}, tmp)
            install_sieve("copy", COPY_SIEVE)
            msgs = list(messages.mix(60, 3 * messages.MB, seed="copy"))
            matching = {m.msgid for m in msgs if m.folder == "Lists"}
            self.assertGreater(len(matching), 0)
            messages.append_messages(ENV, synccheck.REMOTE_USER, "SieveCopy",
                                     msgs)
            code, acc, doc, err, dt, _ = sync_json("copy")
            say("Sieve :copy pass: %d messages (%d matching), %.1f MB in "
                "%.1f s", len(msgs), len(matching),
                mb(sum(m.size for m in msgs)), dt)
            self.assertEqual(code, 0, err)
            self.assertEqual(counts(acc), {"new": 60, "delivered": 60,
                                           "rejected": 0, "deferred": 0,
                                           "remapped": 0, "errors": []}, err)
            self.assertEqual(sieve_log(), "")
            remote = synccheck.remote_messages("SieveCopy")
            uv, uids = synccheck.remote_uids("SieveCopy")
            keys = synccheck.trace_keys()
            where = {}
            for d in synccheck.local_delivered("alice"):
                if d.fields is not None and d.fields["a"] == "copy":
                    where.setdefault(d.msgid, []).append(d)
            self.assertEqual(sorted(where), sorted(remote))
            for mid, copies in where.items():
                with self.subTest(msgid=mid):
                    want = ["Copies", "INBOX"] if mid in matching \
                        else ["INBOX"]
                    self.assertEqual(sorted(d.folder for d in copies), want)
                    for d in copies:
                        self.assertTrue(d.rest == remote[mid][0],
                                        "%s: bytes differ" % d.path)
                        self.assertEqual(synccheck.trace_problems(
                            d, keys, "alice", "copy", "SieveCopy", uv,
                            uids[mid]), [])
                    # one delivery: the same trace line in both copies
                    self.assertEqual(len({d.trace for d in copies}), 1)
        finally:
            harness("accounts", DIR, "--fixture")
            install_sieve("bulk", FILE_SIEVE)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        main("test_sync_bulk")
    finally:
        say("total %.1f s", time.monotonic() - t0)
