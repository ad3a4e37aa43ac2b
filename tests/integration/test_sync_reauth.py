#!/usr/bin/env python3
"""Reauthorization incidents of `tributary sync` (fetcher/incident.h):
when the token endpoint refuses an account's refresh token for good, the
sync says "reauthorization required", records the incident in
<state>/carol/reauth-<account>, runs the admin's notify command once and
delivers one notice message to the user over LMTP (through the Tributary
LMTP plugin, which stores it once even after a crash).

The local user carol gets two oauth2 accounts reading the remote alice's
folder Reauth: `work` (its refresh tokens get revoked at the stand-in) and
`fine` (always good). Global settings (the notify command, the notice, a
dead LMTP socket) come from configs in the test's directory that include
the harness's local config and add a plugin {} block. The notify command
is a script appending its argv and environment to a file there.

The tests run in order and share the state. No token may show up in the
CLI's output, the notify file, the notices or carol's state files."""

import base64
import email
import email.policy
import hashlib
import os
import re
import ssl
import subprocess
import time
import unittest
import urllib.error
import urllib.request

import synccheck
import synctest
from synctest import DIR, ENV, REMOTE_USER, TRIBUTARY, harness, seed, summary
from test_sync_oauth import (OAUTH_URL, STATE_DIR, TOKEN_RE, control,
                             vault_list, vault_put)

USER = "carol"
# A public client of the stand-in that issues refresh tokens without
# offline_access in the scope (a userdb field value cannot hold a space,
# and `tributary authorize` asks for the account's scope)
CLIENT_ID = "tributary-reauth"
FOLDER = "Reauth"
TMP = os.path.join(DIR, "sync-reauth")
NOTIFY_LOG = os.path.join(TMP, "notify.log")
CAROL_MAILDIR = synccheck.local_maildir(USER)
RECORD = os.path.join(STATE_DIR, USER, "reauth-work")
SUBJECT = 'Mail from your "work" account has stopped: sign in again'
FIX = "tributary authorize -u carol work"
REAUTH = "carol/work: reauthorization required: run `%s`" % FIX
# "(tributary notice)" as the trace header spells it (percent-encoded)
NOTICE_FOLDER = "%28tributary%20notice%29"
NOTIFY_VARS = {"TRIBUTARY_EVENT", "TRIBUTARY_USER", "TRIBUTARY_ACCOUNT",
               "TRIBUTARY_PROVIDER", "TRIBUTARY_LOGIN", "TRIBUTARY_REASON",
               "TRIBUTARY_COMMAND", "TRIBUTARY_SINCE"}
# what /bin/sh may add to the clean environment on its own
SHELL_VARS = {"PATH", "PWD", "OLDPWD", "SHLVL", "_"}
NOTIFY_SCRIPT = """#!/bin/sh
{
  echo "--- run"
  echo "argv: $0 $*"
  env
} >> %s
"""


def new_refresh_token():
    return control("/control/grant", {
        "user": REMOTE_USER, "client_id": CLIENT_ID,
        "scope": "mail"})["refresh_token"]


def install_accounts():
    oauth = [("provider", "imap"), ("host", "127.0.0.1"),
             ("port", ENV["TRIB_TEST_IMAPS_PORT"]), ("tls", "implicit"),
             ("ca_file", ENV["TRIB_TEST_CA"]), ("login", REMOTE_USER),
             ("auth", "oauth2"), ("client_id", CLIENT_ID),
             ("oauth_authorize_url", OAUTH_URL + "/authorize"),
             ("oauth_scope", "mail"),
             ("oauth_token_url", OAUTH_URL + "/token"),
             ("folders", FOLDER)]
    with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
        lines = [x for x in f.read().splitlines()
                 if not x.startswith(USER + ":")]
    items = [("accounts", "work,fine")]
    for name in ("work", "fine"):
        items += [("%s_%s" % (name, k), v.replace("%", "%%"))
                  for k, v in oauth]
    lines.append("%s:::::::%s" % (USER, " ".join(
        "userdb_tributary_%s=%s" % kv for kv in items)))
    path = os.path.join(TMP, "accounts")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    harness("accounts", DIR, path)


def write_conf(name, **settings):
    """A config: the harness's local one plus these plugin settings."""
    path = os.path.join(TMP, name + ".conf")
    with open(path, "w") as f:
        f.write("!include %s\nplugin {\n%s}\n" % (
            ENV["TRIB_TEST_LOCAL_CONF"],
            "".join("  tributary_%s = %s\n" % kv
                    for kv in sorted(settings.items()))))
    return path


def notify_runs():
    """[(argv line, {name: value})] of every run of the notify command."""
    if not os.path.exists(NOTIFY_LOG):
        return []
    with open(NOTIFY_LOG) as f:
        text = f.read()
    runs = []
    for chunk in text.split("--- run\n")[1:]:
        lines = chunk.splitlines()
        env = dict(x.split("=", 1) for x in lines[1:] if "=" in x)
        runs.append((lines[0], env))
    return runs


def notices():
    """[Delivered] of the notices in carol's INBOX (new and cur)."""
    out = []
    for folder, path in synccheck.local_files(USER):
        with open(path, "rb") as f:
            data = f.read()
        d = synccheck.Delivered(folder, path, data)
        if d.msgid is not None and d.msgid.startswith("<tributary.reauth."):
            out.append(d)
    return out


def read_record():
    """The incident record as a dict (None when there is none)."""
    if not os.path.exists(RECORD):
        return None
    with open(RECORD) as f:
        return dict(line.split("=", 1) for line in f.read().splitlines())


def fingerprint(token):
    return base64.urlsafe_b64encode(hashlib.sha256(
        token.encode()).digest()).rstrip(b"=").decode()


def refresh_requests():
    return control("/control/stats")["grants"].get("refresh_token", 0)


class SyncReauth(unittest.TestCase):

    maxDiff = None
    # everything the CLI printed, checked for tokens at the end
    outputs = []

    @classmethod
    def setUpClass(cls):
        synctest.run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]], check=0)
        os.makedirs(TMP, exist_ok=True)
        control("/control/client", {
            "client_id": CLIENT_ID, "client_secret": None,
            "offline_access_required": False})
        install_accounts()
        script = os.path.join(TMP, "notify.sh")
        with open(script, "w") as f:
            f.write(NOTIFY_SCRIPT % NOTIFY_LOG)
        os.chmod(script, 0o755)
        notify = "%s from-tributary" % script
        cls.conf = write_conf("notify", notify_command=notify)
        cls.conf_no_notice = write_conf("no-notice", notify_command=notify,
                                        reauth_notice="no")
        cls.conf_no_lmtp = write_conf(
            "no-lmtp", notify_command=notify,
            lmtp="unix:" + os.path.join(TMP, "no-lmtp"))
        cls.work_token = new_refresh_token()
        vault_put("work", "refresh_token", cls.work_token)
        vault_put("fine", "refresh_token", new_refresh_token())
        cls.keys = synccheck.trace_keys()

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")

    def sync(self, conf=None, account=None, crash_at=None, check=None):
        env = dict(ENV)
        env.pop("TRIBUTARY_CRASH_AT", None)
        if crash_at is not None:
            env["TRIBUTARY_CRASH_AT"] = crash_at
        args = ["sync", "-c", conf or self.conf, "-u", USER] + (
            [account] if account else [])
        code, out, err = synctest.run(args, env=env, check=check)
        self.outputs.append(out + err)
        self.assertIsNone(TOKEN_RE.search(out + err), out + err)
        return code, out, err

    def wait_next_second(self):
        """A new incident must not start in the second of the last one
        (the notice's id is made of the account and that second)."""
        rec = read_record()
        since = int(rec["since"]) if rec else int(time.time())
        while int(time.time()) <= since:
            time.sleep(0.05)

    def revoke_work(self):
        """A new refresh token for work, already revoked: the next pass
        removes the old record (another token) and starts an
        incident."""
        self.wait_next_second()
        self.__class__.work_token = new_refresh_token()
        vault_put("work", "refresh_token", self.work_token)
        control("/control/revoke", {"token": self.work_token})

    def assert_incident(self, code, out, err):
        self.assertEqual(code, 77, out + err)
        self.assertEqual([x for x in err.splitlines() if REAUTH in x],
                         [x for x in err.splitlines()
                          if "reauthorization required" in x], err)
        self.assertEqual(len([x for x in err.splitlines() if REAUTH in x]),
                         1, err)

    def assert_record(self, notified, noticed):
        rec = read_record()
        self.assertIsNotNone(rec)
        self.assertEqual(rec["fingerprint"], fingerprint(self.work_token))
        self.assertGreater(int(rec["since"]), 0)
        self.assertTrue(rec["reason"])
        self.assertEqual(int(rec["notified"]) > 0, notified, rec)
        self.assertEqual(int(rec["noticed"]) > 0, noticed, rec)
        st = os.stat(RECORD)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        owner = os.stat(os.path.dirname(RECORD))
        self.assertEqual((st.st_uid, st.st_gid),
                         (owner.st_uid, owner.st_gid))
        return rec

    def check_notice(self, d, rec):
        """One notice: headers, body, trace header of this incident."""
        since = int(rec["since"])
        self.assertEqual(d.folder, "INBOX")
        self.assertEqual(synccheck.trace_problems(
            d, self.keys, USER, "work", NOTICE_FOLDER, since & 0xffffffff,
            1), [])
        msg = email.message_from_bytes(d.rest, policy=email.policy.default)
        self.assertEqual(msg["Subject"], SUBJECT)
        self.assertRegex(msg["From"], r'^"?Tributary"? <tributary@[^>]+>$')
        self.assertIn(USER, msg["To"])
        self.assertIsNotNone(msg["Date"])
        self.assertRegex(msg["Message-ID"],
                         r"^<tributary\.reauth\.work\.%d@[^>]+>$" % since)
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")
        self.assertEqual(msg.get_content_type(), "text/plain")
        self.assertEqual(msg.get_content_charset(), "utf-8")
        body = msg.get_content()
        self.assertIn("\n    %s\n" % FIX, body)
        self.assertLessEqual(max(len(x) for x in body.splitlines()), 76)
        # the reason, wrapped
        self.assertIn(rec["reason"], " ".join(body.split()))
        self.assertIn(REMOTE_USER, body)
        self.assertIn('"work"', body)
        self.assertIn("Nothing is lost", body)
        self.assertIn("once", body)
        self.assertIsNone(TOKEN_RE.search(d.rest.decode("utf-8", "replace")))

    def check_run(self, argv, env, rec):
        """One run of the notify command: its argv and environment."""
        self.assertEqual(argv, "argv: %s from-tributary" %
                         os.path.join(TMP, "notify.sh"))
        self.assertEqual({k for k in env if k.startswith("TRIBUTARY_")},
                         NOTIFY_VARS, env)
        self.assertLessEqual(set(env) - NOTIFY_VARS, SHELL_VARS, env)
        self.assertEqual(env["TRIBUTARY_EVENT"], "reauthorization-required")
        self.assertEqual(env["TRIBUTARY_USER"], USER)
        self.assertEqual(env["TRIBUTARY_ACCOUNT"], "work")
        self.assertEqual(env["TRIBUTARY_PROVIDER"], "imap")
        self.assertEqual(env["TRIBUTARY_LOGIN"], REMOTE_USER)
        self.assertEqual(env["TRIBUTARY_COMMAND"], FIX)
        self.assertEqual(env["TRIBUTARY_SINCE"], rec["since"])
        self.assertEqual(env["TRIBUTARY_REASON"], rec["reason"])
        self.assertIsNone(TOKEN_RE.search(argv + repr(env)))

    def test_1_revocation(self):
        seed(FOLDER, 2)
        control("/control/revoke", {"token": self.work_token})
        control("/control/reset", {})
        code, out, err = self.sync()
        self.assert_incident(code, out, err)
        self.assertNotIn("follow-up", err)
        # the other account of the user synced
        self.assertEqual(summary(out, "carol/fine"), (2, 2, 0, 0), err)
        rec = self.assert_record(notified=True, noticed=True)
        runs = notify_runs()
        self.assertEqual(len(runs), 1, runs)
        self.check_run(runs[0][0], runs[0][1], rec)
        got = notices()
        self.assertEqual(len(got), 1)
        self.check_notice(got[0], rec)

    def test_2_later_syncs_are_quiet(self):
        rec = read_record()
        for _ in range(2):
            control("/control/reset", {})
            code, out, err = self.sync()
            self.assert_incident(code, out, err)
            self.assertNotIn("follow-up", err)
            # the refused token is not offered to the endpoint again
            # (fine's cached access token needs no refresh either)
            self.assertEqual(refresh_requests(), 0)
        self.assertEqual(len(notify_runs()), 1)
        self.assertEqual(len(notices()), 1)
        self.assertEqual(read_record(), rec)

    def test_3_crash_after_the_notice(self):
        if not synctest.crash_points():
            self.skipTest("no crash points in this build")
        runs, count = len(notify_runs()), len(notices())
        self.revoke_work()
        code, out, err = self.sync(account="work",
                                   crash_at="incident-after-notice")
        self.assertEqual(code, -9, out + err)
        # the notice is stored, the record does not know it yet
        self.assert_record(notified=True, noticed=False)
        self.assertEqual(len(notify_runs()), runs + 1)
        self.assertEqual(len(notices()), count + 1)
        code, out, err = self.sync(account="work")
        self.assert_incident(code, out, err)
        self.assertNotIn("follow-up", err)
        rec = self.assert_record(notified=True, noticed=True)
        # sent again, stored once (the plugin knows its trace id)
        got = notices()
        self.assertEqual(len(got), count + 1)
        self.check_notice(
            [d for d in got if d.msgid.find(".%s@" % rec["since"]) > 0][0],
            rec)
        self.assertEqual(len(notify_runs()), runs + 1)

    def test_4_lmtp_down_for_the_notice(self):
        runs, count = len(notify_runs()), len(notices())
        self.revoke_work()
        code, out, err = self.sync(self.conf_no_lmtp, "work")
        self.assert_incident(code, out, err)
        self.assertIn("carol/work: reauthorization follow-up: notice not "
                      "delivered", err)
        self.assert_record(notified=True, noticed=False)
        self.assertEqual(len(notices()), count)
        self.assertEqual(len(notify_runs()), runs + 1)
        # LMTP is back: the notice goes out, once; the command does not
        # run again
        code, out, err = self.sync(account="work")
        self.assert_incident(code, out, err)
        self.assertNotIn("follow-up", err)
        rec = self.assert_record(notified=True, noticed=True)
        self.assertEqual(len(notices()), count + 1)
        code, out, err = self.sync(account="work")
        self.assert_incident(code, out, err)
        self.assertEqual(len(notices()), count + 1)
        self.assertEqual(len(notify_runs()), runs + 1)
        self.check_run(*notify_runs()[-1], rec)

    def test_5_no_notice(self):
        runs, count = len(notify_runs()), len(notices())
        self.revoke_work()
        code, out, err = self.sync(self.conf_no_notice, "work")
        self.assert_incident(code, out, err)
        self.assertNotIn("follow-up", err)
        rec = self.assert_record(notified=True, noticed=False)
        self.assertEqual(len(notices()), count)
        self.assertEqual(len(notify_runs()), runs + 1)
        self.check_run(*notify_runs()[-1], rec)

    def authorize_paste(self):
        """`tributary authorize --flow paste` for work: the stand-in's
        redirect (signed in as the remote alice) is pasted on stdin."""
        control("/control/authorize", {"user": REMOTE_USER, "deny": False})
        proc = subprocess.Popen(
            [TRIBUTARY, "authorize", "-c", self.conf, "-u", USER, "work",
             "--flow", "paste"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        url = None
        while url is None:
            line = proc.stdout.readline()
            if line == "":
                proc.kill()
                proc.communicate()
                self.fail("no authorization URL in %r" % lines)
            lines.append(line)
            m = re.match(r"^(https://\S+)", line)
            url = m.group(1) if m else None
        ctx = ssl.create_default_context(cafile=ENV["TRIB_TEST_CA"])

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx), NoRedirect)
        try:
            opener.open(url, timeout=30)
            location = None
        except urllib.error.HTTPError as e:
            location = e.headers["Location"] if e.code == 302 else None
        if location is None:
            proc.kill()
            proc.communicate()
            self.fail("the stand-in did not redirect")
        out, err = proc.communicate(location + "\n", timeout=120)
        control("/control/authorize", {"user": None, "deny": False})
        self.outputs.append("".join(lines) + out + err)
        self.assertIsNone(TOKEN_RE.search("".join(lines) + out + err))
        return proc.returncode, "".join(lines) + out, err

    def test_6_authorize_ends_it_a_later_refusal_is_new(self):
        runs, count = len(notify_runs()), len(notices())
        self.assertIsNotNone(read_record())
        code, out, err = self.authorize_paste()
        self.assertEqual(code, 0, out + err)
        self.assertIsNone(read_record())
        self.assertIn("refresh_token", vault_list("work"), out + err)
        stored = vault_list("work")["refresh_token"][1]
        # the account syncs again
        seed(FOLDER, 1)
        control("/control/reset", {})
        code, out, err = self.sync()
        self.assertEqual(code, 0, out + err)
        new, delivered, _, _ = summary(out, "carol/work")
        self.assertEqual(new, delivered, out + err)
        self.assertEqual(new, 3)  # what waited, and the new one
        self.assertIsNone(read_record())
        # later the provider refuses the stored token: the cached access
        # token dies on the server and the refresh gets invalid_grant
        for tok in control("/control/stats")["by_token"]:
            if tok:
                control("/control/expire", {"token": tok})
        self.wait_next_second()
        control("/control/fault", {
            "kind": "status", "status": 400, "count": 1, "path": "/token",
            "body": '{"error": "invalid_grant", "error_description": '
                    '"revoked by the test"}'})
        try:
            code, out, err = self.sync(account="work")
        finally:
            control("/control/fault", {"kind": "clear"})
        self.assert_incident(code, out, err)
        self.assertEqual(vault_list("work")["refresh_token"][1], stored)
        rec = read_record()
        self.assertIsNotNone(rec)
        self.assertEqual(len(notify_runs()), runs + 1)
        self.check_run(*notify_runs()[-1], rec)
        got = notices()
        self.assertEqual(len(got), count + 1)
        self.check_notice([d for d in got if ".%s@" % rec["since"]
                           in d.msgid][0], rec)
        self.assertIn("revoked by the test", rec["reason"])
        # and it is remembered: no token request for it
        control("/control/reset", {})
        code, out, err = self.sync(account="work")
        self.assert_incident(code, out, err)
        self.assertEqual(refresh_requests(), 0)
        self.assertEqual(len(notify_runs()), runs + 1)
        self.assertEqual(len(notices()), count + 1)

    def test_7_no_secret_anywhere(self):
        texts = list(self.outputs)
        if os.path.exists(NOTIFY_LOG):
            with open(NOTIFY_LOG) as f:
                texts.append(f.read())
        texts += [d.rest.decode("utf-8", "replace") for d in notices()]
        user_dir = os.path.join(STATE_DIR, USER)
        for name in os.listdir(user_dir):
            path = os.path.join(user_dir, name)
            if name != "vault" and os.path.isfile(path):
                with open(path, "rb") as f:
                    texts.append(f.read().decode("utf-8", "replace"))
        self.assertGreater(len(self.outputs), 5)
        for text in texts:
            self.assertIsNone(TOKEN_RE.search(text))
        # the tokens the tests handed out, too
        self.assertNotIn(self.work_token, "".join(texts))


if __name__ == "__main__":
    synctest.main("test_sync_reauth")
