#!/usr/bin/env python3
"""`tributary sync` stopped by SIGTERM or SIGINT (Ctrl-C): it ends soon,
commits what LMTP answered, exits 75 (77 when an account also needs
reauthorization) with one line "carol/ACCOUNT: stopped", and nothing is
lost or duplicated: the next pass brings exactly the rest.

The local user carol gets three accounts reading the remote alice:

  - `bulk` (password_file): the folder StopBulk, many big messages; the
    signal comes once the first messages are in carol's maildir, in the
    middle of the stream. The next pass delivers exactly the messages the
    first did not count as delivered, and every message is in carol's
    maildir once.
  - `tok` (oauth2): the stand-in's token endpoint answers its refresh
    only after several minutes; the signal comes once the request is
    there. The pass ends without the answer (no access token is stored
    in the vault), never connected (no summary line).
  - `ask` (oauth2, refresh token revoked): the admin's notify command
    sleeps; the signal comes while it runs. The command is killed with
    its process group and not recorded as run, so the next pass runs it
    again (never zero times).

No timed assertion: every wait has a generous deadline, and a stop that
does not work shows as a wrong exit code, a stored token or a missing
line. Run under tests/harness/with-servers.sh (test-sync-stop.sh does),
as root."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import synctest
from synctest import (DIR, ENV, REMOTE_USER, TRIBUTARY, harness, local_ids,
                      main, seed, seeded_id, summary)
from test_sync_oauth import (OAUTH_URL, STATE_DIR, control, vault_list,
                             vault_put)

USER = "carol"
CAROL_MAILDIR = os.path.join(DIR, "local", "home", USER, "Maildir")
BULK_FOLDER, BULK_COUNT, BULK_SIZE = "StopBulk", 400, 256 * 1024
# a public client issuing refresh tokens without offline_access (a
# userdb field value cannot hold a space)
CLIENT_ID = "tributary-stop"
DEADLINE = 300


def install_accounts(tmpdir):
    base = [("provider", "imap"), ("host", "127.0.0.1"),
            ("port", ENV["TRIB_TEST_IMAPS_PORT"]), ("tls", "implicit"),
            ("ca_file", ENV["TRIB_TEST_CA"]), ("login", REMOTE_USER)]
    oauth = [("auth", "oauth2"), ("client_id", CLIENT_ID),
             ("oauth_authorize_url", OAUTH_URL + "/authorize"),
             ("oauth_scope", "mail"),
             ("oauth_token_url", OAUTH_URL + "/token"), ("folders", "INBOX")]
    accounts = {
        "bulk": base + [("auth", "password_file"),
                        ("password_file", synctest.PASSWORD_FILE),
                        ("folders", BULK_FOLDER)],
        "tok": base + oauth,
        "ask": base + oauth,
    }
    with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
        lines = [x for x in f.read().splitlines()
                 if not x.startswith(USER + ":")]
    items = [("accounts", ",".join(accounts))]
    for name, fields in accounts.items():
        items += [("%s_%s" % (name, k), str(v).replace("%", "%%"))
                  for k, v in fields]
    lines.append("%s:::::::%s" % (USER, " ".join(
        "userdb_tributary_%s=%s" % kv for kv in items)))
    path = os.path.join(tmpdir, "accounts")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    harness("accounts", DIR, path)


def write_conf(tmpdir, name, **settings):
    """The harness's local config plus these plugin settings."""
    path = os.path.join(tmpdir, name + ".conf")
    with open(path, "w") as f:
        f.write("!include %s\nplugin {\n%s}\n" % (
            ENV["TRIB_TEST_LOCAL_CONF"],
            "".join("  tributary_%s = %s\n" % kv
                    for kv in sorted(settings.items()))))
    return path


def new_refresh_token():
    return control("/control/grant", {
        "user": REMOTE_USER, "client_id": CLIENT_ID,
        "scope": "mail"})["refresh_token"]


def wait_for(what, cond, proc):
    """Poll cond() until true; fail when proc ends first or at the
    deadline."""
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if proc.poll() is not None:
            raise AssertionError("the sync ended (exit %d) before %s"
                                 % (proc.returncode, what))
        if time.monotonic() > deadline:
            raise AssertionError("no %s within %d s" % (what, DEADLINE))
        time.sleep(0.02)


def process_gone(pid):
    """Whether pid has exited (gone, or a zombie waiting for init)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return ") Z " in f.read()
    except FileNotFoundError:
        return True


class SyncStop(unittest.TestCase):

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sync-stop.")
        synctest.run(["init", "-c", ENV["TRIB_TEST_LOCAL_CONF"]], check=0)
        control("/control/client", {
            "client_id": CLIENT_ID, "client_secret": None,
            "offline_access_required": False})
        seed(BULK_FOLDER, BULK_COUNT, size=BULK_SIZE)
        install_accounts(cls.tmp)
        cls.pid_file = os.path.join(cls.tmp, "notify.pid")
        cls.runs_file = os.path.join(cls.tmp, "notify.runs")
        script = os.path.join(cls.tmp, "notify.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho run >> %s\n"
                    "if [ \"$1\" = sleep ]; then\n"
                    "  sleep 300 &\n  echo $! > %s\n  wait\nfi\n"
                    % (cls.runs_file, cls.pid_file))
        os.chmod(script, 0o755)
        cls.conf_sleep = write_conf(cls.tmp, "sleep", reauth_notice="no",
                                    notify_command=script + " sleep")
        cls.conf_quick = write_conf(cls.tmp, "quick", reauth_notice="no",
                                    notify_command=script + " quick")

    @classmethod
    def tearDownClass(cls):
        harness("accounts", DIR, "--fixture")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def start(self, account, conf=None):
        """A sync of carol's account in the background; its output goes
        to files (read by stop())."""
        out = open(os.path.join(self.tmp, account + ".out"), "w+")
        err = open(os.path.join(self.tmp, account + ".err"), "w+")
        proc = subprocess.Popen(
            [TRIBUTARY, "sync", "-c", conf or ENV["TRIB_TEST_LOCAL_CONF"],
             "-u", USER, account], stdout=out, stderr=err)

        def cleanup():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
            out.close()
            err.close()
        self.addCleanup(cleanup)
        return proc, out, err

    def stop(self, proc, out, err, sig):
        """Send sig, wait for the end: (exit code, stdout, stderr)."""
        proc.send_signal(sig)
        proc.wait(timeout=DEADLINE)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read()

    def test_1_sigterm_while_streaming(self):
        expected = {seeded_id(BULK_FOLDER, i)
                    for i in range(1, BULK_COUNT + 1)}

        def bulk_ids():
            return {k: v for k, v in local_ids(CAROL_MAILDIR).items()
                    if k in expected}

        proc, out, err = self.start("bulk")
        wait_for("a message in carol's maildir", lambda: bulk_ids(), proc)
        code, out, err = self.stop(proc, out, err, signal.SIGTERM)
        self.assertEqual(code, 75, out + err)
        self.assertIn("tributary: carol/bulk: stopped\n", err)
        new, delivered, rejected, deferred = summary(out, "carol/bulk")
        self.assertEqual(rejected, 0, out + err)
        self.assertGreater(delivered, 0, out + err)
        self.assertLess(delivered, BULK_COUNT, out + err)
        self.assertEqual(new, delivered + deferred, out + err)
        first = bulk_ids()
        self.assertEqual([k for k, v in first.items() if v != 1], [])

        # committed: the next pass brings exactly the rest, once
        code, out2, err2 = synctest.sync(USER, "bulk")
        self.assertEqual(code, 0, out2 + err2)
        self.assertEqual(summary(out2, "carol/bulk"),
                         (BULK_COUNT - delivered, BULK_COUNT - delivered,
                          0, 0), out + err + out2 + err2)
        self.assertEqual(bulk_ids(), {k: 1 for k in expected})

    def test_2_sigint_while_waiting_for_the_token_endpoint(self):
        vault_put("tok", "refresh_token", new_refresh_token())
        control("/control/fault", {"kind": "clear"})
        self.addCleanup(control, "/control/fault", {"kind": "clear"})
        # the refresh is answered only after the deadline
        control("/control/fault", {"kind": "delay", "seconds": DEADLINE + 60,
                                   "count": 1, "path": "/token"})
        proc, out, err = self.start("tok")
        wait_for("the refresh at the token endpoint", lambda: control(
            "/control/stats")["faults_pending"] == 0, proc)
        code, out, err = self.stop(proc, out, err, signal.SIGINT)
        self.assertEqual(code, 75, out + err)
        self.assertEqual(err, "tributary: carol/tok: stopped\n", out + err)
        self.assertEqual(out, "")  # never connected: no summary line
        self.assertNotIn("access_token", vault_list("tok"))

    def test_3_sigterm_while_the_notify_command_runs(self):
        record = os.path.join(STATE_DIR, USER, "reauth-ask")
        token = new_refresh_token()
        vault_put("ask", "refresh_token", token)
        control("/control/revoke", {"token": token})
        proc, out, err = self.start("ask", self.conf_sleep)
        wait_for("the notify command", lambda: os.path.exists(
            self.pid_file) and os.path.getsize(self.pid_file) > 0, proc)
        code, out, err = self.stop(proc, out, err, signal.SIGTERM)
        self.assertEqual(code, 77, out + err)  # reauthorization required
        self.assertIn("tributary: carol/ask: reauthorization required: "
                      "run `tributary authorize -u carol ask`", err)
        self.assertTrue(err.endswith("tributary: carol/ask: stopped\n"), err)
        with open(self.pid_file) as f:
            sleeper = int(f.read())
        # killed with its group, not left behind
        self.assertTrue(process_gone(sleeper))
        with open(record) as f:
            self.assertIn("notified=0\n", f.read())

        # not recorded as run: the next pass runs it (once)
        code, out, err = synctest.run(
            ["sync", "-c", self.conf_quick, "-u", USER, "ask"])
        self.assertEqual(code, 77, out + err)
        self.assertNotIn("stopped", err)
        with open(self.runs_file) as f:
            self.assertEqual(f.read(), "run\nrun\n")
        with open(record) as f:
            self.assertNotIn("notified=0\n", f.read())


if __name__ == "__main__":
    main("test_sync_stop")
