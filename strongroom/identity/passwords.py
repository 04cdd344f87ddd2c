"""Password hashing (Argon2id) and the password policy.

Argon2id because it is memory-hard: a stolen database costs an attacker memory per guess, not
just a cheap hash. Production parameters follow RFC 9106's low-memory profile (t=3, 64 MiB);
tests pass cheaper ones through the constructor. Passwords are NFKC-normalised before hashing
so the same password typed through different input methods still matches.
"""

from __future__ import annotations

import secrets
import unicodedata

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from strongroom.errors import BadInput, NotAuthenticated

MIN_LENGTH = 12
#: Caps the work one request can ask of the hasher; no real passphrase is longer.
MAX_LENGTH = 1024


def _normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def check_policy(password: str, user_name: str | None = None) -> None:
    """Raise BadInput unless ``password`` is acceptable for ``user_name``.

    Length is what makes a password strong (NIST SP 800-63B), so the policy is a minimum length
    and a ban on the obvious choice of the user's own name; no composition rules.
    """
    if not isinstance(password, str):
        raise BadInput("password must be text")
    normalized = _normalize(password)
    if len(normalized) < MIN_LENGTH:
        raise BadInput(f"password must be at least {MIN_LENGTH} characters")
    if len(normalized) > MAX_LENGTH:
        raise BadInput(f"password must be at most {MAX_LENGTH} characters")
    if user_name is not None and normalized.strip().casefold() == _normalize(user_name).casefold():
        raise BadInput("password must not be the user name")


class Passwords:
    """Argon2id hashing with rehash-on-verify when the parameters change."""

    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4
    ) -> None:
        """``memory_cost`` is in KiB (65536 = 64 MiB)."""
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        """Encoded Argon2id hash (salt and parameters included). Does not check the policy."""
        return self._hasher.hash(_normalize(password))

    def verify(self, password_hash: str, password: str) -> str | None:
        """Raise NotAuthenticated on mismatch; on success return a new hash if one is due.

        The new hash (or None) lets the caller upgrade stored hashes to the current parameters
        the next time the user logs in, the only moment the plaintext is at hand.
        """
        try:
            self._hasher.verify(password_hash, _normalize(password))
        except (VerificationError, InvalidHashError):
            raise NotAuthenticated("invalid credentials") from None
        if self._hasher.check_needs_rehash(password_hash):
            return self.hash(password)
        return None

    def burn(self, password: str) -> None:
        """Spend one verification on a dummy hash, so unknown users cost as much as known ones.

        Without it the response time would tell an attacker which user names exist.
        """
        if self._dummy_hash is None:
            self._dummy_hash = self.hash(secrets.token_urlsafe(24))
        try:
            self._hasher.verify(self._dummy_hash, _normalize(password))
        except (VerificationError, InvalidHashError):
            pass
