"""LoRA training on a tiny random Llama: learning, exact resume (incl. SIGKILL), checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from strongroom.errors import BadInput, IntegrityError
from strongroom.training.checkpoint import CrashingCheckpointStore, SimulatedCrash
from strongroom.training import (
    DirectoryCheckpointStore, MemoryCheckpointStore, TrainConfig, split_records, tiny_llama,
    toy_records, train,
)
from strongroom.training.checkpoint import unpack

REPO = Path(__file__).resolve().parents[1]


def cfg(**kw) -> TrainConfig:
    base = dict(max_steps=12, batch_size=8, learning_rate=1e-2, lora_r=8, lora_dropout=0.1,
                warmup_steps=2, eval_every=4, num_threads=1, seed=5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data():
    return split_records(toy_records(120), 0.15)


def same_adapter(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_training_reduces_held_out_loss(data):
    model, tok = tiny_llama()
    frozen = {n: p.clone() for n, p in model.named_parameters()}
    r = train(model, tok, *data, cfg(max_steps=30, lora_dropout=0.0), progress=False)
    evals = [m["eval_loss"] for m in r.metrics if "eval_loss" in m]
    assert evals[0] > 5.0 and r.final_eval_loss < 0.5 * evals[0]
    assert r.steps == 30 and r.tokens_per_s > 0 and r.epsilon_spent is None
    assert r.adapter_state and all("lora_" in k for k in r.adapter_state)
    assert r.lora["trainable_parameters"] == sum(v.numel() for v in r.adapter_state.values())
    base = r.peft_model.get_base_model()
    for n, p in base.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, frozen[n.replace(".base_layer", "")]), n


def test_resume_equals_uninterrupted(data):
    full_store = MemoryCheckpointStore()
    model, tok = tiny_llama()
    full = train(model, tok, *data, cfg(checkpoint_every=4, grad_accumulation=2,
                                        early_stopping_patience=5), checkpoint_store=full_store,
                 progress=False)
    assert sorted(full_store.blobs) == [4, 8, 12]

    store = CrashingCheckpointStore(crash_at=8)
    model, tok = tiny_llama()
    with pytest.raises(SimulatedCrash):
        train(model, tok, *data, cfg(checkpoint_every=4, grad_accumulation=2,
                                     early_stopping_patience=5), checkpoint_store=store,
              progress=False)
    model, tok = tiny_llama()
    resumed = train(model, tok, *data, cfg(checkpoint_every=4, grad_accumulation=2,
                                           early_stopping_patience=5), checkpoint_store=store,
                    resume=True, progress=False)
    assert resumed.resumed_from == 8 and resumed.steps == 12
    assert same_adapter(full.adapter_state, resumed.adapter_state)
    assert [m.get("loss") for m in full.metrics] == [m.get("loss") for m in resumed.metrics]
    assert full.final_eval_loss == resumed.final_eval_loss


def test_resume_refuses_other_config_or_data(data):
    store = MemoryCheckpointStore()
    model, tok = tiny_llama()
    train(model, tok, *data, cfg(max_steps=4, checkpoint_every=2), checkpoint_store=store,
          progress=False)
    model, tok = tiny_llama()
    with pytest.raises(BadInput):
        train(model, tok, *data, cfg(max_steps=4, checkpoint_every=2, learning_rate=5e-3),
              checkpoint_store=store, resume=True, progress=False)
    model, tok = tiny_llama()
    with pytest.raises(BadInput):
        train(model, tok, data[0][:-1], data[1], cfg(max_steps=4, checkpoint_every=2),
              checkpoint_store=store, resume=True, progress=False)


def test_checkpoint_bytes_are_pickle_free_and_checked(data):
    store = MemoryCheckpointStore()
    model, tok = tiny_llama()
    train(model, tok, *data, cfg(max_steps=2, checkpoint_every=2), checkpoint_store=store,
          progress=False)
    step, blob = store.load_latest()
    assert step == 2 and b"\x80\x04" not in blob[:2]  # no pickle protocol header
    tensors, meta = unpack(blob)
    assert meta["step"] == 2 and "rng.torch" in tensors and any(k.startswith("optim.")
                                                               for k in tensors)
    with pytest.raises(IntegrityError):
        unpack(blob[:100])
    with pytest.raises(IntegrityError):
        unpack(b"\xff" * 64)


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from strongroom.training import DirectoryCheckpointStore, split_records, tiny_llama, \\
        toy_records, train
    from tests.test_training_trainer import cfg

    class SlowStore(DirectoryCheckpointStore):
        def save(self, step, blob):
            super().save(step, blob)
            time.sleep(0.25)  # widen the window so the parent's SIGKILL lands mid-run

    data = split_records(toy_records(120), 0.15)
    model, tok = tiny_llama()
    train(model, tok, *data, cfg(max_steps=20, checkpoint_every=1),
          checkpoint_store=SlowStore(sys.argv[1]), progress=False)
    print("FINISHED")
""")


def test_sigkill_mid_run_then_resume_matches(tmp_path, data):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    ckdir = tmp_path / "ck"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script), str(ckdir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = DirectoryCheckpointStore(ckdir)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            latest = store.load_latest() if ckdir.exists() else None
            if latest and latest[0] >= 5:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("child never checkpointed")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL and b"FINISHED" not in out
    killed_at = store.load_latest()[0]
    assert 5 <= killed_at < 20

    model, tok = tiny_llama()
    resumed = train(model, tok, *data, cfg(max_steps=20, checkpoint_every=1),
                    checkpoint_store=store, resume=True, progress=False)
    assert resumed.resumed_from == killed_at
    model, tok = tiny_llama()
    full = train(model, tok, *data, cfg(max_steps=20), progress=False)
    assert same_adapter(full.adapter_state, resumed.adapter_state)


def test_early_stopping_returns_best_adapter(data):
    model, tok = tiny_llama()
    # A huge constant learning rate diverges after the first improvement.
    r = train(model, tok, *data, cfg(max_steps=40, learning_rate=3.0, lr_schedule="constant",
                                     warmup_steps=0, eval_every=1, early_stopping_patience=2,
                                     max_grad_norm=None), progress=False)
    evals = [m["eval_loss"] for m in r.metrics if "eval_loss" in m and m["step"] > 0]
    assert r.stopped_early and r.steps < 40
    assert r.final_eval_loss == min(evals)


def test_config_validation():
    with pytest.raises(BadInput):
        TrainConfig(lora_r=0).validate()
    with pytest.raises(BadInput):
        TrainConfig.from_dict({"lora_rank": 4})
    from strongroom.training import DPConfig
    with pytest.raises(BadInput):
        TrainConfig(packing=True, dp=DPConfig()).validate()
    c = TrainConfig.from_dict(TrainConfig(dp=DPConfig(target_epsilon=3)).to_dict())
    assert c.dp.target_epsilon == 3
