"""A TCP proxy on loopback that adds network round-trip time and can terminate TLS.

    with latency_proxy(url, rtt_ms=1.0, tls=True) as proxied:  # @127.0.0.1:PORT/db?sslmode=require
        psycopg.connect(proxied)        # TLS to the proxy, 1 ms more per round trip

Connection cost depends on the network between the application and PostgreSQL: a new
connection pays several round trips (TCP, the TLS handshake, startup and authentication)
where a pooled one pays none. On one machine every round trip is ~0.05 ms, so this proxy
puts a network in between: every chunk of bytes is held ``rtt_ms / 2`` in each direction,
in order (a delay line per direction, so a stream is delayed, not slowed down).

TLS. ``tls=True`` terminates TLS in the proxy, as RDS Proxy or PgBouncer do in front of a
server: the client's SSLRequest is answered ``S``, the handshake is done with a certificate
made for this run (RSA-2048, self-signed, in a temp directory removed at exit; ``sslmode=
require`` encrypts without verifying it), and the decrypted stream goes to the plain
upstream. We do it this way because the embedded PostgreSQL is built without OpenSSL and
cannot serve TLS itself. The delay is applied to the encrypted bytes, so the handshake's
round trips pay it too. ``tls=False`` forwards bytes untouched: against a server that speaks
TLS (a ``DATABASE_URL`` with ``sslmode=require``), TLS then runs end to end through the
proxy, which is the same measurement done directly.

The proxy runs in a child process (``python -m shared.infra.proxy``) under the reaper
(``shared/infra/reaper.py``), so it never outlives us and never competes with the process
that measures for the GIL. Inside, threads and blocking sockets rather than asyncio: asyncio
wakes its timers in whole milliseconds on Linux (the selector rounds a timeout up to 1 ms),
which would turn a 0.5 ms half round trip into 1 ms or more; ``time.sleep`` is accurate to
about 0.1 ms.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import queue
import shutil
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared import ROOT
from shared.errors import CheckpointError
from shared.infra import reaper
from shared.infra.urls import mask_url

SSL_REQUEST = 80877103  # PostgreSQL's SSLRequest code (length 8)
GSSENC_REQUEST = 80877104  # GSSENCRequest: we answer N to it
CHUNK = 65536


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed RSA-2048 certificate for 127.0.0.1/localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


# --- the proxy (runs in the child process) ----------------------------------------------------

class _DelayLine:
    """Chunks handed to ``sink`` in order, each ``delay`` seconds after it arrived."""

    def __init__(self, sink: Callable[[bytes | None], None], delay: float) -> None:
        self.sink, self.delay = sink, delay
        self.items: queue.SimpleQueue[tuple[float, bytes | None]] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def put(self, data: bytes | None) -> None:  # None: the end of the stream
        self.items.put((time.monotonic() + self.delay, data))

    def _run(self) -> None:
        while True:
            due, data = self.items.get()
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            try:
                self.sink(data)
            except OSError:
                data = None
            if data is None:
                return


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: tuple[str, int], half: float,
                 context: ssl.SSLContext | None) -> None:
        self.client, self.context = client, context
        self.up = socket.create_connection(upstream, timeout=10)
        self.up.settimeout(None)
        for s in (self.client, self.up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state = "startup" if context is not None else "plain"
        self.pending = b""
        self.tls: ssl.SSLObject | None = None
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.lock = threading.Lock()
        self.to_client = _DelayLine(self._send_client, half)
        self.from_client = _DelayLine(self._from_client, half)
        threading.Thread(target=self._read, args=(self.up, self._from_upstream),
                         daemon=True).start()
        self._read(self.client, self.from_client.put)

    @staticmethod
    def _read(sock: socket.socket, handle: Callable[[bytes | None], None]) -> None:
        while True:
            try:
                data = sock.recv(CHUNK)
            except OSError:
                data = b""
            handle(data or None)
            if not data:
                return

    def _send_client(self, data: bytes | None) -> None:
        if data is None:
            _shutdown(self.client)
        elif data:
            self.client.sendall(data)

    def _from_upstream(self, data: bytes | None) -> None:
        if data is None or self.tls is None:
            self.to_client.put(data)
            return
        with self.lock:
            self.tls.write(data)
            self.to_client.put(self.outgoing.read())

    def _from_client(self, data: bytes | None) -> None:
        """Bytes from the client, after their delay: sniff SSLRequest, decrypt, forward."""
        if data is None:
            _shutdown(self.up)
        elif self.state == "plain":
            self.up.sendall(data)
        elif self.state == "tls":
            self._decrypt(data)
        else:
            self._startup(data)

    def _startup(self, data: bytes) -> None:
        self.pending += data
        while self.state == "startup" and len(self.pending) >= 8:
            length, code = struct.unpack("!II", self.pending[:8])
            if length != 8 or code not in (SSL_REQUEST, GSSENC_REQUEST):
                self.state = "plain"  # a StartupMessage: from here on, plain forwarding
                self.up.sendall(self.pending)
            elif code == SSL_REQUEST and self.context is not None:
                self.state = "tls"
                self.tls = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
                self.to_client.put(b"S")
                rest, self.pending = self.pending[8:], b""
                if rest:
                    self._decrypt(rest)
                return
            else:
                self.to_client.put(b"N")
                self.pending = self.pending[8:]
                continue
            self.pending = b""

    def _decrypt(self, data: bytes) -> None:
        assert self.tls is not None
        plain, closed = [], False
        with self.lock:
            self.incoming.write(data)
            try:
                while True:
                    chunk = self.tls.read(CHUNK)
                    if not chunk:
                        closed = True
                        break
                    plain.append(chunk)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                closed = True
            except ssl.SSLError:
                closed = True
            handshake = self.outgoing.read()
        if handshake:
            self.to_client.put(handshake)
        if plain:
            self.up.sendall(b"".join(plain))
        if closed:
            _shutdown(self.up)


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _serve_link(client: socket.socket, upstream: tuple[str, int], half: float,
                context: ssl.SSLContext | None) -> None:
    try:
        _Link(client, upstream, half, context)
    except OSError:
        client.close()


def serve(upstream: tuple[str, int], rtt_ms: float, ready: Path, cert: Path | None = None,
          key: Path | None = None) -> None:
    """Accept on 127.0.0.1 (a free port, written to ``ready``) until killed."""
    context = None
    if cert is not None and key is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(str(listener.getsockname()[1]))
    os.replace(tmp, ready)
    half = rtt_ms / 2000
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_link, args=(client, upstream, half, context),
                         daemon=True).start()


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.infra.proxy")
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    serve((host, int(port)), args.rtt_ms, args.ready, args.cert, args.key)
    return 0


# --- the owner's side -------------------------------------------------------------------------

def _upstream(url: str) -> tuple[str, int]:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    host = str(info.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        raise CheckpointError(f"{mask_url(url)}: the latency proxy needs one TCP host and port "
                              "in the URL (not a Unix socket directory).")
    return host, int(info.get("port") or 5432)


def proxied_url(url: str, port: int, tls: bool) -> str:
    """``url`` pointed at 127.0.0.1:``port``; ``sslmode=require`` when the proxy does TLS."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    query = [(k, v) for k, v in parse_qsl(parts.query)
             if k not in ("host", "hostaddr", "port") and not (tls and k == "sslmode")]
    if tls:
        query.append(("sslmode", "require"))
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


@contextmanager
def latency_proxy(upstream_url: str, rtt_ms: float = 0.0, tls: bool = False) -> Iterator[str]:
    """A proxy in front of ``upstream_url`` adding ``rtt_ms`` per round trip; yields its URL."""
    if rtt_ms < 0:
        raise CheckpointError(f"rtt_ms={rtt_ms}: a round-trip time cannot be negative.")
    host, port = _upstream(upstream_url)
    home = Path(tempfile.mkdtemp(prefix="ckpt-proxy-"))
    try:
        ready = home / "port"
        cmd = [sys.executable, "-m", "shared.infra.proxy", "--upstream", f"{host}:{port}",
               "--rtt-ms", str(rtt_ms), "--ready", str(ready)]
        if tls:
            cert, key = make_certificate(home)
            cmd += ["--cert", str(cert), "--key", str(key)]
        with (home / "proxy.log").open("ab") as log:
            guard = reaper.spawn(cmd, name="latency proxy", stop_signal=signal.SIGTERM,
                                 grace=5, stdout=log, cwd=str(ROOT))
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if guard.poll() is not None or time.monotonic() > deadline:
                    tail = (home / "proxy.log").read_text(errors="replace")[-300:]
                    raise CheckpointError(f"The latency proxy did not start: {tail.strip()}")
                time.sleep(0.01)
            yield proxied_url(upstream_url, int(ready.read_text()), tls)
        finally:
            guard.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
