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

No token may ever show up on stdout or stderr (-v included)."""

import json
import os
import re
import ssl
import subprocess
import unittest
import urllib.error
import urllib.request

import synctest
from synctest import ENV, DIR, harness, seed, summary

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
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()


def write_accounts(tmpdir):
    base = [("provider", "imap"), ("host", "127.0.0.1"),
            ("port", ENV["TRIB_TEST_IMAPS_PORT"]), ("tls", "implicit"),
            ("ca_file", ENV["TRIB_TEST_CA"]),
            ("login", synctest.REMOTE_USER)]
    oauth = [("auth", "oauth2"), ("client_id", CLIENT_ID),
             ("oauth_authorize_url", OAUTH_URL + "/authorize"),
             ("oauth_scope", "mail offline_access")]
    accounts = {
        "mail": base + oauth + [("oauth_token_url", OAUTH_URL + "/token"),
                                ("sasl", "XOAUTH2,OAUTHBEARER")],
        "home": base + [("auth", "password_file"),
                        ("password_file", synctest.PASSWORD_FILE)],
        "down": base + oauth + [("oauth_token_url",
                                 "https://127.0.0.1:1/token")],
        "bearer": base + oauth + [("oauth_token_url", OAUTH_URL + "/token"),
                                  ("sasl", "OAUTHBEARER")],
    }
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


if __name__ == "__main__":
    synctest.main("test_sync_oauth")
