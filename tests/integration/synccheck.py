"""Checking what `tributary sync` delivered, byte for byte, for the sync
tests that use generated messages (test_sync_bulk.py, test_sync_forged.py):
the remote's stored copies, the local user's delivered copies split into
LMTP's lines, Tributary's trace header and the rest, and the trace header
itself (grammar, fields, and its MAC under the local trace key, computed
here from docs/trace-header.md as an independent check of the fetcher).

Both Dovecots store LF line ends, so the rest of a local copy must equal
the remote's stored file exactly."""

import base64
import hashlib
import hmac
import os
import re
import subprocess

from synctest import DIR, ENV, REMOTE_USER, message_id

LMTP_FIELDS = (b"Return-Path", b"Delivered-To", b"Received")
TRACE_NAME = b"X-Tributary-Trace"
TRACE_RE = re.compile(
    rb"^X-Tributary-Trace: v=1; k=([0-9a-f]{8}); r=([^;]+); a=([a-z0-9_-]+); "
    rb"p=([a-z0-9_-]+); f=([^;]+); uv=([1-9][0-9]*); u=([1-9][0-9]*)"
    rb"((?:; [a-z]+=[^;]*)*); m=([A-Za-z0-9_-]{43})$")


# ---- the remote ----

def remote_maildir(folder, user=REMOTE_USER):
    """The maildir of the remote user's folder (LAYOUT=fs: INBOX is the
    root, Lists/Dev is Lists/Dev/)."""
    root = os.path.join(DIR, "remote", "home", user.lower(), "Maildir")
    return root if folder == "INBOX" else os.path.join(root, folder)


def remote_messages(folder, user=REMOTE_USER):
    """Message-ID (str) -> [stored bytes] of the remote folder."""
    out = {}
    root = remote_maildir(folder, user)
    for sub in ("new", "cur"):
        d = os.path.join(root, sub)
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            with open(os.path.join(d, f), "rb") as fh:
                data = fh.read()
            out.setdefault(message_id(data), []).append(data)
    return out


def doveadm_remote(*args):
    return subprocess.run(["doveadm", "-c", ENV["TRIB_TEST_DOVECOT_CONF"]]
                          + list(args), check=True, capture_output=True,
                          text=True).stdout


def remote_status(folder, user=REMOTE_USER):
    """{"uidvalidity": n, "uidnext": n, "messages": n} of the remote
    folder."""
    st = doveadm_remote("-f", "tab", "mailbox", "status", "-u", user,
                        "uidvalidity uidnext messages", folder).splitlines()
    return {k: int(v) for k, v in zip(st[0].split("\t"), st[1].split("\t"))
            if k != "mailbox"}


def remote_uids(folder, user=REMOTE_USER):
    """(UIDVALIDITY, {Message-ID: UID}) of the remote folder."""
    uv = remote_status(folder, user)["uidvalidity"]
    out = {}
    for line in doveadm_remote("-f", "tab", "fetch", "-u", user,
                               "uid hdr.message-id", "mailbox", folder,
                               "all").splitlines()[1:]:
        uid, mid = line.split("\t", 1)
        out[mid.strip()] = int(uid)
    return uv, out


# ---- the local user ----

def local_maildir(user):
    return os.path.join(DIR, "local", "home", user, "Maildir")


def local_files(user):
    """[(folder, path)] of every message file of the local user's
    Maildir++ (INBOX is the root, folder Lists is .Lists), new and cur."""
    root = local_maildir(user)
    out = []
    if not os.path.isdir(root):
        return out
    for name in [""] + sorted(os.listdir(root)):
        if name and not name.startswith("."):
            continue
        folder = name[1:].replace(".", "/") if name else "INBOX"
        for sub in ("new", "cur"):
            d = os.path.join(root, name, sub)
            if os.path.isdir(d):
                out += [(folder, os.path.join(d, f))
                        for f in sorted(os.listdir(d))]
    return out


def split_delivered(data):
    """(LMTP's lines, the trace line, the rest) of a delivered copy; the
    trace line is None when the lines above it are not only LMTP's own
    Return-Path, Delivered-To and Received (with their continuations)."""
    pos = 0
    lmtp = []
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            return lmtp, None, data[pos:]
        line = data[pos:end]
        name = line.split(b":", 1)[0]
        if line.startswith(TRACE_NAME + b":"):
            return lmtp, line, data[end + 1:]
        if name in LMTP_FIELDS:
            lmtp.append(line)
        elif line[:1] in (b" ", b"\t") and lmtp:
            lmtp[-1] += b"\n" + line
        else:
            return lmtp, None, data[pos:]
        pos = end + 1


class Delivered:
    """One local copy."""

    def __init__(self, folder, path, data):
        self.folder = folder
        self.path = path
        self.lmtp, self.trace, self.rest = split_delivered(data)
        self.msgid = message_id(self.rest)
        self.fields = parse_trace(self.trace) if self.trace else None


def local_delivered(user):
    """[Delivered] of every message of the local user."""
    out = []
    for folder, path in local_files(user):
        with open(path, "rb") as fh:
            out.append(Delivered(folder, path, fh.read()))
    return out


# ---- the trace header (docs/trace-header.md) ----

def parse_trace(line):
    """The fields of a trace line Tributary wrote (canonical form, as the
    builder writes it), or None if it is not one."""
    m = TRACE_RE.match(line)
    if m is None:
        return None
    f = dict(zip(("k", "r", "a", "p", "f", "uv", "u"),
                 (x.decode() for x in m.groups()[:7])))
    f["uv"], f["u"] = int(f["uv"]), int(f["u"])
    for item in m.group(8).split(b"; ")[1:]:
        k, _, v = item.partition(b"=")
        f[k.decode()] = v.decode()
    f["m"] = m.group(9).decode()
    f["canonical"] = line[len(TRACE_NAME) + 2:line.rindex(b"; m=")]
    return f


def trace_key_file():
    return subprocess.run(["doveconf", "-c", ENV["TRIB_TEST_LOCAL_CONF"],
                           "-h", "plugin/tributary_trace_key_file"],
                          capture_output=True, text=True).stdout.strip() \
        or os.path.join(DIR, "local", "keys", "trace.key")


def trace_keys():
    """key id -> key bytes of the local trace key file."""
    keys = {}
    with open(trace_key_file()) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key = bytes.fromhex(line)
            kid = hmac.new(key, b"tributary-trace-key-id",
                           hashlib.sha256).digest()[:4].hex()
            keys[kid] = key
    return keys


def mac(key, canonical):
    return base64.urlsafe_b64encode(hmac.new(
        key, b"tributary-trace-mac\n" + canonical,
        hashlib.sha256).digest()).rstrip(b"=").decode()


def sign(keys, recipient, account, folder, uidvalidity, uid, extra=""):
    """A trace line (no CRLF) signed with one of keys (the tests' key
    files hold one): a valid header for these fields, made here."""
    kid = sorted(keys)[0]
    canonical = ("v=1; k=%s; r=%s; a=%s; p=imap; f=%s; uv=%d; u=%d%s" % (
        kid, recipient, account, folder, uidvalidity, uid, extra)).encode()
    return TRACE_NAME + b": " + canonical + b"; m=" + \
        mac(keys[kid], canonical).encode()


def mac_ok(fields, keys):
    key = keys.get(fields["k"])
    if key is None:
        return False
    return hmac.compare_digest(mac(key, fields["canonical"]), fields["m"])


def trace_problems(d, keys, user, account, folder, uidvalidity, uid):
    """What is wrong with a delivered copy's trace header (empty: nothing):
    Tributary's, topmost of its name, one 7-bit line of at most 998 bytes
    with its CRLF, for this user, account, remote folder, UIDVALIDITY and
    UID, signed with the local trace key."""
    p = []
    if d.trace is None:
        return ["no trace header right below LMTP's lines"]
    if len(d.trace) + 2 > 998:
        p.append("trace line %d bytes" % (len(d.trace) + 2))
    if any(c > 126 or c < 32 for c in d.trace):
        p.append("trace line not 7-bit printable")
    f = d.fields
    if f is None:
        return p + ["trace line unparsable: %r" % d.trace[:200]]
    want = {"r": user, "a": account, "p": "imap", "f": folder,
            "uv": uidvalidity, "u": uid}
    for k, v in want.items():
        if f[k] != v:
            p.append("%s=%r, expected %r" % (k, f[k], v))
    if not mac_ok(f, keys):
        p.append("MAC does not verify under the local trace key")
    for line in d.lmtp:
        if line.startswith(TRACE_NAME):
            p.append("a trace header among LMTP's lines")
    return p
