"""Transmission security: the gateway's TLS configuration, as the server would load it.

The check builds the same ``SSLContext`` the gateway builds (``serving.tls.server_context``)
from the certificate and key named in strongroom.toml [serving], so the evidence is the
protocol floor and cipher suites OpenSSL will actually offer, not what a document claims.
"""

from __future__ import annotations

import ssl
import stat
from datetime import timedelta
from pathlib import Path

from strongroom.compliance.checks.base import Context, Evidence, check, fail, iso, ok

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
GOOD_HASHES = {"sha256", "sha384", "sha512"}
EXPIRY_WARNING = timedelta(days=30)


def _named_key_exists(ctx: Context, purpose: str) -> bool:
    """Whether the keyring has a live named key for ``purpose`` (a read; a report creates nothing)."""
    from sqlalchemy import select

    from strongroom.crypto import DataKeyRow

    with ctx.runtime.sessions() as s:
        return s.scalar(select(DataKeyRow.key_id).where(DataKeyRow.purpose == purpose,
                                                         DataKeyRow.wrapped_dek.is_not(None)).limit(1)) is not None


def _resolve(home: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else home / p


@check("transport.tls", "Data in transit is protected by TLS 1.2+ with strong suites",
       "strongroom.toml [serving] tls_cert/tls_key: certificate parsed (validity, key size, "
       "signature hash), key file permissions and encryption, and the gateway's SSLContext built "
       "from them (serving.tls.server_context): minimum protocol version and offered cipher suites.")
def tls(ctx: Context) -> tuple[str, str, list[Evidence]]:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    settings = ctx.runtime.settings
    serving = getattr(settings, "serving", None)
    if serving is None or not getattr(serving, "tls_cert", "") or not getattr(serving, "tls_key", ""):
        return fail("no TLS certificate and key are configured for the gateway ([serving] tls_cert, tls_key)", [])
    cert_path = _resolve(settings.home, serving.tls_cert)
    key_path = _resolve(settings.home, serving.tls_key)
    ev = [Evidence("certificate file", serving.tls_cert), Evidence("key file", serving.tls_key)]
    if not cert_path.is_file() or not key_path.is_file():
        return fail("the configured TLS certificate or key file does not exist", ev)
    problems: list[str] = []
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return fail("the TLS certificate is not a PEM X.509 certificate", ev)
    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    ev.append(Evidence("certificate subject", cert.subject.rfc4514_string()))
    ev.append(Evidence("certificate valid until", None, iso(not_after)))
    if not_after <= ctx.now:
        problems.append("the TLS certificate has expired")
    elif not_after - ctx.now < EXPIRY_WARNING:
        ev.append(Evidence("certificate expires in", f"{(not_after - ctx.now).days} d"))
    if not_before > ctx.now:
        problems.append("the TLS certificate is not yet valid")
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        ev.append(Evidence("certificate key", f"RSA {pub.key_size} bits"))
        if pub.key_size < MIN_RSA_BITS:
            problems.append(f"RSA key of {pub.key_size} bits (< {MIN_RSA_BITS})")
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        ev.append(Evidence("certificate key", f"EC {pub.curve.name} ({pub.key_size} bits)"))
        if pub.key_size < MIN_EC_BITS:
            problems.append(f"EC key of {pub.key_size} bits (< {MIN_EC_BITS})")
    else:
        ev.append(Evidence("certificate key", type(pub).__name__))
    algo = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else "none"
    ev.append(Evidence("certificate signature hash", algo))
    if algo not in GOOD_HASHES:
        problems.append(f"certificate signed with {algo}")
    mode = stat.S_IMODE(key_path.stat().st_mode)
    ev.append(Evidence("key file mode", oct(mode)))
    if mode & 0o077:
        problems.append(f"the TLS key file is readable by group or others (mode {oct(mode)})")
    key_pem = key_path.read_bytes()
    encrypted = b"ENCRYPTED" in key_pem.split(b"\n", 1)[0]
    ev.append(Evidence("key encrypted at rest", encrypted))
    try:
        from strongroom.serving.tls import TLS_PURPOSE, key_password, server_context

        if encrypted and not _named_key_exists(ctx, TLS_PURPOSE):
            raise LookupError("the keyring holds no TLS key-password secret")  # never create one here
        password = key_password(ctx.runtime.keyring) if encrypted else None
        sslctx = server_context(cert_path, key_path, password=password)
    except Exception as exc:  # noqa: BLE001 - any failure to build the context is the finding
        problems.append(f"the gateway's TLS context does not load ({type(exc).__name__})")
        sslctx = None
    if sslctx is not None:
        floor = sslctx.minimum_version
        ev.append(Evidence("minimum protocol version", floor.name))
        if floor in (ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.SSLv3, ssl.TLSVersion.TLSv1,
                     ssl.TLSVersion.TLSv1_1):
            problems.append(f"TLS floor is {floor.name} (< TLS 1.2)")
        ciphers = sslctx.get_ciphers()
        weak = [c["name"] for c in ciphers if c.get("protocol") == "TLSv1.2"
                and (not c.get("aead") or c.get("kea") not in ("kx-ecdhe", "kx-dhe"))]
        ev.append(Evidence("cipher suites offered", [c["name"] for c in ciphers]))
        if weak:
            problems.append(f"TLS 1.2 suites without AEAD or forward secrecy: {', '.join(weak)}")
    if problems:
        ev.extend(Evidence("problem", p) for p in problems)
        return fail(problems[0], ev)
    return ok(f"TLS >= 1.2, AEAD forward-secret suites, certificate valid until {iso(not_after)}", ev)

