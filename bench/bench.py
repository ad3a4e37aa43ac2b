#!/usr/bin/env python3
"""`make bench`: Tributary against the raw limits, fetchmail and getmail6.

Runs under tests/harness/with-servers.sh (the bench target does that): the
harness's remote Dovecot (IMAP over TLS, test CA) and local Dovecot (LMTP,
Sieve) are up, their variables are in the environment, and every server
process is stopped by PID when this script ends or fails.

Phases (each can be left out with BENCH_PARTS):
  full      BENCH_MESSAGES messages (about 10 KiB, a few of 20-80 KB) in the
            remote INBOX, fetched over TLS into the local LMTP with a Sieve
            script that files by List-Id; every tool BENCH_ROUNDS times,
            round-robin, local mailbox and delivered state emptied before
            each run; medians, and ratios to fetchmail.
  rss       Tributary's peak RSS for one BENCH_BIG_MB MB message and for
            BENCH_TINY_COUNT messages of 1 KB.
  nochange  the no-change re-run (nothing new) of Tributary and fetchmail
            at BENCH_NOCHANGE_SMALL and BENCH_NOCHANGE_LARGE messages.

Prints a table and one line per target (reached or not; a missed target
does not fail the run), and writes the same to BENCH_OUTDIR/results-*.txt.
See bench/README.md. Python 3 stdlib only; the raw clients are C."""

import datetime
import glob
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests", "harness"))
import harness  # noqa: E402  (the harness's IMAP client, Layout, pids)

ENV = os.environ
MAIL_UID = 65534
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

REMOTE_USER = "alice@example.com"
INBOX = "INBOX"
BIG_FOLDER = "Big"
TINY_FOLDER = "Tiny"
NC_SMALL_FOLDER = "NC-small"
NC_LARGE_FOLDER = "NC-large"
BASE_DATE = datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)

SIEVE = """\
# make bench: files by a header (List-Id), as a user's filter would.
require ["fileinto"];
if header :contains "List-Id" "bench-a.lists.example" {
  fileinto "Lists/A";
  stop;
}
if header :contains "List-Id" "bench-b.lists.example" {
  fileinto "Lists/B";
  stop;
}
"""

# Targets of the issue.
TARGET_WALL_RATIO = 0.35
TARGET_RSS_MIB = 10.0
TARGET_RSS_FLAT_MIB = 1.0      # 50 MB message vs 1 KB messages
TARGET_NC_FLAT_RATIO = 1.5     # no-change at LARGE vs at SMALL


# --------------------------------------------------------------------------
# Settings


def env_int(name, default):
    v = ENV.get(name, "")
    if v == "":
        return default
    try:
        return int(v)
    except ValueError:
        sys.exit("bench: %s=%r is not a number" % (name, v))


def env_list(name, default):
    v = ENV.get(name, "")
    return [x.strip() for x in v.split(",") if x.strip()] if v else default


QUICK = ENV.get("BENCH_QUICK", "") not in ("", "0", "no")
MESSAGES = env_int("BENCH_MESSAGES", 500 if QUICK else 10000)
ROUNDS = env_int("BENCH_ROUNDS", 1 if QUICK else 3)
LARGE_EVERY = env_int("BENCH_LARGE_EVERY", 50)     # 1 in 50: 20-80 KB
NC_SMALL = env_int("BENCH_NOCHANGE_SMALL", 100)
NC_LARGE = env_int("BENCH_NOCHANGE_LARGE", 2000 if QUICK else 100000)
NC_RUNS = env_int("BENCH_NOCHANGE_RUNS", 1 if QUICK else 5)
BIG_MB = env_int("BENCH_BIG_MB", 50)
TINY_COUNT = env_int("BENCH_TINY_COUNT", 200 if QUICK else 1000)
LMTP_WINDOW = env_int("BENCH_LMTP_WINDOW", 32)
RUN_TIMEOUT = env_int("BENCH_TIMEOUT", 3600)
SETTLE = float(ENV.get("BENCH_SETTLE", "0.5"))
ALL_TOOLS = ["raw-imap", "raw-lmtp-1", "raw-lmtp-4", "fetchmail", "getmail",
             "tributary"]
# Opt-in row (BENCH_TOOLS): Tributary with the LMTP plugin's delivered
# record on tmpfs, for local user bob: what the record's fdatasync costs.
OPT_TOOLS = ["tributary-tmpfs"]
TMPFS_RECORD = "/dev/shm/tributary-bench-bob.delivered"
TOOLS = env_list("BENCH_TOOLS", ALL_TOOLS)
PARTS = env_list("BENCH_PARTS", ["full", "rss", "nochange"])
APT = ENV.get("BENCH_APT", "1") not in ("0", "no")

TRIBUTARY = ENV.get("BENCH_TRIBUTARY") or os.path.join(TOP, "fetcher",
                                                       "tributary")
BINDIR = ENV.get("BENCH_BINDIR") or HERE
OUTDIR = ENV.get("BENCH_OUTDIR") or HERE

LABELS = {
    "raw-imap": "raw IMAP: 1 UID FETCH 1:* BODY.PEEK[] (C)",
    "raw-lmtp-1": "raw LMTP: 1 pipelined session (C)",
    "raw-lmtp-4": "raw LMTP: 4 sessions in parallel (C)",
    "fetchmail": "fetchmail",
    "getmail": "getmail6",
    "tributary": "tributary sync",
    "tributary-tmpfs": "tributary sync, record on tmpfs",
}


# --------------------------------------------------------------------------
# Output: everything printed also goes to the results file.


class Report:
    def __init__(self):
        self.lines = []

    def out(self, text=""):
        print(text, flush=True)
        self.lines.extend(text.split("\n"))

    def note(self, text):
        """Progress: printed, kept in the file's log section."""
        print("bench: " + text, flush=True)


REPORT = Report()
LOG = []


def progress(text):
    LOG.append(time.strftime("%H:%M:%S ") + text)
    REPORT.note(text)


# --------------------------------------------------------------------------
# Environment, servers


class HarnessGone(Exception):
    pass


class Bench:
    def __init__(self):
        for key in ("TRIB_TEST_DIR", "TRIB_TEST_LOCAL_CONF",
                    "TRIB_TEST_IMAPS_PORT"):
            if key not in ENV:
                sys.exit("bench: %s not set: run under "
                         "tests/harness/with-servers.sh (make bench)" % key)
        self.L = harness.Layout(ENV["TRIB_TEST_DIR"])
        self.dir = ENV["TRIB_TEST_DIR"]
        self.host = ENV["TRIB_TEST_HOST"]
        self.port = int(ENV["TRIB_TEST_IMAPS_PORT"])
        self.ca = ENV["TRIB_TEST_CA"]
        self.conf = ENV["TRIB_TEST_LOCAL_CONF"]
        self.lmtp = ENV["TRIB_TEST_LOCAL_LMTP_SOCKET"]
        self.state_dir = ENV["TRIB_TEST_LOCAL_STATE_DIR"]
        self.password = "alice-app-password"
        self.password_file = self.L.alice_home_pw
        with open(self.password_file) as f:
            self.password = f.readline().strip()
        self.work = os.path.join(self.dir, "bench")
        os.makedirs(self.work, exist_ok=True)
        with open(self.L.pids) as f:
            self.pids_text = f.read()
        self.masters = {}
        for name, pid, _ in harness.read_pids(self.L):
            if name == "dovecot":
                self.masters["remote"] = pid
            elif name == "dovecot-local":
                self.masters["local"] = pid
        self.remote_maildir = os.path.join(self.L.home, REMOTE_USER,
                                           "Maildir")
        self.versions = {}
        self.seeded = {}
        self.fetchmail_dirty = True

    # ---- the harness dir must stay

    def check_alive(self):
        """Someone removing the harness dir mid-run (a clean-up of temp
        dirs) leaves the servers running with their files gone: stop the
        bench, and put DIR/pids back so the harness's stop (by PID and
        start time) still stops them."""
        if os.path.exists(self.L.env_json):
            return
        try:
            os.makedirs(self.dir, exist_ok=True)
            with open(self.L.pids, "w") as f:
                f.write(self.pids_text)
        except OSError:
            pass
        raise HarnessGone("the harness dir %s was removed under the bench"
                          % self.dir)

    # ---- server CPU from /proc

    def server_cpu(self):
        """CPU seconds of each Dovecot instance: every process in the
        master's session (utime+stime, plus cutime+cstime, which holds the
        processes that exited and were reaped: the master reaps them)."""
        totals = {k: 0 for k in self.masters}
        by_sid = {pid: k for k, pid in self.masters.items()}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    data = f.read()
            except OSError:
                continue
            rest = data[data.rindex(")") + 2:].split()
            key = by_sid.get(int(rest[3]))
            if key is not None:
                totals[key] += sum(int(x) for x in rest[11:15])
        return {k: v / CLK_TCK for k, v in totals.items()}

    # ---- remote admin over IMAP (the harness's client)

    def imap(self):
        c = harness.Imap(self.host, self.port, self.ca, timeout=600)
        c.login_plain(REMOTE_USER, self.password)
        return c

    def clear_seen(self, folder):
        with self.imap() as c:
            c.ok("SELECT %s" % harness.quote(folder))
            c.ok("STORE 1:* -FLAGS.SILENT (\\Seen)")
            c.ok("CLOSE")

    def folder_files(self, folder):
        """The remote's message files of a folder (LAYOUT=fs: INBOX at the
        top of the maildir). Names change with flags: call right before
        use."""
        root = self.remote_maildir if folder == INBOX else \
            os.path.join(self.remote_maildir, folder)
        out = []
        for sub in ("cur", "new"):
            d = os.path.join(root, sub)
            if os.path.isdir(d):
                out.extend(os.path.join(d, f) for f in os.listdir(d))
        return sorted(out)

    # ---- local side

    def local_home(self, user):
        return os.path.join(self.L.local_home, user)

    def install_sieve(self, user):
        home = self.local_home(user)
        sdir = os.path.join(home, "sieve")
        os.makedirs(sdir, exist_ok=True)
        path = os.path.join(sdir, "bench.sieve")
        with open(path, "w") as f:
            f.write(SIEVE)
        link = os.path.join(home, ".dovecot.sieve")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("sieve/bench.sieve", link)
        for p in (sdir, path):
            os.chown(p, MAIL_UID, MAIL_UID)
        os.lchown(link, MAIL_UID, MAIL_UID)

    def reset_local(self, user):
        """Empty the user's local mailbox and every delivered state:
        Tributary's state dir for the user, ~/.tributary.delivered (the
        exactly-once plugin's record, when there is one), fetchmail's and
        getmail's own records."""
        home = self.local_home(user)
        shutil.rmtree(os.path.join(home, "Maildir"), ignore_errors=True)
        for name in os.listdir(home):
            if name.startswith(".tributary.delivered"):
                path = os.path.join(home, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        shutil.rmtree(os.path.join(self.state_dir, user), ignore_errors=True)
        if user == "bob":
            for path in glob.glob(TMPFS_RECORD + "*"):
                os.unlink(path)
        fm = os.path.join(self.work, "fetchmail")
        for name in (".fetchids", ".fetchmail.pid"):
            try:
                os.unlink(os.path.join(fm, name))
            except FileNotFoundError:
                pass
        gm = os.path.join(self.work, "getmail")
        if os.path.isdir(gm):
            for name in os.listdir(gm):
                if name.startswith("oldmail-"):
                    os.unlink(os.path.join(gm, name))

    def local_count(self, user):
        """Messages in the user's local mailbox, per folder."""
        root = os.path.join(self.local_home(user), "Maildir")
        counts = {}
        for dirpath, dirs, files in os.walk(root):
            base = os.path.basename(dirpath)
            if base not in ("new", "cur"):
                continue
            folder = os.path.relpath(os.path.dirname(dirpath), root)
            folder = "INBOX" if folder == "." else \
                folder.lstrip(".").replace(".", "/")
            counts[folder] = counts.get(folder, 0) + len(files)
        return counts


# --------------------------------------------------------------------------
# Workload


def bench_message(kind, i, size, list_id=None):
    """A deterministic message of exactly `size` bytes (CRLF)."""
    date = BASE_DATE + datetime.timedelta(minutes=i)
    head = ("From: Sender %d <sender%d@remote.example>\r\n"
            "To: Alice <alice@example.com>\r\n"
            "Subject: Bench %s message %d\r\n"
            "Date: %s\r\n"
            "Message-ID: <bench.%s.%07d@tributary.test>\r\n"
            % (i % 97, i % 97, kind, i,
               date.strftime("%a, %d %b %Y %H:%M:%S +0000"), kind, i))
    if list_id:
        head += "List-Id: Bench list <%s>\r\n" % list_id
    head += ("MIME-Version: 1.0\r\n"
             "Content-Type: text/plain; charset=us-ascii\r\n\r\n")
    data = head.encode()
    need = size - len(data)
    if need <= 0:
        return data, date
    line = ("%s message %d, a line of filler text to make up the size. "
            % (kind, i)).encode()
    line = (line * 2)[:76] + b"\r\n"
    n, rest = divmod(need, len(line))
    body = line * n
    if rest >= 2:
        body += b"x" * (rest - 2) + b"\r\n"
    elif rest == 1:     # one byte over: the last line one longer
        body = body[:-len(line)] + line[:-2] + b"x\r\n" if n else b"x"
    return data + body, date


def workload_sizes(count):
    rng = random.Random(20240601)
    sizes = []
    for i in range(1, count + 1):
        if LARGE_EVERY > 0 and i % LARGE_EVERY == 0:
            sizes.append(rng.randint(20000, 80000))
        else:
            sizes.append(rng.randint(9216, 11264))   # 9-11 KiB
    return sizes


def list_id(i):
    return {0: "bench-a.lists.example",
            1: "bench-b.lists.example"}.get(i % 4)


def seed_folder(b, folder, count, sizes=None, size=1024, flags="",
                kind=None, batch_max=1000, lists=True):
    """MULTIAPPEND `count` messages, 1000 or 8 MB a command."""
    kind = kind or folder.lower()
    t0 = time.monotonic()
    total = 0
    with b.imap() as c:
        if c.status(folder) is None:
            c.ok("CREATE %s" % harness.quote(folder))
        batch, batch_bytes = [], 0
        for i in range(1, count + 1):
            sz = sizes[i - 1] if sizes else size
            data, date = bench_message(kind, i, sz,
                                       list_id(i) if lists else None)
            batch.append((data, flags, date))
            batch_bytes += len(data)
            total += len(data)
            if len(batch) >= batch_max or batch_bytes >= 8 << 20:
                c.append(folder, batch)
                batch, batch_bytes = [], 0
        if batch:
            c.append(folder, batch)
        st = c.status(folder)
    dt = time.monotonic() - t0
    if st["MESSAGES"] != count:
        raise RuntimeError("%s: %d messages after seeding, expected %d"
                           % (folder, st["MESSAGES"], count))
    b.seeded[folder] = {"count": count, "bytes": total,
                        "seconds": round(dt, 2)}
    progress("seeded %s: %d messages, %.1f MB in %.1f s"
             % (folder, count, total / 1e6, dt))
    return total


def empty_remote_inbox(b):
    """The fixture's 3 messages out, so INBOX holds the workload only."""
    with b.imap() as c:
        c.ok("SELECT INBOX")
        c.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)")
        c.ok("EXPUNGE")
        c.ok("CLOSE")


# --------------------------------------------------------------------------
# Tools' configuration


def tributary_accounts(b):
    """alice: home (INBOX), big, tiny; bob: ncsmall; carol: nclarge. One
    local user per no-change size, so each has only its own state."""
    def acct(name, folder):
        return [
            ("%s_provider" % name, "imap"),
            ("%s_host" % name, b.host),
            ("%s_port" % name, b.port),
            ("%s_tls" % name, "implicit"),
            ("%s_ca_file" % name, b.ca),
            ("%s_login" % name, REMOTE_USER),
            ("%s_auth" % name, "password_file"),
            ("%s_password_file" % name, b.password_file),
            ("%s_folders" % name, folder),
        ]

    def line(user, accounts):
        fields = [("accounts", ",".join(a for a, _ in accounts))]
        for a, folder in accounts:
            fields += acct(a, folder)
        return "%s:::::::%s\n" % (user, " ".join(
            "userdb_tributary_%s=%s" % kv for kv in fields))
    bob = line("bob", [("ncsmall", NC_SMALL_FOLDER), ("home", INBOX)])
    if "tributary-tmpfs" in TOOLS:
        bob = bob.rstrip("\n") + \
            " userdb_tributary_delivered_path=%s\n" % TMPFS_RECORD
    return ("# make bench: Tributary accounts (generated by bench.py)\n"
            + line("alice", [("home", INBOX), ("big", BIG_FOLDER),
                             ("tiny", TINY_FOLDER)])
            + bob
            + line("carol", [("nclarge", NC_LARGE_FOLDER)]))


def fetchmail_rc(b, folder, user):
    """fetchmail: IMAP over TLS verified against the test CA (the name it
    checks is `localhost`, which the certificate carries: fetchmail does
    not match IP addresses in subjectAltName), password login, keep mail
    on the server, deliver over LMTP to the local Dovecot's socket."""
    d = os.path.join(b.work, "fetchmail")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "rc-%s" % folder)
    with open(path, "w") as f:
        f.write('set no syslog\n'
                'poll localhost via %s proto imap port %d auth password\n'
                '  user "%s" there with password "%s" is "%s" here\n'
                '  folder "%s"\n'
                '  keep\n'
                '  ssl sslcertck sslcommonname "localhost" sslcertfile "%s"\n'
                '  smtphost "%s" lmtp smtpname "%s"\n'
                % (b.host, b.port, REMOTE_USER, b.password, user, folder,
                   b.ca, b.lmtp, user))
    os.chmod(path, 0o600)
    return path


def getmail_rc(b, folder, user):
    """getmail6: SimpleIMAPSSLRetriever (ca_certs = the test CA, so the
    certificate and host name are verified), read_all = false and
    delete = false (its oldmail file remembers what it fetched), the
    MDA_lmtp destination on the local Dovecot's socket."""
    d = os.path.join(b.work, "getmail")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "rc-%s" % folder)
    with open(path, "w") as f:
        f.write("[retriever]\n"
                "type = SimpleIMAPSSLRetriever\n"
                "server = %s\nport = %d\n"
                "username = %s\npassword = %s\n"
                "mailboxes = (\"%s\",)\n"
                "ca_certs = %s\n\n"
                "[destination]\n"
                "type = MDA_lmtp\nhost = %s\noverride = %s\n\n"
                "[options]\nread_all = false\ndelete = false\n"
                "verbose = 0\n"
                % (b.host, b.port, REMOTE_USER, b.password, folder, b.ca,
                   b.lmtp, user))
    os.chmod(path, 0o600)
    return path


def ensure_packages():
    """fetchmail and getmail6 from Debian, installed when missing."""
    missing = [p for p, exe in (("fetchmail", "fetchmail"),
                                ("getmail6", "getmail"))
               if shutil.which(exe) is None]
    if missing and APT and shutil.which("apt-get"):
        progress("installing %s with apt-get" % " ".join(missing))
        env = dict(ENV, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-q"] + missing
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True)
            r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
        if r.returncode != 0:
            progress("apt-get failed: %s" % r.stderr.strip()[-300:])
    have = {"fetchmail": shutil.which("fetchmail") is not None,
            "getmail": shutil.which("getmail") is not None}
    return have


def tool_versions(b):
    v = {}
    r = subprocess.run(["fetchmail", "--version"], capture_output=True,
                       text=True, env=dict(ENV, FETCHMAILHOME=b.work)) \
        if shutil.which("fetchmail") else None
    if r is not None:
        m = re.search(r"fetchmail release (\S+)", r.stdout + r.stderr)
        v["fetchmail"] = m.group(1).split("+")[0] if m else "?"
    if shutil.which("getmail"):
        r = subprocess.run(["getmail", "--version"], capture_output=True,
                           text=True)
        v["getmail"] = (r.stdout + r.stderr).strip().split()[-1]
    r = subprocess.run([TRIBUTARY, "--version"], capture_output=True,
                       text=True)
    v["tributary"] = (r.stdout + r.stderr).strip().split("\n")[0]
    r = subprocess.run(["dovecot", "--version"], capture_output=True,
                       text=True)
    v["dovecot"] = r.stdout.strip()
    return v


# --------------------------------------------------------------------------
# Running one measured command


class Run:
    def __init__(self, tool, phase, rnd):
        self.tool, self.phase, self.round = tool, phase, rnd
        self.wall = self.cpu = self.rss_kb = None
        self.srv = {}
        self.exit = None
        self.ok = False
        self.delivered = None
        self.expected = None
        self.note = ""

    @property
    def srv_total(self):
        return sum(self.srv.values()) if self.srv else None

    def as_dict(self):
        return {"tool": self.tool, "phase": self.phase, "round": self.round,
                "wall_s": self.wall, "client_cpu_s": self.cpu,
                "peak_rss_kb": self.rss_kb, "server_cpu_s": self.srv,
                "exit": self.exit, "ok": self.ok,
                "delivered": self.delivered, "expected": self.expected,
                "folders": getattr(self, "folders", None), "note": self.note}


def measure(b, run, argv, env=None, cwd=None):
    """Run argv through bench-spawn (a small C program: forked from this
    Python process, a child would report Python's RSS as its peak, see
    bench-spawn.c): wall time and the child's rusage (user+sys CPU, peak
    RSS, descendants included), and the CPU the two Dovecots spent, from
    /proc, before and after (after a short settle)."""
    tag = "%s-%s-%s" % (run.phase, run.tool, run.round)
    out_path = os.path.join(b.work, "logs", tag + ".out")
    res_path = os.path.join(b.work, "logs", tag + ".json")
    b.check_alive()
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    time.sleep(SETTLE)
    before = b.server_cpu()
    timed_out = []

    def kill_group():
        timed_out.append(True)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    with open(out_path, "wb") as out:
        p = subprocess.Popen([os.path.join(BINDIR, "bench-spawn"),
                              res_path] + argv,
                             stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             start_new_session=True)
        timer = threading.Timer(RUN_TIMEOUT, kill_group)
        timer.start()
        try:
            p.wait()
        finally:
            timer.cancel()
    time.sleep(SETTLE)
    after = b.server_cpu()
    with open(out_path, "rb") as f:
        run.output = f.read().decode(errors="replace")
    try:
        with open(res_path) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = None
    if p.returncode != 0 or res is None:
        run.note = "bench-spawn failed (%s): %s" % (
            "timed out after %d s" % RUN_TIMEOUT if timed_out
            else "exit %s" % p.returncode, run.output.strip()[-200:])
        run.wall = run.cpu = 0.0
        run.rss_kb = 0
        run.srv = {k: 0.0 for k in after}
        return run
    run.wall = res["wall_s"]
    run.cpu = res["user_s"] + res["sys_s"]
    run.rss_kb = res["maxrss_kb"]
    run.srv = {k: after[k] - before.get(k, 0) for k in after}
    run.exit = res["exit"]
    return run


def tool_command(b, tool, folder, user, account):
    """(argv, env, cwd) of one tool fetching `folder` for local `user`."""
    if tool == "raw-imap":
        return ([os.path.join(BINDIR, "bench-imap-fetch"),
                 "--host", b.host, "--port", str(b.port), "--ca-file", b.ca,
                 "--user", REMOTE_USER, "--password-file", b.password_file,
                 "--mailbox", folder], None, None)
    if tool.startswith("raw-lmtp-"):
        lst = os.path.join(b.work, "files-%s.list" % folder)
        with open(lst, "w") as f:
            f.write("\n".join(b.folder_files(folder)) + "\n")
        return ([os.path.join(BINDIR, "bench-lmtp-deliver"),
                 "--socket", b.lmtp, "--rcpt", user, "--list", lst,
                 "--sessions", tool.rsplit("-", 1)[1],
                 "--window", str(LMTP_WINDOW)], None, None)
    if tool == "fetchmail":
        d = os.path.join(b.work, "fetchmail")
        return (["fetchmail", "--silent", "--nosyslog", "-f",
                 fetchmail_rc(b, folder, user)],
                dict(ENV, FETCHMAILHOME=d), d)
    if tool == "getmail":
        d = os.path.join(b.work, "getmail")
        return (["getmail", "--getmaildir", d, "--rcfile",
                 getmail_rc(b, folder, user)], None, d)
    if tool == "tributary":
        return ([TRIBUTARY, "sync", "-c", b.conf, "-u", user, account],
                None, None)
    if tool == "tributary-tmpfs":     # bob's record is on tmpfs
        return ([TRIBUTARY, "sync", "-c", b.conf, "-u", "bob", account],
                None, None)
    raise ValueError(tool)


def check_run(b, run, user, expected):
    """Did the run do the whole job? Exit status and the local count."""
    run.expected = expected
    ok_exits = (0, 1) if run.tool == "fetchmail" else (0,)  # 1: no mail
    if run.tool == "raw-imap":
        try:
            got = json.loads(run.output.strip().splitlines()[-1])
            run.delivered = got["messages"]
        except (ValueError, IndexError, KeyError):
            run.delivered = None
    else:
        counts = b.local_count(user)
        run.delivered = sum(counts.values())
        run.folders = counts
    run.ok = run.exit in ok_exits and run.delivered == expected and \
        not run.note
    if not run.ok and not run.note:
        run.note = "exit %s, %s of %d" % (run.exit, run.delivered, expected)
    if run.tool == "fetchmail":
        b.fetchmail_dirty = True


# --------------------------------------------------------------------------
# Phases


def phase_full(b, have, runs):
    """Appends to runs as it goes (kept if the bench stops midway)."""
    tools = [t for t in TOOLS if t in ALL_TOOLS + OPT_TOOLS and
             (t not in ("fetchmail", "getmail") or have.get(t))]
    for rnd in range(1, ROUNDS + 1):
        k = (rnd - 1) % len(tools)
        order = tools[k:] + tools[:k]     # rotate: no tool always first
        for tool in order:
            user = "bob" if tool == "tributary-tmpfs" else "alice"
            b.reset_local(user)
            if b.fetchmail_dirty:
                b.clear_seen(INBOX)
                b.fetchmail_dirty = False
            run = Run(tool, "full", rnd)
            argv, env, cwd = tool_command(b, tool, INBOX, user, "home")
            measure(b, run, argv, env, cwd)
            check_run(b, run, user, MESSAGES)
            runs.append(run)
            progress("round %d/%d %-10s %7.2f s wall, %6.2f s CPU, "
                     "%6.1f MiB RSS, server %6.2f s%s"
                     % (rnd, ROUNDS, tool, run.wall, run.cpu,
                        run.rss_kb / 1024, run.srv_total,
                        "" if run.ok else "  FAILED: " + run.note))
            if tool == "tributary" and rnd == 1:
                b.sieve_folders = getattr(run, "folders", {})
    b.reset_local("alice")
    b.reset_local("bob")
    return runs


def phase_rss(b, runs):
    for rnd in range(1, ROUNDS + 1):
        for account, folder, n in (("big", BIG_FOLDER, 1),
                                   ("tiny", TINY_FOLDER, TINY_COUNT)):
            b.reset_local("alice")
            run = Run("tributary", "rss-" + account, rnd)
            argv, env, cwd = tool_command(b, "tributary", folder, "alice",
                                          account)
            measure(b, run, argv, env, cwd)
            check_run(b, run, "alice", n)
            runs.append(run)
            progress("rss %-4s round %d: %.2f s, peak RSS %.1f MiB%s"
                     % (account, rnd, run.wall, run.rss_kb / 1024,
                        "" if run.ok else "  FAILED: " + run.note))
    b.reset_local("alice")
    return runs


def phase_nochange(b, have, runs):
    sizes = [("small", NC_SMALL_FOLDER, "bob", "ncsmall", NC_SMALL),
             ("large", NC_LARGE_FOLDER, "carol", "nclarge", NC_LARGE)]
    # Tributary's first pass makes its state (and delivers everything);
    # fetchmail's state is the \Seen flag the folders were seeded with.
    base = {}
    for label, folder, user, account, n in sizes:
        b.reset_local(user)
        run = Run("tributary", "first-" + label, 1)
        argv, env, cwd = tool_command(b, "tributary", folder, user, account)
        measure(b, run, argv, env, cwd)
        check_run(b, run, user, n)
        base[user] = run.delivered
        runs.append(run)
        progress("no-change setup: tributary first pass of %d messages: "
                 "%.1f s, %.1f MiB%s" % (n, run.wall, run.rss_kb / 1024,
                                         "" if run.ok else
                                         "  FAILED: " + run.note))
    tools = ["tributary"] + (["fetchmail"] if have.get("fetchmail") and
                             "fetchmail" in TOOLS else [])
    combos = [(t, s) for t in tools for s in sizes]
    for rnd in range(1, NC_RUNS + 1):
        k = (rnd - 1) % len(combos)
        for tool, (label, folder, user, account, n) in \
                combos[k:] + combos[:k]:
            run = Run(tool, "nochange-" + label, rnd)
            argv, env, cwd = tool_command(b, tool, folder, user, account)
            measure(b, run, argv, env, cwd)
            # nothing new: the mailbox holds what the first pass put there
            check_run(b, run, user, base[user])
            if tool == "tributary" and run.ok and \
                    not re.search(r": 0 new, 0 delivered", run.output):
                run.ok = False
                run.note = "not a no-change pass: " + run.output.strip()
            runs.append(run)
            progress("no-change %-5s %-9s round %d: %.3f s wall, %.3f s "
                     "CPU, server %.3f s%s"
                     % (label, tool, rnd, run.wall, run.cpu, run.srv_total,
                        "" if run.ok else "  FAILED: " + run.note))
    return runs


# --------------------------------------------------------------------------
# Figures


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    """Medians per tool over the good runs."""
    out = {}
    for tool in dict.fromkeys(r.tool for r in runs):
        good = [r for r in runs if r.tool == tool and r.ok]
        bad = [r for r in runs if r.tool == tool and not r.ok]
        s = {"n": len(good), "failed": len(bad),
             "notes": sorted(set(r.note for r in bad))}
        if good:
            s.update(wall=med([r.wall for r in good]),
                     cpu=med([r.cpu for r in good]),
                     rss=med([r.rss_kb for r in good]) / 1024,
                     rss_max=max(r.rss_kb for r in good) / 1024,
                     srv=med([r.srv_total for r in good]),
                     remote=med([r.srv.get("remote") for r in good]),
                     local=med([r.srv.get("local") for r in good]))
        out[tool] = s
    return out


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, spec="%.2f", none="-"):
    return none if v is None else spec % v


def fmt_ratio(v):
    return "-" if v is None else "%.2fx" % v


def full_table(summary):
    fm = summary.get("fetchmail", {})
    head = ("%-44s %8s %6s %8s %6s %8s %6s %8s %6s %15s" % (
        "full fetch (median)", "wall s", "x fm", "CPU s", "x fm",
        "RSS MiB", "x fm", "srv CPU", "x fm", "remote+local"))
    lines = [head, "-" * len(head)]
    for tool in ALL_TOOLS + OPT_TOOLS:
        s = summary.get(tool)
        if s is None:
            continue
        label = LABELS[tool]
        if tool == "tributary":
            label += " (4 LMTP sessions)"
        if len(label) > 44:
            label = label[:43] + "~"
        if not s["n"]:
            lines.append("%-44s FAILED: %s" % (label, "; ".join(s["notes"])))
            continue
        lines.append("%-44s %8.2f %6s %8.2f %6s %8.1f %6s %8.2f %6s %15s%s" % (
            label, s["wall"], fmt_ratio(ratio(s["wall"], fm.get("wall"))),
            s["cpu"], fmt_ratio(ratio(s["cpu"], fm.get("cpu"))),
            s["rss"], fmt_ratio(ratio(s["rss"], fm.get("rss"))),
            s["srv"], fmt_ratio(ratio(s["srv"], fm.get("srv"))),
            "%.2f+%.2f" % (s["remote"], s["local"]),
            "" if not s["failed"] else "  (%d failed run%s)" % (
                s["failed"], "s" if s["failed"] > 1 else "")))
    return lines


def mb_per_s(bytes_, secs):
    return bytes_ / 1e6 / secs if secs else 0


def report(b, have, full_runs, rss_runs, nc_runs, started, t_total):
    R = REPORT
    when = started.strftime("%Y-%m-%d %H:%M")
    seeded = b.seeded.get(INBOX, {})
    R.out("")
    R.out("Tributary benchmark, %s, %s, %d CPUs, load %s"
          % (when, platform.node(), os.cpu_count(), b.load_start))
    R.out("versions: tributary %s; fetchmail %s; getmail6 %s; Dovecot %s"
          % (b.versions.get("tributary", "?"),
             b.versions.get("fetchmail", "not installed"),
             b.versions.get("getmail", "not installed"),
             b.versions.get("dovecot", "?")))
    R.out("Auth: every tool logs in with PLAIN and the app password: "
          "Tributary supports only")
    R.out("  password_file accounts so far (OAuth/XOAUTH2 comes in a later "
          "issue). fetchmail and")
    R.out("  getmail6 send IMAP LOGIN (Dovecot logs it as method=PLAIN); "
          "Tributary and the raw")
    R.out("  client send AUTHENTICATE PLAIN. TLS verified against the "
          "harness's test CA by all.")
    if full_runs:
        sf = getattr(b, "sieve_folders", {})
        R.out("Workload: %d messages, %.1f MB (mean %.1f KB; 1 in %d is "
              "20-80 KB), remote INBOX over"
              % (MESSAGES, seeded.get("bytes", 0) / 1e6,
                 seeded.get("bytes", 0) / 1e3 / max(MESSAGES, 1),
                 LARGE_EVERY))
        R.out("  TLS into the local LMTP (unix socket) with Sieve filing by "
              "List-Id%s." % (
                  " (Tributary's run: %s)" % ", ".join(
                      "%s %d" % kv for kv in sorted(sf.items()))
                  if sf else ""))
        R.out("%d round%s, round-robin (order rotated each round); "
              "medians; x fm = ratio to fetchmail's median."
              % (ROUNDS, "" if ROUNDS == 1 else "s"))
        R.out("Local mailbox and delivered state (Tributary's state dir, "
              "~/.tributary.delivered,")
        R.out("  fetchmail's \\Seen flags, getmail's oldmail) emptied "
              "before every run.")
        R.out("Client CPU and peak RSS: wait4() of the child; server CPU: "
              "both Dovecots' processes")
        R.out("  from /proc (utime+stime+cutime+cstime of their sessions), "
              "before/after.")
        R.out("")
        summary = summarize(full_runs)
        for line in full_table(summary):
            R.out(line)
        R.out("wall s per round (in run order within a round):")
        for tool in ALL_TOOLS + OPT_TOOLS:
            walls = ["%.2f%s" % (r.wall, "" if r.ok else "!")
                     for r in full_runs if r.tool == tool]
            if walls:
                R.out("  %-15s %s" % (tool, " ".join(walls)))
        raw = summary.get("raw-imap", {})
        if raw.get("n"):
            R.out("raw IMAP: %.0f MB/s, %.0f messages/s over one TLS "
                  "connection" % (
                      mb_per_s(seeded.get("bytes", 0), raw["wall"]),
                      MESSAGES / raw["wall"]))
        for t in ("raw-lmtp-1", "raw-lmtp-4", "fetchmail", "getmail",
                  "tributary", "tributary-tmpfs"):
            s = summary.get(t, {})
            if s.get("n"):
                R.out("%-15s %6.0f messages/s" % (t, MESSAGES / s["wall"]))
    else:
        summary = {}

    rss = {}
    if rss_runs:
        R.out("")
        rs = summarize_by_phase(rss_runs)
        for phase, s in rs.items():
            rss[phase] = s
        big, tiny = rs.get("rss-big", {}), rs.get("rss-tiny", {})
        R.out("Tributary peak RSS (median of %d): one %d MB message %s "
              "MiB (%s s); %d messages of 1 KB %s MiB (%s s)"
              % (ROUNDS, BIG_MB, fmt(big.get("rss"), "%.1f"),
                 fmt(big.get("wall")), TINY_COUNT,
                 fmt(tiny.get("rss"), "%.1f"), fmt(tiny.get("wall"))))

    nc = {}
    if nc_runs:
        R.out("")
        first = {r.phase: r for r in nc_runs if r.phase.startswith("first")}
        for label, n in (("small", NC_SMALL), ("large", NC_LARGE)):
            r = first.get("first-" + label)
            if r:
                R.out("Tributary first pass of %d messages of 1 KB (makes "
                      "the state): %.2f s, %.1f MiB%s"
                      % (n, r.wall, r.rss_kb / 1024,
                         "" if r.ok else ", FAILED: " + r.note))
        head = "%-30s %10s %10s %10s %10s %10s" % (
            "no-change re-run (median)", "wall s", "x fm", "CPU s",
            "RSS MiB", "srv CPU")
        R.out(head)
        R.out("-" * len(head))
        for label, n in (("small", NC_SMALL), ("large", NC_LARGE)):
            runs = [r for r in nc_runs if r.phase == "nochange-" + label]
            s = summarize(runs)
            nc[label] = s
            fm = s.get("fetchmail", {})
            for tool in ("tributary", "fetchmail"):
                t = s.get(tool)
                if t is None:
                    continue
                name = "%s, %d msgs" % (tool, n)
                if not t["n"]:
                    R.out("%-30s FAILED: %s" % (name, "; ".join(t["notes"])))
                    continue
                R.out("%-30s %10.3f %10s %10.3f %10.1f %10.3f" % (
                    name, t["wall"], fmt_ratio(ratio(t["wall"],
                                                     fm.get("wall"))),
                    t["cpu"], t["rss"], t["srv"]))
        R.out("(%d runs each, round-robin; fetchmail's state is the \\Seen "
              "flag: the folders were seeded \\Seen)" % NC_RUNS)

    # ---- targets
    R.out("")
    targets(b, summary, rss, nc, full_runs, rss_runs, nc_runs)
    R.out("")
    R.out("bench: %.0f s in all" % t_total)


def summarize_by_phase(runs):
    out = {}
    for phase in dict.fromkeys(r.phase for r in runs):
        s = summarize([r for r in runs if r.phase == phase])
        out[phase] = next(iter(s.values()))
    return out


def verdict(ok):
    if ok is None:
        return "NOT MEASURED"
    return "REACHED" if ok else "NOT REACHED"


def targets(b, summary, rss, nc, full_runs, rss_runs, nc_runs):
    R = REPORT
    tr, fm = summary.get("tributary", {}), summary.get("fetchmail", {})
    have_full = bool(tr.get("n")) and bool(fm.get("n"))

    r = ratio(tr.get("wall"), fm.get("wall")) if have_full else None
    R.out("TARGET full fetch wall <= %.2fx fetchmail's: %s -- %s" % (
        TARGET_WALL_RATIO,
        "tributary %.2f s vs fetchmail %.2f s = %.2fx" % (
            tr["wall"], fm["wall"], r) if r is not None else
        "no figures", verdict(None if r is None else
                              r <= TARGET_WALL_RATIO)))

    r = ratio(tr.get("cpu"), fm.get("cpu")) if have_full else None
    R.out("TARGET client CPU <= fetchmail's: %s -- %s" % (
        "tributary %.2f s vs fetchmail %.2f s = %.2fx" % (
            tr["cpu"], fm["cpu"], r) if r is not None else "no figures",
        verdict(None if r is None else r <= 1.0)))

    parts, maxima, flat = [], [], None
    if tr.get("n"):
        parts.append("full fetch %.1f MiB (max %.1f)" % (tr["rss"],
                                                         tr["rss_max"]))
        maxima.append(tr["rss_max"])
    big, tiny = rss.get("rss-big", {}), rss.get("rss-tiny", {})
    if big.get("n") and tiny.get("n"):
        growth = big["rss"] - tiny["rss"]
        parts.append("one %d MB message %.1f MiB vs 1 KB messages %.1f MiB "
                     "(%+.1f MiB)" % (BIG_MB, big["rss"], tiny["rss"],
                                      growth))
        maxima += [big["rss_max"], tiny["rss_max"]]
        flat = growth <= TARGET_RSS_FLAT_MIB
    if not maxima:
        ok = None
    elif max(maxima) > TARGET_RSS_MIB or flat is False:
        ok = False
    else:
        ok = flat       # None: under the cap, flatness not measured
    R.out("TARGET peak RSS <= %.0f MiB and flat with message size "
          "(50 MB message within +%.0f MiB of 1 KB ones): %s -- %s" % (
              TARGET_RSS_MIB, TARGET_RSS_FLAT_MIB,
              "; ".join(parts) or "no figures", verdict(ok)))

    small, large = nc.get("small", {}), nc.get("large", {})
    ts, tl = small.get("tributary", {}), large.get("tributary", {})
    fs, fl = small.get("fetchmail", {}), large.get("fetchmail", {})
    if ts.get("n") and tl.get("n") and fs.get("n") and fl.get("n"):
        growth = tl["wall"] / ts["wall"]
        ok = ts["wall"] <= fs["wall"] and tl["wall"] <= fl["wall"] and \
            growth <= TARGET_NC_FLAT_RATIO
        text = ("%d msgs %.3f s vs fetchmail %.3f s; %d msgs %.3f s vs "
                "fetchmail %.3f s; tributary %d/%d = %.2fx (flat: <= %.1fx)"
                % (NC_SMALL, ts["wall"], fs["wall"], NC_LARGE, tl["wall"],
                   fl["wall"], NC_LARGE, NC_SMALL, growth,
                   TARGET_NC_FLAT_RATIO))
    else:
        ok, text = None, "no figures"
    R.out("TARGET no-change re-run <= fetchmail's and flat with mailbox "
          "size: %s -- %s" % (text, verdict(ok)))


def write_results(b, all_runs, started):
    path = os.path.join(OUTDIR, "results-%s.txt"
                        % started.strftime("%Y-%m-%d-%H%M%S"))
    with open(path, "w") as f:
        f.write("\n".join(REPORT.lines).strip("\n") + "\n\n")
        f.write("# settings\n")
        for k in sorted(ENV):
            if k.startswith("BENCH_"):
                f.write("%s=%s\n" % (k, ENV[k]))
        f.write("messages=%d rounds=%d nochange=%d/%d x%d big=%dMB tiny=%d "
                "lmtp_window=%d\n" % (MESSAGES, ROUNDS, NC_SMALL, NC_LARGE,
                                      NC_RUNS, BIG_MB, TINY_COUNT,
                                      LMTP_WINDOW))
        f.write("seeding: %s\n" % json.dumps(b.seeded))
        f.write("load at start %s, at end %s\n"
                % (b.load_start, read_load()))
        f.write("\n# every run (JSON lines)\n")
        for r in all_runs:
            f.write(json.dumps(r.as_dict()) + "\n")
        f.write("\n# progress log\n")
        f.write("\n".join(LOG) + "\n")
    return path


def read_load():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------


def main():
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the harness's Dovecots and the "
                 "Tributary CLI need it)")
    for exe in (TRIBUTARY, os.path.join(BINDIR, "bench-imap-fetch"),
                os.path.join(BINDIR, "bench-lmtp-deliver"),
                os.path.join(BINDIR, "bench-spawn")):
        if not os.access(exe, os.X_OK):
            sys.exit("bench: %s not built (make bench builds it)" % exe)
    started = datetime.datetime.now()
    t_start = time.monotonic()
    b = Bench()
    b.load_start = read_load()
    progress("harness dir %s; %d messages, %d rounds%s"
             % (b.dir, MESSAGES, ROUNDS, " (quick mode)" if QUICK else ""))
    have = ensure_packages()
    b.versions = tool_versions(b)

    # Tributary: the trace key, the bench's accounts, Sieve for the users.
    r = subprocess.run([TRIBUTARY, "init", "-c", b.conf],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench: tributary init failed: %s" % (r.stdout + r.stderr))
    harness.install_accounts(b.L, tributary_accounts(b))
    for user in ("alice", "bob", "carol"):
        b.install_sieve(user)

    full_runs, rss_runs, nc_runs = [], [], []
    status = 0
    try:
        if "full" in PARTS:
            empty_remote_inbox(b)
            seed_folder(b, INBOX, MESSAGES, sizes=workload_sizes(MESSAGES),
                        kind="inbox", batch_max=500)
            phase_full(b, have, full_runs)
        if "rss" in PARTS:
            seed_folder(b, BIG_FOLDER, 1, size=BIG_MB * 1000 * 1000,
                        lists=False)
            seed_folder(b, TINY_FOLDER, TINY_COUNT, size=1024)
            phase_rss(b, rss_runs)
        if "nochange" in PARTS:
            seed_folder(b, NC_SMALL_FOLDER, NC_SMALL, size=1024,
                        flags="\\Seen")
            seed_folder(b, NC_LARGE_FOLDER, NC_LARGE, size=1024,
                        flags="\\Seen")
            phase_nochange(b, have, nc_runs)
    except KeyboardInterrupt:
        progress("interrupted: reporting what was measured")
    except HarnessGone as e:
        progress("%s: stopping, reporting what was measured" % e)
        status = 1
    report(b, have, full_runs, rss_runs, nc_runs, started,
           time.monotonic() - t_start)
    path = write_results(b, full_runs + rss_runs + nc_runs, started)
    print("bench: figures written to %s" % path)
    return status


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
