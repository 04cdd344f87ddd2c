"""One settings object, read from ``$STRONGROOM_HOME/strongroom.toml`` and the environment.

The file holds only non-secret settings: the key provider's public parameters (KDF name, salt,
costs), the audit log's public key and tuning, and security policy values. Secrets come from
the environment (``STRONGROOM_PASSPHRASE``, ``STRONGROOM_MASTER_KEY``, ``STRONGROOM_API_KEY``)
or a prompt, never from this file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from strongroom.errors import BadInput, StrongroomError

CONFIG_NAME = "strongroom.toml"
FORMAT_VERSION = 1


def home_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    """``STRONGROOM_HOME`` if set, else ``~/.strongroom``."""
    raw = environ.get("STRONGROOM_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".strongroom"


@dataclass
class AuditSettings:
    """Audit log tuning; ``public_key`` (base64 Ed25519) lets anyone verify offline."""

    checkpoint_every: int = 1000
    fsync: str = "checkpoint"
    origin: str = "strongroom"
    public_key: str = ""


@dataclass
class SecuritySettings:
    """Policy values that compliance evidence reports read back."""

    password_min_length: int = 12
    max_failed_logins: int = 10
    lockout_minutes: int = 30
    kek_cryptoperiod_days: int = 365


@dataclass
class ServingSettings:
    """``strongroom serve`` defaults (docs/SERVING.md): TLS files, queue, limits, OIDC, policies.

    Paths are relative to the home unless absolute. ``oidc`` holds issuer, audience, jwks_file
    or jwks_url, groups_claim and group_roles; ``guard_policies`` maps a model name or a key id
    to ``{scanner: block|redact|flag}``; ``key_limits`` maps a key id to its own
    ``requests_per_minute`` / ``tokens_per_hour``; ``guard_processes`` moves the PII and
    injection models into that many processes so guard scans use that many cores
    (``serving/guards/workers.py``; about 0.8 GB each; 0 keeps them in the server process).
    ``injection_model`` picks the prompt-injection detector: ``default`` (the linear model),
    ``probe`` (averaged with the SmolLM2 probe: better recall, ~20-100 ms more CPU for prompts
    the prefilter does not clear, ~0.7 GB more per process) or the path of a JSON model written
    by ``bench/train_injection.py`` (serving/guards/README.md).
    """

    tls_cert: str = "tls/localhost.crt"
    tls_key: str = "tls/localhost.key"
    workers: int = 1
    guard_processes: int = 0  # > 0: the guard models run in that many worker processes
    injection_model: str = "default"  # "default" | "probe" | path to a trained JSON model
    queue_size: int = 16
    requests_per_minute: int = 120
    tokens_per_hour: int = 200_000
    auth_failures_slow_after: int = 5
    auth_failures_refuse_after: int = 20
    auth_failure_window_s: int = 300
    auth_cache_s: float = 2.0
    anomaly_threshold: int = 10
    anomaly_window_s: int = 300
    oidc: dict[str, Any] = field(default_factory=dict)
    guard_policies: dict[str, Any] = field(default_factory=dict)
    key_limits: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    """Everything in strongroom.toml. ``home`` is where it was read from (not persisted)."""

    home: Path
    format_version: int = FORMAT_VERSION
    key_provider: dict[str, Any] = field(default_factory=dict)
    audit: AuditSettings = field(default_factory=AuditSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    serving: ServingSettings = field(default_factory=ServingSettings)

    @property
    def db_path(self) -> Path:
        return self.home / "strongroom.db"

    @property
    def objects_dir(self) -> Path:
        return self.home / "objects"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @classmethod
    def load(cls, home: Path) -> "Settings":
        """Read ``home/strongroom.toml``; a missing or malformed file is a clear error."""
        path = home / CONFIG_NAME
        if not path.is_file():
            raise BadInput(f"no Strongroom home at {home} (run 'strongroom init' or set STRONGROOM_HOME)")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise StrongroomError(f"{path} is not valid TOML: {exc}") from None
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise StrongroomError(f"{path}: unsupported format_version {version!r}")
        try:
            return cls(
                home=home,
                format_version=version,
                key_provider=dict(raw.get("key_provider", {})),
                audit=AuditSettings(**raw.get("audit", {})),
                security=SecuritySettings(**raw.get("security", {})),
                serving=ServingSettings(**raw.get("serving", {})),
            )
        except TypeError as exc:
            raise StrongroomError(f"{path}: unknown setting ({exc})") from None

    def save(self) -> None:
        """Write strongroom.toml atomically (temp file, fsync, rename)."""
        data = asdict(self)
        data.pop("home")
        path = self.home / CONFIG_NAME
        tmp = path.with_suffix(".toml.tmp")
        with open(tmp, "wb") as fh:
            fh.write(tomli_w.dumps(data).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
