#!/usr/bin/env python3
"""Accounts are Dovecot settings: `tributary accounts` and `check-config`
against the harness's real local Dovecot, which includes the shipped
conf.d/90-tributary.conf and chains the accounts passwd-file after the
main userdb. The fetcher runs as the `tributary` user, as in production,
and reaches Dovecot only through doveconf and the tributary-userdb
listener.

Run under tests/harness/with-servers.sh (test-accounts.sh does)."""

import json
import os
import shutil
import subprocess
import sys
import time
import unittest

ENV = os.environ
BUILDDIR = ENV.get("top_builddir", ".")
TRIBUTARY = os.path.join(BUILDDIR, "fetcher", "tributary")


def run(args, user="tributary", check=None):
    """Run the CLI as `user`; returns (exit code, stdout, stderr)."""
    cmd = [TRIBUTARY] + args
    if user is not None:
        cmd = ["runuser", "-u", user, "--"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check is not None and proc.returncode != check:
        raise AssertionError("%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), proc.returncode, check,
                                proc.stdout, proc.stderr))
    return proc.returncode, proc.stdout, proc.stderr


def conf_args():
    return ["-c", ENV["TRIB_TEST_LOCAL_CONF"]]


class AccountsFile:
    """Rewrite the accounts passwd-file for one test, then restore it."""

    def __init__(self, lines):
        self.path = ENV["TRIB_TEST_ACCOUNTS_FILE"]
        self.lines = lines

    def __enter__(self):
        self.saved = self.path + ".saved"
        shutil.copy2(self.path, self.saved)
        self._write("".join(line + "\n" for line in self.lines))
        return self

    def _write(self, text):
        # Dovecot re-reads a passwd-file when its mtime (whole seconds) or
        # size changed, checking at most once a second: move the mtime on
        # and let a second pass.
        st = os.stat(self.path)
        with open(self.path, "w") as f:
            f.write(text)
        os.utime(self.path, (st.st_atime + 2, st.st_mtime + 2))
        time.sleep(1.1)

    def __exit__(self, *exc):
        with open(self.saved) as f:
            self._write(f.read())
        os.unlink(self.saved)


class TestDropIn(unittest.TestCase):
    def test_doveconf_accepts_drop_in(self):
        proc = subprocess.run(["doveconf", "-n", "-c",
                               ENV["TRIB_TEST_LOCAL_CONF"]],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("tributary-userdb", proc.stdout)

    def test_listener_belongs_to_tributary(self):
        st = os.stat(ENV["TRIB_TEST_LOCAL_USERDB_SOCKET"])
        import pwd
        self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, "tributary")
        self.assertEqual(st.st_mode & 0o777, 0o600)


class TestAccounts(unittest.TestCase):
    def accounts(self, *extra):
        _, out, err = run(["accounts", "--json"] + conf_args() + list(extra),
                          check=0)
        return json.loads(out), err

    def test_all_users_exactly(self):
        data, err = self.accounts("-A")
        self.assertEqual(data["errors"], [])
        users = {u["user"]: u for u in data["users"]}
        # a user listed by two userdbs is one user
        self.assertEqual(sorted(u["user"] for u in data["users"]),
                         sorted(set(u["user"] for u in data["users"])))
        self.assertIn("alice", users)
        self.assertIn("bob", users)
        alice = {a["name"]: a for a in users["alice"]["accounts"]}
        bob = {a["name"]: a for a in users["bob"]["accounts"]}
        self.assertEqual(sorted(alice), ["home", "work"])
        self.assertEqual(sorted(bob), ["mail"])
        self.assertEqual(users["alice"]["errors"], [])
        self.assertEqual(users["bob"]["errors"], [])
        if "carol" in users:
            self.assertEqual(users["carol"]["accounts"], [])

        work = alice["work"]
        self.assertEqual(work["provider"], "outlook")
        self.assertEqual(work["login"], "alice@contoso.example")
        self.assertEqual(work["host"], "outlook.office365.com")
        self.assertEqual(work["port"], 993)
        self.assertEqual(work["tls"], "implicit")
        self.assertTrue(work["tls_verify"])
        self.assertEqual(work["auth"], "oauth2")
        self.assertEqual(work["sasl"], ["XOAUTH2"])
        self.assertEqual(work["folders"], ["INBOX"])
        self.assertEqual(work["remote"], "keep")
        self.assertIn("offline_access", work["oauth"]["scope"])

        mail = bob["mail"]
        self.assertEqual(mail["provider"], "yahoo")
        self.assertEqual(mail["login"], "bob@yahoo.example")
        self.assertEqual(mail["host"], "imap.mail.yahoo.com")
        self.assertEqual(mail["auth"], "app_password")
        self.assertEqual(mail["sasl"], ["PLAIN"])
        self.assertEqual(mail["folders"], ["INBOX", "Archive"])
        self.assertFalse(mail["idle"])

    def test_one_user(self):
        data, _ = self.accounts("-u", "bob")
        self.assertEqual([u["user"] for u in data["users"]], ["bob"])
        self.assertEqual([a["name"] for a in data["users"][0]["accounts"]],
                         ["mail"])

    def test_text_output(self):
        _, out, _ = run(["accounts"] + conf_args() + ["-u", "alice"], check=0)
        self.assertIn("alice\n", out)
        self.assertIn("outlook", out)
        self.assertIn("alice@contoso.example", out)

    def test_unknown_user(self):
        code, out, err = run(["check-config"] + conf_args() +
                             ["-u", "nosuchuser"])
        self.assertEqual(code, 78, out + err)
        self.assertIn("nosuchuser: user not found in the userdb", err)

    def test_check_config_ok(self):
        code, out, err = run(["check-config"] + conf_args() + ["-A"])
        self.assertEqual(code, 0, out + err)
        self.assertIn("configuration ok", out)
        self.assertEqual(err, "")

    def test_broken_accounts_reported_others_kept(self):
        with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
            original = [l.rstrip("\n") for l in f if l.strip()]
        broken = []
        for line in original:
            if line.startswith("alice:"):
                line = line.replace("userdb_tributary_work_provider=outlook",
                                    "userdb_tributary_work_provider=gmial")
                line += " userdb_tributary_home_port=99999"
            broken.append(line)
        with AccountsFile(broken):
            deadline = time.time() + 10
            while True:
                code, out, err = run(["check-config"] + conf_args() + ["-A"])
                if code != 0 or time.time() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(code, 78, out + err)
            lines = err.strip().split("\n")
            self.assertIn("tributary: alice/work: unknown provider 'gmial' "
                          "(gmail, outlook, yahoo, imap)", lines)
            self.assertIn("tributary: alice/home: port '99999' is not a "
                          "port number (1-65535)", lines)
            self.assertEqual(len(lines), 2, err)
            # the other users' accounts still load
            data, _ = self.accounts("-A")
            users = {u["user"]: u for u in data["users"]}
            self.assertEqual([a["name"] for a in users["bob"]["accounts"]],
                             ["mail"])
            self.assertEqual(users["alice"]["accounts"], [])
            self.assertEqual(len(users["alice"]["errors"]), 2)

    def test_secrets_hidden(self):
        secret = "test-gmail-client-secret-value"
        _, out, err = run(["accounts", "--json"] + conf_args() + ["-A"],
                          check=0)
        self.assertNotIn(secret, out + err)
        _, out, err = run(["accounts"] + conf_args() + ["-A"], check=0)
        self.assertNotIn(secret, out + err)

    def test_socket_refused_for_others(self):
        code, out, err = run(["accounts"] + conf_args() + ["-A"],
                             user="nobody")
        self.assertEqual(code, 75, out + err)
        self.assertIn("tributary-userdb", err)
        self.assertIn("ermission denied", err)

    def test_bad_config_path(self):
        code, out, err = run(["accounts", "-c", "/nonexistent/dovecot.conf"])
        self.assertEqual(code, 78, out + err)
        self.assertIn("doveconf", err)
        self.assertIn("/nonexistent/dovecot.conf", err)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("test_accounts: needs root (runs the CLI as tributary)")
        sys.exit(1)
    result = unittest.main(verbosity=2, exit=False).result
    total = result.testsRun
    failed = len(result.failures) + len(result.errors)
    print("test_accounts: %d passed, %d failed" % (total - failed, failed))
    sys.exit(0 if result.wasSuccessful() else 1)
