"""A verified cache of GGUF base models converted to float safetensors.

WHY: turning the embedded GGUF into a float ``LlamaForCausalLM`` costs ~40 s of CPU per
process (transformers parses the GGUF metadata three times and rebuilds its tensor-name map per
tensor); every train / generate / eval / serve process paid it. The conversion is deterministic
for one GGUF and one transformers version, so we do it once and keep the result.

Why it can be trusted: a cache is a place other processes write, and model weights decide what
the model says. Each entry carries ``manifest.json``, a versioned body (format, key id, the
GGUF's SHA-256, the transformers version, every file's size and SHA-256) and an HMAC-SHA256 tag
under a secret key the cache directory does not hold (the Strongroom home's keyring keeps it:
``TrainingService.base_cache``). Loading reads each file once into memory, checks its size and
hash against the manifest, and builds the model and tokenizer from those very bytes (no second
read an attacker could race). Fail closed: a missing, foreign-key, forged or stale manifest, a
changed, missing or extra file: the entry is ignored, the model is rebuilt from the GGUF (whose
SHA-256 the caller has just re-verified) and the process says so once on stderr.

Writes never expose half an entry: files go to a private temp directory, are fsynced, and the
directory is renamed into place; a per-entry ``flock`` makes concurrent processes build once
(the others wait, then load what it wrote); a rename that loses a race is simply discarded.

The recorded identity of the base model stays the GGUF's hashes (``BaseModelSpec.files``):
cards, adapters and the llama.cpp backend never see the cache.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from strongroom.errors import StrongroomError
from strongroom.store.formats import fsync_dir

FORMAT = 1
KIND = "strongroom-base-model-cache"
MANIFEST = "manifest.json"
#: Domain separation for the tag: the key is only ever used for this.
_TAG_PREFIX = b"strongroom base-model cache manifest v1\x00"
#: Converted models above this many bytes are not cached (a Llama-8B GGUF would take 32 GB).
DEFAULT_MAX_BYTES = 8 << 30
#: How long a process waits for another one building the same entry before it converts alone.
LOCK_WAIT_S = 900.0
#: The files an entry may hold besides its manifest (nothing else is ever loaded or accepted).
_ALLOWED_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")

_reported: set[str] = set()


class CacheRejected(StrongroomError):
    """A cache entry failed verification; the caller rebuilds from the GGUF."""


def _say_once(entry: str, message: str) -> None:
    """One line on stderr per entry and process: the operator should know the cache was
    refused (it may have been tampered with), but not be told on every load."""
    if entry in _reported:
        return
    _reported.add(entry)
    print(f"strongroom: base-model cache {entry[:16]}: {message}", file=sys.stderr, flush=True)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}


def _tag(key: bytes, body: dict[str, Any]) -> str:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, _TAG_PREFIX + canon.encode("ascii"), hashlib.sha256).hexdigest()


def _read_regular(path: Path, size: int | None = None, limit: int | None = None
                  ) -> tuple[bytes, str]:
    """(bytes, SHA-256) of a regular file, read once without following a symlink; an
    unexpected size is refused first (a link to a device or a huge file is never read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise CacheRejected(f"{path.name} cannot be opened ({errno.errorcode.get(exc.errno, exc.errno)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheRejected(f"{path.name} is not a regular file")
        if size is not None and st.st_size != size:
            raise CacheRejected(f"{path.name} has another size than its manifest says")
        if limit is not None and st.st_size > limit:
            raise CacheRejected(f"{path.name} is too large to be a manifest")
        chunks, h = [], hashlib.sha256()
        with os.fdopen(fd, "rb", closefd=False) as f:
            while block := f.read(1 << 22):
                h.update(block)  # while the block is still in the CPU cache
                chunks.append(block)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if size is not None and len(data) != size:
        raise CacheRejected(f"{path.name} changed size while it was read")
    return data, h.hexdigest()


class BaseCache:
    """Converted GGUF base models under ``root``, each entry sealed by HMAC with ``key``.

    ``key_id`` names the key in the manifest, so an entry written under another key (another
    home, a rotated key) is recognised as foreign and rebuilt rather than trusted.
    """

    def __init__(self, root: Path, key: bytes, key_id: str, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, lock_wait_s: float = LOCK_WAIT_S) -> None:
        if len(key) < 32:
            raise StrongroomError("the base-model cache key must have at least 32 bytes")
        self.root = Path(root)
        self._key = bytes(key)
        self.key_id = str(key_id)
        self.max_bytes = max_bytes
        self.lock_wait_s = lock_wait_s

    # -- naming -----------------------------------------------------------------------------
    def entry_name(self, gguf_sha256: str) -> str:
        """One entry per GGUF and converter version (a transformers upgrade re-converts)."""
        if len(gguf_sha256) != 64 or any(c not in "0123456789abcdef" for c in gguf_sha256):
            raise StrongroomError("the GGUF's SHA-256 must be 64 lowercase hex digits")
        v = _versions()
        tag = hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12]
        return f"{gguf_sha256}-{tag}"

    def entry_dir(self, gguf_sha256: str) -> Path:
        return self.root / self.entry_name(gguf_sha256)

    def _try_load(self, gguf_sha256: str, entry: str) -> tuple[Any, Any] | None:
        """A verified entry, or None when there is none or it was refused (said once)."""
        try:
            return self.load(gguf_sha256)
        except FileNotFoundError:
            return None
        except CacheRejected as exc:
            _say_once(entry, f"{exc}; ignoring it and converting the GGUF again")
            return None

    # -- the one public operation -----------------------------------------------------------
    def load_or_build(self, gguf_sha256: str, build: Callable[[], tuple[Any, Any]]
                      ) -> tuple[Any, Any]:
        """(float32 model, tokenizer): from a verified entry, else from ``build()`` (the GGUF
        conversion), whose result is then stored for the next process."""
        entry = self.entry_name(gguf_sha256)
        found = self._try_load(gguf_sha256, entry)
        if found is not None:
            return found
        with self._entry_lock(entry) as locked:
            if locked:  # another process may have built it while we waited
                found = self._try_load(gguf_sha256, entry)
                if found is not None:
                    return found
            model, tok = build()
            try:
                self.store(gguf_sha256, model, tok)
            except (OSError, CacheRejected) as exc:
                # The cache is an optimisation: the model just converted is the verified one.
                _say_once(entry, f"not saved ({type(exc).__name__}: {exc}); "
                                 "the next process converts the GGUF again")
            return model, tok

    # -- reading ----------------------------------------------------------------------------
    def load(self, gguf_sha256: str) -> tuple[Any, Any]:
        """Load a verified entry. FileNotFoundError: no entry; CacheRejected: a bad one."""
        entry = self.entry_name(gguf_sha256)
        d = self.root / entry
        if not d.is_dir():
            raise FileNotFoundError(entry)
        files = self._verified_files(d, entry, gguf_sha256)
        return _materialise(files)

    def _verified_files(self, d: Path, entry: str, gguf_sha256: str) -> dict[str, bytes]:
        raw, _ = _read_regular(d / MANIFEST, limit=1 << 20)
        try:
            doc = json.loads(raw)
            body, tag = doc["body"], doc["hmac"]
            if not isinstance(body, dict) or not isinstance(tag, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CacheRejected("its manifest is malformed") from None
        if body.get("format") != FORMAT or body.get("kind") != KIND:
            raise CacheRejected("its manifest has an unknown format")
        if body.get("key_id") != self.key_id:
            raise CacheRejected("its manifest was sealed under another key")
        if not hmac.compare_digest(tag, _tag(self._key, body)):
            raise CacheRejected("its manifest's HMAC does not verify (tampered?)")
        if body.get("entry") != entry or body.get("gguf_sha256") != gguf_sha256 \
                or body.get("versions") != _versions():
            raise CacheRejected("its manifest is for another GGUF or converter version")
        listed = body.get("files")
        if not isinstance(listed, dict) or not listed:
            raise CacheRejected("its manifest lists no files")
        present = {p.name for p in d.iterdir()} - {MANIFEST}
        if present != set(listed):
            raise CacheRejected("its files differ from those its manifest lists")
        out: dict[str, bytes] = {}
        for name, meta in sorted(listed.items()):
            if not isinstance(meta, dict) or "/" in name or name.startswith("."):
                raise CacheRejected("its manifest is malformed")
            data, digest = _read_regular(d / name, size=int(meta.get("size", -1)))
            if not hmac.compare_digest(digest, str(meta.get("sha256"))):
                raise CacheRejected(f"{name} does not match its manifest (tampered?)")
            out[name] = data
        return out

    # -- writing ----------------------------------------------------------------------------
    def store(self, gguf_sha256: str, model: Any, tok: Any) -> Path:
        """Write an entry atomically (temp dir, fsync, rename); return its directory."""
        entry = self.entry_name(gguf_sha256)
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        if size > self.max_bytes:
            raise CacheRejected(f"the float model ({size >> 20} MiB) is larger than the cache "
                                f"limit ({self.max_bytes >> 20} MiB)")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._sweep()
        tmp = self.root / f".tmp-{entry}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o700)
        try:
            model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
            tok.save_pretrained(tmp)
            listed: dict[str, dict[str, Any]] = {}
            for p in sorted(tmp.iterdir()):
                if not p.name.endswith(_ALLOWED_SUFFIXES) or not p.is_file() or p.is_symlink():
                    raise CacheRejected(f"the converter wrote an unexpected file ({p.name})")
                data, digest = _read_regular(p)
                listed[p.name] = {"sha256": digest, "size": len(data)}
                del data
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            body = {"format": FORMAT, "kind": KIND, "key_id": self.key_id, "entry": entry,
                    "gguf_sha256": gguf_sha256, "versions": _versions(), "files": listed,
                    "created": int(time.time())}
            doc = json.dumps({"body": body, "hmac": _tag(self._key, body)}, sort_keys=True)
            with open(tmp / MANIFEST, "x", encoding="ascii") as f:
                f.write(doc)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(tmp)
            final = self.root / entry
            if final.exists():  # a rejected entry: move it out of the way first
                aside = self.root / f".trash-{entry}-{os.getpid()}-{secrets.token_hex(4)}"
                try:
                    os.rename(final, aside)
                except FileNotFoundError:
                    pass
                else:
                    shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # Another process won the race: its entry is as good as ours.
                shutil.rmtree(tmp, ignore_errors=True)
            fsync_dir(self.root)
            return final
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _sweep(self) -> None:
        """Remove temp and trash directories left by processes that died mid-write."""
        from strongroom.store.blobs import pid_alive

        for p in self.root.iterdir():
            if not p.name.startswith((".tmp-", ".trash-")):
                continue
            try:
                pid = int(p.name.rsplit("-", 2)[-2])
            except (ValueError, IndexError):
                continue
            if not pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)

    # -- locking ----------------------------------------------------------------------------
    def _entry_lock(self, entry: str) -> "_Lock":
        return _Lock(self.root / f".lock-{entry}", self.lock_wait_s)


class _Lock:
    """An exclusive ``flock`` on a lock file, waited for up to ``wait_s``.

    Yields True when held; False when the cache directory cannot hold a lock (read-only) or
    the wait ran out: the caller then converts on its own, which is correct, only slower.
    """

    def __init__(self, path: Path, wait_s: float) -> None:
        self.path, self.wait_s, self.fd = path, wait_s, None

    def __enter__(self) -> bool:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError:
            return False
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.2)
            except OSError:
                os.close(fd)
                return False

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _materialise(files: dict[str, bytes]) -> tuple[Any, Any]:
    """Model and tokenizer from verified bytes (weights zero-copy, tokenizer via a private
    temp dir that only this process can read, removed at once)."""
    import safetensors.torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        cfg_dict = json.loads(files["config.json"])
        state: dict[str, Any] = {}
        for name in sorted(files):
            if name.endswith(".safetensors"):
                state.update(safetensors.torch.load(files[name]))
    except (KeyError, ValueError) as exc:
        raise CacheRejected(f"its files are incomplete ({type(exc).__name__})") from None
    with tempfile.TemporaryDirectory(prefix="strongroom-base-") as td:
        os.chmod(td, 0o700)
        for name, data in files.items():
            if not name.endswith(".safetensors"):
                Path(td, name).write_bytes(data)
        config = AutoConfig.from_pretrained(td, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(td, local_files_only=True)
        gen = (GenerationConfig.from_pretrained(td, local_files_only=True)
               if "generation_config.json" in files else None)
    try:
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise CacheRejected(f"its config names no causal LM ({cfg_dict.get('model_type')!r})") from None
    import torch

    model = cls.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32)
    if gen is not None:
        model.generation_config = gen
    model.eval()
    return model, tok
