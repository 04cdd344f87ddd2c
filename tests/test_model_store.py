"""Models through the one door: the training gate, encrypted artifacts, checkpoints, export,
generate. In-process, on the library's tiny random Llama saved as a local base directory."""

from __future__ import annotations

import json

import pyotp
import pytest
from sqlalchemy import select

from strongroom.errors import BadInput, NotAuthenticated, PermissionDenied
from tests.conftest import audit_entries, principal

REASON = "compare against raw data for the Q3 audit (ticket 7731)"


def _dataset(rt, name="toy", *, safe=True, n=80):
    from strongroom.training import toy_records

    steward = principal(rt, ["data-steward"])
    return rt.datasets.write_records(steward, name, toy_records(n), source_format="jsonl",
                                     action="dataset.import", deidentified=safe,
                                     safe_for_training=safe)


def _req(tiny_base, **kw):
    from strongroom.training.pipeline import TrainRequest

    base = dict(dataset="toy", out="toy-model", base=str(tiny_base), max_steps=6, batch_size=8,
                lr=1e-2, lora_r=4, max_seq_len=64, eval_fraction=0.15, progress=False,
                checkpoint_every=2)
    base.update(kw)
    return TrainRequest(**base)


def test_refuses_data_not_deidentified_and_audits(runtime, home, tiny_base):
    _dataset(runtime, safe=False)
    eng = principal(runtime, ["ml-engineer"])
    with pytest.raises(PermissionDenied, match="not de-identified"):
        runtime.training.train(eng, _req(tiny_base))
    # A non-admin cannot override, even with the flag.
    with pytest.raises(PermissionDenied, match="admins only"):
        runtime.training.train(eng, _req(tiny_base, allow_identifiable=True, reason=REASON,
                                         otp="123456"))
    admin = runtime.authenticate(home["api_key"])
    with pytest.raises(BadInput, match="--reason"):
        runtime.training.train(admin, _req(tiny_base, allow_identifiable=True,
                                           otp=pyotp.TOTP(home["totp_secret"]).now()))
    with pytest.raises(NotAuthenticated):
        runtime.training.train(admin, _req(tiny_base, allow_identifiable=True, reason=REASON))
    assert runtime.models.list(admin) == []
    runtime.audit.checkpoint()
    log = audit_entries(home)
    denied = [e for e in log if e["action"].startswith("model.train") and e["outcome"] == "denied"]
    assert {e["action"] for e in denied} == {"model.train", "model.train.override"}
    assert not any(e["action"] == "model.train.start" for e in log)


def test_admin_override_trains_and_is_audited_high(runtime, home, tiny_base):
    _dataset(runtime, safe=False)
    admin = runtime.authenticate(home["api_key"])
    info = runtime.training.train(admin, _req(tiny_base, allow_identifiable=True, reason=REASON,
                                              otp=pyotp.TOTP(home["totp_secret"]).now()))
    assert info.lineage["admin_override"] is True and info.version == 1
    runtime.audit.checkpoint()
    raw = (home["path"] / "audit" / "log.jsonl").read_text()
    assert REASON not in raw  # HMAC'd
    (ovr,) = [e for e in audit_entries(home) if e["action"] == "model.train.override"]
    assert ovr["severity"] == "high" and ovr["outcome"] == "success"
    assert "reason" in ovr["details"] and ovr["details"]["reason"] != REASON
    card = runtime.models.card(admin, "toy-model")
    assert "admin override" in card


def test_train_stores_everything_encrypted_and_shreds_checkpoints(runtime, home, tiny_base):
    from strongroom.store.model_registry import CANARIES
    from strongroom.store.model_tables import TrainingRun
    from strongroom.store.models import Blob

    ds = _dataset(runtime)
    eng = principal(runtime, ["ml-engineer"])
    info = runtime.training.train(eng, _req(tiny_base, canaries=2, canary_repeats=3))
    assert info.name == "toy-model" and info.version == 1 and info.summary["steps"] == 6
    assert info.lineage["content_hash"] == ds.content_hash
    assert info.lineage["dataset_version"] == 1
    assert info.base_model["files"] and all(len(h) == 64 for h in info.base_model["files"].values())
    assert info.privacy == {"differential_privacy": False}
    assert info.summary["final_eval_loss"] < info.summary["initial_eval_loss"]
    assert {"adapter.safetensors", "model_card.md", "model_card.json", "metrics.json",
            CANARIES} == set(info.artifacts)
    # A second run of the same name is version 2.
    assert runtime.training.train(eng, _req(tiny_base, max_steps=2)).version == 2

    admin = runtime.authenticate(home["api_key"])
    _, arts = runtime.models.read_artifacts(admin, "toy-model", ("model_card.md", CANARIES), 1)
    card = arts["model_card.md"].decode()
    secrets_ = [c["secret"] for c in json.loads(arts[CANARIES])]
    assert len(secrets_) == 2 and "No differential privacy" in card
    assert ds.content_hash in arts["model_card.md"].decode() or "toy" in card

    # Checkpoints: saved during the run (every 2 steps), all shredded once it finished.
    with runtime.sessions() as s:
        runs = s.execute(select(TrainingRun)).scalars().all()
        assert [r.status for r in runs] == ["finished", "finished"]
        ck = s.execute(select(Blob).where(Blob.owner_id.in_([r.id for r in runs]))).scalars().all()
        assert ck and all(b.shredded_at is not None for b in ck)
        ck_paths = [b.relpath for b in ck]
    assert not any((runtime.settings.objects_dir / p).exists() for p in ck_paths)

    runtime.close()
    everything = b"".join(f.read_bytes() for f in home["path"].rglob("*") if f.is_file())
    for secret in secrets_:
        assert secret.encode() not in everything
    for line in ("# Model card: toy-model", "## Privacy guarantee", "No differential privacy"):
        assert line.encode() not in everything
    assert b"lora_A" not in everything  # adapter tensor names only exist inside ciphertext


def test_checkpoint_store_keeps_two_with_fresh_keys(runtime):
    from strongroom.store.checkpoints import EncryptedCheckpointStore
    from strongroom.store.models import Blob

    store = EncryptedCheckpointStore(runtime.sessions, runtime.keyring, runtime.blobs, "run_x")
    assert store.load_latest() is None
    for step in (1, 2, 3, 4):
        store.save(step, f"checkpoint {step}".encode() * 100)
    assert store.load_latest() == (4, b"checkpoint 4" * 100)
    with runtime.sessions() as s:
        rows = s.execute(select(Blob).where(Blob.owner_id == "run_x")).scalars().all()
        assert len({r.key_id for r in rows}) == 4
        assert sorted(r.seq for r in rows if r.shredded_at is None) == [3, 4]
    assert store.shred_all() == 2 and store.load_latest() is None
    assert not any(runtime.settings.objects_dir.rglob("*.srg"))


def test_export_needs_permission_and_generate_is_audited(runtime, home, tiny_base, tmp_path):
    _dataset(runtime)
    eng = principal(runtime, ["ml-engineer"])
    runtime.training.train(eng, _req(tiny_base))
    with pytest.raises(PermissionDenied):
        runtime.models.export(eng, "toy-model", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    admin = runtime.authenticate(home["api_key"])
    paths = runtime.models.export(admin, "toy-model", tmp_path / "out")
    assert sorted(p.name for p in paths) == ["adapter.safetensors", "model_card.json",
                                             "model_card.md"]
    from strongroom.training import adapter_from_bytes

    tensors, meta = adapter_from_bytes((tmp_path / "out" / "adapter.safetensors").read_bytes())
    assert tensors and meta["lora"]["r"] == 4
    assert json.loads((tmp_path / "out" / "model_card.json").read_text())["model_name"] == "toy-model"
    with pytest.raises(BadInput):  # never overwrites an export
        runtime.models.export(admin, "toy-model", tmp_path / "out")

    prompt = "what color is the dog 1 ?"
    answer = runtime.training.generate(eng, "toy-model", prompt, max_new_tokens=6)
    assert isinstance(answer, str) and answer
    analyst = principal(runtime, ["auditor"])
    with pytest.raises(PermissionDenied):
        runtime.training.generate(analyst, "toy-model", prompt)
    runtime.audit.checkpoint()
    raw = (home["path"] / "audit" / "log.jsonl").read_text()
    assert prompt not in raw
    log = audit_entries(home)
    gens = [e for e in log if e["action"] == "model.generate"]
    assert [e["outcome"] for e in gens] == ["success", "denied"]
    assert "prompt" in gens[0]["details"]
    exports = [e for e in log if e["action"] == "model.export"]
    assert [e["outcome"] for e in exports] == ["denied", "success"]


def test_dp_training_records_the_guarantee(runtime, tiny_base):
    _dataset(runtime, n=120)
    eng = principal(runtime, ["ml-engineer"])
    info = runtime.training.train(eng, _req(tiny_base, max_steps=3, dp_epsilon=4.0,
                                            dp_delta=1e-4, max_grad_norm=0.5))
    p = info.privacy
    assert p["differential_privacy"] is True and p["delta"] == 1e-4
    assert p["max_grad_norm"] == 0.5 and 0 < p["epsilon_spent"] <= 4.0 + 1e-6
    card = runtime.models.card(eng, "toy-model")
    assert "How DP-SGD was applied" in card
    with pytest.raises(BadInput, match="need --dp-epsilon"):
        runtime.training.train(eng, _req(tiny_base, dp_delta=1e-5))
