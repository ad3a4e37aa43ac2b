"""What the sync integration tests share: running the CLI, the harness,
reading a local maildir, an account of the local user carol that reads
the remote alice's mailbox, and the summary line.

Imported by the test_sync_*.py scripts, which run under
tests/harness/with-servers.sh (the TRIB_TEST_* variables)."""

import os
import re
import subprocess
import sys

ENV = os.environ
BUILDDIR = ENV.get("top_builddir", ".")
TRIBUTARY = os.path.join(BUILDDIR, "fetcher", "tributary")
DIR = ENV.get("TRIB_TEST_DIR", "")
PYTHON = ENV.get("TRIB_TEST_PYTHON", sys.executable)
PASSWORD_FILE = os.path.join(DIR, "local", "secrets", "alice-home.password")
REMOTE_USER = "alice@example.com"


def run(args, env=None, check=None):
    """Run the CLI; (exit code, stdout, stderr). A signal is a negative
    code (-9: killed at a crash point)."""
    proc = subprocess.run([TRIBUTARY] + args, capture_output=True, text=True,
                          timeout=300, env=env)
    if check is not None and proc.returncode != check:
        raise AssertionError("%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                             % (" ".join(args), proc.returncode, check,
                                proc.stdout, proc.stderr))
    return proc.returncode, proc.stdout, proc.stderr


def sync(user, account, crash_at=None, check=None):
    """One `tributary sync` pass of user's account; crash_at sets
    TRIBUTARY_CRASH_AT (docs/crash-points.md)."""
    env = dict(ENV)
    env.pop("TRIBUTARY_CRASH_AT", None)
    if crash_at is not None:
        env["TRIBUTARY_CRASH_AT"] = crash_at
    return run(["sync", "-c", ENV["TRIB_TEST_LOCAL_CONF"], "-u", user,
                account], env=env, check=check)


def harness(*args):
    return subprocess.run([PYTHON, ENV["TRIB_TEST_HARNESS"]] + list(args),
                          check=True, capture_output=True, text=True,
                          timeout=300)


def seed(folder, count, start=None, size=None, flags=""):
    """Append count messages to the remote alice's folder. Their
    Message-IDs come from their index: give start where the seeder's
    default (MESSAGES + 1) would repeat one (after mail was removed)."""
    args = ["seed", DIR, "--user", REMOTE_USER, "--mailbox", folder,
            "--count", str(count)]
    if start is not None:
        args += ["--start", str(start)]
    if size is not None:
        args += ["--size", str(size)]
    if flags:
        args += ["--flags", flags]
    harness(*args)


def seeded_id(folder, i):
    """The Message-ID the seeder gave the message of index i."""
    slug = "".join(c if c.isalnum() else "-" for c in folder.lower())
    return "<seed.%s.%06d.alice.at.example.com@tributary.test>" % (
        slug.strip("-"), i)


def install_account(user, account, fields, tmpdir):
    """Give user (carol in these tests: the fixture has no line for her)
    exactly one account reading the remote alice over implicit TLS with
    her app password, plus fields (name -> value, e.g. folders). Restore
    with harness("accounts", DIR, "--fixture")."""
    with open(ENV["TRIB_TEST_ACCOUNTS_FILE"]) as f:
        lines = [x for x in f.read().splitlines()
                 if not x.startswith(user + ":")]
    base = [("provider", "imap"), ("host", "127.0.0.1"),
            ("port", ENV["TRIB_TEST_IMAPS_PORT"]), ("tls", "implicit"),
            ("ca_file", ENV["TRIB_TEST_CA"]), ("login", REMOTE_USER),
            ("auth", "password_file"), ("password_file", PASSWORD_FILE)]
    # passwd-file expands %-variables in extra fields: % is written %%
    items = [("accounts", account)] + [
        ("%s_%s" % (account, k), str(v).replace("%", "%%"))
        for k, v in base + list(fields.items())]
    lines.append("%s:::::::%s" % (user, " ".join(
        "userdb_tributary_%s=%s" % kv for kv in items)))
    path = os.path.join(tmpdir, "accounts")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    harness("accounts", DIR, path)


def message_id(data):
    m = re.search(rb"^Message-ID:[ \t]*(\S+)",
                  re.split(rb"\r?\n\r?\n", data, 1)[0], re.I | re.M)
    return m.group(1).decode() if m else None


def maildir_messages(root):
    """The bytes of every message in a maildir tree (new and cur of every
    folder)."""
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) not in ("new", "cur"):
            continue
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                yield fh.read()


def local_ids(root):
    """Message-ID -> how many copies the maildir tree holds."""
    out = {}
    for data in maildir_messages(root):
        mid = message_id(data)
        out[mid] = out.get(mid, 0) + 1
    return out


def remote_ids(folder, fields="hdr.message-id"):
    """doveadm fetch of the remote alice's folder: one list of
    tab-separated field values per message."""
    out = subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"],
                          "-f", "tab", "fetch", "-u", REMOTE_USER, fields,
                          "mailbox", folder, "all"],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()[1:]]


def summary(out, name):
    """(new, delivered, rejected, deferred) of the user/account line."""
    m = re.search(r"%s: (\d+) new, (\d+) delivered, (\d+) rejected, "
                  r"(\d+) deferred" % re.escape(name), out)
    if m is None:
        raise AssertionError("no summary line for %s in: %r" % (name, out))
    return tuple(int(x) for x in m.groups())


def crash_points():
    """Whether this build has crash points (configure
    --enable-crash-points)."""
    with open(os.path.join(BUILDDIR, "tributary-config.h")) as f:
        return re.search(r"^#define TRIB_CRASH_POINTS 1", f.read(),
                         re.M) is not None


def main(name):
    """Run the unittest classes of __main__ and print the count line
    scripts/test.sh adds up."""
    import unittest
    if os.geteuid() != 0:
        print("%s: needs root" % name)
        sys.exit(1)
    result = unittest.main(module="__main__", verbosity=2, exit=False).result
    total = result.testsRun
    # a test counts once however many of its subtests failed
    failed = len({getattr(t, "test_case", t).id()
                  for t, _ in result.failures + result.errors})
    print("%s: %d passed, %d failed" % (name, total - failed, failed))
    sys.exit(0 if result.wasSuccessful() else 1)
