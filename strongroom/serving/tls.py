"""TLS for the gateway: the localhost certificate made at ``init`` and the server's SSLContext.

Why the key is encrypted on disk: the server must hand a key file to OpenSSL, but a readable
PEM next to the database would let anyone who copies the home impersonate the gateway. The
private key is therefore PKCS#8-encrypted under a password derived from the keyring's named
``tls`` secret, so it opens only on a machine that can unlock the home. A user's own
certificate (``--tls-cert/--tls-key``) is used as given.

TLS 1.2 is the floor; 1.2 suites are limited to ECDHE with AEAD ciphers. ``client_ca`` turns on
mutual TLS: a client without a certificate signed by that CA cannot even finish the handshake.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strongroom.errors import BadInput

TLS_PURPOSE = "tls"
CERT_NAME = "localhost.crt"
KEY_NAME = "localhost.key"
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1"
LOCALHOST_DAYS = 397  # the CA/Browser Forum ceiling for server certificates


def key_password(keyring: object) -> bytes:
    """The password that encrypts the localhost key: HKDF-like digest of the named secret."""
    secret = keyring.named_secret(TLS_PURPOSE)  # type: ignore[attr-defined]
    digest = hashlib.sha256(b"strongroom/tls-key-password/v1\x00" + secret).digest()
    return base64.urlsafe_b64encode(digest)


def create_localhost_cert(directory: Path, keyring: object) -> tuple[Path, Path]:
    """Write a self-signed P-256 certificate for localhost/127.0.0.1/::1 and its encrypted key.

    Called once by ``init``; returns (cert path, key path). The certificate is public; the key
    file is mode 0600 and encrypted (see the module docstring).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Strongroom gateway")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LOCALHOST_DAYS))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(key_password(keyring)),
    )
    _write(key_path, pem_key, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def server_context(cert: Path, key: Path, *, password: bytes | None = None,
                   client_ca: Path | None = None) -> ssl.SSLContext:
    """An SSLContext for the server: TLS >= 1.2, AEAD suites, optional required client certs."""
    for label, p in (("certificate", cert), ("key", key), ("client CA", client_ca)):
        if p is not None and not Path(p).is_file():
            raise BadInput(f"TLS {label} file not found: {p}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(str(cert), str(key), password=password)
    except ssl.SSLError:
        raise BadInput("TLS certificate and key do not load (wrong file, pair or password)") from None
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca))
    return ctx


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (plain HTTP is allowed only there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
