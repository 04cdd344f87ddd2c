"""Token vault: where reversible tokenisation keeps token -> value.

Only the store layer's encrypted vault belongs in production; the in-memory one serves tests,
one-shot CLI runs and as the reference for the protocol. Permission / TOTP checks before
re-identification are the caller's job, not the vault's.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from strongroom.errors import NotFound


@runtime_checkable
class TokenVault(Protocol):
    def put(self, token: str, value: str, entity_type: str) -> None: ...

    def get(self, token: str) -> str: ...


class InMemoryTokenVault:
    def __init__(self) -> None:
        self._data: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def put(self, token: str, value: str, entity_type: str) -> None:
        with self._lock:
            self._data[token] = (value, entity_type)

    def get(self, token: str) -> str:
        try:
            return self._data[token][0]
        except KeyError:
            raise NotFound("unknown token") from None

    def entity_type(self, token: str) -> str:
        return self._data[token][1]

    def __len__(self) -> int:
        return len(self._data)
