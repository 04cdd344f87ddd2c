"""`strongroom train / generate / models` as a user meets them, including resume after SIGKILL.

Fast tests use the library's tiny random Llama saved as a local safetensors directory
(``--base PATH``, the same path a bank's own model would take); the real embedded SmolLM2 runs
in one test marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import select

from tests.conftest import PASSPHRASE, REPO, cli_env, run_cli

TRAIN = ["--max-steps", "6", "--batch-size", "8", "--lr", "1e-2", "--lora-r", "4",
         "--max-seq-len", "64", "--eval-fraction", "0.15", "--checkpoint-every", "2", "--quiet"]


def _ok(res):
    assert res.returncode == 0, (res.stdout, res.stderr)
    return res


def _seed(runtime, *, engineer: bool = False) -> str | None:
    """Datasets 'toy' (de-identified, safe) and 'raw' (not); optionally an ml-engineer key."""
    from strongroom.training import toy_records

    steward_key = runtime.identity.create_api_key(roles=["data-steward"], scope=(),
                                                  expires_in=None, user_id=None)[1]
    steward = runtime.authenticate(steward_key)
    for name, safe in (("toy", True), ("raw", False)):
        runtime.datasets.write_records(steward, name, toy_records(80), source_format="jsonl",
                                       action="dataset.import", deidentified=safe,
                                       safe_for_training=safe)
    key = None
    if engineer:
        key = runtime.identity.create_api_key(roles=["ml-engineer"], scope=(), expires_in=None,
                                              user_id=None)[1]
    runtime.close()
    return key


def test_train_card_generate_export_via_cli(runtime, home, tiny_base, tmp_path):
    eng_key = _seed(runtime, engineer=True)
    env = cli_env(home, api_key=eng_key)
    res = run_cli(["train", "--dataset", "raw", "--out", "m", "--base", str(tiny_base), *TRAIN], env)
    assert res.returncode == 3 and "not de-identified" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr

    res = _ok(run_cli(["train", "--dataset", "toy", "--out", "m", "--base", str(tiny_base),
                       *TRAIN, "--json"], env))
    info = json.loads(res.stdout)
    assert info["version"] == 1 and info["summary"]["steps"] == 6
    assert info["summary"]["precision"] in ("fp32", "bf16")  # what ran, never "auto"
    assert info["train_config"]["precision"] == info["summary"]["precision"]
    bad = run_cli(["train", "--dataset", "toy", "--out", "m", "--base", str(tiny_base), *TRAIN,
                   "--precision", "fp16"], env)
    assert bad.returncode != 0 and "precision must be auto, fp32 or bf16" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert info["lineage"]["dataset"] == "toy" and info["base_model"]["files"]

    card = _ok(run_cli(["models", "card", "m"], env)).stdout
    assert card.startswith("---") and "# Model card: m" in card
    assert f"**Precision:** {info['summary']['precision']}" in card
    prompt = "what color is the cat 2 ?"
    answer = _ok(run_cli(["generate", "m", prompt, "--max-new-tokens", "5", "--json"], env))
    assert json.loads(answer.stdout)["model"] == "m"
    # Several prompts, one model load, under the deployment's system prompt.
    system = "answer with the color of the animal ."
    many = json.loads(_ok(run_cli(["generate", "m", prompt, "what color is the dog 1 ?",
                                   "--system", system, "--max-new-tokens", "3", "--json"],
                                  env)).stdout)
    assert len(many["answers"]) == 2 and all(isinstance(a, str) for a in many["answers"])
    # ml-engineer may not take weights out of the vault.
    res = run_cli(["models", "export", "m", "-o", str(tmp_path / "x")], env)
    assert res.returncode == 3 and not (tmp_path / "x").exists()

    log = (home["path"] / "audit" / "log.jsonl").read_text()
    assert prompt not in log and "what color is the dog 1" not in log and system not in log
    actions = [json.loads(l)["action"] for l in log.splitlines()]
    for a in ("model.train.start", "model.train.read", "model.train.store", "model.train.finish",
              "model.card", "model.generate"):
        assert a in actions, a


KILLER = textwrap.dedent("""
    import os, signal, sys
    from strongroom.store import checkpoints

    real_save = checkpoints.EncryptedCheckpointStore.save

    def save_then_die(self, step, blob):
        real_save(self, step, blob)          # committed and durable ...
        if step == 4:
            os.kill(os.getpid(), signal.SIGKILL)   # ... then the process is killed

    checkpoints.EncryptedCheckpointStore.save = save_then_die
    from strongroom.cli import main
    sys.argv = ["strongroom", *sys.argv[1:]]
    main()
""")


def test_resume_after_sigkill_equals_uninterrupted_run(runtime, home, tiny_base):
    from strongroom.runtime import Runtime
    from strongroom.store.model_tables import TrainingRun
    from strongroom.store.models import Blob
    from strongroom.training.pipeline import TrainRequest

    _seed(runtime)
    env = cli_env(home)
    args = ["train", "--dataset", "toy", "--out", "resumed", "--base", str(tiny_base), *TRAIN]
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr

    rt = Runtime.open(home["path"], lambda: PASSPHRASE, origin="test")
    with rt.sessions() as s:
        (run,) = s.execute(select(TrainingRun)).scalars().all()
        assert run.status == "running"
        live = s.execute(select(Blob.seq).where(Blob.owner_id == run.id,
                                                Blob.shredded_at.is_(None))).scalars().all()
        assert sorted(live) == [2, 4]  # the last two checkpoints, older ones shredded
    rt.close()

    resumed = json.loads(_ok(run_cli([*args, "--resume", "--json"], env)).stdout)
    assert resumed["summary"]["resumed_from"] == 4 and resumed["summary"]["steps"] == 6

    # The same request, never interrupted, in this process: the adapter is bit-identical.
    rt = Runtime.open(home["path"], lambda: PASSPHRASE, origin="test")
    try:
        admin = rt.authenticate(home["api_key"])
        full = rt.training.train(admin, TrainRequest(
            dataset="toy", out="full", base=str(tiny_base), max_steps=6, batch_size=8, lr=1e-2,
            lora_r=4, max_seq_len=64, eval_fraction=0.15, checkpoint_every=2, progress=False))
        assert full.adapter_sha256 == resumed["adapter_sha256"]
        with rt.sessions() as s:
            runs = s.execute(select(TrainingRun)).scalars().all()
            assert sorted(r.status for r in runs) == ["finished", "finished"]
            ck = s.execute(select(Blob).where(Blob.owner_id.in_([r.id for r in runs]))).scalars().all()
            assert ck and all(b.shredded_at is not None for b in ck)
    finally:
        rt.close()
    assert not list((home["path"] / "tmp").glob("*/*.part"))
    _ok(run_cli(["audit", "verify"], env))


@pytest.mark.slow
def test_real_embedded_model_trains_and_generates_via_cli(runtime, home):
    """SmolLM2-135M (embedded GGUF): two LoRA steps, then generate with base and adapter."""
    _seed(runtime)
    env = cli_env(home)
    listed = json.loads(_ok(run_cli(["models", "base", "list", "--json"], env)).stdout)
    assert listed[0]["name"] == "smollm2-135m-instruct" and listed[0]["files"]
    info = json.loads(_ok(run_cli(
        ["train", "--dataset", "toy", "--out", "smol", "--max-steps", "2", "--batch-size", "2",
         "--max-seq-len", "64", "--lr", "1e-3", "--lora-r", "4", "--quiet", "--json"],
        env, timeout=300)).stdout)
    assert info["base_model"]["name"] == "smollm2-135m-instruct" and info["summary"]["steps"] == 2
    res = _ok(run_cli(["generate", "smol", "What color is the dog 1?", "--max-new-tokens", "8"],
                      env, timeout=300))
    assert res.stdout.strip()
