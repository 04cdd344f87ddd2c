"""Shared fixtures: a fresh, initialised home with cheap KDF parameters, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PASSPHRASE = "correct horse battery staple 42"


def cheap_provider(passphrase: str = PASSPHRASE):
    """Argon2id with test-sized costs: the format is the same, only slower params differ."""
    from strongroom.crypto import PassphraseProvider

    return PassphraseProvider.create(passphrase, time_cost=1, memory_cost=8 * 1024, parallelism=1)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, Any]:
    """An initialised home; returns init's result (admin API key, TOTP secret, path)."""
    from strongroom.runtime import init_home

    result = init_home(tmp_path / "home", cheap_provider(), "admin", origin="test")
    result["path"] = tmp_path / "home"
    return result


@pytest.fixture
def runtime(home: dict[str, Any]):
    from strongroom.runtime import Runtime

    rt = Runtime.open(home["path"], lambda: PASSPHRASE, origin="test")
    yield rt
    rt.close()


def cli_env(home: dict[str, Any], api_key: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(home["path"]), STRONGROOM_PASSPHRASE=PASSPHRASE,
               STRONGROOM_API_KEY=api_key if api_key is not None else home["api_key"],
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``strongroom ARGS`` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "strongroom", *args], env=env, input=input,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def principal(rt, roles: list[str], scope: tuple[str, ...] = ()):
    """A fresh API key with ``roles`` (made at the service layer, no TOTP), authenticated."""
    _, plaintext = rt.identity.create_api_key(roles=roles, scope=scope, expires_in=None, user_id=None)
    return rt.authenticate(plaintext)


def audit_entries(home: dict[str, Any]) -> list[dict]:
    """Every audit entry of ``home``, parsed."""
    import json

    return [json.loads(line) for line in
            (home["path"] / "audit" / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The training library's tiny Llama + tokenizer written as a safetensors HF directory."""
    from strongroom.training import tiny_llama

    d = tmp_path_factory.mktemp("tiny-base")
    model, tok = tiny_llama()
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d
