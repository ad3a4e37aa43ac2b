#!/usr/bin/env python3
"""`tributary authorize` against the harness's OAuth stand-in: the device
flow (approved through the stand-in's control API while the CLI polls),
the loopback redirect (a scripted browser follows the stand-in's
/authorize redirect to the CLI's port), the pasted redirect, a wrong
state, a denied sign-in, and an app password. After each, the user's vault
is read with vault-tool (which prints hashes, never secrets), and no
token, code or secret may appear in the CLI's output.

Run under tests/harness/with-servers.sh (test-authorize.sh does), as
root."""

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import unittest
import urllib.request

from synctest import DIR, ENV, PYTHON, REMOTE_USER, TRIBUTARY, BUILDDIR
from synctest import harness, main, run

USER = "carol"
VAULT_TOOL = os.path.join(BUILDDIR, "tests", "integration", "vault-tool")
OAUTH = ENV.get("TRIB_TEST_OAUTH_URL", "")
GMAIL_SECRET = "test-gmail-client-secret-value"


def control(path, body=None):
    """POST (or GET without body) to the stand-in's control API."""
    ctx = ssl.create_default_context(cafile=ENV["TRIB_TEST_CA"])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(OAUTH + path, data=data, headers={
        "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read().decode())


def install(accounts, tmpdir):
    """Give USER exactly the accounts (name -> fields)."""
    with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
        lines = [x for x in f.read().splitlines()
                 if not x.startswith(USER + ":")]
    items = [("accounts", ",".join(accounts))]
    for name, fields in accounts.items():
        items += [("%s_%s" % (name, k), str(v).replace("%", "%%"))
                  for k, v in fields.items()]
    lines.append("%s:::::::%s" % (USER, " ".join(
        "userdb_tributary_%s=%s" % kv for kv in items)))
    path = os.path.join(tmpdir, "accounts")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    harness("accounts", DIR, path)


def oauth_account(provider):
    return {"provider": provider, "host": "127.0.0.1",
            "port": ENV["TRIB_TEST_IMAPS_PORT"], "tls": "implicit",
            "ca_file": ENV["TRIB_TEST_CA"], "login": REMOTE_USER,
            "auth": "oauth2",
            "oauth_authorize_url": OAUTH + "/authorize",
            "oauth_token_url": OAUTH + "/token",
            "oauth_device_url": OAUTH + "/devicecode"}


ACCOUNTS = {
    "ms": oauth_account("outlook"),
    "gm": dict((k, v) for k, v in oauth_account("gmail").items()
               if k != "oauth_device_url"),
    "app": {"provider": "imap", "host": "127.0.0.1",
            "port": ENV.get("TRIB_TEST_IMAPS_PORT", "0"),
            "tls": "implicit", "ca_file": ENV.get("TRIB_TEST_CA", ""),
            "login": REMOTE_USER, "auth": "app_password"},
}


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


class Authorize(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        code, out, err = run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]])
        m = re.search(r"vault key (\S+):", out)
        if code != 0 or m is None:
            raise AssertionError("init: %d %s %s" % (code, out, err))
        cls.vault_key = m.group(1)
        cls.tmpdir = os.path.join(DIR, "authorize-test")
        os.makedirs(cls.tmpdir, exist_ok=True)
        install(ACCOUNTS, cls.tmpdir)
        control("/control/settings", {"device_interval": 1})

    @classmethod
    def tearDownClass(cls):
        control("/control/authorize", {"user": None, "deny": False})
        harness("accounts", DIR, "--fixture")

    def setUp(self):
        control("/control/authorize", {"user": None, "deny": False})

    def vault(self, account):
        """kind -> (expires_at, sha256) of the account's records."""
        out = subprocess.run([VAULT_TOOL, "list",
                              ENV["TRIB_TEST_LOCAL_STATE_DIR"], USER,
                              self.vault_key, account], check=True,
                             capture_output=True, text=True).stdout
        got = {}
        for line in out.splitlines():
            kind, exp, digest = line.split()
            got[kind] = (int(exp), digest)
        return got

    def args(self, account, *extra):
        return ["authorize", "-c", ENV["TRIB_TEST_LOCAL_CONF"], "-u", USER,
                account] + list(extra)

    def assert_no_secrets(self, text, secrets=()):
        """None of secrets, and nothing shaped like the stand-in's access
        tokens, refresh tokens, device codes or codes, is in text."""
        for s in secrets:
            if s:
                self.assertNotIn(s, text)
        self.assertIsNone(re.search(r"\b(tok|rt|dc|code)-[A-Za-z0-9_-]{20}",
                                    text), text)

    def assert_tokens_stored(self, account, refresh=True):
        v = self.vault(account)
        self.assertIn("access_token", v)
        self.assertGreater(v["access_token"][0], time.time())
        if refresh:
            self.assertIn("refresh_token", v)
        return v

    def spawn(self, args, stdin=subprocess.DEVNULL):
        return subprocess.Popen([TRIBUTARY] + args, stdin=stdin,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def read_until(self, proc, pattern, lines):
        """stdout lines until one matches pattern; its match."""
        while True:
            line = proc.stdout.readline()
            if line == "":
                raise AssertionError("no %r in %r; stderr %s" % (
                    pattern, lines, proc.stderr.read()))
            lines.append(line)
            m = re.search(pattern, line)
            if m is not None:
                return m

    def finish(self, proc, lines):
        out, err = proc.communicate(timeout=120)
        return proc.returncode, "".join(lines) + out, err

    def test_1_device_flow(self):
        """The default for outlook; -v: the debug lines hold no token. One
        slow_down: the CLI goes on polling, 5 s slower."""
        stats = control("/control/stats")
        proc = self.spawn(self.args("ms", "-v"))
        lines = []
        self.read_until(proc, r"open https://", lines)
        m = self.read_until(proc, r"enter the code (\S+)", lines)
        user_code = m.group(1)
        control("/control/device", {"user_code": user_code,
                                    "slow_down": 1})
        time.sleep(2.5)  # pending polls, then the slow_down
        control("/control/device", {"user_code": user_code,
                                    "action": "approve",
                                    "user": REMOTE_USER})
        code, out, err = self.finish(proc, lines)
        self.assertEqual(code, 0, out + err)
        self.assertIn("authorized: refresh token stored", out)
        self.assert_tokens_stored("ms")
        self.assert_no_secrets(out + err)
        self.assertIn("device_code", err)  # the debug lines are there
        self.assertGreater(control("/control/stats")["requests"],
                           stats["requests"] + 2)

    def test_2_device_denied(self):
        proc = self.spawn(self.args("ms", "--flow", "device"))
        lines = []
        m = self.read_until(proc, r"enter the code (\S+)", lines)
        control("/control/device", {"user_code": m.group(1),
                                    "action": "deny"})
        code, out, err = self.finish(proc, lines)
        self.assertEqual(code, 77, out + err)

    def test_3_gmail_has_no_device_flow(self):
        code, out, err = run(self.args("gm", "--flow", "device"))
        self.assertEqual(code, 64)
        self.assertIn("Google's device flow allows no Gmail scope", err)

    def browse(self, url):
        """A scripted browser: GET url, follow redirects (to the CLI's
        loopback port); returns (status, body)."""
        ctx = ssl.create_default_context(cafile=ENV["TRIB_TEST_CA"])
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx))
        try:
            with opener.open(url, timeout=60) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_4_loopback_flow(self):
        proc = self.spawn(self.args("gm", "--flow", "loopback"))
        lines = []
        url = self.read_until(proc, r"^(https://\S+)", lines).group(1)
        m = self.read_until(proc, r"ssh -L (\d+):127\.0\.0\.1:(\d+) \S+@\S+",
                            lines)
        self.assertEqual(m.group(1), m.group(2))
        self.assertIn("redirect_uri=http%3A%2F%2F127.0.0.1%3A" + m.group(1),
                      url)
        self.assertIn("code_challenge_method=S256", url)
        # other paths, or / without parameters, do not end the wait; ::1
        # listens on the same port when the host has it
        port = m.group(1)
        self.assertEqual(self.browse("http://127.0.0.1:%s/favicon.ico"
                                     % port)[0], 404)
        if socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
            self.assertEqual(self.browse("http://[::1]:%s/" % port)[0], 404)
        status, body = self.browse(url)
        self.assertEqual(status, 200)
        self.assertIn("You can close this tab", body)
        code, out, err = self.finish(proc, lines)
        self.assertEqual(code, 0, out + err)
        self.assert_tokens_stored("gm")
        self.assert_no_secrets(out + err, [GMAIL_SECRET])

    def test_5_loopback_wrong_state(self):
        proc = self.spawn(self.args("gm", "--flow", "loopback"))
        lines = []
        url = self.read_until(proc, r"^(https://\S+)", lines).group(1)
        forged = re.sub(r"state=[^&]+", "state=forged", url)
        status, _ = self.browse(forged)
        self.assertEqual(status, 400)
        code, out, err = self.finish(proc, lines)
        self.assertEqual(code, 77, out + err)
        self.assertIn("state does not match", err)

    def test_6_loopback_denied(self):
        control("/control/authorize", {"user": None, "deny": True})
        before = self.vault("gm")
        proc = self.spawn(self.args("gm", "--flow", "loopback"))
        lines = []
        url = self.read_until(proc, r"^(https://\S+)", lines).group(1)
        status, _ = self.browse(url)
        self.assertEqual(status, 400)
        code, out, err = self.finish(proc, lines)
        self.assertEqual(code, 77, out + err)
        self.assertIn("access_denied", err)
        self.assertEqual(self.vault("gm"), before)

    def paste(self, account, mangle=None):
        """The paste flow: the redirect the stand-in answers is read
        from its Location header and fed on stdin."""
        proc = self.spawn(self.args(account, "--flow", "paste"),
                          stdin=subprocess.PIPE)
        lines = []
        url = self.read_until(proc, r"^(https://\S+)", lines).group(1)
        self.assertIn("redirect_uri=http%3A%2F%2Flocalhost", url)
        ctx = ssl.create_default_context(cafile=ENV["TRIB_TEST_CA"])

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx), NoRedirect)
        try:
            opener.open(url, timeout=30)
            self.fail("no redirect")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 302)
            location = e.headers["Location"]
        if mangle is not None:
            location = mangle(location)
        proc.stdin.write(location + "\n")
        proc.stdin.close()
        proc.stdin = None
        code, out, err = self.finish(proc, lines)
        m = re.search(r"code=([^&]+)", location)
        return code, out, err, m.group(1) if m else None

    def test_7_paste_flow(self):
        code, out, err, auth_code = self.paste("ms")
        self.assertEqual(code, 0, out + err)
        self.assert_tokens_stored("ms")
        self.assert_no_secrets(out + err, [auth_code])

    def test_8_paste_wrong_state(self):
        before = self.vault("ms")
        code, out, err, _ = self.paste(
            "ms", lambda loc: re.sub(r"state=[^&]+", "state=other", loc))
        self.assertEqual(code, 77, out + err)
        self.assertIn("state does not match", err)
        self.assertEqual(self.vault("ms"), before)
        self.assert_no_secrets(out + err)

    def test_9_app_password(self):
        secret = "app-password-%d" % os.getpid()
        path = os.path.join(self.tmpdir, "app.secret")
        with open(path, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
        code, out, err = run(self.args("app", "--secret-file", path))
        self.assertEqual(code, 0, out + err)
        self.assertEqual(self.vault("app")["app_password"][1], sha(secret))
        self.assert_no_secrets(out + err, [secret])
        # typed (here: the first line of a non-terminal stdin)
        proc = subprocess.run([TRIBUTARY] + self.args("app"),
                              input=secret + "2\n", capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(self.vault("app")["app_password"][1],
                         sha(secret + "2"))
        self.assert_no_secrets(proc.stdout + proc.stderr, [secret])

    def test_b_client_credentials(self):
        """Microsoft 365 app-only: the admin's app from conf.d (a config
        that includes the harness's and adds it)."""
        secret_file = os.path.join(self.tmpdir, "daemon.secret")
        with open(secret_file, "w") as f:
            f.write("tributary-daemon-secret\n")
        os.chmod(secret_file, 0o600)
        conf = os.path.join(self.tmpdir, "app-only.conf")
        with open(conf, "w") as f:
            f.write("!include %s\nplugin {\n"
                    "  tributary_outlook_app_tenant = contoso.example\n"
                    "  tributary_outlook_app_client_id = tributary-daemon\n"
                    "  tributary_outlook_app_client_secret_file = %s\n}\n"
                    % (ENV["TRIB_TEST_LOCAL_CONF"], secret_file))
        accounts = dict(ACCOUNTS)
        accounts["m365"] = dict(
            oauth_account("outlook"),
            oauth_token_url=OAUTH + "/contoso.example/oauth2/v2.0/token")
        install(accounts, self.tmpdir)
        try:
            code, out, err = run(["authorize", "-c", conf, "-u", USER,
                                  "m365", "--flow", "client-credentials"])
        finally:
            install(ACCOUNTS, self.tmpdir)
        self.assertEqual(code, 0, out + err)
        self.assertIn("app-only access works", out)
        v = self.vault("m365")
        self.assertEqual(set(v), {"access_token"})
        self.assert_no_secrets(out + err, ["tributary-daemon-secret"])

    def test_a_usage(self):
        self.assertEqual(run(["authorize", "-u", USER])[0], 64)
        self.assertEqual(run(self.args("ms", "--flow", "nope"))[0], 64)
        code, _, err = run(self.args("nosuch"))
        self.assertEqual(code, 78)
        self.assertIn("no such account", err)
        # app passwords go no other way
        code, _, err = run(self.args("app", "--flow", "device"))
        self.assertEqual(code, 64)
        self.assertIn("needs auth oauth2", err)


if __name__ == "__main__":
    main("test_authorize")
