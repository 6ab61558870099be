"""TLS for the HTTP APIs (issue #20 item 4): a service given a certificate speaks HTTPS only, and with a client CA it
admits only clients holding a certificate that CA signed (mutual TLS). The server is ``python -m vigil.registry`` in a
process of its own, configured by environment like any deployment."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.services import eventually, make_tokens
from vigil.registry.settings import RegistrySettings

pytestmark = pytest.mark.integration


def _write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path / "cert.pem", path / "key.pem"


def _issue(
    name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, server: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``name`` signed by ``issuer`` (self-signed CA when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def serving(env: dict[str, str], ready: ssl.SSLContext) -> AsyncIterator[str]:
    """``python -m vigil.registry`` with ``env`` (the real entry point, TLS arguments included) in a process of its
    own; yields ``127.0.0.1:<port>`` once it answers ``/healthz`` over HTTPS (``ready`` is what the probe trusts)."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vigil.registry",
        env={**os.environ, **env, "VIGIL_HTTP_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def up() -> bool:
        assert proc.returncode is None, f"the registry exited with {proc.returncode}"
        try:
            async with httpx.AsyncClient(verify=ready) as client:
                return (await client.get(f"https://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await eventually(up, timeout=90, what="the registry answering over HTTPS")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_https_only_and_mutual_tls(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    ca = _issue("vigil test CA", None)
    server_cert, server_key = _write_pem(tmp_path / "server", *_issue("registry", ca, server=True))
    client_cert, client_key = _write_pem(tmp_path / "client", *_issue("console", ca))
    ca_file, _ = _write_pem(tmp_path / "ca", *ca)
    stranger_cert, stranger_key = _write_pem(tmp_path / "stranger", *_issue("stranger", _issue("other CA", None)))
    tokens = make_tokens(tmp_path)
    env = {
        "VIGIL_DATABASE_URL": fresh_db,
        "VIGIL_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "VIGIL_KAFKA_TOPIC_PREFIX": topic_prefix,
        "VIGIL_KAFKA_GROUP_PREFIX": topic_prefix,
        "VIGIL_TOKENS_FILE": str(tokens.file),
        "VIGIL_HOME": str(tmp_path / "home"),
        "VIGIL_ENVIRONMENT": "test",
        "VIGIL_HTTP_TLS_CERTFILE": str(server_cert),
        "VIGIL_HTTP_TLS_KEYFILE": str(server_key),
    }
    trusting = ssl.create_default_context(cafile=str(ca_file))

    async with serving(env, trusting) as address:
        async with httpx.AsyncClient(verify=trusting) as client:
            r = await client.get(f"https://{address}/v1/datasets", headers=tokens.headers("viewer"))
            assert r.status_code == 200, r.text
        async with httpx.AsyncClient() as plain:  # no plain HTTP on the TLS port
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://{address}/healthz")
        async with httpx.AsyncClient() as default_trust:  # our CA is no public one
            with pytest.raises(httpx.ConnectError):
                await default_trust.get(f"https://{address}/healthz")

    with_cert = ssl.create_default_context(cafile=str(ca_file))
    with_cert.load_cert_chain(client_cert, client_key)
    async with serving({**env, "VIGIL_HTTP_TLS_CLIENT_CA_FILE": str(ca_file)}, with_cert) as address:
        async with httpx.AsyncClient(verify=with_cert) as client:
            assert (await client.get(f"https://{address}/healthz")).status_code == 200
        stranger = ssl.create_default_context(cafile=str(ca_file))
        stranger.load_cert_chain(stranger_cert, stranger_key)
        for context in (trusting, stranger):  # no client certificate; another CA's certificate
            async with httpx.AsyncClient(verify=context) as client:
                with pytest.raises(httpx.HTTPError):
                    await client.get(f"https://{address}/healthz")


def test_tls_settings_come_in_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        RegistrySettings(http_tls_certfile=tmp_path / "cert.pem").uvicorn_tls()
    with pytest.raises(ValueError, match="server certificate"):
        RegistrySettings(http_tls_client_ca_file=tmp_path / "ca.pem").uvicorn_tls()
    assert RegistrySettings().uvicorn_tls() == {}


async def test_postgres_tls_is_asked_for_in_the_database_url(fresh_db: str) -> None:
    """``sslmode`` (and ``sslrootcert``, ``sslcert``, ``sslkey``) in ``VIGIL_DATABASE_URL`` go to asyncpg unchanged
    (``vigil.service.db.create_pool`` passes the URL through): asking this test server, which offers no TLS, for it
    is refused at connect instead of silently going plain."""
    sep = "&" if "?" in fresh_db else "?"
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        await asyncpg.connect(fresh_db + sep + "sslmode=require")
    conn = await asyncpg.connect(fresh_db + sep + "sslmode=disable")
    await conn.close()
