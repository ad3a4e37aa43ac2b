#!/usr/bin/env python3
"""OAuth 2.0 stand-in for Tributary's integration tests (Python stdlib only).

A small threaded HTTPS server that holds access tokens in memory and answers:

  POST /introspect            RFC 7662 token introspection, as Dovecot's
  GET  /introspect            oauth2 passdb calls it (introspection_mode =
                              post: form body token=...; mode auth: GET with
                              "Authorization: Bearer ..."; mode get: ?token=)
  POST /control/mint          {"user": U, "ttl": S, "scope": "mail"}
                              -> {"access_token", "token_type", "expires_in"}
  POST /control/expire        {"token": T} -> token's expiry moved to the past
  POST /control/revoke        {"token": T} -> token revoked
  GET  /control/stats         -> {"introspections": N, "by_token": {T: n},
                                  "by_result": {"active": n, "inactive": n}}
  POST /control/reset         zero the counters (tokens are kept)
  GET  /control/health        -> {"ok": true}

Introspection answers HTTP 200 {"active": true, "email": ..., ...} for a live
token and HTTP 200 {"active": false} for an unknown, expired or revoked one:
that is what makes Dovecot fail the authentication permanently
(NO [AUTHENTICATIONFAILED]) rather than temporarily ([UNAVAILABLE]).

Routes live in the ROUTES dispatch table at the bottom: a new endpoint (the
OAuth grant endpoints: token, device code, authorize) is one handler function
plus one line there. Handlers take (state, request) and return a Response.

Binds 127.0.0.1 only. Logs one line per request to --log (never stderr).
Writes the port it listens on to --port-file once it accepts connections
(atomically: temp file + rename), so callers can use --port 0.
"""

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIND_HOST = "127.0.0.1"
MAX_BODY = 1 << 20


# --------------------------------------------------------------------------
# State


class Token:
    __slots__ = ("value", "user", "scope", "exp", "revoked", "client_id",
                 "created")

    def __init__(self, value, user, scope, exp, client_id=None):
        self.value = value
        self.user = user
        self.scope = scope
        self.exp = exp
        self.revoked = False
        self.client_id = client_id
        self.created = time.time()

    def active(self, now=None):
        now = time.time() if now is None else now
        return not self.revoked and now < self.exp


class State:
    """Everything the server knows. One lock; handlers are short."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tokens = {}            # access token -> Token
        self.introspections = 0
        self.by_token = {}          # token -> count (unknown tokens too)
        self.by_result = {"active": 0, "inactive": 0}
        self.requests = 0

    def new_token(self, user, ttl, scope="mail", client_id=None):
        # b64token characters only (RFC 6750): Dovecot refuses anything else
        # before it even asks us ("Invalid continued data").
        value = "tok-" + secrets.token_urlsafe(32)
        tok = Token(value, user, scope, time.time() + ttl, client_id)
        with self.lock:
            self.tokens[value] = tok
        return tok

    def lookup(self, value):
        with self.lock:
            return self.tokens.get(value)

    def count_introspection(self, value, active):
        with self.lock:
            self.introspections += 1
            key = value if value is not None else ""
            self.by_token[key] = self.by_token.get(key, 0) + 1
            self.by_result["active" if active else "inactive"] += 1

    def stats(self):
        with self.lock:
            return {
                "introspections": self.introspections,
                "by_token": dict(self.by_token),
                "by_result": dict(self.by_result),
                "tokens": len(self.tokens),
                "requests": self.requests,
            }

    def reset(self):
        with self.lock:
            self.introspections = 0
            self.by_token = {}
            self.by_result = {"active": 0, "inactive": 0}


# --------------------------------------------------------------------------
# Request / response helpers


class HttpError(Exception):
    def __init__(self, status, error, description=None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description


class Request:
    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query          # dict: name -> first value
        self.headers = headers      # email.message.Message (case-insensitive)
        self.body = body            # bytes

    def form(self):
        """application/x-www-form-urlencoded body as a dict (first values)."""
        try:
            text = self.body.decode("ascii")
        except UnicodeDecodeError:
            raise HttpError(400, "invalid_request", "body is not ASCII")
        return {k: v[0] for k, v in
                urllib.parse.parse_qs(text, keep_blank_values=True).items()}

    def json(self):
        if not self.body:
            return {}
        try:
            obj = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "invalid_request", "body is not JSON")
        if not isinstance(obj, dict):
            raise HttpError(400, "invalid_request", "JSON body must be an object")
        return obj

    def bearer(self):
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return None

    def basic_auth(self):
        """(client_id, client_secret) from HTTP Basic, or None."""
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() != "basic ":
            return None
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
            cid, _, secret = raw.partition(":")
            return (urllib.parse.unquote(cid), urllib.parse.unquote(secret))
        except (ValueError, UnicodeDecodeError):
            return None


class Response:
    def __init__(self, status=200, body=b"", content_type="application/json",
                 headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    @classmethod
    def json(cls, obj, status=200, headers=None):
        return cls(status, (json.dumps(obj) + "\n").encode(),
                   "application/json", headers)


def require(obj, name, kind=str):
    val = obj.get(name)
    if not isinstance(val, kind) or (kind is str and not val):
        raise HttpError(400, "invalid_request", "missing or bad '%s'" % name)
    return val


# --------------------------------------------------------------------------
# Handlers: (state, request) -> Response


def h_introspect(state, req):
    token = None
    if req.method == "POST":
        ctype = req.headers.get("Content-Type", "")
        if "json" in ctype:
            token = req.json().get("token")
        else:
            token = req.form().get("token")
    if token is None:
        token = req.query.get("token")
    if token is None:
        token = req.bearer()
    tok = state.lookup(token) if token else None
    active = tok is not None and tok.active()
    state.count_introspection(token, active)
    if not active:
        # 200 + active:false => Dovecot: permanent auth failure.
        return Response.json({"active": False})
    return Response.json({
        "active": True,
        "email": tok.user,
        "sub": tok.user,
        "username": tok.user,
        "scope": tok.scope,
        "token_type": "Bearer",
        "exp": int(tok.exp),
        "iat": int(tok.created),
        "client_id": tok.client_id or "tributary-test",
    })


def h_mint(state, req):
    body = req.json()
    user = require(body, "user")
    ttl = body.get("ttl", 3600)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise HttpError(400, "invalid_request", "bad 'ttl'")
    scope = body.get("scope", "mail")
    if not isinstance(scope, str):
        raise HttpError(400, "invalid_request", "bad 'scope'")
    tok = state.new_token(user, ttl, scope, body.get("client_id"))
    return Response.json({
        "access_token": tok.value,
        "token_type": "Bearer",
        "expires_in": int(ttl),
        "scope": scope,
        "user": user,
    })


def _token_from_body(state, req):
    value = require(req.json(), "token")
    tok = state.lookup(value)
    if tok is None:
        raise HttpError(404, "unknown_token", "no such token")
    return tok


def h_expire(state, req):
    tok = _token_from_body(state, req)
    with state.lock:
        tok.exp = min(tok.exp, time.time() - 1)
    return Response.json({"token": tok.value, "expired": True,
                          "exp": int(tok.exp)})


def h_revoke(state, req):
    tok = _token_from_body(state, req)
    with state.lock:
        tok.revoked = True
    return Response.json({"token": tok.value, "revoked": True})


def h_stats(state, req):
    return Response.json(state.stats())


def h_reset(state, req):
    state.reset()
    return Response.json({"reset": True})


def h_health(state, req):
    return Response.json({"ok": True})


# The dispatch table. Later: ("POST", "/token"), ("POST", "/devicecode"),
# ("GET", "/authorize") ... each a handler like the ones above.
ROUTES = {
    ("POST", "/introspect"): h_introspect,
    ("GET", "/introspect"): h_introspect,
    ("POST", "/control/mint"): h_mint,
    ("POST", "/control/expire"): h_expire,
    ("POST", "/control/revoke"): h_revoke,
    ("GET", "/control/stats"): h_stats,
    ("POST", "/control/reset"): h_reset,
    ("GET", "/control/health"): h_health,
}


# --------------------------------------------------------------------------
# HTTP plumbing


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive: Dovecot's http-client reuses
    server_version = "TributaryOAuthStandin/1"
    sys_version = ""
    timeout = 30                        # idle keep-alive connections go away

    def _dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in
                 urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        length = self.headers.get("Content-Length")
        body = b""
        try:
            if length is not None:
                n = int(length)
                if n < 0 or n > MAX_BODY:
                    raise HttpError(413, "invalid_request", "body too large")
                body = self.rfile.read(n)
            elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raise HttpError(411, "invalid_request", "length required")
            handler = ROUTES.get((self.command, url.path))
            if handler is None:
                if any(p == url.path for (_, p) in ROUTES):
                    raise HttpError(405, "method_not_allowed")
                raise HttpError(404, "not_found")
            resp = handler(self.server.state,
                           Request(self.command, url.path, query,
                                   self.headers, body))
        except HttpError as e:
            obj = {"error": e.error}
            if e.description:
                obj["error_description"] = e.description
            resp = Response.json(obj, e.status)
        except ValueError:
            resp = Response.json({"error": "invalid_request"}, 400)
        except Exception as e:  # keep serving; the log says what broke
            self.log_message("handler error: %r", e)
            resp = Response.json({"error": "server_error"}, 500)
        with self.server.state.lock:
            self.server.state.requests += 1
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, fmt, *args):
        self.server.log("%s %s" % (self.address_string(), fmt % args))

    def handle(self):
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, socket.timeout, OSError) as e:
            self.server.log("connection %s: %r" % (self.client_address, e))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, ssl_ctx, state, logf):
        self.state = state
        self._logf = logf
        self._loglock = threading.Lock()
        super().__init__(addr, Handler)
        # Handshake in the per-connection thread, not in accept().
        self.socket = ssl_ctx.wrap_socket(self.socket, server_side=True,
                                          do_handshake_on_connect=False)

    def log(self, line):
        if self._logf is None:
            return
        with self._loglock:
            self._logf.write("%s %s\n" % (
                time.strftime("%Y-%m-%dT%H:%M:%S"), line))
            self._logf.flush()

    def handle_error(self, request, client_address):
        self.log("error from %s: %r" % (client_address, sys.exc_info()[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="server private key (PEM)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here")
    ap.add_argument("--log", help="request log file (default: none)")
    args = ap.parse_args(argv)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)

    logf = open(args.log, "a", buffering=1) if args.log else None
    srv = Server((BIND_HOST, args.port), ctx, State(), logf)
    port = srv.server_address[1]
    srv.log("listening on https://%s:%d pid %d" % (BIND_HOST, port, os.getpid()))

    def on_term(signum, frame):
        srv.log("signal %d, exiting" % signum)
        # shutdown() must not run in the serve_forever thread.
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)

    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
