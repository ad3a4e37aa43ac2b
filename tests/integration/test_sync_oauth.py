#!/usr/bin/env python3
"""`tributary sync` of auth = oauth2 accounts, against the harness's remote
Dovecot (whose oauth2 passdb asks the OAuth stand-in about each token) and
the stand-in's token endpoint.

The local user carol gets four accounts reading the remote alice: `mail`
(oauth2, XOAUTH2, the stand-in's public client), `home` (password_file),
`down` (oauth2, a token endpoint nobody listens on) and `bearer` (oauth2,
OAUTHBEARER). Refresh tokens
come from the stand-in's /control/grant and are put into carol's vault
with vault-tool (as `tributary authorize` would). The tests run in order
and share the state: first pass (refresh), cached token, token expired on
the server (one refresh, one reconnect), rotation, endpoint errors,
revocation (reauthorization required, remembered).

The classes after SyncOAuth (they run after it: unittest orders classes
by name) add three accounts: `app` (auth app_password: the vault's app
password, refused, missing), `cut` (oauth2 through tls_proxy.py, which
ends sessions the way Exchange does when the token expires: refreshed and
reconnected without a word, capped; a plain cut defers; a token inside
the 5-minute margin) and `rot` (a rotated refresh token survives a crash
right after its vault commit). SyncOAuthSecretsHidden reads every
process's argv and environment during a pass.

No token may ever show up on stdout or stderr (-v included)."""

import hashlib
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

import synctest
from synctest import ENV, DIR, harness, seed, summary

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "harness"))
import tls_proxy  # noqa: E402

STATE_DIR = ENV.get("TRIB_TEST_LOCAL_STATE_DIR", "")
VAULT_KEY = os.path.join(DIR, "local", "keys", "vault.key")
VAULT_TOOL = os.path.join(synctest.BUILDDIR, "tests", "integration",
                          "vault-tool")
OAUTH_URL = ENV.get("TRIB_TEST_OAUTH_URL", "")
CLIENT_ID = "tributary-public"
CAROL_MAILDIR = os.path.join(DIR, "local", "home", "carol", "Maildir")
TOKEN_RE = re.compile(r"\b(tok|rt)-[A-Za-z0-9_-]{16,}")
REAUTH = ("carol/mail: reauthorization required: run `tributary authorize "
          "-u carol mail`")
APP_BOX, LONG_BOX, ROT_BOX = "AppBox", "Long", "RotBox"
LONG_COUNT = 300
EXPIRED_BYE = b"Session invalidated - AccessTokenExpired"
PROXY = None


def setUpModule():
    global PROXY
    pem = os.path.join(DIR, "certs", "valid.pem")
    key = os.path.join(DIR, "certs", "valid.key")
    PROXY = tls_proxy.TlsProxy(pem, key, ENV["TRIB_TEST_CA"], "127.0.0.1",
                               int(ENV["TRIB_TEST_IMAPS_PORT"]))
    unittest.addModuleCleanup(PROXY.stop)
    PROXY.start()


def control(path, body=None):
    """A stand-in call: JSON in, JSON out."""
    ctx = ssl.create_default_context(cafile=ENV["TRIB_TEST_CA"])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(OAUTH_URL + path, data=data,
                                 method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as f:
        return json.loads(f.read())


def token_grant(refresh_token):
    """POST /token refresh_token grant; (HTTP status, JSON)."""
    ctx = ssl.create_default_context(cafile=ENV["TRIB_TEST_CA"])
    data = urllib.parse.urlencode({
        "grant_type": "refresh_token", "refresh_token": refresh_token,
        "client_id": CLIENT_ID}).encode()
    try:
        with urllib.request.urlopen(OAUTH_URL + "/token", data=data,
                                    context=ctx, timeout=30) as f:
            return f.status, json.loads(f.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def new_refresh_token():
    return control("/control/grant", {
        "user": synctest.REMOTE_USER, "client_id": CLIENT_ID,
        "scope": "mail offline_access"})["refresh_token"]


def vault_put(account, kind, secret):
    subprocess.run([VAULT_TOOL, "put", STATE_DIR, "carol", VAULT_KEY,
                    account, kind], input=secret + "\n", text=True,
                   check=True, capture_output=True, timeout=60)


def vault_list(account):
    """kind -> (expires_at, sha256 hex) of carol's vault."""
    out = subprocess.run([VAULT_TOOL, "list", STATE_DIR, "carol", VAULT_KEY,
                          account], text=True, check=True,
                         capture_output=True, timeout=60).stdout
    return {f[0]: (int(f[1]), f[2]) for f in
            (line.split() for line in out.splitlines())}


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def write_accounts(tmpdir, extra=False):
    """carol's accounts; extra: also the ones of the later classes (not
    in SyncOAuth's, whose counts cover every account of carol)."""
    base = [("provider", "imap"), ("host", "127.0.0.1"),
            ("port", ENV["TRIB_TEST_IMAPS_PORT"]), ("tls", "implicit"),
            ("ca_file", ENV["TRIB_TEST_CA"]),
            ("login", synctest.REMOTE_USER)]
    oauth = [("auth", "oauth2"), ("client_id", CLIENT_ID),
             ("oauth_authorize_url", OAUTH_URL + "/authorize"),
             ("oauth_scope", "mail offline_access"),
             ("oauth_token_url", OAUTH_URL + "/token")]
    accounts = {
        "mail": base + oauth + [("sasl", "XOAUTH2,OAUTHBEARER")],
        "home": base + [("auth", "password_file"),
                        ("password_file", synctest.PASSWORD_FILE)],
        "down": base + oauth[:-1] + [("oauth_token_url",
                                      "https://127.0.0.1:1/token")],
        "bearer": base + oauth + [("sasl", "OAUTHBEARER")],
    }
    if extra:
        # app: an app password from the vault (SASL PLAIN by default);
        # cut: through the fault-injecting proxy; rot: the rotation crash
        via_proxy = [(k, PROXY.port if k == "port" else v)
                     for k, v in base]
        accounts.update({
            "app": base + [("auth", "app_password"), ("folders", APP_BOX)],
            "cut": via_proxy + oauth + [("sasl", "XOAUTH2"),
                                        ("folders", LONG_BOX)],
            "rot": base + oauth + [("folders", ROT_BOX)],
        })
    with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
        lines = [x for x in f.read().splitlines()
                 if not x.startswith("carol:")]
    items = [("accounts", ",".join(accounts))]
    for name, fields in accounts.items():
        items += [("%s_%s" % (name, k), str(v).replace("%", "%%"))
                  for k, v in fields]
    lines.append("carol:::::::%s" % " ".join(
        "userdb_tributary_%s=%s" % kv for kv in items))
    path = os.path.join(tmpdir, "accounts")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    harness("accounts", DIR, path)


def local_count():
    return sum(1 for _ in synctest.maildir_messages(CAROL_MAILDIR))


class SyncOAuth(unittest.TestCase):

    maxDiff = None
    access_tokens = set()

    @classmethod
    def setUpClass(cls):
        synctest.run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]], check=0)
        tmpdir = os.path.join(DIR, "sync-oauth")
        os.makedirs(tmpdir, exist_ok=True)
        write_accounts(tmpdir)
        cls.first_refresh = new_refresh_token()
        vault_put("mail", "refresh_token", cls.first_refresh)
        vault_put("down", "refresh_token", new_refresh_token())
        vault_put("bearer", "refresh_token", new_refresh_token())

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")

    def sync(self, account=None, check=None):
        """One verbose pass; checks that no token is in its output."""
        args = ["sync", "-v", "-c", ENV["TRIB_TEST_LOCAL_CONF"], "-u",
                "carol"] + ([account] if account else [])
        code, out, err = synctest.run(args, check=check)
        self.assertIsNone(TOKEN_RE.search(out + err), out + err)
        return code, out, err

    def stats(self):
        s = control("/control/stats")
        self.access_tokens.update(k for k in s["by_token"] if k)
        return s

    def test_1_first_sync_refreshes(self):
        seed("INBOX", 2)
        remote = len(synctest.remote_ids("INBOX"))
        control("/control/reset", {})
        _, out, err = self.sync("mail", check=0)
        self.assertEqual(summary(out, "carol/mail"),
                         (remote, remote, 0, 0), err)
        self.assertEqual(local_count(), remote)
        s = self.stats()
        self.assertEqual(s["grants"].get("refresh_token"), 1, s)
        self.assertGreaterEqual(s["by_result"]["active"], 1, s)
        self.assertIn("carol/mail: AUTHENTICATE XOAUTH2", err)
        recs = vault_list("mail")
        self.assertIn("access_token", recs)
        self.assertGreater(recs["access_token"][0], 0)

    def test_2_rotation_stored_old_refused(self):
        recs = vault_list("mail")
        self.assertNotEqual(recs["refresh_token"][1],
                            sha256(self.first_refresh))
        status, answer = token_grant(self.first_refresh)
        self.assertEqual(status, 400)
        self.assertEqual(answer["error"], "invalid_grant")

    def test_3_second_sync_uses_the_cached_token(self):
        seed("INBOX", 1)
        control("/control/reset", {})
        _, out, err = self.sync("mail", check=0)
        self.assertEqual(summary(out, "carol/mail"), (1, 1, 0, 0), err)
        s = self.stats()
        self.assertNotIn("refresh_token", s["grants"], s)
        self.assertEqual(len([k for k in s["by_token"] if k]), 1, s)
        self.__class__.cached = [k for k in s["by_token"] if k][0]

    def test_4_expired_on_the_server_refreshed_once(self):
        control("/control/expire", {"token": self.cached})
        seed("INBOX", 1)
        control("/control/reset", {})
        code, out, err = self.sync("mail")
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/mail"), (1, 1, 0, 0), err)
        self.assertNotIn("error", err)
        s = self.stats()
        self.assertEqual(s["grants"].get("refresh_token"), 1, s)
        self.assertGreaterEqual(s["by_result"]["inactive"], 1, s)
        self.assertGreaterEqual(s["by_result"]["active"], 1, s)

    def expire_cached(self):
        """Make the next pass of mail refresh (the cached token is dead
        on the server)."""
        control("/control/reset", {})
        self.sync("mail", check=0)
        for tok in self.stats()["by_token"]:
            if tok:
                control("/control/expire", {"token": tok})

    def test_5_token_endpoint_500_defers(self):
        self.expire_cached()
        control("/control/fault", {"kind": "status", "status": 500,
                                   "count": 3, "path": "/token"})
        code, out, err = self.sync("mail")
        control("/control/fault", {"kind": "clear"})
        self.assertEqual(code, 75, out + err)
        self.assertIn("carol/mail: cannot refresh the access token, "
                      "deferred", err)

    def test_6_token_endpoint_429_defers(self):
        control("/control/fault", {"kind": "status", "status": 429,
                                   "count": 3, "path": "/token"})
        code, out, err = self.sync("mail")
        control("/control/fault", {"kind": "clear"})
        self.assertEqual(code, 75, out + err)
        self.assertIn("deferred", err)

    def test_6b_retry_after_honoured_between_runs(self):
        self.expire_cached()
        control("/control/fault", {"kind": "status", "status": 429,
                                   "count": 1, "path": "/token",
                                   "retry_after": "3"})
        self.addCleanup(control, "/control/fault", {"kind": "clear"})
        code, out, err = self.sync("mail")
        self.assertEqual(code, 75, out + err)
        status_path = os.path.join(STATE_DIR, "carol", "status")
        with open(status_path) as f:
            not_before = json.load(f)["accounts"]["mail"]["token_not_before"]
        self.assertGreater(not_before, time.time())
        self.assertLessEqual(not_before, time.time() + 3)
        # a run before that time does not ask the endpoint at all
        control("/control/reset", {})
        code, out, err = self.sync("mail")
        self.assertEqual(code, 75, out + err)
        self.assertIn("carol/mail: the token endpoint asked not to be asked "
                      "again before", err)
        self.assertEqual(refreshes(), 0)
        # and once it has passed, it does
        time.sleep(max(0, not_before - time.time()) + 1.1)
        code, out, err = self.sync("mail")
        self.assertEqual(code, 0, out + err)
        self.assertEqual(refreshes(), 1)
        with open(status_path) as f:
            self.assertNotIn("token_not_before",
                             json.load(f)["accounts"]["mail"])

    def test_7_token_endpoint_down_defers(self):
        code, out, err = self.sync("down")
        self.assertEqual(code, 75, out + err)
        self.assertIn("carol/down: cannot refresh the access token, "
                      "deferred", err)

    def test_8_revoked_needs_reauthorization(self):
        rt = new_refresh_token()
        vault_put("mail", "refresh_token", rt)
        # a cached access token without an expiry is never used
        vault_put("mail", "access_token", "unused")
        control("/control/revoke", {"token": rt})
        seed("INBOX", 1)
        control("/control/reset", {})
        code, out, err = self.sync()
        self.assertEqual(code, 77, out + err)
        self.assertIn(REAUTH, err)
        lines = [x for x in err.splitlines() if REAUTH in x]
        self.assertEqual(len(lines), 1, err)
        # the password account of the same user still synced
        self.assertEqual(summary(out, "carol/home")[0],
                         summary(out, "carol/home")[1], out + err)
        self.assertGreater(summary(out, "carol/home")[0], 0, out + err)
        # refreshes asked: mail's and bearer's (down's endpoint is not
        # the stand-in)
        self.assertEqual(self.stats()["grants"].get("refresh_token"), 2)
        # the next pass does not ask the token endpoint again
        control("/control/reset", {})
        code, out, err = self.sync("mail")
        self.assertEqual(code, 77, out + err)
        self.assertIn(REAUTH, err)
        self.assertNotIn("refresh_token", self.stats()["grants"])

    def test_9_new_refresh_token_clears_the_marker(self):
        vault_put("mail", "refresh_token", new_refresh_token())
        control("/control/reset", {})
        code, out, err = self.sync("mail")
        self.assertEqual(code, 0, out + err)
        self.assertEqual(self.stats()["grants"].get("refresh_token"), 1)
        # no token anywhere in what the tests saw the CLI print
        self.assertTrue(self.access_tokens)

    def test_9b_oauthbearer(self):
        seed("INBOX", 1)
        code, out, err = self.sync("bearer")
        self.assertEqual(code, 0, out + err)
        self.assertIn("carol/bearer: AUTHENTICATE OAUTHBEARER", err)
        new, delivered, _, _ = summary(out, "carol/bearer")
        self.assertEqual(new, delivered)
        self.assertGreater(new, 0)


# ---- the classes below run after SyncOAuth (unittest orders classes by
# name) and give carol three more accounts: app, cut, rot ----


def app_password():
    """The remote alice's password (the harness's passdb takes it), as
    an app password."""
    with open(synctest.PASSWORD_FILE) as f:
        return f.readline().strip()


def carol_sync(account=None, verbose=False, env=None, conf=None):
    args = ["sync"] + (["-v"] if verbose else []) + [
        "-c", conf or ENV["TRIB_TEST_LOCAL_CONF"], "-u", "carol"] + (
        [account] if account else [])
    return synctest.run(args, env=env)


def conf_with(name, **settings):
    """The harness's local config plus these plugin {} settings."""
    path = os.path.join(DIR, "sync-oauth", name + ".conf")
    with open(path, "w") as f:
        f.write("!include %s\nplugin {\n%s}\n" % (
            ENV["TRIB_TEST_LOCAL_CONF"],
            "".join("  tributary_%s = %s\n" % kv
                    for kv in sorted(settings.items()))))
    return path


def refreshes():
    return control("/control/stats")["grants"].get("refresh_token", 0)


class ExtraAccounts(unittest.TestCase):
    """carol with every account, SyncOAuth's and app, cut, rot."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        synctest.run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]])
        tmpdir = os.path.join(DIR, "sync-oauth")
        os.makedirs(tmpdir, exist_ok=True)
        write_accounts(tmpdir, extra=True)
        cls.addClassCleanup(harness, "accounts", DIR, "--fixture")

    def assert_once_each(self, folder):
        """Every message of the remote folder is in carol's maildir, and
        exactly once."""
        remote = [r[0].strip() for r in synctest.remote_ids(folder)]
        local = synctest.local_ids(CAROL_MAILDIR)
        self.assertTrue(remote)
        wrong = {m: local.get(m, 0) for m in remote if local.get(m) != 1}
        self.assertEqual(wrong, {}, "%d of %d not exactly once"
                         % (len(wrong), len(remote)))

    def assert_no_secret(self, text, *secrets_):
        self.assertIsNone(TOKEN_RE.search(text), text)
        for x in secrets_:
            self.assertNotIn(x, text)


class SyncOAuthAppPassword(ExtraAccounts):
    """auth = app_password: the password `tributary authorize` stored in
    carol's vault, SASL PLAIN (the preset's default)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        seed(APP_BOX, 3)

    def test_1_none_stored(self):
        code, out, err = carol_sync("app", verbose=True)
        self.assert_no_secret(out + err, app_password())
        self.assertEqual(code, 77, out + err)
        self.assertIn("tributary: carol/app: no app password stored: run "
                      "`tributary authorize -u carol app`\n", err)
        self.assertNotIn("AUTHENTICATE", err)

    def test_2_wrong_one_refused(self):
        wrong = "wrong-" + secrets.token_hex(12)
        vault_put("app", "app_password", wrong)
        code, out, err = carol_sync("app", verbose=True)
        self.assert_no_secret(out + err, wrong, app_password())
        self.assertEqual(code, 77, out + err)
        lines = [x for x in err.splitlines() if "refused" in x]
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith(
            "tributary: carol/app: the server refused the app password: it "
            "may have been revoked; run `tributary authorize -u carol app` "
            "to store a new one ("), err)

    def test_3_delivered(self):
        password = app_password()
        vault_put("app", "app_password", password)
        code, out, err = carol_sync("app", verbose=True)
        self.assert_no_secret(out + err, password)
        self.assertEqual(code, 0, out + err)
        self.assertIn("carol/app: AUTHENTICATE PLAIN", err)
        self.assertEqual(summary(out, "carol/app"), (3, 3, 0, 0), err)
        self.assert_once_each(APP_BOX)


class SyncOAuthExpiry(ExtraAccounts):
    """The access token expires during a long pass. Exchange then ends
    the session with `* BYE Session invalidated - AccessTokenExpired`; a
    real Dovecot never does, so the account `cut` goes through
    tls_proxy.py, which ends chosen sessions that way in the middle of a
    window of bodies. Every test starts with LONG_COUNT new messages in
    Long and a pass that must refresh at its first login."""

    def setUp(self):
        PROXY.clear_fault()
        self.addCleanup(PROXY.clear_fault)
        vault_put("cut", "refresh_token", new_refresh_token())
        # what an earlier failure left: delivered now, not counted below
        carol_sync("cut")
        vault_put("cut", "access_token", "unused")   # no expiry: not used
        seed(LONG_BOX, LONG_COUNT)
        control("/control/reset", {})
        PROXY.reset_counters()

    def sync_cut(self, verbose=False):
        code, out, err = carol_sync("cut", verbose)
        self.assert_no_secret(out + err)
        return code, out, err

    def test_1_cut_once_refreshed_without_a_word(self):
        PROXY.set_fault(fetch=2, after=10, bye=EXPIRED_BYE, cuts=1)
        code, out, err = self.sync_cut()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(err, "")
        self.assertEqual(summary(out, "carol/cut"),
                         (LONG_COUNT, LONG_COUNT, 0, 0))
        counters = PROXY.counters()
        self.assertEqual((counters["sessions"], counters["cuts"]), (2, 1))
        # the first login's refresh and one more for the reconnect
        self.assertEqual(refreshes(), 2)
        self.assert_once_each(LONG_BOX)

    def test_2_cut_twice(self):
        PROXY.set_fault(fetch=2, after=10, bye=EXPIRED_BYE, cuts=2)
        code, out, err = self.sync_cut(verbose=True)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/cut"),
                         (LONG_COUNT, LONG_COUNT, 0, 0))
        counters = PROXY.counters()
        self.assertEqual((counters["sessions"], counters["cuts"]), (3, 2))
        self.assertEqual(refreshes(), 3)
        debug = [x for x in err.splitlines() if "carol/cut: the server ended "
                 "the session, the access token expired (BYE "
                 "AccessTokenExpired)" in x]
        self.assertEqual(len(debug), 2, err)
        self.assertNotIn("fetching bodies", err)
        self.assertNotIn("warning", err)
        self.assert_once_each(LONG_BOX)

    def test_3_every_session_cut_gives_up(self):
        PROXY.set_fault(fetch=1, after=0, bye=EXPIRED_BYE, cuts=None)
        code, out, err = self.sync_cut()
        self.assertEqual(code, 75, out + err)
        self.assertEqual(err.splitlines(), [
            "tributary: carol/cut: the server ended the session 4 times in "
            "this pass because the access token expired; the rest is left "
            "for the next pass"])
        self.assertEqual(summary(out, "carol/cut"),
                         (LONG_COUNT, 0, 0, LONG_COUNT))
        # one login and 3 reconnects, each with its own refresh: no loop
        self.assertEqual(PROXY.counters(),
                         {"sessions": 4, "cuts": 4, "body_fetches": 4})
        self.assertEqual(refreshes(), 4)
        PROXY.clear_fault()
        code, out, err = self.sync_cut()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/cut"),
                         (LONG_COUNT, LONG_COUNT, 0, 0))
        self.assert_once_each(LONG_BOX)

    def test_4_plain_cut_defers(self):
        PROXY.set_fault(fetch=2, after=10, bye=None, cuts=1)
        code, out, err = self.sync_cut()
        self.assertEqual(code, 75, out + err)
        self.assertIn("tributary: carol/cut: fetching bodies: ", err)
        new, delivered, rejected, deferred = summary(out, "carol/cut")
        self.assertEqual((new, rejected), (LONG_COUNT, 0))
        self.assertEqual(delivered + deferred, LONG_COUNT)
        self.assertGreaterEqual(delivered, 100)     # the first window
        self.assertGreater(deferred, 0)
        self.assertEqual(PROXY.counters()["sessions"], 1)
        self.assertEqual(refreshes(), 1)
        code, out, err = self.sync_cut()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(summary(out, "carol/cut"),
                         (deferred, deferred, 0, 0))
        self.assert_once_each(LONG_BOX)

    def test_5_no_expired_after_login(self):
        # a server that answers a command NO [EXPIRED] instead of BYE
        PROXY.set_fault(fetch=2, no=b"[EXPIRED] Access token expired",
                        cuts=1)
        code, out, err = self.sync_cut()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(err, "")
        self.assertEqual(summary(out, "carol/cut"),
                         (LONG_COUNT, LONG_COUNT, 0, 0))
        counters = PROXY.counters()
        self.assertEqual((counters["sessions"], counters["cuts"]), (2, 1))
        self.assertEqual(refreshes(), 2)
        self.assert_once_each(LONG_BOX)

    def test_6_expiry_inside_the_margin_refreshed_without_a_word(self):
        # tokens from /token live 120 s: inside the 5-minute margin at the
        # next pass
        control("/control/settings", {"access_ttl": 120})
        self.addCleanup(control, "/control/settings", {"access_ttl": 3600})
        code, out, err = self.sync_cut()
        self.assertEqual(code, 0, out + err)
        cached = vault_list("cut")["access_token"]
        self.assertLess(cached[0], time.time() + 300)
        seed(LONG_BOX, 1)
        control("/control/reset", {})
        code, out, err = self.sync_cut()
        self.assertEqual(code, 0, out + err)
        self.assertEqual(err, "")
        self.assertEqual(summary(out, "carol/cut"), (1, 1, 0, 0))
        self.assertEqual(refreshes(), 1)
        self.assertNotEqual(vault_list("cut")["access_token"][1], cached[1])
        self.assert_once_each(LONG_BOX)

    def test_7_a_smaller_margin_keeps_the_cached_token(self):
        # the same 120 s token, with tributary_oauth_refresh_margin = 1m:
        # still good at the next pass, so no refresh
        control("/control/settings", {"access_ttl": 120})
        self.addCleanup(control, "/control/settings", {"access_ttl": 3600})
        conf = conf_with("margin", oauth_refresh_margin="1m")
        code, out, err = carol_sync("cut", conf=conf)
        self.assertEqual(code, 0, out + err)
        cached = vault_list("cut")["access_token"]
        seed(LONG_BOX, 1)
        control("/control/reset", {})
        code, out, err = carol_sync("cut", conf=conf)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(err, "")
        self.assertEqual(summary(out, "carol/cut"), (1, 1, 0, 0))
        self.assertEqual(refreshes(), 0)
        self.assertEqual(vault_list("cut")["access_token"][1], cached[1])
        self.assert_once_each(LONG_BOX)


class SyncOAuthRotation(ExtraAccounts):
    """A rotated refresh token survives a crash right after it was
    committed to the vault, before any login."""

    CRASH_POINT = "oauth-after-store"

    def test_rotation_persisted_across_a_restart(self):
        if not synctest.crash_points():
            self.skipTest("configure --enable-crash-points")
        first = new_refresh_token()
        vault_put("rot", "refresh_token", first)
        vault_put("rot", "access_token", "unused")
        seed(ROT_BOX, 2)
        control("/control/reset", {})
        code, out, err = synctest.sync("carol", "rot",
                                       crash_at=self.CRASH_POINT)
        self.assertEqual(code, -signal.SIGKILL, out + err)
        self.assertEqual(refreshes(), 1)
        rotated = vault_list("rot")["refresh_token"][1]
        self.assertNotEqual(rotated, sha256(first))
        self.assertEqual(token_grant(first)[0], 400)    # refused now
        # a fresh process, the cached access token set aside: it must
        # trade the rotated refresh token it finds in the vault
        vault_put("rot", "access_token", "unused")
        control("/control/reset", {})
        code, out, err = synctest.sync("carol", "rot")
        self.assertEqual(code, 0, out + err)
        self.assertNotIn("reauthorization required", err)
        self.assertEqual(refreshes(), 1)
        self.assertEqual(summary(out, "carol/rot"), (2, 2, 0, 0))
        self.assertNotEqual(vault_list("rot")["refresh_token"][1], rotated)
        self.assert_once_each(ROT_BOX)


# ---- what other processes can see: /proc/PID/cmdline, environ, ps ----


def proc_snapshot():
    """pid -> (ppid, argv bytes, environment bytes) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read()
            with open("/proc/%s/environ" % name, "rb") as f:
                environ = f.read()
        except OSError:
            continue    # gone meanwhile
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        out[int(name)] = (ppid, cmdline, environ)
    return out


def ps_args():
    return subprocess.run(["ps", "-eo", "args"], capture_output=True,
                          check=True, timeout=60).stdout


def descendants(snap, root):
    pids, more = {root}, True
    while more:
        more = False
        for pid, (ppid, _, _) in snap.items():
            if ppid in pids and pid not in pids:
                pids.add(pid)
                more = True
    return pids


def secret_hits(snaps, ps_outputs, root, tokens, passwords, hashes):
    """Where a secret shows: a token (known values, or token-shaped with
    a SHA-256 in hashes) in any process's argv or environment or in ps;
    a password in any argv or ps, or in the environment of root and its
    children; anything token-shaped in root's tree. Returns [(pid,
    where, what)]."""
    hits = set()

    def scan(pid, where, data, tree):
        text = data.decode("utf-8", "replace")
        for t in tokens:
            if t in text:
                hits.add((pid, where, "token"))
        for m in TOKEN_RE.finditer(text):
            found = re.match(r"[A-Za-z0-9_-]+", text[m.start():]).group(0)
            if sha256(found) in hashes:
                hits.add((pid, where, "token"))
            if tree:
                hits.add((pid, where, "token-shaped"))
        for p in passwords:
            if p in text and (tree or where != "environ"):
                hits.add((pid, where, "password"))

    for snap in snaps:
        tree = descendants(snap, root)
        for pid, (_, cmdline, environ) in snap.items():
            scan(pid, "cmdline", cmdline, pid in tree)
            scan(pid, "environ", environ, pid in tree)
    for out in ps_outputs:
        scan("ps", "args", out, False)
    return sorted(hits, key=str)


class SyncOAuthSecretsHidden(ExtraAccounts):
    """No token or password in any process's argv or environment (what
    ps and /proc show every user) while a pass holds them."""

    def test_1_the_scan_finds_a_planted_token(self):
        """The scan below can fail: a token on a process's argv and a
        password in its environment are found."""
        token = "tok-" + secrets.token_urlsafe(32)
        password = "planted-" + secrets.token_hex(8)
        env = dict(ENV, PLANTED=password)
        proc = subprocess.Popen([sys.executable, "-c",
                                 "import time; time.sleep(300)", token],
                                env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                snap = proc_snapshot()
                if token.encode() in snap.get(proc.pid, (0, b"", b""))[1]:
                    break
                time.sleep(0.05)
            ps = ps_args()
        finally:
            proc.kill()
            proc.wait(timeout=60)
        hits = secret_hits([snap], [ps], proc.pid, {token}, [password],
                           set())
        self.assertIn((proc.pid, "cmdline", "token"), hits)
        self.assertIn((proc.pid, "cmdline", "token-shaped"), hits)
        self.assertIn((proc.pid, "environ", "password"), hits)
        self.assertIn(("ps", "args", "token"), hits)
        # a token-shaped string the vault holds (by its hash) too
        hits = secret_hits([snap], [], -1, set(), [], {sha256(token)})
        self.assertIn((proc.pid, "cmdline", "token"), hits)

    def test_2_nothing_during_a_pass(self):
        password = app_password()
        vault_put("app", "app_password", password)
        given = {}
        for account in ("mail", "bearer", "cut", "rot"):
            given[account] = new_refresh_token()
            vault_put(account, "refresh_token", given[account])
            vault_put(account, "access_token", "unused")
        seed(APP_BOX, 1)
        control("/control/reset", {})
        # every refresh answered 2 s late: the pass holds tokens a while
        control("/control/fault", {"kind": "delay", "seconds": 2,
                                   "count": len(given), "path": "/token"})
        self.addCleanup(control, "/control/fault", {"kind": "clear"})
        # the harness's own variables hold the password: not the pass's
        env = {k: v for k, v in ENV.items()
               if not k.startswith("TRIB_TEST_APP_PASSWORD") and
               k != "TRIBUTARY_CRASH_AT"}
        tmp = os.path.join(DIR, "sync-oauth")
        with open(os.path.join(tmp, "ps.out"), "w+") as out_f, \
                open(os.path.join(tmp, "ps.err"), "w+") as err_f:
            proc = subprocess.Popen(
                [synctest.TRIBUTARY, "sync", "-v", "-c",
                 ENV["TRIB_TEST_LOCAL_CONF"], "-u", "carol"],
                stdout=out_f, stderr=err_f, env=env)
            snaps, pss = [], []
            try:
                deadline = time.monotonic() + 300
                while proc.poll() is None and time.monotonic() < deadline:
                    snaps.append(proc_snapshot())
                    pss.append(ps_args())
                    time.sleep(0.1)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=60)
            out_f.seek(0)
            err_f.seek(0)
            out, err = out_f.read(), err_f.read()
        self.assertIn(proc.returncode, (0, 75, 77), out + err)
        self.assertGreaterEqual(len(snaps), 2)
        stats = control("/control/stats")
        self.assertEqual(stats["grants"].get("refresh_token"), len(given),
                         stats)
        tokens = set(given.values()) | {k for k in stats["by_token"] if k}
        hashes = set()
        for account in list(given) + ["app"]:
            hashes |= {h for _, h in vault_list(account).values()}
        self.assertEqual(secret_hits(snaps, pss, proc.pid, tokens,
                                     [password], hashes), [])
        self.assert_no_secret(out + err, password, *tokens)
        self.assertEqual(summary(out, "carol/app")[:2], (1, 1), err)


if __name__ == "__main__":
    synctest.main("test_sync_oauth")
