#!/usr/bin/env python3
"""`tributary run`, the daemon, against the harness's real servers.

The local users get accounts polled every hour and not watched with
IDLE unless a test asks (so only the daemon's start, SIGUSR1, SIGHUP and
IDLE bring mail in within a test): alice `home`
(the remote alice's INBOX, password_file), bob `mail` (the remote bob's
INBOX, password_file); carol gets `mail` (oauth2, the remote alice's
folder RunCarol) in the SIGHUP test. Each test starts its own daemon
(`tributary run -v`, a child of the test, killed and waited for in the
cleanup whatever happens) and checks its output: no token, no password,
no client secret.

1. the first passes fetch both users' mail, their passes running side by
   side; new mail and SIGUSR1 bring it in at once; the status file shows
   the daemon's passes; SIGTERM exits 0;
2. SIGHUP after carol got an account: her account is fetched;
3. a user whose lock a `tributary sync` holds (stopped with SIGSTOP while
   it holds it, so no timing decides) is left for a minute with an info
   line, no warning or error, and fetched then;
4. SIGTERM in the middle of a pass of 300 x 100 KB messages: the daemon
   exits 0 within 30 s, and a `tributary sync` afterwards delivers the
   rest: every remote message exactly once;
5. IDLE: with alice's account watched (idle = yes), mail appended to the
   remote INBOX arrives without SIGUSR1 (the poll interval is an hour);
   after SIGHUP with idle = no it does not come within 5 s (no pass
   runs), and comes after SIGUSR1;
6. SIGTERM closes the watcher: the remote `doveadm who` shows its
   session while it runs and none after, twice (daemon restarted);
7. an oauth2 account's watcher (carol, folder RunCarol) logs in with the
   pass's access token and brings new mail there.

Waits have deadlines (checking every 0.2 s); nothing asserts how long
anything took. Run under tests/harness/with-servers.sh (test-run.sh
does), as root."""

import json
import os
import re
import signal
import subprocess
import time
import unittest

import synctest
from synctest import DIR, ENV, TRIBUTARY, harness, local_ids, main, seed
import synccheck
import test_sync_oauth as oauth

CONF = ENV.get("TRIB_TEST_LOCAL_CONF", "")
STATE_DIR = ENV.get("TRIB_TEST_LOCAL_STATE_DIR", "")
TMP = os.path.join(DIR, "run-test")
REMOTE_BOB = "bob@example.com"
DEADLINE = 60
# what must never show in the daemon's output, besides TOKEN_RE
SECRETS = ("alice-app-password", "bob-app-password",
           "test-gmail-client-secret-value")
SUMMARY = re.compile(r"^(\w+)/(\w+): (\d+) new, (\d+) delivered, "
                     r"(\d+) rejected, (\d+) deferred")


def maildir(user):
    return os.path.join(DIR, "local", "home", user, "Maildir")


def remote_inbox_ids(user=synctest.REMOTE_USER):
    return set(synccheck.remote_messages("INBOX", user))


def account(login, folder, password_file=None, idle=False):
    """An account's fields: the remote login's folder, polled hourly,
    watched with IDLE only when asked; password_file, or oauth2 (the
    stand-in's public client) without one."""
    fields = [("provider", "imap"), ("host", "127.0.0.1"),
              ("port", ENV["TRIB_TEST_IMAPS_PORT"]), ("tls", "implicit"),
              ("ca_file", ENV["TRIB_TEST_CA"]), ("login", login),
              ("folders", folder), ("poll_interval", "1h"),
              ("idle", "yes" if idle else "no")]
    if password_file is not None:
        return fields + [("auth", "password_file"),
                         ("password_file", password_file)]
    return fields + [("auth", "oauth2"), ("client_id", oauth.CLIENT_ID),
                     ("oauth_authorize_url", oauth.OAUTH_URL + "/authorize"),
                     ("oauth_scope", "mail offline_access"),
                     ("oauth_token_url", oauth.OAUTH_URL + "/token"),
                     ("sasl", "XOAUTH2")]


def write_accounts(carol=False, idle=False):
    """The users' accounts file: alice and bob, and carol when asked;
    alice's and carol's accounts watched with IDLE when asked."""
    users = {
        "alice": {"home": account(synctest.REMOTE_USER, "INBOX",
                                  synctest.PASSWORD_FILE, idle=idle)},
        "bob": {"mail": account(REMOTE_BOB, "INBOX",
                                os.path.join(TMP, "bob.password"))},
    }
    if carol:
        users["carol"] = {"mail": account(synctest.REMOTE_USER,
                                          "RunCarol", idle=idle)}
    lines = []
    for user, accounts in users.items():
        items = [("accounts", ",".join(accounts))]
        for name, fields in accounts.items():
            items += [("%s_%s" % (name, k), str(v).replace("%", "%%"))
                      for k, v in fields]
        lines.append("%s:::::::%s" % (user, " ".join(
            "userdb_tributary_%s=%s" % kv for kv in items)))
    path = os.path.join(TMP, "accounts")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    harness("accounts", DIR, path)


def seed_bob(count):
    harness("seed", DIR, "--user", REMOTE_BOB, "--mailbox", "INBOX",
            "--count", str(count))


def status_of(user):
    """account -> its entry in `tributary status -u USER --json`."""
    _, out, _ = synctest.run(["status", "-c", CONF, "-u", user, "--json"],
                             check=0)
    users = [u for u in json.loads(out)["users"] if u["user"] == user]
    return {a["account"]: a for a in users[0]["accounts"]}


def remote_sessions(user=synctest.REMOTE_USER):
    """The remote Dovecot's IMAP sessions of user (`doveadm who -1`)."""
    out = synccheck.doveadm_remote("who", "-1")
    return len([x for x in out.splitlines()
                if x.split()[:2] == [user, "imap"]])


def lock_held(path):
    """Whether someone holds an fcntl lock on path (/proc/locks)."""
    ino = os.stat(path).st_ino
    with open("/proc/locks") as f:
        return any(len(x.split()) > 5 and
                   x.split()[5].endswith(":%d" % ino) for x in f)


def wait_until(test, cond, what, daemon=None, timeout=DEADLINE, step=0.2):
    deadline = time.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if daemon is not None and daemon.proc.poll() is not None:
            test.fail("the daemon exited (%s) waiting for %s:\n%s"
                      % (daemon.proc.returncode, what, daemon.tail()))
        if time.time() > deadline:
            test.fail("no %s within %d s%s" % (
                what, timeout,
                ":\n" + daemon.tail() if daemon is not None else ""))
        time.sleep(step)


class Daemon:
    """`tributary run -v` as a child of the test, its output in a file.
    Killed and waited for in the test's cleanup, whatever happened."""

    def __init__(self, test, name):
        self.path = os.path.join(TMP, name + ".log")
        self.out = open(self.path, "w")
        self.proc = subprocess.Popen(
            [TRIBUTARY, "run", "-v", "-c", CONF], stdin=subprocess.DEVNULL,
            stdout=self.out, stderr=subprocess.STDOUT)
        test.addCleanup(self.kill)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
        self.out.close()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def output(self):
        with open(self.path, errors="replace") as f:
            return f.read()

    def lines(self):
        """Its log lines without the "tributary: " prefix."""
        return [x[len("tributary: "):] for x in self.output().splitlines()
                if x.startswith("tributary: ")]

    def tail(self, n=40):
        return "\n".join(self.output().splitlines()[-n:])

    def summaries(self, name):
        """(new, delivered, rejected, deferred) of each pass of user/
        account, in order."""
        out = []
        for line in self.lines():
            m = SUMMARY.match(line)
            if m and "%s/%s" % m.groups()[:2] == name:
                out.append(tuple(int(x) for x in m.groups()[2:]))
        return out

    def problems(self):
        return [x for x in self.lines()
                if x.startswith("warning: ") or x.startswith("error: ")]

    def stop(self, test):
        """SIGTERM: exits 0 within 30 s."""
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            test.fail("no exit within 30 s of SIGTERM:\n" + self.tail())
        test.assertEqual(code, 0, self.tail())

    def check_secrets(self, test, extra=()):
        text = self.output()
        test.assertIsNone(oauth.TOKEN_RE.search(text),
                          "a token in the daemon's output")
        for secret in SECRETS + tuple(extra):
            test.assertNotIn(secret, text)


def setUpModule():
    os.makedirs(TMP, exist_ok=True)
    synctest.run(["init", "-c", CONF], check=0)
    with open(os.path.join(TMP, "bob.password"), "w") as f:
        f.write(ENV["TRIB_TEST_APP_PASSWORD2"] + "\n")
    write_accounts()


def tearDownModule():
    harness("accounts", DIR, "--fixture")


class Run(unittest.TestCase):

    maxDiff = None

    def start(self, name):
        """A daemon, once its first passes (alice's and bob's) ended."""
        d = Daemon(self, name)
        wait_until(self, lambda: d.summaries("alice/home") and
                   d.summaries("bob/mail"), "first passes", d)
        return d

    def exactly_once(self, user, ids):
        local = local_ids(maildir(user))
        self.assertEqual({i: local.get(i, 0) for i in ids},
                         {i: 1 for i in ids})
        self.assertEqual(sum(local.values()), len(ids))

    def test_0_usage(self):
        for args in (["extra"], ["--nope"], ["-u", "alice"]):
            code, _, err = synctest.run(["run"] + args)
            self.assertEqual(code, 64, args)
            self.assertIn("usage: tributary run", err)
        _, out, _ = synctest.run(["run", "--help"], check=0)
        self.assertIn("SIGUSR1", out)

    def test_1_two_users_then_wake(self):
        seed_bob(20)
        started = int(time.time())
        d = Daemon(self, "wake")
        alice, bob = remote_inbox_ids(), remote_inbox_ids(REMOTE_BOB)
        wait_until(self, lambda: set(local_ids(maildir("bob"))) >= bob and
                   set(local_ids(maildir("alice"))) >= alice,
                   "mail of both users", d)
        wait_until(self, lambda: d.summaries("alice/home") and
                   d.summaries("bob/mail"), "both summary lines", d)
        self.assertEqual(d.summaries("alice/home"),
                         [(len(alice), len(alice), 0, 0)])
        self.assertEqual(d.summaries("bob/mail"), [(20, 20, 0, 0)])
        # side by side: both passes started before either ended
        lines = d.lines()
        first_end = min(i for i, x in enumerate(lines) if SUMMARY.match(x))
        for user, name in (("alice", "home"), ("bob", "mail")):
            self.assertIn("%s: pass started (%s)" % (user, name),
                          lines[:first_end])

        seed("INBOX", 5)
        d.signal(signal.SIGUSR1)
        more = remote_inbox_ids() - alice
        self.assertEqual(len(more), 5)
        wait_until(self, lambda: set(local_ids(maildir("alice"))) >= more,
                   "the new mail after SIGUSR1", d)
        wait_until(self, lambda: len(d.summaries("alice/home")) == 2,
                   "the second summary line", d)
        self.assertEqual(d.summaries("alice/home")[1], (5, 5, 0, 0))
        self.assertIn("SIGUSR1: every account is due now", d.lines())
        self.exactly_once("alice", alice | more)
        self.exactly_once("bob", bob)

        # the status file shows the daemon's passes
        home, mail = status_of("alice")["home"], status_of("bob")["mail"]
        self.assertEqual((home["state"], home["new"], home["delivered"],
                          home["delivered_total"]),
                         ("ok", 5, 5, len(alice) + 5))
        self.assertEqual((mail["state"], mail["delivered_total"]),
                         ("ok", 20))
        self.assertGreaterEqual(home["last_attempt"], started)
        d.stop(self)
        self.assertEqual(d.problems(), [])
        lines = d.lines()
        self.assertLess(lines.index("SIGTERM: stopping (0 passes to end)"),
                        lines.index("stopped"))
        d.check_secrets(self)

    def test_2_sighup_reads_new_account(self):
        d = self.start("hup")
        seed("RunCarol", 4)
        ids = set(synccheck.remote_messages("RunCarol"))
        refresh = oauth.new_refresh_token()
        oauth.vault_put("mail", "refresh_token", refresh)
        write_accounts(carol=True)
        d.signal(signal.SIGHUP)
        wait_until(self, lambda: set(local_ids(maildir("carol"))) >= ids,
                   "carol's mail after SIGHUP", d)
        wait_until(self, lambda: d.summaries("carol/mail"),
                   "carol's summary line", d)
        self.assertEqual(d.summaries("carol/mail"), [(4, 4, 0, 0)])
        self.assertIn("SIGHUP: reading the settings and the users again",
                      d.lines())
        self.exactly_once("carol", ids)
        self.assertEqual(status_of("carol")["mail"]["state"], "ok")
        d.stop(self)
        self.assertEqual(d.problems(), [])
        d.check_secrets(self, [refresh])

    def test_3_locked_user_waits_quietly(self):
        d = self.start("locked")
        seed("INBOX", 1000)
        lock = os.path.join(STATE_DIR, "alice", "lock")
        sync = subprocess.Popen([TRIBUTARY, "sync", "-c", CONF, "-u",
                                 "alice", "home"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

        def cleanup():
            if sync.poll() is None:
                sync.kill()
            sync.communicate(timeout=60)
        self.addCleanup(cleanup)
        # hold the sync while it holds the lock: the daemon then finds
        # it locked, whatever the speed of either
        wait_until(self, lambda: lock_held(lock) or sync.poll() is not None,
                   "the sync's lock", step=0.005)
        sync.send_signal(signal.SIGSTOP)
        self.assertTrue(lock_held(lock), "the sync ended before SIGSTOP")
        d.signal(signal.SIGUSR1)
        locked = re.compile(r"^alice: .*locked by pid %d.*; trying again in "
                            r"60 seconds$" % sync.pid)
        wait_until(self, lambda: any(locked.match(x) for x in d.lines()),
                   "the daemon's info line on the lock", d)
        sync.send_signal(signal.SIGCONT)
        out, err = sync.communicate(timeout=300)
        self.assertEqual(sync.returncode, 0, out + err)
        self.assertEqual(synctest.summary(out, "alice/home"),
                         (1000, 1000, 0, 0))
        # a minute later, by itself
        passes = len(d.summaries("alice/home"))
        wait_until(self, lambda: len(d.summaries("alice/home")) > passes,
                   "the daemon's pass after the lock", d,
                   timeout=DEADLINE + 60)
        self.assertEqual(d.summaries("alice/home")[-1], (0, 0, 0, 0))
        self.assertEqual(d.problems(), [])
        self.exactly_once("alice", remote_inbox_ids())
        d.stop(self)
        d.check_secrets(self)

    def test_4_sigterm_during_large_pass(self):
        d = self.start("term")
        before = len(local_ids(maildir("alice")))
        seed("INBOX", 300, size=100 * 1024)
        ids = remote_inbox_ids()
        self.assertEqual(len(ids), before + 300)
        d.signal(signal.SIGUSR1)

        def count():
            return sum(local_ids(maildir("alice")).values())
        wait_until(self, lambda: count() > before, "the first message",
                   d, step=0.01)
        d.stop(self)
        self.assertIn("SIGTERM: stopping (1 passes to end)", d.lines())
        cut = d.summaries("alice/home")[-1]
        self.assertEqual(cut[0], 300)
        self.assertLess(count(), before + 300, "the pass was not cut")
        # nothing of it is lost or doubled: a sync brings the rest
        _, out, err = synctest.sync("alice", "home", check=0)
        new, delivered, rejected, deferred = synctest.summary(
            out, "alice/home")
        self.assertEqual((new, rejected, deferred), (delivered, 0, 0))
        # what LMTP took in the cut pass is not fetched again (the
        # cursor may stop below some of it: those are fetched again, and
        # the LMTP plugin stores them once)
        self.assertGreaterEqual(new + cut[1], 300)
        self.assertLess(new, 300)
        self.exactly_once("alice", ids)
        _, out, _ = synctest.sync("alice", "home", check=0)
        self.assertEqual(synctest.summary(out, "alice/home"), (0, 0, 0, 0))
        d.check_secrets(self)

    def watching(self, d, name="alice/home", folder="INBOX"):
        """Wait for the account's IDLE watcher to be idling."""
        watching = "%s: IDLE on %s" % (name, folder)
        wait_until(self, lambda: any(x.startswith(watching)
                                     for x in d.lines()),
                   "the IDLE watcher", d)

    def test_5_idle_push(self):
        write_accounts(idle=True)
        self.addCleanup(write_accounts)
        d = self.start("idle")
        self.watching(d)
        # new mail comes without SIGUSR1 (the poll interval is an hour)
        before = remote_inbox_ids()
        seed("INBOX", 3)
        new = remote_inbox_ids() - before
        self.assertEqual(len(new), 3)
        wait_until(self, lambda: set(local_ids(maildir("alice"))) >= new,
                   "the new mail through IDLE", d, timeout=30)
        self.assertIn("alice/home: new mail (IDLE): due now", d.lines())
        self.assertNotIn("SIGUSR1: every account is due now", d.lines())

        # idle = no after SIGHUP: the watcher goes, mail waits for a
        # poll (here: SIGUSR1)
        write_accounts(idle=False)
        listed = len([x for x in d.lines() if " remote accounts " in x])
        d.signal(signal.SIGHUP)
        wait_until(self, lambda: len([x for x in d.lines()
                                      if " remote accounts " in x])
                   > listed, "the user list read again", d)
        before = remote_inbox_ids()
        seed("INBOX", 2)
        later = remote_inbox_ids() - before
        self.assertEqual(len(later), 2)
        passes = len(d.summaries("alice/home"))
        time.sleep(5)
        self.assertEqual(len(d.summaries("alice/home")), passes)
        self.assertFalse(set(local_ids(maildir("alice"))) & later,
                         "mail came without IDLE or a poll")
        d.signal(signal.SIGUSR1)
        wait_until(self, lambda: set(local_ids(maildir("alice"))) >= later,
                   "the new mail after SIGUSR1", d)
        self.exactly_once("alice", remote_inbox_ids())
        d.stop(self)
        self.assertEqual(d.problems(), [])
        d.check_secrets(self)

    def test_6_sigterm_closes_watcher(self):
        write_accounts(idle=True)
        self.addCleanup(write_accounts)
        for name in ("idle-term", "idle-again"):
            d = self.start(name)
            self.watching(d)
            # the watcher's session (the pass has logged out)
            wait_until(self, lambda: remote_sessions() == 1,
                       "one remote session, the watcher's", d)
            d.stop(self)
            self.assertEqual(d.problems(), [])
            d.check_secrets(self)
            # nothing left behind
            wait_until(self, lambda: remote_sessions() == 0,
                       "the watcher's session to end")

    def test_7_idle_oauth2(self):
        """The watcher of an oauth2 account logs in with the pass's
        access token, on the account's first folder."""
        refresh = oauth.new_refresh_token()
        oauth.vault_put("mail", "refresh_token", refresh)
        write_accounts(carol=True, idle=True)
        self.addCleanup(write_accounts)
        d = self.start("idle-oauth")
        self.watching(d, "carol/mail", "RunCarol")
        before = set(synccheck.remote_messages("RunCarol"))
        seed("RunCarol", 2)
        new = set(synccheck.remote_messages("RunCarol")) - before
        self.assertEqual(len(new), 2)
        wait_until(self, lambda: set(local_ids(maildir("carol"))) >= new,
                   "carol's new mail through IDLE", d, timeout=30)
        self.assertIn("carol/mail: new mail (IDLE): due now", d.lines())
        self.assertNotIn("SIGUSR1: every account is due now", d.lines())
        self.exactly_once("carol",
                          set(synccheck.remote_messages("RunCarol")))
        d.stop(self)
        self.assertEqual(d.problems(), [])
        d.check_secrets(self, [refresh])


if __name__ == "__main__":
    main("test_run")
