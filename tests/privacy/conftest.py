from __future__ import annotations

import os

import pytest

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def secret() -> bytes:
    return os.urandom(32)


@pytest.fixture(scope="session")
def make_engine(secret):
    """Engines share one loaded spaCy model (cached per process by strongroom.privacy.nlp)."""
    from strongroom.privacy import DeidEngine, load_policy

    cache = {}

    def make(policy: str = "hipaa-safe-harbor", **kw):
        if kw:
            return DeidEngine(load_policy(policy), secret=secret, **kw)
        if policy not in cache:
            cache[policy] = DeidEngine(load_policy(policy), secret=secret)
        return cache[policy]

    return make


@pytest.fixture(scope="session")
def hipaa(make_engine):
    return make_engine("hipaa-safe-harbor")
