#!/usr/bin/env python3
"""Tributary integration-test harness: real Dovecots + an OAuth stand-in.

    harness.py start DIR      certs, OAuth stand-in, "remote" and "local"
                              Dovecot, env files
    harness.py stop DIR       stop everything DIR/pids lists (idempotent)
    harness.py seed DIR --user U --mailbox M --count N [--size BYTES]
    harness.py mint DIR --user U [--ttl S] [--scope S] [--json]
    harness.py expire DIR TOKEN
    harness.py revoke DIR TOKEN
    harness.py stats DIR
    harness.py reset DIR      zero the stand-in's introspection counters
    harness.py accounts DIR FILE|-|--fixture
                              replace the local Tributary accounts file so that
                              Dovecot's next lookup sees it

Python 3 stdlib, the openssl CLI and Dovecot's binaries only. See README.md.
"""

import argparse
import base64
import datetime
import grp
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "oauth_standin.py")

DOVECOT = shutil.which("dovecot", path="/usr/sbin:/usr/bin:/sbin:/bin:"
                       + os.environ.get("PATH", "")) or "/usr/sbin/dovecot"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

HOST = "127.0.0.1"            # valid cert: imaps + STARTTLS
PLAIN_HOST = "127.0.0.2"      # no TLS at all (local block: ssl = no)
WRONGHOST_HOST = "127.0.0.3"  # cert for DNS:wrong.example only
EXPIRED_HOST = "127.0.0.4"    # cert notAfter in the past
UNKNOWNCA_HOST = "127.0.0.5"  # cert from a CA the tests don't have
STRICT_HOST = "127.0.0.6"     # STARTTLS where auth before TLS is refused

MAIL_UID = 65534              # nobody: mail processes never run as root
MAIL_GID = 65534              # nogroup

USERS = [  # (user, app password)
    ("alice@example.com", "alice-app-password"),
    ("bob@example.com", "bob-app-password"),
]

OAUTH_CLIENT_ID = "dovecot-remote"
OAUTH_CLIENT_SECRET = "dovecot-remote-secret"

# Alice's mail at start: (mailbox, subject, flags); fixed dates.
FIXTURE = [
    ("INBOX", "Welcome to the remote", r"\Seen"),
    ("INBOX", "Second message", ""),
    ("INBOX", "Third message", r"\Flagged"),
    ("Archive", "Archived one", r"\Seen"),
    ("Archive", "Archived two", r"\Seen"),
    ("Sent", "Sent by alice", r"\Seen"),
]
FIXTURE_BASE_DATE = datetime.datetime(2024, 1, 2, 3, 4, 5,
                                      tzinfo=datetime.timezone.utc)
SEED_BASE_DATE = datetime.datetime(2024, 3, 1, 0, 0, 0,
                                   tzinfo=datetime.timezone.utc)

# The local Dovecot: the user's own server that Tributary delivers into.
LOCAL_USERS = ["alice", "bob", "carol"]
LOCAL_PASSWORD = "local-password"
TRIBUTARY_USER = "tributary"       # the daemon's system user (install-deps.sh)
TRACE_GROUP = "tributary-trace"    # may read the trace key (install-deps.sh)
TEST_GMAIL_CLIENT_ID = "test-gmail-client.apps.googleusercontent.com"
TEST_GMAIL_CLIENT_SECRET = "test-gmail-client-secret-value"
TEST_OUTLOOK_CLIENT_ID = "00000000-0000-4000-8000-0000000000aa"
REPO = os.path.dirname(os.path.dirname(HERE))
DROPIN = os.path.join(REPO, "conf.d", "90-tributary.conf")
# The example userdb in DROPIN names this file; the harness puts its own.
DROPIN_ACCOUNTS_PATH = "/etc/dovecot/tributary-accounts"
# The LMTP plugin the drop-in loads, from the build tree (top_builddir).
LMTP_PLUGIN = "lib95_tributary_lmtp_plugin.so"
SYSTEM_MODULES = "/usr/lib/dovecot/modules"

START_TIMEOUT = 30.0
PORT_RETRIES = 5


class HarnessError(Exception):
    pass


def log(msg):
    try:
        print("harness: " + msg, file=sys.stderr, flush=True)
    except OSError:     # stderr gone (closed pipe): never block cleanup
        pass


class Terminated(BaseException):
    pass


def _on_term(signum, frame):
    raise Terminated("signal %d" % signum)


# --------------------------------------------------------------------------
# Small utilities


def write_file(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def mkdir(path, mode=0o755, uid=None, gid=None):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, gid)


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except FileNotFoundError:
        return "(no %s yet)" % os.path.basename(path)
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


def proc_stat(pid):
    """(state, session id, start time) of pid, or None if it's gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    # comm may hold spaces and parens: split after the last ')'
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] = state (field 3), rest[3] = session (6), rest[19] = starttime (22)
    return rest[0], int(rest[3]), int(rest[19])


def alive(pid, starttime=None):
    st = proc_stat(pid)
    if st is None or st[0] == "Z":
        return False
    return starttime is None or st[2] == starttime


def session_members(sid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is not None and st[1] == sid and st[0] != "Z":
            out.append((int(name), st[2]))
    return out


def wait_gone(pids, timeout):
    """pids: [(pid, starttime)]. True if all gone within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(*p)]
        if not left:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill(pid, starttime, sig):
    if alive(pid, starttime):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def pick_ports(hosts):
    """One free port per host (distinct numbers), sockets held until all are
    chosen. Dovecot cannot bind port 0, so we choose; start retries on
    EADDRINUSE should someone grab one in between."""
    socks, ports = [], []
    try:
        for h in hosts:
            while True:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((h, 0))
                p = s.getsockname()[1]
                socks.append(s)
                if p not in ports:
                    ports.append(p)
                    break
    finally:
        for s in socks:
            s.close()
    return ports


def wait_port(host, port, deadline, what):
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise HarnessError("%s (%s:%d) does not accept connections: %s"
                                   % (what, host, port, e))
            time.sleep(0.05)


# --------------------------------------------------------------------------
# Layout


class Layout:
    def __init__(self, d):
        self.dir = os.path.abspath(d)
        j = lambda *p: os.path.join(self.dir, *p)
        self.ca_dir = j("ca")
        self.ca_pem = j("ca", "ca.pem")
        self.ca_key = j("ca", "ca.key")
        self.certs = j("certs")
        self.other_ca_dir = j("private", "otherca")   # NOT where tests look
        self.oauth_dir = j("oauth")
        self.oauth_log = j("oauth", "standin.log")
        self.oauth_port_file = j("oauth", "port")
        self.oauth_out = j("oauth", "standin.out")
        self.remote = j("remote")
        self.conf = j("remote", "dovecot.conf")
        self.oauth2_ext = j("remote", "dovecot-oauth2.conf.ext")
        self.users = j("remote", "users")
        self.run = j("remote", "run")
        self.state = j("remote", "state")
        self.home = j("remote", "home")
        self.remote_log = j("remote", "dovecot.log")
        self.start_err = j("remote", "dovecot-start.err")
        # the local Dovecot (the user's own server)
        self.local = j("local")
        self.local_conf = j("local", "dovecot.conf")
        self.local_users = j("local", "users")
        self.accounts = j("local", "tributary-accounts")
        self.local_run = j("local", "run")
        self.local_state = j("local", "state")
        self.local_home = j("local", "home")
        self.local_log = j("local", "dovecot.log")
        self.local_start_err = j("local", "dovecot-start.err")
        self.local_modules = j("local", "modules")
        self.trib_state = j("local", "tributary-state")
        self.trib_keys = j("local", "keys")
        self.trib_secrets = j("local", "secrets")
        self.alice_home_pw = j("local", "secrets", "alice-home.password")
        self.env_sh = j("env.sh")
        self.env_json = j("env.json")
        self.pids = j("pids")

    def cert(self, name):
        return (os.path.join(self.certs, name + ".pem"),
                os.path.join(self.certs, name + ".key"))


# --------------------------------------------------------------------------
# Certificates (openssl CLI)

OPENSSL_CNF = """\
# Generated by tests/harness/harness.py: test PKI only.
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder

[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[ srv_valid ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = IP:127.0.0.1,IP:%(strict_ip)s,DNS:localhost

[ srv_wronghost ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:wrong.example

[ srv_expired ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = IP:127.0.0.1,IP:%(expired_ip)s,DNS:localhost

[ srv_unknownca ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = IP:127.0.0.1,IP:%(unknownca_ip)s,DNS:localhost

# "openssl ca" is used only for the expired certificate: it is the OpenSSL
# 3.0 way to set a notBefore/notAfter in the past (x509 -not_before/-not_after
# only exist from 3.4 on).
[ ca ]
default_ca = testca
[ testca ]
dir = %(ca_dir)s
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
"""


def openssl(*args):
    r = subprocess.run([OPENSSL] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise HarnessError("openssl %s failed:\n%s" % (
            " ".join(args[:2]), r.stderr.decode(errors="replace")))
    return r.stdout


NEWKEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def make_certs(L):
    mkdir(L.ca_dir, 0o755)
    mkdir(L.certs, 0o755)
    mkdir(os.path.join(L.dir, "private"), 0o700)
    mkdir(L.other_ca_dir, 0o700)
    mkdir(os.path.join(L.ca_dir, "newcerts"), 0o700)
    cnf = os.path.join(L.ca_dir, "openssl.cnf")
    write_file(cnf, OPENSSL_CNF % {"ca_dir": L.ca_dir,
                                   "expired_ip": EXPIRED_HOST,
                                   "unknownca_ip": UNKNOWNCA_HOST,
                                   "strict_ip": STRICT_HOST})
    write_file(os.path.join(L.ca_dir, "index.txt"), "", 0o600)
    write_file(os.path.join(L.ca_dir, "serial"), "1000\n", 0o600)

    # The test CA, and the CA nobody trusts.
    openssl("req", "-config", cnf, "-x509", *NEWKEY, "-keyout", L.ca_key,
            "-out", L.ca_pem, "-days", "3650", "-subj",
            "/O=Tributary tests/CN=Tributary Test CA", "-extensions", "v3_ca")
    other_pem = os.path.join(L.other_ca_dir, "ca.pem")
    other_key = os.path.join(L.other_ca_dir, "ca.key")
    openssl("req", "-config", cnf, "-x509", *NEWKEY, "-keyout", other_key,
            "-out", other_pem, "-days", "3650", "-subj",
            "/O=Tributary tests/CN=Unknown Test CA", "-extensions", "v3_ca")

    def csr(name, cn):
        pem, key = L.cert(name)
        csr_path = os.path.join(L.certs, name + ".csr")
        openssl("req", "-config", cnf, "-new", *NEWKEY, "-keyout", key,
                "-out", csr_path, "-subj", "/O=Tributary tests/CN=" + cn)
        os.chmod(key, 0o600)
        return csr_path, pem

    for name, cn, ca_pem, ca_key, serial in (
            ("valid", "127.0.0.1", L.ca_pem, L.ca_key, "0x2001"),
            ("wronghost", "wrong.example", L.ca_pem, L.ca_key, "0x2002"),
            ("unknownca", "127.0.0.1", other_pem, other_key, "0x2003")):
        c, pem = csr(name, cn)
        openssl("x509", "-req", "-in", c, "-CA", ca_pem, "-CAkey", ca_key,
                "-set_serial", serial, "-days", "825", "-sha256",
                "-extfile", cnf, "-extensions", "srv_" + name, "-out", pem)
        os.chmod(pem, 0o644)

    c, pem = csr("expired", "127.0.0.1")
    openssl("ca", "-config", cnf, "-batch", "-notext", "-in", c, "-out", pem,
            "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
            "-extensions", "srv_expired")
    os.chmod(pem, 0o644)
    os.chmod(L.ca_pem, 0o644)
    os.chmod(L.ca_key, 0o600)


# --------------------------------------------------------------------------
# Dovecot configuration

DOVECOT_CONF = """\
# Remote Dovecot for Tributary's integration tests: stands in for a cloud
# provider (Gmail, Outlook, Yahoo). Generated by tests/harness/harness.py.
# Private instance: nothing is read from /etc/dovecot.
instance_name = %(instance)s
base_dir = %(run)s
state_dir = %(state)s
log_path = %(log)s
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = dovecot
default_login_user = dovenull

ssl = yes
ssl_cert = <%(valid_pem)s
ssl_key = <%(valid_key)s
ssl_min_protocol = TLSv1.2

# Like a real provider: no authentication before TLS. But Dovecot treats a
# connection whose remote IP equals its local IP (127.0.0.1 -> 127.0.0.1) as
# secure, so the 127.0.0.1 STARTTLS listener accepts auth before STARTTLS;
# the starttls_strict listener on 127.0.0.6 does not. See README.md.
disable_plaintext_auth = yes
auth_mechanisms = plain login xoauth2 oauthbearer
auth_verbose = yes
auth_cache_size = 0
# Fast negative tests: no failure delay (a ~0.5 s queue tick remains) and no
# per-IP auth penalty (anvil's penalty socket is not created).
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = %(oauth2_ext)s
}
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%%Lu %(users)s
}
userdb {
  driver = static
  args = uid=%(uid)d gid=%(gid)d home=%(home)s/%%Lu allow_all_users=yes
}

mail_location = maildir:~/Maildir:LAYOUT=fs
mail_fsync = never
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
}

service imap-login {
  inet_listener imap {
    address = %(host)s
    port = %(starttls_port)d
  }
  inet_listener imaps {
    address = %(host)s
    port = %(imaps_port)d
    ssl = yes
  }
  inet_listener starttls_strict {
    address = %(strict_host)s
    port = %(strict_port)d
  }
  inet_listener plain {
    address = %(plain_host)s
    port = %(plain_port)d
  }
  inet_listener wronghost {
    address = %(wronghost_host)s
    port = %(wronghost_port)d
    ssl = yes
  }
  inet_listener expired {
    address = %(expired_host)s
    port = %(expired_port)d
    ssl = yes
  }
  inet_listener unknownca {
    address = %(unknownca_host)s
    port = %(unknownca_port)d
    ssl = yes
  }
}

# Per-listener behaviour, chosen by the local IP the client connected to.
local %(plain_host)s {
  ssl = no
}
local %(wronghost_host)s {
  ssl_cert = <%(wronghost_pem)s
  ssl_key = <%(wronghost_key)s
}
local %(expired_host)s {
  ssl_cert = <%(expired_pem)s
  ssl_key = <%(expired_key)s
}
local %(unknownca_host)s {
  ssl_cert = <%(unknownca_pem)s
  ssl_key = <%(unknownca_key)s
}
"""

OAUTH2_EXT = """\
# oauth2 passdb of the remote test Dovecot: validates tokens against the
# OAuth stand-in (tests/harness/oauth_standin.py) over HTTPS.
introspection_mode = post
introspection_url = %(url)s/introspect
tls_ca_cert_file = %(ca)s
username_attribute = email
active_attribute = active
active_value = true
client_id = %(client_id)s
client_secret = %(client_secret)s
timeout_msecs = 10000
"""


def write_dovecot_conf(L, ports, oauth_url):
    v = {
        "instance": "trib-remote-" + os.path.basename(L.dir),
        "run": L.run, "state": L.state, "log": L.remote_log,
        "oauth2_ext": L.oauth2_ext, "users": L.users, "home": L.home,
        "uid": MAIL_UID, "gid": MAIL_GID,
        "host": HOST, "plain_host": PLAIN_HOST,
        "wronghost_host": WRONGHOST_HOST, "expired_host": EXPIRED_HOST,
        "unknownca_host": UNKNOWNCA_HOST, "strict_host": STRICT_HOST,
    }
    v.update(ports)
    for name in ("valid", "wronghost", "expired", "unknownca"):
        v[name + "_pem"], v[name + "_key"] = L.cert(name)
    write_file(L.conf, DOVECOT_CONF % v, 0o644)
    write_file(L.oauth2_ext, OAUTH2_EXT % {
        "url": oauth_url, "ca": L.ca_pem, "client_id": OAUTH_CLIENT_ID,
        "client_secret": OAUTH_CLIENT_SECRET}, 0o644)
    write_file(L.users, "".join("%s:{PLAIN}%s::::::\n" % u for u in USERS),
               0o644)


LOCAL_CONF = """\
# Local Dovecot for Tributary's integration tests: stands in for the user's
# own server, the one Tributary delivers into over LMTP. Generated by
# tests/harness/harness.py. Private instance: nothing is read from
# /etc/dovecot, but the project's own drop-in conf.d/90-tributary.conf is
# included, so the shipped file is what is tested.
instance_name = %(instance)s
base_dir = %(run)s
state_dir = %(state)s
log_path = %(log)s
protocols = imap lmtp
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = dovecot
default_login_user = dovenull
ssl = no
postmaster_address = postmaster@example.com

# Plain IMAP on 127.0.0.1, for tests that look at delivered mail.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_cache_size = 0
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
# Users are plain local names: LMTP RCPT TO:<alice+Folder@example.com> and
# a login as alice@example.com are both the user alice.
auth_username_format = %%Ln

passdb {
  driver = passwd-file
  args = scheme=PLAIN %(users)s
}
# The main userdb. continue-ok: go on to the Tributary accounts userdb
# (chained after it below), which the drop-in cannot set for the admin.
userdb {
  driver = passwd-file
  args = %(users)s
  result_success = continue-ok
}

mail_location = maildir:~/Maildir
mail_fsync = never
namespace inbox {
  inbox = yes
  separator = /
  mailbox Archive {
    special_use = \\Archive
  }
  mailbox Drafts {
    special_use = \\Drafts
  }
  mailbox Junk {
    special_use = \\Junk
  }
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Trash {
    special_use = \\Trash
  }
}

# LMTP: RCPT TO:<user+Folder> saves into Folder, creating it.
recipient_delimiter = +
lda_mailbox_autocreate = yes
lda_mailbox_autosubscribe = yes
protocol lmtp {
  mail_plugins = $mail_plugins sieve
  lmtp_save_to_detail_mailbox = yes
}
# Mail plugins come from here: links to Dovecot's own (sieve ...) and to
# the LMTP plugin of the build tree, which the drop-in adds to
# protocol lmtp { mail_plugins }.
mail_plugin_dir = %(modules)s
%(asan)splugin {
  # A user's script: ~/sieve/NAME.sieve, active via ~/.dovecot.sieve.
  sieve = file:~/sieve;active=~/.dovecot.sieve
}

service imap-login {
  inet_listener imap {
    address = %(host)s
    port = %(imap_port)d
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = %(host)s
    port = %(lmtp_port)d
  }
}

# ---- The shipped drop-in, as an administrator installs it.
!include %(dropin)s

# ---- Its example accounts userdb, copied from the drop-in's commented
# example by the harness (only the file name differs).
%(accounts_userdb)s
# ---- What the tests need differently from the drop-in's defaults.
plugin {
  tributary_state_dir = %(trib_state)s
  tributary_vault_key_file = %(trib_keys)s/vault.key
  tributary_trace_key_file = %(trib_keys)s/trace.key
  # The "registered OAuth apps" of the tests (an oauth2 account is invalid
  # without its provider's client id); the gmail secret is inline so that
  # tests can check it is never shown.
  tributary_gmail_client_id = %(gmail_client_id)s
  tributary_gmail_client_secret = %(gmail_client_secret)s
  tributary_outlook_client_id = %(outlook_client_id)s
}
"""


def dropin_accounts_userdb(path):
    """The commented `#userdb { ... #}` example at the end of DROPIN,
    uncommented, with the accounts file replaced by `path`."""
    try:
        with open(DROPIN) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise HarnessError("cannot read the drop-in %s: %s" % (DROPIN, e))
    start = [i for i, x in enumerate(lines) if x.strip() == "#userdb {"]
    if len(start) != 1:
        raise HarnessError("%s: expected one commented '#userdb {' example, "
                           "found %d" % (DROPIN, len(start)))
    block = []
    for x in lines[start[0]:]:
        if not x.startswith("#"):
            raise HarnessError("%s: the userdb example ends without '#}'"
                               % DROPIN)
        block.append(x[1:])
        if x.strip() == "#}":
            break
    text = "\n".join(block) + "\n"
    if DROPIN_ACCOUNTS_PATH not in text:
        raise HarnessError("%s: the userdb example does not name %s"
                           % (DROPIN, DROPIN_ACCOUNTS_PATH))
    return text.replace(DROPIN_ACCOUNTS_PATH, path)


def fixture_accounts(L, remote_imaps_port):
    """The fixture's Tributary accounts, in passwd-file form (fields are
    space-separated, so list values carry no spaces)."""
    def line(user, fields):
        return "%s:::::::%s\n" % (user, " ".join(
            "userdb_tributary_%s=%s" % kv for kv in fields))
    return (
        "# Tributary accounts of the local test users. Generated by\n"
        "# tests/harness/harness.py; `harness.py accounts` replaces it.\n"
        + line("alice", [
            ("accounts", "work,home"),
            ("work_provider", "outlook"),
            ("work_login", "alice@contoso.example"),
            ("home_provider", "imap"),
            ("home_host", HOST),
            ("home_port", remote_imaps_port),
            ("home_tls", "implicit"),
            ("home_ca_file", L.ca_pem),
            ("home_login", USERS[0][0]),
            ("home_auth", "password_file"),
            ("home_password_file", L.alice_home_pw)])
        + line("bob", [
            ("accounts", "mail"),
            ("mail_provider", "yahoo"),
            ("mail_auth", "app_password"),
            ("mail_login", "bob@yahoo.example"),
            ("mail_folders", "INBOX,Archive")])
        + "# carol: no line, no accounts\n")


def write_accounts(L, text):
    """Atomically replace the accounts file, root:dovecot 0640 (the auth
    process runs as dovecot), with an mtime (whole seconds) later than the
    old file's. Returns the time of the write."""
    try:
        old = int(os.stat(L.accounts).st_mtime)
    except FileNotFoundError:
        old = 0
    tmp = L.accounts + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chown(tmp, 0, grp.getgrnam("dovecot").gr_gid)
    os.chmod(tmp, 0o640)
    now = time.time()
    mtime = max(int(now), old + 1)
    os.utime(tmp, (mtime, mtime))
    os.rename(tmp, L.accounts)
    return now


def install_accounts(L, text):
    """Replace the accounts file so that the auth process's next lookup
    reads it. Dovecot's passwd-file code re-reads the file when its mtime
    (whole seconds) or its size changed, but looks at most once per second:
    not again within the second (ioloop time) of its last check. So: a
    later mtime, then wait for the next second (0-1 s). No HUP needed."""
    now = write_accounts(L, text)
    time.sleep(max(0.0, int(now) + 1.02 - time.time()))


ASAN_CONF = """\
# The LMTP plugin was built with --enable-sanitizers (docs/decisions.md):
# it can only be dlopen()ed where libasan is the process's first library,
# and ASan's shadow memory does not fit under default_vsz_limit. Leak
# checks stay off inside Dovecot.
import_environment = $import_environment LD_PRELOAD=%s %s
default_vsz_limit = 0
"""


def lmtp_plugin_path():
    """The LMTP plugin of the build tree: $top_builddir (the tests' make
    sets it), else the checkout itself (an in-tree build)."""
    builddir = os.path.abspath(os.environ.get("top_builddir") or REPO)
    path = os.path.join(builddir, "plugin", ".libs", LMTP_PLUGIN)
    if not os.path.isfile(path):
        raise HarnessError(
            "%s not found: the local Dovecot loads the LMTP plugin from "
            "the build tree; build it (make) and set top_builddir to the "
            "build directory" % path)
    return path


def asan_conf(plugin):
    """The ASan settings when the plugin is instrumented, else ""."""
    with open(plugin, "rb") as f:
        if b"__asan_init" not in f.read():
            return ""
    r = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True)
    lib = r.stdout.strip()
    if r.returncode != 0 or not os.path.isabs(lib) or \
            not os.path.exists(lib):
        raise HarnessError("%s is built with ASan, but gcc does not know "
                           "where libasan.so is (%r)" % (plugin, lib))
    return ASAN_CONF % (os.path.realpath(lib),
                        "ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0")


def make_modules(L, plugin):
    """DIR/local/modules: links to Dovecot's mail plugins and to ours."""
    mkdir(L.local_modules, 0o755)
    for name in sorted(os.listdir(SYSTEM_MODULES)):
        if name.endswith(".so") and name != LMTP_PLUGIN:
            os.symlink(os.path.join(SYSTEM_MODULES, name),
                       os.path.join(L.local_modules, name))
    os.symlink(plugin, os.path.join(L.local_modules, LMTP_PLUGIN))


def write_local_conf(L, ports, remote_imaps_port, plugin):
    v = {
        "instance": "trib-local-" + os.path.basename(L.dir),
        "run": L.local_run, "state": L.local_state, "log": L.local_log,
        "modules": L.local_modules, "asan": asan_conf(plugin),
        "users": L.local_users, "host": HOST, "dropin": DROPIN,
        "accounts_userdb": dropin_accounts_userdb(L.accounts),
        "trib_state": L.trib_state, "trib_keys": L.trib_keys,
        "gmail_client_id": TEST_GMAIL_CLIENT_ID,
        "gmail_client_secret": TEST_GMAIL_CLIENT_SECRET,
        "outlook_client_id": TEST_OUTLOOK_CLIENT_ID,
    }
    v.update(ports)
    write_file(L.local_conf, LOCAL_CONF % v, 0o644)
    write_file(L.local_users, "".join(
        "%s:{PLAIN}%s:%d:%d::%s::\n" % (u, LOCAL_PASSWORD, MAIL_UID, MAIL_GID,
                                        os.path.join(L.local_home, u))
        for u in LOCAL_USERS), 0o640)
    os.chown(L.local_users, 0, grp.getgrnam("dovecot").gr_gid)


# --------------------------------------------------------------------------
# pids file: "name pid starttime" per line


def read_pids(L):
    out = []
    try:
        with open(L.pids) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    out.append((parts[0], int(parts[1]), int(parts[2])))
    except FileNotFoundError:
        pass
    return out


def record_pid(L, name, pid):
    st = proc_stat(pid)
    if st is None:
        raise HarnessError("%s (pid %d) died right after start" % (name, pid))
    with open(L.pids, "a") as f:
        f.write("%s %d %d\n" % (name, pid, st[2]))


# --------------------------------------------------------------------------
# Start


def start_standin(L):
    mkdir(L.oauth_dir, 0o755)
    try:
        os.unlink(L.oauth_port_file)
    except FileNotFoundError:
        pass
    pem, key = L.cert("valid")
    with open(L.oauth_out, "ab") as out:
        p = subprocess.Popen(
            [sys.executable, STANDIN, "--cert", pem, "--key", key,
             "--port", "0", "--port-file", L.oauth_port_file,
             "--log", L.oauth_log],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, close_fds=True)
    record_pid(L, "oauth_standin", p.pid)
    deadline = time.monotonic() + 10
    while not os.path.exists(L.oauth_port_file):
        if p.poll() is not None:
            raise HarnessError("OAuth stand-in exited (%s):\n%s"
                               % (p.returncode, tail(L.oauth_out)))
        if time.monotonic() >= deadline:
            raise HarnessError("OAuth stand-in did not come up:\n%s"
                               % tail(L.oauth_out))
        time.sleep(0.02)
    with open(L.oauth_port_file) as f:
        port = int(f.read())
    return p.pid, port


def launch_dovecot(L, name, conf, run, start_err, log_path, names, hosts,
                   write_conf):
    """Start one Dovecot instance on freshly picked ports (write_conf(ports)
    writes its config); retry on EADDRINUSE. Records its master's pid under
    `name` and returns the ports dict. Returns as soon as the master runs:
    the caller waits for the listeners."""
    for attempt in range(1, PORT_RETRIES + 1):
        ports = dict(zip(names, pick_ports(hosts)))
        write_conf(ports)
        with open(start_err, "wb") as err:
            r = subprocess.run([DOVECOT, "-c", conf],
                               stdin=subprocess.DEVNULL, stdout=err,
                               stderr=err, timeout=30)
        if r.returncode == 0:
            break
        msg = tail(start_err)
        if "Address already in use" in msg + tail(log_path, 5) \
                and attempt < PORT_RETRIES:
            log("%s: port taken, retrying (%d)" % (name, attempt))
            continue
        raise HarnessError("%s failed to start (exit %d):\n%s"
                           % (name, r.returncode, msg))
    # The foreground process exits right after fork(); the daemon writes
    # master.pid a moment later.
    pidfile = os.path.join(run, "master.pid")
    deadline = time.monotonic() + 10
    while True:
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
            break
        except (FileNotFoundError, ValueError):
            if time.monotonic() >= deadline:
                raise HarnessError("%s wrote no %s" % (name, pidfile))
            time.sleep(0.02)
    record_pid(L, name, pid)
    return ports


def start_dovecot(L, oauth_url):
    """Start the remote Dovecot. Returns the ports dict."""
    mkdir(L.remote, 0o711)
    mkdir(L.run, 0o755)
    mkdir(L.state, 0o750)
    mkdir(L.home, 0o755, MAIL_UID, MAIL_GID)
    names = ["imaps_port", "starttls_port", "plain_port", "wronghost_port",
             "expired_port", "unknownca_port", "strict_port"]
    hosts = [HOST, HOST, PLAIN_HOST, WRONGHOST_HOST, EXPIRED_HOST,
             UNKNOWNCA_HOST, STRICT_HOST]
    return launch_dovecot(L, "dovecot", L.conf, L.run, L.start_err,
                          L.remote_log, names, hosts,
                          lambda ports: write_dovecot_conf(L, ports,
                                                           oauth_url))


def tributary_user():
    try:
        return pwd.getpwnam(TRIBUTARY_USER)
    except KeyError:
        raise HarnessError(
            "no system user %r: the drop-in's tributary-userdb listener "
            "belongs to it (scripts/install-deps.sh creates it)"
            % TRIBUTARY_USER)


def trace_group():
    try:
        return grp.getgrnam(TRACE_GROUP)
    except KeyError:
        raise HarnessError(
            "no group %r: the drop-in's mail_access_groups names it "
            "(scripts/install-deps.sh creates it)" % TRACE_GROUP)


def start_local(L, remote_imaps_port):
    """Start the local Dovecot (the user's own server, the drop-in
    included). Returns its ports dict."""
    trib = tributary_user()
    mkdir(L.local, 0o711)
    mkdir(L.local_run, 0o755)       # tributary must reach its sockets
    mkdir(L.local_state, 0o750)
    mkdir(L.local_home, 0o755, MAIL_UID, MAIL_GID)
    for u in LOCAL_USERS:
        mkdir(os.path.join(L.local_home, u), 0o700, MAIL_UID, MAIL_GID)
    # Tributary's own places, as the daemon (user tributary) will find them.
    mkdir(L.trib_state, 0o700, trib.pw_uid, trib.pw_gid)
    # the trace key (root:tributary-trace 0640) must be reachable by the
    # mail processes (mail_access_groups = tributary-trace), the vault key
    # (tributary 0600) only by tributary
    mkdir(L.trib_keys, 0o750, 0, trace_group().gr_gid)
    mkdir(L.trib_secrets, 0o750, 0, trib.pw_gid)
    write_file(L.alice_home_pw, USERS[0][1] + "\n", 0o640)
    os.chown(L.alice_home_pw, 0, trib.pw_gid)
    write_accounts(L, fixture_accounts(L, remote_imaps_port))
    plugin = lmtp_plugin_path()
    make_modules(L, plugin)
    return launch_dovecot(L, "dovecot-local", L.local_conf, L.local_run,
                          L.local_start_err, L.local_log,
                          ["imap_port", "lmtp_port"], [HOST, HOST],
                          lambda ports: write_local_conf(L, ports,
                                                         remote_imaps_port,
                                                         plugin))


def env_values(L, ports, oauth_port, lports):
    u1, p1 = USERS[0]
    u2, p2 = USERS[1]
    return [
        ("TRIB_TEST_DIR", L.dir),
        ("TRIB_TEST_CA", L.ca_pem),
        ("TRIB_TEST_HOST", HOST),
        ("TRIB_TEST_IMAPS_PORT", ports["imaps_port"]),
        ("TRIB_TEST_IMAP_STARTTLS_PORT", ports["starttls_port"]),
        ("TRIB_TEST_IMAP_STARTTLS_STRICT_HOST", STRICT_HOST),
        ("TRIB_TEST_IMAP_STARTTLS_STRICT_PORT", ports["strict_port"]),
        ("TRIB_TEST_IMAP_PLAIN_HOST", PLAIN_HOST),
        ("TRIB_TEST_IMAP_PLAIN_PORT", ports["plain_port"]),
        ("TRIB_TEST_WRONGHOST_HOST", WRONGHOST_HOST),
        ("TRIB_TEST_WRONGHOST_PORT", ports["wronghost_port"]),
        ("TRIB_TEST_EXPIRED_HOST", EXPIRED_HOST),
        ("TRIB_TEST_EXPIRED_PORT", ports["expired_port"]),
        ("TRIB_TEST_UNKNOWNCA_HOST", UNKNOWNCA_HOST),
        ("TRIB_TEST_UNKNOWNCA_PORT", ports["unknownca_port"]),
        ("TRIB_TEST_OAUTH_URL", "https://%s:%d" % (HOST, oauth_port)),
        ("TRIB_TEST_OAUTH_INTROSPECT_URL",
         "https://%s:%d/introspect" % (HOST, oauth_port)),
        ("TRIB_TEST_OAUTH_LOG", L.oauth_log),
        ("TRIB_TEST_USER", u1),
        ("TRIB_TEST_APP_PASSWORD", p1),
        ("TRIB_TEST_USER2", u2),
        ("TRIB_TEST_APP_PASSWORD2", p2),
        ("TRIB_TEST_INBOX_COUNT", sum(1 for f in FIXTURE if f[0] == "INBOX")),
        ("TRIB_TEST_DOVECOT_CONF", L.conf),
        ("TRIB_TEST_REMOTE_LOG", L.remote_log),
        ("TRIB_TEST_LOCAL_CONF", L.local_conf),
        ("TRIB_TEST_LOCAL_LOG", L.local_log),
        ("TRIB_TEST_LOCAL_USERDB_SOCKET",
         os.path.join(L.local_run, "tributary-userdb")),
        ("TRIB_TEST_LOCAL_AUTH_USERDB_SOCKET",
         os.path.join(L.local_run, "auth-userdb")),
        ("TRIB_TEST_LOCAL_LMTP_SOCKET", os.path.join(L.local_run, "lmtp")),
        ("TRIB_TEST_LOCAL_LMTP_HOST", HOST),
        ("TRIB_TEST_LOCAL_LMTP_PORT", lports["lmtp_port"]),
        ("TRIB_TEST_LOCAL_IMAP_HOST", HOST),
        ("TRIB_TEST_LOCAL_IMAP_PORT", lports["imap_port"]),
        ("TRIB_TEST_LOCAL_USERS", ",".join(LOCAL_USERS)),
        ("TRIB_TEST_LOCAL_PASSWORD", LOCAL_PASSWORD),
        ("TRIB_TEST_LOCAL_STATE_DIR", L.trib_state),
        ("TRIB_TEST_LOCAL_MODULES", L.local_modules),
        ("TRIB_TEST_ACCOUNTS_FILE", L.accounts),
        ("TRIB_TEST_HARNESS", os.path.abspath(__file__)),
        ("TRIB_TEST_PYTHON", sys.executable),
    ]


def write_env(L, values):
    write_file(L.env_sh, "# Generated by tests/harness/harness.py start\n" +
               "".join("%s=%s\n" % (k, shlex.quote(str(v)))
                       for k, v in values))
    write_file(L.env_json, json.dumps({k: str(v) for k, v in values},
                                      indent=2) + "\n")


def load_env(L):
    try:
        with open(L.env_json) as f:
            return json.load(f)
    except FileNotFoundError:
        raise HarnessError("%s: no env.json (was `start` run?)" % L.dir)


def cmd_start(args):
    t0 = time.monotonic()
    L = Layout(args.dir)
    for ch in " \t\n\"'\\#{}<$":
        if ch in L.dir:
            raise HarnessError("DIR must not contain %r (Dovecot config)" % ch)
        if ch in DROPIN:
            raise HarnessError("the checkout's path must not contain %r: the "
                               "local Dovecot includes %s" % (ch, DROPIN))
    if max(len(L.run), len(L.local_run)) + 26 > 107:
        raise HarnessError("DIR path too long: Dovecot's UNIX sockets under "
                           "%s would pass the 107-byte limit" % L.run)
    os.makedirs(L.dir, exist_ok=True)
    if any(alive(pid, st) for _, pid, st in read_pids(L)):
        raise HarnessError("%s: servers already running (stop first)" % L.dir)
    if os.listdir(L.dir):
        raise HarnessError("%s is not empty: start wants a fresh directory "
                           "(mktemp -d)" % L.dir)
    parent = os.path.dirname(L.dir)
    while True:
        if not os.stat(parent).st_mode & 0o001:
            raise HarnessError("%s is not searchable by others (o+x): Dovecot's "
                               "unprivileged processes cannot reach DIR; use a "
                               "DIR under /tmp" % parent)
        if parent == "/":
            break
        parent = os.path.dirname(parent)
    tributary_user()
    trace_group()
    lmtp_plugin_path()
    # mktemp -d makes DIR 0700; the mail (nobody) and auth (dovecot)
    # processes, and the tributary user, must traverse it.
    os.chmod(L.dir, 0o711)
    # SIGTERM/SIGHUP during start: clean up like any other failure.
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    try:
        make_certs(L)
        t_certs = time.monotonic()
        _, oauth_port = start_standin(L)
        oauth_url = "https://%s:%d" % (HOST, oauth_port)
        ports = start_dovecot(L, oauth_url)
        lports = start_local(L, ports["imaps_port"])
        values = env_values(L, ports, oauth_port, lports)
        write_env(L, values)
        deadline = time.monotonic() + START_TIMEOUT
        for key, host in (("imaps_port", HOST), ("starttls_port", HOST),
                          ("plain_port", PLAIN_HOST),
                          ("wronghost_port", WRONGHOST_HOST),
                          ("expired_port", EXPIRED_HOST),
                          ("unknownca_port", UNKNOWNCA_HOST),
                          ("strict_port", STRICT_HOST)):
            wait_port(host, ports[key], deadline, "dovecot " + key)
        for key in ("imap_port", "lmtp_port"):
            wait_port(HOST, lports[key], deadline, "local dovecot " + key)
        t_up = time.monotonic()
        env = dict((k, str(v)) for k, v in values)
        populate_and_warm_up(L, env)
        warm_up_local(L, env, deadline)
    except BaseException as e:
        # Stop first: reporting may fail (stderr closed) or be interrupted.
        try:
            stop_all(L)
        except BaseException as e2:
            log("cleanup after failed start: %r" % e2)
        msg = str(e) if isinstance(e, HarnessError) else repr(e)
        log("start failed: " + msg)
        log("dovecot log tail (%s):\n%s" % (L.remote_log, tail(L.remote_log)))
        if os.path.exists(L.local_log):
            log("local dovecot log tail (%s):\n%s"
                % (L.local_log, tail(L.local_log)))
        if isinstance(e, (HarnessError, OSError, subprocess.SubprocessError,
                          ImapError, Terminated)):
            return 1
        raise
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    t1 = time.monotonic()
    log("servers up in %.2fs (certs %.2fs, listening %.2fs, mail+warm-up "
        "%.2fs): %s" % (t1 - t0, t_certs - t0, t_up - t_certs, t1 - t_up,
                        L.dir))
    return 0


def populate_and_warm_up(L, env):
    """Alice's fixture mail, through IMAP (that is also the warm-up of login,
    auth, passwd-file and mail processes), then one XOAUTH2 login so the
    oauth2 passdb's first HTTPS request is done too; counters reset."""
    user, pw = USERS[0]
    with Imap(env["TRIB_TEST_HOST"], int(env["TRIB_TEST_IMAPS_PORT"]),
              env["TRIB_TEST_CA"]) as c:
        c.login_plain(user, pw)
        c.ok("CREATE Archive")
        c.ok("SUBSCRIBE Archive")
        counters = {}
        for i, (box, subject, flags) in enumerate(FIXTURE):
            n = counters[box] = counters.get(box, 0) + 1
            date = FIXTURE_BASE_DATE + datetime.timedelta(hours=i)
            msg = make_message(
                user, "<fixture.%s.%d.%s>" % (slug(box), n,
                                             user.replace("@", ".at.")
                                             + "@tributary.test"),
                subject, date,
                "Fixture message %d in %s for %s.\r\n" % (n, box, user))
            c.append(box, [(msg, flags, date)])
    # Warm up the oauth2 passdb (first HTTPS connection to the stand-in).
    tok = control(env, "POST", "/control/mint", {"user": user, "ttl": 60})
    with Imap(env["TRIB_TEST_HOST"], int(env["TRIB_TEST_IMAPS_PORT"]),
              env["TRIB_TEST_CA"]) as c:
        c.login_xoauth2(user, tok["access_token"])
    control(env, "POST", "/control/revoke", {"token": tok["access_token"]})
    control(env, "POST", "/control/reset", {})


def tab_unescape(s):
    """Dovecot's tab escaping: \\x01 + 1/t/r/n/0."""
    if "\x01" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\x01" and i + 1 < len(s):
            out.append({"1": "\x01", "t": "\t", "r": "\r", "n": "\n",
                        "0": "\0"}.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def userdb_lookup(path, user, service="tributary", timeout=10):
    """USER over an auth userdb socket (auth-userdb, tributary-userdb):
    (user, {field: value}), or None if the user is unknown."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(("VERSION\t1\t0\nUSER\t1\t%s\tservice=%s\n"
                   % (user, service)).encode())
        f = s.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                raise HarnessError("%s: connection closed" % path)
            parts = [tab_unescape(p) for p in
                     line.rstrip(b"\n").decode("utf-8", "replace")
                     .split("\t")]
            if parts[0] in ("VERSION", "SPID"):
                continue
            if parts[0] == "USER" and len(parts) >= 3:
                return parts[2], dict(p.partition("=")[::2]
                                      for p in parts[3:])
            if parts[0] == "NOTFOUND":
                return None
            raise HarnessError("%s: USER %s: %s" % (path, user,
                                                    " ".join(parts)))


def warm_up_local(L, env, deadline):
    """The local instance is ready when its sockets exist, auth answers a
    USER lookup through both userdbs (alice's accounts come back) and LMTP
    greets on its UNIX socket."""
    for key in ("TRIB_TEST_LOCAL_USERDB_SOCKET",
                "TRIB_TEST_LOCAL_AUTH_USERDB_SOCKET",
                "TRIB_TEST_LOCAL_LMTP_SOCKET"):
        while not os.path.exists(env[key]):
            if time.monotonic() >= deadline:
                raise HarnessError("local dovecot: no %s" % env[key])
            time.sleep(0.02)
    got = userdb_lookup(env["TRIB_TEST_LOCAL_AUTH_USERDB_SOCKET"], "alice")
    if got is None or got[1].get("tributary_accounts") != "work,home":
        raise HarnessError("local dovecot: alice's Tributary accounts did not "
                           "come back from the userdb: %r" % (got,))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(max(1.0, deadline - time.monotonic()))
        s.connect(env["TRIB_TEST_LOCAL_LMTP_SOCKET"])
        f = s.makefile("rb")
        line = f.readline()
        if not line.startswith(b"220 "):
            raise HarnessError("local LMTP greeting: %r" % line)
        s.sendall(b"LHLO harness\r\nQUIT\r\n")
        while True:
            line = f.readline()
            if not line or line.startswith(b"250 "):
                break


# --------------------------------------------------------------------------
# Stop


def is_dovecot(name):
    return name == "dovecot" or name.startswith("dovecot-")


def stop_all(L, timeout=10.0):
    """Stop every process DIR/pids lists, by pid. Idempotent. Everything is
    signalled first and waited for afterwards, so the Dovecot masters' ~1 s
    shutdowns overlap."""
    problems = []
    masters, others = [], []
    for name, pid, st in read_pids(L):
        if not alive(pid, st):
            continue
        if is_dovecot(name):
            # Everything the master forked is in its session (it setsid()s).
            # SIGTERM the master ourselves rather than `dovecot stop`: that
            # polls kill(pid, 0) for 3 s, which a zombie passes (where init
            # reaps lazily, the orphaned master is one for a moment).
            masters.append((name, pid, st, session_members(pid)))
        else:
            others.append((name, pid, st))
        kill(pid, st, signal.SIGTERM)
    for name, pid, st, members in masters:
        if not wait_gone([(pid, st)], timeout):
            kill(pid, st, signal.SIGKILL)
            wait_gone([(pid, st)], 2)
        members += [m for m in session_members(pid) if m not in members]
        if not wait_gone(members, 2.0):
            for m in members:
                kill(m[0], m[1], signal.SIGKILL)
            if not wait_gone(members, 3.0):
                problems.append("%s processes left: %s" % (name, [
                    m[0] for m in members if alive(*m)]))
    for name, pid, st in others:
        if not wait_gone([(pid, st)], 3.0):
            kill(pid, st, signal.SIGKILL)
            if not wait_gone([(pid, st)], 3.0):
                problems.append("%s (pid %d) does not die" % (name, pid))
    if problems:
        raise HarnessError("; ".join(problems))


def cmd_stop(args):
    L = Layout(args.dir)
    if not os.path.isdir(L.dir):
        return 0
    stop_all(L)
    return 0


# --------------------------------------------------------------------------
# A minimal IMAP client (TLS, SASL-IR, LITERAL+ MULTIAPPEND) for fixtures and
# seeding. Tests use imaplib or the project's own client; this exists because
# imaplib has neither MULTIAPPEND nor non-synchronizing literals.


class ImapError(Exception):
    pass


def quote(s):
    if any(ord(c) > 126 or c in "\r\n" for c in s):
        raise ImapError("only printable ASCII mailbox names: %r" % s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_date(d):
    return '"%s"' % d.strftime("%d-%b-%Y %H:%M:%S +0000")


class Imap:
    def __init__(self, host, port, cafile, timeout=60):
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.f = self.sock.makefile("rb")
        self.tagn = 0
        greeting = self.readline()
        if not greeting.startswith(b"* OK"):
            raise ImapError("bad greeting: %r" % greeting)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.command(b"LOGOUT")
        except Exception:
            pass
        self.sock.close()

    def readline(self):
        line = self.f.readline()
        if not line:
            raise ImapError("connection closed by server")
        return line

    def read_response(self, tag):
        """Read until the tagged reply; returns (status, text, untagged)."""
        untagged = []
        while True:
            line = self.readline()
            # literals inside untagged data
            while line.endswith(b"}\r\n") and b"{" in line:
                n = int(line[line.rindex(b"{") + 1:-3].rstrip(b"+"))
                line += self.f.read(n) + self.readline()
            if line.startswith(tag + b" "):
                rest = line[len(tag) + 1:].rstrip(b"\r\n")
                status, _, text = rest.partition(b" ")
                return status.decode(), text.decode(errors="replace"), untagged
            if line.startswith(b"+"):
                raise ImapError("unexpected continuation: %r" % line)
            untagged.append(line.rstrip(b"\r\n"))

    def command(self, cmd):
        self.tagn += 1
        tag = b"h%d" % self.tagn
        if isinstance(cmd, str):
            cmd = cmd.encode()
        self.sock.sendall(tag + b" " + cmd + b"\r\n")
        return self.read_response(tag)

    def ok(self, cmd):
        status, text, untagged = self.command(cmd)
        if status != "OK":
            raise ImapError("%s -> %s %s" % (cmd if isinstance(cmd, str)
                                             else cmd[:40], status, text))
        return text, untagged

    def login_plain(self, user, password):
        ir = base64.b64encode(("\0%s\0%s" % (user, password)).encode())
        self.ok(b"AUTHENTICATE PLAIN " + ir)

    def login_xoauth2(self, user, token):
        ir = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01"
                               % (user, token)).encode())
        self.ok(b"AUTHENTICATE XOAUTH2 " + ir)

    def status(self, mailbox, items="MESSAGES UIDNEXT UIDVALIDITY"):
        status, text, untagged = self.command("STATUS %s (%s)"
                                              % (quote(mailbox), items))
        if status != "OK":
            return None
        for u in untagged:
            if u.startswith(b"* STATUS"):
                inner = u[u.rindex(b"(") + 1:u.rindex(b")")].split()
                return {inner[i].decode(): int(inner[i + 1])
                        for i in range(0, len(inner) - 1, 2)}
        return None

    def append(self, mailbox, messages):
        """MULTIAPPEND with LITERAL+: messages = [(bytes, flags, datetime)].
        One round trip. Returns the APPENDUID text."""
        self.tagn += 1
        tag = b"h%d" % self.tagn
        parts = [tag, b" APPEND ", quote(mailbox).encode()]
        for data, flags, date in messages:
            parts.append(b" (%s) %s {%d+}\r\n" % (
                flags.encode(), imap_date(date).encode(), len(data)))
            parts.append(data)
        parts.append(b"\r\n")
        self.sock.sendall(b"".join(parts))
        status, text, _ = self.read_response(tag)
        if status != "OK":
            raise ImapError("APPEND %s -> %s %s" % (mailbox, status, text))
        return text


def slug(s):
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-")


def make_message(user, msgid, subject, date, body, size=None):
    head = ("From: Remote Sender <sender@remote.example>\r\n"
            "To: %s\r\n"
            "Subject: %s\r\n"
            "Date: %s\r\n"
            "Message-ID: %s\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n" % (user, subject,
                      date.strftime("%a, %d %b %Y %H:%M:%S +0000"), msgid))
    data = (head + body).encode()
    if size is not None and size > len(data):
        # deterministic filler: 78-byte CRLF lines, exact total size
        need = size - len(data)
        fill, n = [], 0
        while need > 0:
            width = min(78, need)
            if need - width == 1:
                width -= 1          # never leave a single byte over
            if width < 2:
                fill.append(".")    # need == 1: last byte, no CRLF
                break
            fill.append(("%s line %06d " % (msgid, n)).ljust(width - 2, ".")
                        [:width - 2] + "\r\n")
            need -= width
            n += 1
        data += "".join(fill).encode()
    return data


# --------------------------------------------------------------------------
# seed


def user_password(L, user):
    try:
        with open(L.users) as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.lower() == user.lower():
                    pw = rest.split(":", 1)[0]
                    return pw[len("{PLAIN}"):] if pw.startswith("{PLAIN}") \
                        else pw
    except FileNotFoundError:
        pass
    raise HarnessError("unknown user %r (known: %s)"
                       % (user, ", ".join(u for u, _ in USERS)))


def cmd_seed(args):
    L = Layout(args.dir)
    env = load_env(L)
    pw = user_password(L, args.user)
    t0 = time.monotonic()
    with Imap(env["TRIB_TEST_HOST"], int(env["TRIB_TEST_IMAPS_PORT"]),
              env["TRIB_TEST_CA"]) as c:
        c.login_plain(args.user, pw)
        st = c.status(args.mailbox)
        if st is None:
            c.ok("CREATE %s" % quote(args.mailbox))
            c.ok("SUBSCRIBE %s" % quote(args.mailbox))
            st = c.status(args.mailbox)
        first = args.start if args.start is not None else st["MESSAGES"] + 1
        uids = []
        batch, batch_bytes = [], 0
        u = args.user.replace("@", ".at.")
        for i in range(first, first + args.count):
            date = SEED_BASE_DATE + datetime.timedelta(minutes=i)
            msgid = "<seed.%s.%06d.%s@tributary.test>" % (
                slug(args.mailbox), i, u)
            body = ("Seeded message %d for %s in %s.\r\n"
                    "Deterministic body, Message-ID %s.\r\n"
                    % (i, args.user, args.mailbox, msgid))
            data = make_message(args.user, msgid,
                                "Seed %s #%d" % (args.mailbox, i), date, body,
                                args.size)
            batch.append((data, args.flags, date))
            batch_bytes += len(data)
            if len(batch) >= 500 or batch_bytes >= 8 << 20:
                uids.append(c.append(args.mailbox, batch))
                batch, batch_bytes = [], 0
        if batch:
            uids.append(c.append(args.mailbox, batch))
        st2 = c.status(args.mailbox)
    dt = time.monotonic() - t0
    print(json.dumps({"user": args.user, "mailbox": args.mailbox,
                      "count": args.count, "first_index": first,
                      "messages": st2["MESSAGES"],
                      "uidvalidity": st2["UIDVALIDITY"],
                      "uidnext": st2["UIDNEXT"],
                      "appenduid": uids, "seconds": round(dt, 3)}))
    return 0


# --------------------------------------------------------------------------
# Stand-in control API


def control(env, method, path, body=None):
    url = env["TRIB_TEST_OAUTH_URL"] + path
    ctx = ssl.create_default_context(cafile=env["TRIB_TEST_CA"])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        raise HarnessError("%s %s -> HTTP %d %s" % (
            method, path, e.code, e.read().decode(errors="replace").strip()))
    except urllib.error.URLError as e:
        raise HarnessError("%s %s: %s" % (method, path, e.reason))


def cmd_mint(args):
    env = load_env(Layout(args.dir))
    body = {"user": args.user, "ttl": args.ttl}
    if args.scope is not None:
        body["scope"] = args.scope
    r = control(env, "POST", "/control/mint", body)
    print(json.dumps(r) if args.json else r["access_token"])
    return 0


def cmd_expire(args):
    env = load_env(Layout(args.dir))
    print(json.dumps(control(env, "POST", "/control/expire",
                             {"token": args.token})))
    return 0


def cmd_revoke(args):
    env = load_env(Layout(args.dir))
    print(json.dumps(control(env, "POST", "/control/revoke",
                             {"token": args.token})))
    return 0


def cmd_stats(args):
    env = load_env(Layout(args.dir))
    print(json.dumps(control(env, "GET", "/control/stats")))
    return 0


def cmd_reset(args):
    env = load_env(Layout(args.dir))
    print(json.dumps(control(env, "POST", "/control/reset", {})))
    return 0


def cmd_accounts(args):
    L = Layout(args.dir)
    env = load_env(L)
    if args.fixture:
        text = fixture_accounts(L, int(env["TRIB_TEST_IMAPS_PORT"]))
    elif args.file == "-":
        text = sys.stdin.read()
    elif args.file:
        with open(args.file) as f:
            text = f.read()
    else:
        raise HarnessError("accounts: give FILE, - or --fixture")
    install_accounts(L, text)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Tributary integration-test harness (see README.md)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start CA, OAuth stand-in and Dovecot")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_start)
    p = sub.add_parser("stop", help="stop what DIR/pids lists")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_stop)
    p = sub.add_parser("seed", help="append N messages to a remote mailbox")
    p.add_argument("dir")
    p.add_argument("--user", required=True)
    p.add_argument("--mailbox", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=None,
                   help="exact size of each message in bytes")
    p.add_argument("--start", type=int, default=None,
                   help="first message index (default: MESSAGES+1)")
    p.add_argument("--flags", default="", help=r'e.g. "\Seen"')
    p.set_defaults(fn=cmd_seed)
    p = sub.add_parser("mint", help="mint an access token, print it")
    p.add_argument("dir")
    p.add_argument("--user", required=True)
    p.add_argument("--ttl", type=int, default=3600)
    p.add_argument("--scope", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_mint)
    for name, fn in (("expire", cmd_expire), ("revoke", cmd_revoke)):
        p = sub.add_parser(name, help=name + " a token")
        p.add_argument("dir")
        p.add_argument("token")
        p.set_defaults(fn=fn)
    p = sub.add_parser("stats", help="introspection counters (JSON)")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_stats)
    p = sub.add_parser("reset", help="zero the introspection counters")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_reset)
    p = sub.add_parser("accounts", help="replace the local accounts file "
                       "(Dovecot's next lookup sees it)")
    p.add_argument("dir")
    p.add_argument("file", nargs="?", help="new contents (- = stdin)")
    p.add_argument("--fixture", action="store_true",
                   help="restore the fixture's accounts")
    p.set_defaults(fn=cmd_accounts)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (HarnessError, ImapError, OSError) as e:
        log("%s: %s" % (args.cmd, e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
