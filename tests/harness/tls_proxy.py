"""A fault-injecting IMAP proxy for the sync tests (Python stdlib only).

It listens on 127.0.0.1 with implicit TLS under the harness's `valid`
certificate, connects each client to an upstream IMAPS server (the
remote Dovecot) verifying it with the test CA, and relays both ways. It
knows just enough IMAP to find response boundaries (lines and {N}
literals, server to client) and the client's commands (lines), so it can
end a session where a real server would:

    proxy = TlsProxy(cert, key, cafile, "127.0.0.1", imaps_port)
    proxy.start()                       # proxy.port: where it listens
    proxy.set_fault(fetch=2, after=10, bye=b"Session invalidated - "
                    b"AccessTokenExpired", cuts=1)
    ...
    proxy.stop()                        # closes everything, joins

A fault cuts a session after the client's `fetch`-th UID FETCH of
BODY.PEEK[] in that session (the metadata pass's FETCH does not count):
`after` = 0 cuts before that command reaches the server, `after` = K
lets K complete responses to it through first (in the middle of the
window, between two messages). The cut sends `* BYE <bye>` to the client
(none when bye is None: a plain lost connection) and closes both sides.
With `no` instead, that command never reaches the server: the proxy
answers it `<tag> NO <no>` and the session goes on. `cuts` = how many
sessions get cut (None: every one); later sessions are relayed
untouched. The counters (sessions, cuts, body_fetches) say what
happened.

One thread accepts, one thread per session relays (non-blocking sockets,
one select loop: an SSL object is never used from two threads). stop()
is safe to call twice and from tearDown after a failure."""

import select
import socket
import ssl
import threading

TICK = 0.2          # how often the loops look at the stop flag
HANDSHAKE_TIMEOUT = 30


def _send_all(sock, data, stopping):
    """Write all of data to a non-blocking SSL socket."""
    view = memoryview(data)
    while view and not stopping():
        try:
            n = sock.send(view)
            view = view[n:]
        except ssl.SSLWantWriteError:
            select.select([], [sock], [], TICK)
        except ssl.SSLWantReadError:
            select.select([sock], [], [], TICK)


def _recv(sock):
    """Application bytes now readable (b"" at EOF), or None for none."""
    try:
        return sock.recv(65536)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    except ssl.SSLZeroReturnError:
        return b""


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _ServerStream:
    """Splits what the server sends into complete responses: each line,
    a {N} literal's N bytes belonging to the line before."""

    def __init__(self):
        self.buf = b""
        self.literal = 0        # literal bytes still to come
        self.in_response = False

    def feed(self, data):
        """[(bytes, response_complete)] for data, in order."""
        self.buf += data
        out = []
        while self.buf:
            if self.literal > 0:
                chunk = self.buf[:self.literal]
                self.buf = self.buf[len(chunk):]
                self.literal -= len(chunk)
                out.append((chunk, False))
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                break
            line, self.buf = self.buf[:end + 2], self.buf[end + 2:]
            size = _literal_size(line)
            if size is not None:
                self.literal = size
                self.in_response = True
                out.append((line, False))
            else:
                self.in_response = False
                out.append((line, True))
        return out


def _literal_size(line):
    line = line.rstrip(b"\r\n")
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    digits = line[start + 1:-1].rstrip(b"+")
    return int(digits) if start >= 0 and digits.isdigit() else None


def _is_body_fetch(line):
    upper = line.upper()
    return b" UID FETCH " in upper and b"BODY.PEEK[]" in upper


class TlsProxy:
    def __init__(self, cert, key, cafile, upstream_host, upstream_port,
                 host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(cert, key)
        self.client_ctx = ssl.create_default_context(cafile=cafile)
        self.lock = threading.Lock()
        self.fault = None
        self.sessions = 0
        self.cuts = 0
        self.body_fetches = 0
        self.stopped = False
        self.threads = []
        self.socks = set()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # port 0 and the socket kept: no race for the port
        self.listener.bind((host, 0))
        self.listener.listen(8)
        self.listener.settimeout(TICK)
        self.port = self.listener.getsockname()[1]

    # ---- control ----

    def set_fault(self, fetch=1, after=0, bye=None, cuts=1, no=None):
        """Cut sessions from now on (see the module doc)."""
        with self.lock:
            self.fault = dict(fetch=fetch, after=after, bye=bye,
                              cuts=cuts, no=no)

    def clear_fault(self):
        with self.lock:
            self.fault = None

    def reset_counters(self):
        with self.lock:
            self.sessions = self.cuts = self.body_fetches = 0

    def counters(self):
        with self.lock:
            return dict(sessions=self.sessions, cuts=self.cuts,
                        body_fetches=self.body_fetches)

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        self.threads.append(t)
        t.start()

    def stop(self):
        self.stopped = True
        for t in list(self.threads):
            t.join(timeout=30)
        with self.lock:
            for s in list(self.socks):
                _close(s)
            self.socks.clear()
        try:
            self.listener.close()
        except OSError:
            pass

    # ---- sessions ----

    def _stopping(self):
        return self.stopped

    def _track(self, sock):
        with self.lock:
            self.socks.add(sock)
        return sock

    def _untrack_close(self, sock):
        with self.lock:
            self.socks.discard(sock)
        _close(sock)

    def _accept_loop(self):
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._session, args=(conn,),
                                 daemon=True)
            self.threads.append(t)
            t.start()

    def _open(self, conn):
        """(client TLS socket, upstream TLS socket), handshakes done."""
        self._track(conn)
        conn.settimeout(HANDSHAKE_TIMEOUT)
        client = self._track(self.server_ctx.wrap_socket(conn,
                                                         server_side=True))
        raw = self._track(socket.create_connection(self.upstream,
                                                   HANDSHAKE_TIMEOUT))
        server = self._track(self.client_ctx.wrap_socket(
            raw, server_hostname=self.upstream[0]))
        client.setblocking(False)
        server.setblocking(False)
        return client, server

    def _session(self, conn):
        with self.lock:
            self.sessions += 1
            fault = None
            if self.fault is not None and (self.fault["cuts"] is None or
                                           self.fault["cuts"] > 0):
                fault = dict(self.fault)
        try:
            client, server = self._open(conn)
        except (OSError, ssl.SSLError):
            self._untrack_close(conn)
            return
        try:
            self._relay(client, server, fault)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self._untrack_close(client)
            self._untrack_close(server)
            self._untrack_close(conn)

    def _cut(self, client, fault, line=None):
        """Count the cut (if the fault still allows one) and end the
        session (or refuse line); False when the fault is used up
        meanwhile."""
        with self.lock:
            if self.fault is None or (self.fault["cuts"] is not None and
                                      self.fault["cuts"] <= 0):
                return False
            if self.fault["cuts"] is not None:
                self.fault["cuts"] -= 1
            self.cuts += 1
        if fault["no"] is not None:
            tag = line.split(b" ", 1)[0]
            _send_all(client, tag + b" NO " + fault["no"] + b"\r\n",
                      self._stopping)
        elif fault["bye"] is not None:
            _send_all(client, b"* BYE " + fault["bye"] + b"\r\n",
                      self._stopping)
        return True

    def _relay(self, client, server, fault):
        stream = _ServerStream()
        pending = b""           # client bytes not yet a whole line
        fetches = 0
        responses = None        # complete responses since the trigger
        while not self.stopped:
            ready = [s for s in (client, server) if s.pending()]
            if not ready:
                ready, _, _ = select.select([client, server], [], [], TICK)
            for sock in ready:
                data = _recv(sock)
                if data is None:
                    continue
                if not data:
                    return
                if sock is server:
                    for chunk, complete in stream.feed(data):
                        _send_all(client, chunk, self._stopping)
                        if complete and responses is not None:
                            responses += 1
                            if responses >= fault["after"] and \
                                    self._cut(client, fault):
                                return
                    continue
                pending += data
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    line += b"\n"
                    if _is_body_fetch(line):
                        with self.lock:
                            self.body_fetches += 1
                        fetches += 1
                        if fault is not None and fetches == fault["fetch"]:
                            if fault["no"] is not None:
                                if self._cut(client, fault, line):
                                    continue    # refused, not sent
                            elif fault["after"] == 0:
                                if self._cut(client, fault):
                                    return
                            else:
                                responses = 0
                    _send_all(server, line, self._stopping)
