#!/usr/bin/env python3
"""OAuth 2.0 stand-in for Tributary's integration tests (Python stdlib only).

A small threaded HTTPS server that holds tokens in memory and answers:

  POST /introspect            RFC 7662 token introspection, as Dovecot's
  GET  /introspect            oauth2 passdb calls it (introspection_mode =
                              post: form body token=...; mode auth: GET with
                              "Authorization: Bearer ..."; mode get: ?token=)

The grants (form bodies; client authentication by client_id/client_secret
in the body or HTTP Basic; errors as RFC 6749 5.2 JSON, invalid_client 401,
others 400):

  POST /token                 grant_type=
                                refresh_token        (+ refresh_token, scope):
                                  rotation on by default: a new refresh token
                                  every time, the old one then refused
                                  (invalid_grant); with rotation off none is
                                  returned (Google's way)
                                authorization_code   (+ code, redirect_uri,
                                  code_verifier): PKCE S256 checked; a code
                                  works once, for 60 s, for its redirect_uri
                                urn:ietf:params:oauth:grant-type:device_code
                                  (+ device_code): authorization_pending,
                                  slow_down (polled sooner than the interval,
                                  which then grows by 5 s, or forced),
                                  expired_token, access_denied, or tokens
                                client_credentials   (+ scope ending in
                                  "/.default"): confidential clients only
  POST /devicecode            RFC 8628 3.1 (client_id, scope) -> device_code,
                              user_code, verification_uri(_complete),
                              expires_in, interval, message
  GET  /authorize             response_type=code, client_id, redirect_uri
                              (loopback http or https), scope, state,
                              code_challenge + code_challenge_method=S256,
                              [login_hint]: "signs in" the user set with
                              /control/authorize (or login_hint) and answers
                              302 to redirect_uri?code=...&state=... (or
                              ?error=access_denied&state=...); a scripted
                              "browser" follows that Location
  GET  /device                the verification page (text only)
  /{tenant}/oauth2/v2.0/{token,devicecode,authorize}: the same, Microsoft's
                              shape; a client registered with a tenant is
                              refused under another one

Access tokens from /token introspect like minted ones (the user is the one
who authorized; for client_credentials the client's "mailbox"), so they log
in to the remote Dovecot with XOAUTH2.

Registered clients (more with /control/client):
  tributary-public            public (no secret; sending one is
                              invalid_client, like Microsoft's AADSTS700025);
                              refresh tokens only with offline_access in the
                              scope (Microsoft's rule)
  tributary-confidential      secret "tributary-confidential-secret" required
                              (Google desktop apps)
  tributary-daemon            secret "tributary-daemon-secret", tenant
                              "contoso.example", client_credentials only,
                              mailbox alice@example.com (Microsoft 365
                              app-only)
  and the local Dovecot's apps (harness.py): test-gmail-client.apps.
  googleusercontent.com (secret test-gmail-client-secret-value) and
  00000000-0000-4000-8000-0000000000aa (public, offline_access rule).

Control API (JSON in and out):
  POST /control/mint          {"user": U, "ttl": S, "scope": "mail"}
                              -> {"access_token", "token_type", "expires_in"}
  POST /control/expire        {"token": T} -> token's expiry moved to the past
                              (access or refresh token)
  POST /control/revoke        {"token": T} -> token revoked (access or
                              refresh token)
  POST /control/grant         {"user": U, "client_id": C, "scope": S}
                              -> {"refresh_token"}: as if U had authorized C
  POST /control/client        {"client_id", "client_secret": S|null,
                              "grants": [...], "offline_access_required",
                              "tenant", "mailbox"}: register or replace
  POST /control/settings      {"rotate": bool, "access_ttl": S,
                              "device_interval": S, "device_expires_in": S,
                              "code_ttl": S}: any subset; -> all settings
  POST /control/authorize     {"user": U|null, "deny": bool}: who signs in at
                              the next GET /authorize (kept until changed)
  POST /control/device        {"user_code": C, "action": "approve"|"deny"|
                              "expire", "user": U} or {"user_code": C,
                              "slow_down": N}: the next N polls get slow_down
  POST /control/fault         {"kind": K, "count": N (1), "path": "/token"}
                              for the next N requests to path (/token or
                              /devicecode, any tenant prefix): K = "delay"
                              (+ "seconds": S, then the normal answer),
                              "broken_json" (200, truncated JSON),
                              "huge_json" (200, 1 MiB of valid JSON;
                              + "chunked": true: no Content-Length),
                              "status" (+ "status": 503|429|..., optional
                              "retry_after": "7" or an HTTP date, optional
                              "body": raw text instead of the JSON error);
                              {"kind": "clear"} drops the pending faults
  GET  /control/stats         -> {"introspections": N, "by_token": {T: n},
                                  "by_result": {"active": n, "inactive": n},
                                  "tokens", "requests", "grants": {grant: n},
                                  "refresh_tokens", "faults_pending"}
  POST /control/reset         zero the counters, drop pending faults (tokens
                              and settings are kept)
  GET  /control/health        -> {"ok": true}

Introspection answers HTTP 200 {"active": true, "email": ..., ...} for a live
token and HTTP 200 {"active": false} for an unknown, expired or revoked one:
that is what makes Dovecot fail the authentication permanently
(NO [AUTHENTICATIONFAILED]) rather than temporarily ([UNAVAILABLE]).

Routes live in the ROUTES dispatch table at the bottom: a new endpoint is one
handler function plus one line there. Handlers take (state, request) and
return a Response.

Binds 127.0.0.1 only. Logs one line per request to --log (never stderr; no
bodies, so no secrets). Writes the port it listens on to --port-file once it
accepts connections (atomically: temp file + rename), so callers can use
--port 0.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
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
HUGE_JSON_SIZE = 1 << 20
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ALL_GRANTS = ("refresh_token", "authorization_code", DEVICE_GRANT,
              "client_credentials")
# Microsoft's tenant-specific paths: /{tenant}/oauth2/v2.0/{endpoint}.
TENANT_PATH = re.compile(
    r"^/([A-Za-z0-9.-]+)/oauth2/v2\.0/(token|devicecode|authorize)$")
GRANT_PATHS = ("/token", "/devicecode")


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


class Client:
    """A registered OAuth client (app)."""
    __slots__ = ("client_id", "secret", "grants", "offline_access_required",
                 "tenant", "mailbox")

    def __init__(self, client_id, secret=None, grants=ALL_GRANTS,
                 offline_access_required=False, tenant=None, mailbox=None):
        self.client_id = client_id
        self.secret = secret                # None: a public client
        self.grants = tuple(grants)
        self.offline_access_required = offline_access_required
        self.tenant = tenant
        self.mailbox = mailbox


class RefreshToken:
    __slots__ = ("value", "user", "client_id", "scope", "exp", "revoked",
                 "rotated")

    def __init__(self, value, user, client_id, scope, exp=None):
        self.value = value
        self.user = user
        self.client_id = client_id
        self.scope = scope
        self.exp = exp                      # None: no expiry
        self.revoked = False
        self.rotated = False                # replaced by a newer one

    def active(self, now=None):
        now = time.time() if now is None else now
        return (not self.revoked and not self.rotated and
                (self.exp is None or now < self.exp))


class AuthCode:
    __slots__ = ("client_id", "user", "redirect_uri", "scope", "challenge",
                 "exp", "used")

    def __init__(self, client_id, user, redirect_uri, scope, challenge, exp):
        self.client_id = client_id
        self.user = user
        self.redirect_uri = redirect_uri
        self.scope = scope
        self.challenge = challenge
        self.exp = exp
        self.used = False


class DeviceGrant:
    __slots__ = ("device_code", "user_code", "client_id", "scope", "exp",
                 "interval", "last_poll", "status", "user", "force_slow_down")

    def __init__(self, device_code, user_code, client_id, scope, exp,
                 interval):
        self.device_code = device_code
        self.user_code = user_code
        self.client_id = client_id
        self.scope = scope
        self.exp = exp                      # time.time() based
        self.interval = interval
        self.last_poll = None               # time.monotonic() of last poll
        self.status = "pending"             # approved, denied
        self.user = None
        self.force_slow_down = 0


class Fault:
    __slots__ = ("kind", "count", "path", "seconds", "status", "retry_after",
                 "body", "chunked")

    def __init__(self, kind, count, path, seconds=0, status=503,
                 retry_after=None, body=None, chunked=False):
        self.kind = kind
        self.count = count
        self.path = path
        self.seconds = seconds
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.chunked = chunked


def default_clients():
    return {c.client_id: c for c in (
        Client("tributary-public", None, offline_access_required=True),
        Client("tributary-confidential", "tributary-confidential-secret"),
        Client("tributary-daemon", "tributary-daemon-secret",
               grants=("client_credentials",), tenant="contoso.example",
               mailbox="alice@example.com"),
        # The local Dovecot's "registered apps" (harness.py LOCAL_CONF).
        Client("test-gmail-client.apps.googleusercontent.com",
               "test-gmail-client-secret-value"),
        Client("00000000-0000-4000-8000-0000000000aa", None,
               offline_access_required=True),
    )}


DEFAULT_SETTINGS = {
    "rotate": True,             # refresh_token grant returns a new one
    "access_ttl": 3600,         # expires_in of access tokens from /token
    "device_interval": 5,       # RFC 8628's default
    "device_expires_in": 600,
    "code_ttl": 60,
}


class State:
    """Everything the server knows. One lock; handlers are short."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tokens = {}            # access token -> Token
        self.introspections = 0
        self.by_token = {}          # token -> count (unknown tokens too)
        self.by_result = {"active": 0, "inactive": 0}
        self.requests = 0
        self.clients = default_clients()
        self.refresh_tokens = {}    # value -> RefreshToken
        self.codes = {}             # code -> AuthCode
        self.devices = {}           # device_code -> DeviceGrant
        self.user_codes = {}        # user_code -> device_code
        self.settings = dict(DEFAULT_SETTINGS)
        self.authorize_user = None  # who "signs in" at /authorize
        self.authorize_deny = False
        self.faults = []            # pending Fault objects, in order
        self.grants = {}            # grant_type -> requests seen

    def new_token(self, user, ttl, scope="mail", client_id=None):
        # b64token characters only (RFC 6750): Dovecot refuses anything else
        # before it even asks us ("Invalid continued data").
        value = "tok-" + secrets.token_urlsafe(32)
        tok = Token(value, user, scope, time.time() + ttl, client_id)
        with self.lock:
            self.tokens[value] = tok
        return tok

    def new_refresh_token(self, user, client_id, scope):
        value = "rt-" + secrets.token_urlsafe(32)
        rt = RefreshToken(value, user, client_id, scope)
        with self.lock:
            self.refresh_tokens[value] = rt
        return rt

    def lookup(self, value):
        with self.lock:
            return self.tokens.get(value)

    def count_introspection(self, value, active):
        with self.lock:
            self.introspections += 1
            key = value if value is not None else ""
            self.by_token[key] = self.by_token.get(key, 0) + 1
            self.by_result["active" if active else "inactive"] += 1

    def count_grant(self, grant):
        with self.lock:
            key = grant if grant in ALL_GRANTS else "other"
            self.grants[key] = self.grants.get(key, 0) + 1

    def take_fault(self, path):
        """The next fault for path (consumed), or None."""
        with self.lock:
            for f in self.faults:
                if f.path == path:
                    f.count -= 1
                    if f.count <= 0:
                        self.faults.remove(f)
                    return f
        return None

    def stats(self):
        with self.lock:
            return {
                "introspections": self.introspections,
                "by_token": dict(self.by_token),
                "by_result": dict(self.by_result),
                "tokens": len(self.tokens),
                "requests": self.requests,
                "grants": dict(self.grants),
                "refresh_tokens": len(self.refresh_tokens),
                "faults_pending": sum(f.count for f in self.faults),
            }

    def reset(self):
        with self.lock:
            self.introspections = 0
            self.by_token = {}
            self.by_result = {"active": 0, "inactive": 0}
            self.grants = {}
            self.faults = []


# --------------------------------------------------------------------------
# Request / response helpers


class HttpError(Exception):
    def __init__(self, status, error, description=None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description


class Request:
    def __init__(self, method, path, query, headers, body, tenant=None):
        self.method = method
        self.path = path            # the route: tenant prefix removed
        self.query = query          # dict: name -> first value
        self.headers = headers      # email.message.Message (case-insensitive)
        self.body = body            # bytes
        self.tenant = tenant        # from /{tenant}/oauth2/v2.0/..., or None

    def base_url(self):
        return "https://%s" % self.headers.get("Host", BIND_HOST)

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
                 headers=None, chunked=False):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.chunked = chunked      # Transfer-Encoding: chunked, no length

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
    """The access token (Token) or refresh token (RefreshToken) named by
    the JSON body's "token"."""
    value = require(req.json(), "token")
    tok = state.lookup(value)
    if tok is None:
        with state.lock:
            tok = state.refresh_tokens.get(value)
    if tok is None:
        raise HttpError(404, "unknown_token", "no such token")
    return tok


def h_expire(state, req):
    tok = _token_from_body(state, req)
    with state.lock:
        tok.exp = min(tok.exp if tok.exp is not None else time.time(),
                      time.time() - 1)
    return Response.json({"token": tok.value, "expired": True,
                          "exp": int(tok.exp)})


def h_revoke(state, req):
    tok = _token_from_body(state, req)
    with state.lock:
        tok.revoked = True
    return Response.json({"token": tok.value, "revoked": True,
                          "kind": "refresh" if isinstance(tok, RefreshToken)
                          else "access"})


# ---- the grants


def oauth_error(error, description, status=400):
    return HttpError(status, error, description)


def client_auth(state, req, form, need_secret=False):
    """The registered client of the request (body or HTTP Basic
    credentials), or an invalid_client error (401)."""
    basic = req.basic_auth()
    cid = form.get("client_id")
    secret = form.get("client_secret")
    if basic is not None:
        if cid is not None and cid != basic[0]:
            raise oauth_error("invalid_request", "two client ids")
        cid, secret = basic
    if not cid:
        raise oauth_error("invalid_client", "no client_id", 401)
    with state.lock:
        client = state.clients.get(cid)
    if client is None:
        raise oauth_error("invalid_client", "unknown client", 401)
    if client.secret is None:
        if secret:
            # Microsoft: AADSTS700025 for a public client sending a secret.
            raise oauth_error("invalid_client", "AADSTS700025: Client is "
                              "public so neither 'client_assertion' nor "
                              "'client_secret' should be presented.", 401)
        if need_secret:
            raise oauth_error("unauthorized_client", "a public client "
                              "cannot use this grant")
    else:
        if not secret:
            raise oauth_error("invalid_client", "client_secret is "
                              "missing", 401)
        if not hmac.compare_digest(secret.encode(), client.secret.encode()):
            raise oauth_error("invalid_client", "client_secret is wrong",
                              401)
    if client.tenant is not None and req.tenant != client.tenant:
        raise oauth_error("invalid_request", "AADSTS90002: tenant '%s' not "
                          "found for this app" % (req.tenant or ""))
    return client


def token_answer(state, client, user, scope, refresh=None):
    tok = state.new_token(user, state.settings["access_ttl"], scope or "mail",
                          client.client_id)
    obj = {
        "access_token": tok.value,
        "token_type": "Bearer",
        "expires_in": int(state.settings["access_ttl"]),
        "scope": scope or "",
    }
    if refresh is not None:
        obj["refresh_token"] = refresh.value
    return Response.json(obj)


def offline_ok(client, scope):
    return (not client.offline_access_required or
            "offline_access" in (scope or "").split())


def grant_refresh(state, req, form, client):
    value = form.get("refresh_token")
    if not value:
        raise oauth_error("invalid_request", "no refresh_token")
    with state.lock:
        rt = state.refresh_tokens.get(value)
        ok = (rt is not None and rt.active() and
              rt.client_id == client.client_id)
        rotate = state.settings["rotate"]
        if ok and rotate:
            rt.rotated = True
    if not ok:
        raise oauth_error("invalid_grant", "AADSTS70008: the refresh token "
                          "is invalid, expired, revoked or already used")
    new = state.new_refresh_token(rt.user, rt.client_id, rt.scope) \
        if rotate else None
    return token_answer(state, client, rt.user, form.get("scope") or rt.scope,
                        new)


def pkce_s256(verifier):
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def grant_code(state, req, form, client):
    code = form.get("code")
    verifier = form.get("code_verifier")
    if not code:
        raise oauth_error("invalid_request", "no code")
    with state.lock:
        ac = state.codes.get(code)
        fresh = ac is not None and not ac.used and time.time() < ac.exp
        if ac is not None:
            ac.used = True          # one attempt, right or wrong
    if not fresh or ac.client_id != client.client_id:
        raise oauth_error("invalid_grant", "the code is invalid, expired or "
                          "already used")
    if form.get("redirect_uri") != ac.redirect_uri:
        raise oauth_error("invalid_grant", "redirect_uri does not match the "
                          "authorization request")
    if not verifier or not PKCE_VERIFIER.match(verifier):
        raise oauth_error("invalid_request", "code_verifier is missing or "
                          "malformed")
    if not hmac.compare_digest(pkce_s256(verifier), ac.challenge):
        raise oauth_error("invalid_grant", "PKCE verification failed: the "
                          "code_verifier does not match the code_challenge")
    refresh = state.new_refresh_token(ac.user, client.client_id, ac.scope) \
        if offline_ok(client, ac.scope) else None
    return token_answer(state, client, ac.user, ac.scope, refresh)


def grant_device(state, req, form, client):
    code = form.get("device_code")
    if not code:
        raise oauth_error("invalid_request", "no device_code")
    now = time.monotonic()
    with state.lock:
        dg = state.devices.get(code)
        if dg is None or dg.client_id != client.client_id:
            answer = "invalid_grant"
        elif time.time() >= dg.exp:
            answer = "expired_token"
        elif dg.force_slow_down > 0:
            dg.force_slow_down -= 1
            dg.interval += 5
            answer = "slow_down"
        elif dg.last_poll is not None and \
                now - dg.last_poll < dg.interval - 0.2:
            # RFC 8628 3.5: too soon; the interval grows by 5 s for good.
            dg.interval += 5
            answer = "slow_down"
        elif dg.status == "pending":
            answer = "authorization_pending"
        elif dg.status == "denied":
            answer = "access_denied"
        else:
            answer = "approved"
            del state.devices[code]
            state.user_codes.pop(dg.user_code, None)
        if dg is not None:
            dg.last_poll = now
    if answer != "approved":
        raise oauth_error(answer, {
            "invalid_grant": "unknown device_code",
            "expired_token": "the device code expired",
            "slow_down": "polling too fast",
            "authorization_pending": "the user has not finished signing in",
            "access_denied": "the user declined",
        }[answer])
    refresh = state.new_refresh_token(dg.user, client.client_id, dg.scope) \
        if offline_ok(client, dg.scope) else None
    return token_answer(state, client, dg.user, dg.scope, refresh)


def grant_client_credentials(state, req, form, client):
    scope = form.get("scope") or ""
    if not scope.endswith("/.default") or " " in scope:
        raise oauth_error("invalid_scope", "AADSTS1002012: the scope must be "
                          "one resource's /.default")
    return token_answer(state, client,
                        client.mailbox or "app:" + client.client_id, scope)


GRANTS = {
    "refresh_token": grant_refresh,
    "authorization_code": grant_code,
    DEVICE_GRANT: grant_device,
    "client_credentials": grant_client_credentials,
}


def h_token(state, req):
    form = req.form()
    grant = form.get("grant_type")
    state.count_grant(grant)
    if not grant:
        raise oauth_error("invalid_request", "no grant_type")
    handler = GRANTS.get(grant)
    if handler is None:
        raise oauth_error("unsupported_grant_type", "unknown grant_type")
    client = client_auth(state, req, form,
                         need_secret=grant == "client_credentials")
    if grant not in client.grants:
        raise oauth_error("unauthorized_client", "this client may not use "
                          "the %s grant" % grant)
    return handler(state, req, form, client)


def h_devicecode(state, req):
    form = req.form()
    client = client_auth(state, req, form)
    if DEVICE_GRANT not in client.grants:
        raise oauth_error("unauthorized_client", "no device flow for this "
                          "client")
    scope = form.get("scope") or ""
    letters = "BCDFGHJKLMNPQRSTVWXZ"
    user_code = "".join(secrets.choice(letters) for _ in range(8))
    user_code = user_code[:4] + "-" + user_code[4:]
    with state.lock:
        interval = state.settings["device_interval"]
        expires_in = state.settings["device_expires_in"]
    dg = DeviceGrant("dc-" + secrets.token_urlsafe(32), user_code,
                     client.client_id, scope, time.time() + expires_in,
                     interval)
    with state.lock:
        state.devices[dg.device_code] = dg
        state.user_codes[user_code] = dg.device_code
    uri = req.base_url() + "/device"
    return Response.json({
        "device_code": dg.device_code,
        "user_code": user_code,
        "verification_uri": uri,
        "verification_uri_complete": uri + "?user_code=" + user_code,
        "expires_in": int(expires_in),
        "interval": int(interval),
        "message": "To sign in, use a web browser to open the page %s and "
                   "enter the code %s to authenticate." % (uri, user_code),
    })


def h_device_page(state, req):
    return Response(200, b"Tributary test stand-in: approve device codes "
                    b"with POST /control/device\n", "text/plain")


def redirect_with(uri, params):
    sep = "&" if "?" in uri else "?"
    return Response(302, b"", "text/plain", headers={
        "Location": uri + sep + urllib.parse.urlencode(params)})


def loopback_or_https(uri):
    u = urllib.parse.urlsplit(uri)
    if u.scheme == "https" and u.hostname:
        return True
    return u.scheme == "http" and u.hostname in ("127.0.0.1", "::1",
                                                 "localhost")


def h_authorize(state, req):
    q = req.query
    with state.lock:
        client = state.clients.get(q.get("client_id", ""))
        user = state.authorize_user or q.get("login_hint")
        deny = state.authorize_deny
    uri = q.get("redirect_uri", "")
    # Errors about the client or redirect_uri are never redirected.
    if client is None:
        raise HttpError(400, "invalid_client", "unknown client_id")
    if not loopback_or_https(uri):
        raise HttpError(400, "invalid_request", "redirect_uri must be a "
                        "loopback http:// or an https:// URL")
    extra = {"state": q["state"]} if "state" in q else {}
    if q.get("response_type") != "code":
        return redirect_with(uri, dict(error="unsupported_response_type",
                                       **extra))
    if q.get("code_challenge_method") != "S256" or \
            not re.match(r"^[A-Za-z0-9_-]{43}$", q.get("code_challenge", "")):
        return redirect_with(uri, dict(error="invalid_request",
                                       error_description="PKCE S256 "
                                       "required", **extra))
    if deny or not user:
        return redirect_with(uri, dict(error="access_denied", **extra))
    code = "code-" + secrets.token_urlsafe(24)
    with state.lock:
        state.codes[code] = AuthCode(client.client_id, user, uri,
                                     q.get("scope", ""),
                                     q["code_challenge"],
                                     time.time() + state.settings["code_ttl"])
    return redirect_with(uri, dict(code=code, **extra))


# ---- control of the grants


def _bool(obj, name, default=None):
    val = obj.get(name, default)
    if not isinstance(val, bool):
        raise HttpError(400, "invalid_request", "bad '%s'" % name)
    return val


def _opt_str(obj, name):
    val = obj.get(name)
    if val is not None and not isinstance(val, str):
        raise HttpError(400, "invalid_request", "bad '%s'" % name)
    return val


def _number(obj, name, default=None):
    val = obj.get(name, default)
    if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0:
        raise HttpError(400, "invalid_request", "bad '%s'" % name)
    return val


def h_grant(state, req):
    body = req.json()
    user = require(body, "user")
    cid = require(body, "client_id")
    scope = _opt_str(body, "scope") or "mail offline_access"
    with state.lock:
        known = cid in state.clients
    if not known:
        raise HttpError(404, "unknown_client", "no such client")
    rt = state.new_refresh_token(user, cid, scope)
    return Response.json({"refresh_token": rt.value, "user": user,
                          "client_id": cid, "scope": scope})


def h_client(state, req):
    body = req.json()
    cid = require(body, "client_id")
    grants = body.get("grants", list(ALL_GRANTS))
    if not isinstance(grants, list) or \
            any(g not in ALL_GRANTS for g in grants):
        raise HttpError(400, "invalid_request", "bad 'grants'")
    client = Client(cid, _opt_str(body, "client_secret"), grants,
                    _bool(body, "offline_access_required", False),
                    _opt_str(body, "tenant"), _opt_str(body, "mailbox"))
    with state.lock:
        state.clients[cid] = client
    return Response.json({"client_id": cid, "public": client.secret is None})


def h_settings(state, req):
    body = req.json()
    new = {}
    for name, default in DEFAULT_SETTINGS.items():
        if name not in body:
            continue
        new[name] = (_bool(body, name) if isinstance(default, bool)
                     else _number(body, name))
    unknown = set(body) - set(DEFAULT_SETTINGS)
    if unknown:
        raise HttpError(400, "invalid_request", "unknown settings: %s"
                        % ", ".join(sorted(unknown)))
    with state.lock:
        state.settings.update(new)
        return Response.json(dict(state.settings))


def h_control_authorize(state, req):
    body = req.json()
    user = _opt_str(body, "user")
    deny = _bool(body, "deny", False)
    with state.lock:
        state.authorize_user = user
        state.authorize_deny = deny
    return Response.json({"user": user, "deny": deny})


def h_control_device(state, req):
    body = req.json()
    user_code = require(body, "user_code")
    with state.lock:
        dg = state.devices.get(state.user_codes.get(user_code, ""))
    if dg is None:
        raise HttpError(404, "unknown_user_code", "no such user code")
    if "slow_down" in body:
        n = _number(body, "slow_down")
        with state.lock:
            dg.force_slow_down = int(n)
        return Response.json({"user_code": user_code, "slow_down": int(n)})
    action = require(body, "action")
    with state.lock:
        if action == "approve":
            dg.status = "approved"
            dg.user = require(body, "user")
        elif action == "deny":
            dg.status = "denied"
        elif action == "expire":
            dg.exp = time.time() - 1
        else:
            raise HttpError(400, "invalid_request", "bad 'action'")
        return Response.json({"user_code": user_code, "status": dg.status,
                              "interval": dg.interval})


FAULT_KINDS = ("delay", "broken_json", "huge_json", "status")


def h_fault(state, req):
    body = req.json()
    kind = require(body, "kind")
    if kind == "clear":
        with state.lock:
            state.faults = []
        return Response.json({"cleared": True})
    if kind not in FAULT_KINDS:
        raise HttpError(400, "invalid_request", "bad 'kind'")
    path = body.get("path", "/token")
    if path not in GRANT_PATHS:
        raise HttpError(400, "invalid_request", "bad 'path'")
    retry_after = body.get("retry_after")
    if retry_after is not None and not isinstance(retry_after, (str, int)):
        raise HttpError(400, "invalid_request", "bad 'retry_after'")
    status = _number(body, "status", 503)
    if kind == "status" and not 100 <= status <= 599:
        raise HttpError(400, "invalid_request", "bad 'status'")
    fault = Fault(kind, int(_number(body, "count", 1)), path,
                  seconds=_number(body, "seconds", 0),
                  status=int(status),
                  retry_after=None if retry_after is None else str(retry_after),
                  body=_opt_str(body, "body"),
                  chunked=_bool(body, "chunked", False))
    with state.lock:
        state.faults.append(fault)
    return Response.json({"kind": kind, "count": fault.count, "path": path})


def fault_response(fault):
    """The answer a fault gives instead of the handler's (None: delay,
    then the normal answer)."""
    if fault.kind == "delay":
        time.sleep(fault.seconds)
        return None
    if fault.kind == "broken_json":
        return Response(200, b'{"access_token": "tok-broken", "token_ty')
    if fault.kind == "huge_json":
        head = b'{"access_token": "tok-huge", "token_type": "Bearer", ' \
            b'"expires_in": 3600, "padding": "'
        tail = b'"}'
        pad = b"x" * (HUGE_JSON_SIZE - len(head) - len(tail))
        return Response(200, head + pad + tail, chunked=fault.chunked)
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    if fault.body is not None:
        return Response(fault.status, fault.body.encode(), "text/html",
                        headers)
    error = "temporarily_unavailable" if fault.status >= 500 or \
        fault.status == 429 else "invalid_request"
    return Response.json({"error": error,
                          "error_description": "fault injected by the "
                          "stand-in"}, fault.status, headers)


def h_stats(state, req):
    return Response.json(state.stats())


def h_reset(state, req):
    state.reset()
    return Response.json({"reset": True})


def h_health(state, req):
    return Response.json({"ok": True})


# The dispatch table. Paths under /{tenant}/oauth2/v2.0/ reach the same
# handlers (req.tenant says which tenant).
ROUTES = {
    ("POST", "/introspect"): h_introspect,
    ("GET", "/introspect"): h_introspect,
    ("POST", "/token"): h_token,
    ("POST", "/devicecode"): h_devicecode,
    ("GET", "/authorize"): h_authorize,
    ("GET", "/device"): h_device_page,
    ("POST", "/control/mint"): h_mint,
    ("POST", "/control/expire"): h_expire,
    ("POST", "/control/revoke"): h_revoke,
    ("POST", "/control/grant"): h_grant,
    ("POST", "/control/client"): h_client,
    ("POST", "/control/settings"): h_settings,
    ("POST", "/control/authorize"): h_control_authorize,
    ("POST", "/control/device"): h_control_device,
    ("POST", "/control/fault"): h_fault,
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
    # Headers and body go out in two writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True

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
            path, tenant = url.path, None
            m = TENANT_PATH.match(path)
            if m is not None:
                tenant, path = m.group(1), "/" + m.group(2)
            handler = ROUTES.get((self.command, path))
            if handler is None:
                if any(p == path for (_, p) in ROUTES):
                    raise HttpError(405, "method_not_allowed")
                raise HttpError(404, "not_found")
            resp = None
            if self.command == "POST" and path in GRANT_PATHS:
                fault = self.server.state.take_fault(path)
                if fault is not None:
                    self.log_message("fault %s on %s", fault.kind, path)
                    resp = fault_response(fault)
            if resp is None:
                resp = handler(self.server.state,
                               Request(self.command, path, query,
                                       self.headers, body, tenant))
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
        if resp.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if not resp.chunked:
            self.wfile.write(resp.body)
            return
        for i in range(0, len(resp.body), 16384):
            chunk = resp.body[i:i + 16384]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

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
