#!/usr/bin/env python3
"""`tributary status` and the status file `tributary sync` writes, against
the harness's remote and local Dovecots and the OAuth stand-in.

alice's fixture accounts (`work`: outlook, never authorized; `home`:
password_file) show the plain states: new, ok (with the counts of the
sync's own summary line, delivered_total adding up), deferred (LMTP
away: failures count up, then back to ok), a reauthorization record
written by hand, a damaged status file (exit 65, replaced by the next
sync). carol gets test_sync_oauth's accounts for the real thing: a
revoked refresh token makes `mail` reauthorization-required with the
exact command that fixes it; a new token without the record shows it
authorized again; the next pass makes it ok. -A lists every user with a
state directory without asking the userdb. No token ever shows up in
the status file or in what the commands print.

The tests run in name order and build on each other. Times are checked
in UTC (TZ=UTC for the CLI)."""

import json
import os
import re
import subprocess
import time
import unittest

import synctest
from synctest import ENV, DIR, harness, seed, summary
import test_sync_oauth as oauth

STATE_DIR = ENV.get("TRIB_TEST_LOCAL_STATE_DIR", "")
TOKEN_RE = oauth.TOKEN_RE
UTC = dict(ENV, TZ="UTC")
LINE = re.compile(r"^(\S+)/(\S+)  (\S+)  (.*)$")


def conf():
    return ["-c", ENV["TRIB_TEST_LOCAL_CONF"]]


def status(args, check=None, env=UTC):
    return synctest.run(["status"] + conf() + list(args), env=env,
                        check=check)


def sync(user, account=None, check=None):
    code, out, err = synctest.run(["sync"] + conf() + ["-u", user] +
                                  ([account] if account else []),
                                  check=check)
    return code, out, err


def lines_of(out):
    """{(user, account): (state, rest)} of the text output's account
    lines, and the indented lines after each."""
    found, extra, key = {}, {}, None
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            key = (m.group(1), m.group(2))
            found[key] = (m.group(3), m.group(4))
            extra[key] = []
        elif line.startswith("    ") and key is not None:
            extra[key].append(line[4:])
    return found, extra


def accounts_of(doc, user):
    users = [u for u in doc["users"] if u["user"] == user]
    assert len(users) == 1, doc
    return {a["account"]: a for a in users[0]["accounts"]}


def utc(t):
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def error_lines(err, prefix):
    """The CLI's error lines (without "tributary: ") starting with
    prefix."""
    return [x[len("tributary: "):] for x in err.splitlines()
            if x.startswith("tributary: " + prefix)]


def user_dir(user):
    return os.path.join(STATE_DIR, user)


def status_file(user):
    return os.path.join(user_dir(user), "status")


class TestStatus(unittest.TestCase):

    maxDiff = None
    printed = []

    @classmethod
    def setUpClass(cls):
        synctest.run(["init"] + conf(), check=0)
        cls.tmp = os.path.join(DIR, "status-test")
        os.makedirs(cls.tmp, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")

    def status(self, args, check=None):
        code, out, err = status(args, check=check)
        self.printed.append(out + err)
        return code, out, err

    def status_json(self, args, check=0):
        code, out, err = self.status(list(args) + ["--json"], check=check)
        return json.loads(out), err

    def test_0_usage(self):
        for args in ([], ["-u", "alice", "-A"], ["-A", "extra"],
                     ["--nope"]):
            code, out, err = status(args)
            self.assertEqual(code, 64, args)
            self.assertIn("usage: tributary status", err)
        code, out, _ = status(["--help"], check=0)
        self.assertIn("-A, --all", out)

    def test_1_never_synced_is_new(self):
        _, out, err = self.status(["-u", "alice"], check=0)
        found, _ = lines_of(out)
        self.assertEqual(found, {("alice", "work"): ("new", "never synced"),
                                 ("alice", "home"): ("new", "never synced")},
                         out + err)
        doc, _ = self.status_json(["-u", "alice"])
        accts = accounts_of(doc, "alice")
        self.assertEqual(sorted(accts), ["home", "work"])
        for a in accts.values():
            self.assertEqual(a["state"], "new")
            self.assertIsNone(a["last_attempt"])
            self.assertIsNone(a["since"])
            self.assertEqual((a["new"], a["delivered"], a["delivered_total"],
                              a["failures"], a["errors"]), (0, 0, 0, 0, []))
        # nobody has a state directory yet
        doc, _ = self.status_json(["-A"])
        self.assertEqual(doc["users"], [])

    def test_2_after_sync_ok(self):
        seed("INBOX", 2)
        _, out, err = sync("alice", "home", check=0)
        first = summary(out, "alice/home")
        self.assertGreater(first[0], 0)
        _, out, err = self.status(["-u", "alice"], check=0)
        doc, _ = self.status_json(["-u", "alice"])
        home = accounts_of(doc, "alice")["home"]
        self.assertEqual(home["state"], "ok")
        self.assertEqual((home["new"], home["delivered"], home["rejected"],
                          home["deferred"]), first)
        self.assertEqual(home["delivered_total"], first[1])
        self.assertEqual(home["failures"], 0)
        self.assertEqual(home["errors"], [])
        self.assertEqual(home["last_success"], home["last_attempt"])
        self.assertLessEqual(abs(time.time() - home["last_attempt"]), 120)
        self.assertIn("alice/home  ok  last pass %s (just now): %d new, "
                      "%d delivered, %d rejected, %d deferred\n"
                      % ((utc(home["last_attempt"]),) + first), out)
        self.assertIn("alice/work  new  never synced\n", out)

        # the file: 0600, owned like the user's state directory
        st = os.stat(status_file("alice"))
        dst = os.stat(user_dir("alice"))
        self.assertEqual(st.st_mode & 0o7777, 0o600)
        self.assertEqual((st.st_uid, st.st_gid), (dst.st_uid, dst.st_gid))
        with open(status_file("alice")) as f:
            saved = json.load(f)
        self.assertEqual((saved["version"], saved["user"]), (1, "alice"))
        self.assertEqual(saved["accounts"]["home"]["state"], "ok")
        self.assertFalse(os.path.exists(status_file("alice") + ".tmp"))

        # a second pass adds up
        seed("INBOX", 3)
        _, out, err = sync("alice", "home", check=0)
        second = summary(out, "alice/home")
        self.assertEqual(second, (3, 3, 0, 0), err)
        doc, _ = self.status_json(["-u", "alice"])
        home = accounts_of(doc, "alice")["home"]
        self.assertEqual((home["new"], home["delivered"]), (3, 3))
        self.assertEqual(home["delivered_total"], first[1] + 3)
        self.__class__.total = home["delivered_total"]

    def test_3_deferred_then_ok(self):
        seed("INBOX", 2)
        sock = ENV["TRIB_TEST_LOCAL_LMTP_SOCKET"]
        os.rename(sock, sock + ".away")
        try:
            code, out1, err1 = sync("alice", "home")
            code2, out2, err2 = sync("alice", "home")
        finally:
            os.rename(sock + ".away", sock)
        self.assertEqual((code, code2), (75, 75), out1 + err1)
        self.assertEqual(summary(out1, "alice/home"), (2, 0, 0, 2))
        errors = error_lines(err2, "alice/home: ")
        self.assertTrue(errors, err2)

        _, out, err = self.status(["-u", "alice"], check=0)
        doc, _ = self.status_json(["-u", "alice"])
        home = accounts_of(doc, "alice")["home"]
        self.assertEqual(home["state"], "deferred")
        self.assertEqual(home["failures"], 2)
        self.assertEqual((home["new"], home["delivered"], home["deferred"]),
                         (2, 0, 2))
        self.assertEqual(home["delivered_total"], self.total)
        self.assertEqual(home["errors"], errors)
        self.assertLess(home["last_success"], home["last_attempt"] + 1)
        found, extra = lines_of(out)
        state, rest = found[("alice", "home")]
        self.assertEqual(state, "deferred")
        self.assertIn(": 2 new, 0 delivered, 0 rejected, 2 deferred; 2 "
                      "passes in a row not ok, last success %s"
                      % utc(home["last_success"]), rest)
        self.assertEqual(extra[("alice", "home")], errors)

        # back to ok: failures start again, the errors are gone
        _, out, err = sync("alice", "home", check=0)
        self.assertEqual(summary(out, "alice/home"), (2, 2, 0, 0), err)
        doc, _ = self.status_json(["-u", "alice"])
        home = accounts_of(doc, "alice")["home"]
        self.assertEqual(home["state"], "ok")
        self.assertEqual(home["failures"], 0)
        self.assertEqual(home["errors"], [])
        self.assertEqual(home["last_success"], home["last_attempt"])
        self.assertEqual(home["delivered_total"], self.total + 2)

    def test_4_reauthorization_record(self):
        """A record in incident.h's format overrides the status file."""
        record = os.path.join(user_dir("alice"), "reauth-work")
        since = 1764280000
        with open(record, "w") as f:
            f.write("fingerprint=%s\nsince=%d\nreason=the refresh token "
                    "was revoked or expired\n" % ("A" * 43, since))
        try:
            _, out, err = self.status(["-u", "alice"], check=0)
            doc, _ = self.status_json(["-u", "alice"])
        finally:
            os.unlink(record)
        self.assertIn("alice/work  reauthorization-required  since %s: the "
                      "refresh token was revoked or expired; run "
                      "`tributary authorize -u alice work`\n" % utc(since),
                      out)
        work = accounts_of(doc, "alice")["work"]
        self.assertEqual(work["state"], "reauthorization-required")
        self.assertEqual(work["since"], since)
        self.assertEqual(work["reason"],
                         "the refresh token was revoked or expired")
        self.assertEqual(work["fix"], "tributary authorize -u alice work")
        self.assertEqual(accounts_of(doc, "alice")["home"]["state"], "ok")
        # gone: as before
        _, out, _ = self.status(["-u", "alice"], check=0)
        self.assertIn("alice/work  new  never synced\n", out)

    def test_5_oauth_revoked_then_authorized_again(self):
        oauth.write_accounts(self.tmp)
        oauth.vault_put("mail", "refresh_token", oauth.new_refresh_token())
        _, out, err = sync("carol", "mail", check=0)
        self.printed.append(out + err)
        doc, _ = self.status_json(["-u", "carol"])
        accts = accounts_of(doc, "carol")
        self.assertEqual(sorted(accts), ["bearer", "down", "home", "mail"])
        self.assertEqual(accts["mail"]["state"], "ok")
        for name in ("bearer", "down", "home"):
            self.assertEqual(accts[name]["state"], "new")

        # revoked: the token endpoint says invalid_grant
        rt = oauth.new_refresh_token()
        oauth.vault_put("mail", "refresh_token", rt)
        oauth.vault_put("mail", "access_token", "unused")
        oauth.control("/control/revoke", {"token": rt})
        record = os.path.join(user_dir("carol"), "reauth-mail")
        # the later tests start without it, whatever happens here
        self.addCleanup(lambda: os.path.exists(record) and os.unlink(record))
        code, out, err = sync("carol", "mail")
        self.printed.append(out + err)
        self.assertEqual(code, 77, out + err)
        self.assertTrue(os.path.exists(record), err)
        _, out, err = self.status(["-u", "carol"], check=0)
        doc, _ = self.status_json(["-u", "carol"])
        mail = accounts_of(doc, "carol")["mail"]
        self.assertEqual(mail["state"], "reauthorization-required")
        self.assertTrue(mail["reason"])
        self.assertEqual(mail["fix"], "tributary authorize -u carol mail")
        self.assertIn("carol/mail  reauthorization-required  since %s: %s; "
                      "run `tributary authorize -u carol mail`\n"
                      % (utc(mail["since"]), mail["reason"]), out)
        with open(status_file("carol")) as f:
            saved = json.load(f)
        self.assertEqual(saved["accounts"]["mail"]["state"],
                         "reauthorization-required")
        self.assertEqual(saved["accounts"]["mail"]["failures"], 1)

        # `tributary authorize` stores a new token and removes the record
        oauth.vault_put("mail", "refresh_token", oauth.new_refresh_token())
        os.unlink(record)
        _, out, err = self.status(["-u", "carol"], check=0)
        self.assertIn("carol/mail  authorized  authorized again, waiting "
                      "for the next pass\n", out)
        doc, _ = self.status_json(["-u", "carol"])
        self.assertEqual(accounts_of(doc, "carol")["mail"]["state"],
                         "authorized")
        _, out, err = sync("carol", "mail", check=0)
        self.printed.append(out + err)
        doc, _ = self.status_json(["-u", "carol"])
        mail = accounts_of(doc, "carol")["mail"]
        self.assertEqual((mail["state"], mail["failures"]), ("ok", 0))

    def test_6_no_token_anywhere(self):
        with open(status_file("carol")) as f:
            text = f.read()
        self.assertIsNone(TOKEN_RE.search(text), text)
        self.assertTrue(self.printed)
        for printed in self.printed:
            self.assertIsNone(TOKEN_RE.search(printed), printed)

    def test_7_unconfigured_account_hidden_then_dropped(self):
        synctest.install_account("carol", "home", {}, self.tmp)
        _, out, err = self.status(["-u", "carol"], check=0)
        found, _ = lines_of(out)
        self.assertEqual(list(found), [("carol", "home")], out + err)
        # -A reads the file alone: mail is still in it
        _, out, err = self.status(["-A"], check=0)
        self.assertIn(("carol", "mail"), lines_of(out)[0])
        # the next pass drops what is no longer configured
        sync("carol", "home", check=0)
        _, out, err = self.status(["-A"], check=0)
        found, _ = lines_of(out)
        self.assertEqual(sorted(k for k in found if k[0] == "carol"),
                         [("carol", "home")], out)

    def test_8_all_users_without_the_userdb(self):
        made = [os.path.join(STATE_DIR, n) for n in (".hidden", "-bad",
                                                      "dave")]
        for d in made:
            os.mkdir(d, 0o700)
        plain = os.path.join(STATE_DIR, "plainfile")
        with open(plain, "w") as f:
            f.write("x\n")
        try:
            args = ["-A", "--userdb-socket", os.path.join(DIR, "nothing")]
            _, out, err = self.status(args, check=0)
            doc, _ = self.status_json(args)
            # -u needs the userdb
            code, _, err_u = self.status(["-u", "alice", "--userdb-socket",
                                          os.path.join(DIR, "nothing")])
        finally:
            for d in made:
                os.rmdir(d)
            os.unlink(plain)
        self.assertEqual(code, 75, err_u)
        self.assertEqual([u["user"] for u in doc["users"]],
                         ["alice", "carol", "dave"])
        self.assertIn("dave  (nothing recorded)\n", out)
        # the JSON says what the text says
        found, _ = lines_of(out)
        from_json = {(u["user"], a["account"]): a["state"]
                     for u in doc["users"] for a in u["accounts"]}
        self.assertEqual({k: v[0] for k, v in found.items()}, from_json)
        self.assertEqual(from_json[("alice", "home")], "ok")
        self.assertEqual(from_json[("carol", "home")], "ok")
        self.assertEqual(err, "")

    def test_9_damaged_status_file(self):
        path = status_file("alice")
        with open(path, "w") as f:
            f.write('{"version": 1, "user": "alice", "accounts": {')
        code, out, err = self.status(["-u", "alice"])
        self.assertEqual(code, 65, out + err)
        self.assertIn("tributary: status file %s: truncated JSON" % path, err)
        found, _ = lines_of(out)
        self.assertEqual(found[("alice", "home")][0], "unknown")
        doc, err = self.status_json(["-u", "alice"], check=65)
        self.assertEqual(accounts_of(doc, "alice")["home"]["state"],
                         "unknown")
        self.assertIn(path, doc["users"][0]["errors"][0])
        # -A: 65, the others still shown
        code, out, err = self.status(["-A"])
        self.assertEqual(code, 65, out + err)
        self.assertIn(("carol", "home"), lines_of(out)[0])

        # the next sync replaces it
        _, out, err = sync("alice", "home", check=0)
        self.assertIn("tributary: warning: status file %s: truncated JSON "
                      "(replaced by this pass)" % path, err)
        doc, _ = self.status_json(["-u", "alice"])
        home = accounts_of(doc, "alice")["home"]
        self.assertEqual(home["state"], "ok")
        self.assertEqual(home["delivered_total"],
                         summary(out, "alice/home")[1])
        _, _, err = sync("alice", "home", check=0)
        self.assertEqual(err, "")

    def test_9b_unreadable_state_dir(self):
        """Someone who may not read the state directory: 75."""
        env = dict(UTC)
        proc = subprocess.run(["setpriv", "--reuid=nobody",
                               "--regid=nogroup", "--clear-groups",
                               synctest.TRIBUTARY, "status"] + conf() +
                              ["-A"], capture_output=True, text=True,
                              env=env, timeout=60)
        if proc.returncode == 78:
            self.skipTest("nobody cannot read the test config: %s"
                          % proc.stderr)
        self.assertEqual(proc.returncode, 75, proc.stdout + proc.stderr)
        self.assertIn("state directory %s: cannot read: Permission denied"
                      % STATE_DIR, proc.stderr)


if __name__ == "__main__":
    synctest.main("test_status")
