"""Scale-out: `strongroom train` under torchrun (2 CPU processes, gloo) on the tiny random Llama.

What must hold: N ranks compute what one process with ``grad_accumulation * N`` computes; only
rank 0 touches the store (one read through the door, one stored model, one audit trail); the
other ranks never need the home; DP across processes is refused with a clear error; a rank-0
failure before the job is sent stops the other ranks instead of leaving them waiting.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from strongroom.errors import BadInput
from strongroom.training import DPConfig, TrainConfig, split_records, tiny_llama, toy_records, train
from strongroom.training.distributed import DistContext, DistributedAbort, job_guard
from tests.conftest import PASSPHRASE, REPO, audit_entries, cli_env

TRAIN = ["--max-steps", "4", "--batch-size", "4", "--lr", "1e-2", "--lora-r", "4",
         "--max-seq-len", "64", "--eval-fraction", "0.15", "--checkpoint-every", "2", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], env: dict[str, str], timeout: float = 240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _seed(runtime) -> None:
    steward_key = runtime.identity.create_api_key(roles=["data-steward"], scope=(),
                                                  expires_in=None, user_id=None)[1]
    steward = runtime.authenticate(steward_key)
    for name, safe in (("toy", True), ("raw", False)):
        runtime.datasets.write_records(steward, name, toy_records(64), source_format="jsonl",
                                       action="dataset.import", deidentified=safe,
                                       safe_for_training=safe)
    runtime.close()


def test_torchrun_ddp_matches_one_process_and_only_rank0_touches_the_store(
        runtime, home, tiny_base):
    from strongroom.runtime import Runtime
    from strongroom.store.model_registry import ADAPTER
    from strongroom.training import adapter_from_bytes, load_base, resolve_base

    _seed(runtime)
    env = cli_env(home)
    res = _torchrun(["-m", "strongroom", "train", "--dataset", "toy", "--out", "ddp",
                     "--base", str(tiny_base), *TRAIN, "--json"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout)
    assert info["summary"]["steps"] == 4 and info["summary"]["world_size"] == 2
    assert info["summary"]["parallel"] == "ddp"

    acts = [e["action"] for e in audit_entries(home)]
    assert acts.count("model.train.read") == 1 and acts.count("model.train.store") == 1
    assert acts.count("model.train.start") == 1 and acts.count("model.train.finish") == 1

    # The same data, one process, twice the accumulation: the same adapter.
    rt = Runtime.open(home["path"], lambda: PASSPHRASE, origin="test")
    try:
        admin = rt.authenticate(home["api_key"])
        _, arts = rt.models.read_artifacts(admin, "ddp", (ADAPTER,))
        _, recs = rt.datasets.read_records(admin, "toy", None, action="dataset.read")
        records = list(recs)
    finally:
        rt.close()
    ddp_adapter, _ = adapter_from_bytes(arts[ADAPTER])
    model, tok = load_base(resolve_base(str(tiny_base)))
    cfg = TrainConfig(max_steps=4, batch_size=4, grad_accumulation=2, learning_rate=1e-2,
                      lora_r=4, lora_alpha=8, lora_dropout=0.0, max_seq_len=64,
                      warmup_ratio=0.05, num_threads=1)
    one = train(model, tok, *split_records(records, 0.15), cfg, progress=False)
    assert ddp_adapter.keys() == one.adapter_state.keys()
    for k, v in one.adapter_state.items():
        torch.testing.assert_close(ddp_adapter[k], v, rtol=1e-5, atol=1e-6)
    assert any(float(v.abs().sum()) > 0 for k, v in ddp_adapter.items() if "lora_B" in k)


@pytest.mark.slow
def test_rank0_refusal_stops_the_other_ranks(runtime, home, tiny_base):
    """Rank 0 refused at the gate: it tells rank 1, and both stop (no hang, no model)."""
    _seed(runtime)
    res = _torchrun(["-m", "strongroom", "train", "--dataset", "raw", "--out", "r",
                     "--base", str(tiny_base), *TRAIN], cli_env(home))
    assert res.returncode != 0 and "not de-identified" in res.stderr
    assert "rank 0 stopped before training started" in res.stderr
    acts = [e["action"] for e in audit_entries(home)]
    assert "model.train.read" not in acts and "model.train.store" not in acts


FSDP_SCRIPT = textwrap.dedent("""
    import json, sys
    from strongroom.training import TrainConfig, split_records, tiny_llama, toy_records, train
    from strongroom.training.distributed import DistContext
    from safetensors.torch import save_file
    dist = DistContext.from_env()
    model, tok = tiny_llama()
    cfg = TrainConfig(max_steps=4, batch_size=4, learning_rate=1e-2, lora_r=4,
                      lora_dropout=0.0, eval_every=2, num_threads=1, seed=3, fsdp="on")
    r = train(model, tok, *split_records(toy_records(64), 0.15), cfg, progress=False, dist=dist)
    if dist.is_main:
        save_file({k: v.contiguous() for k, v in r.adapter_state.items()}, sys.argv[1])
        print("RESULT " + json.dumps({"parallel": r.data["parallel"],
                                      "eval": r.final_eval_loss}))
    dist.close()
""")


def _one_process_reference():
    model, tok = tiny_llama()
    cfg = TrainConfig(max_steps=4, batch_size=4, grad_accumulation=2, learning_rate=1e-2,
                      lora_r=4, lora_dropout=0.0, eval_every=2, num_threads=1, seed=3)
    return train(model, tok, *split_records(toy_records(64), 0.15), cfg, progress=False)


def _launch_script(tmp_path, launcher: list[str], fsdp: str):
    from safetensors.torch import load_file

    script = tmp_path / "dist_run.py"
    script.write_text(FSDP_SCRIPT.replace('fsdp="on"', f"fsdp={fsdp!r}"))
    out = tmp_path / "adapter.safetensors"
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO)}
    res = subprocess.run([*launcher, str(script), str(out)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[7:]), load_file(out)


def test_fsdp_on_two_cpu_ranks_matches_one_process(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    meta, sharded = _launch_script(tmp_path, launcher, "on")
    assert meta["parallel"] == "fsdp"
    one = _one_process_reference()
    assert sharded.keys() == one.adapter_state.keys()
    for k, v in one.adapter_state.items():
        torch.testing.assert_close(sharded[k], v, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_ddp_job(tmp_path):
    """`accelerate launch --multi_gpu` is torchrun underneath: same variables, same result."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    meta, adapter = _launch_script(tmp_path, launcher, "off")
    assert meta["parallel"] == "ddp"
    one = _one_process_reference()
    for k, v in one.adapter_state.items():
        torch.testing.assert_close(adapter[k], v, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- no processes needed

def test_dp_across_processes_is_refused_before_anything_starts():
    model, tok = tiny_llama()
    tr, ev = split_records(toy_records(16), 0.2)
    cfg = TrainConfig(max_steps=1, dp=DPConfig(target_epsilon=8))
    with pytest.raises(BadInput, match="differential privacy is not supported across"):
        train(model, tok, tr, ev, cfg, progress=False, dist=DistContext(rank=0, world_size=2))
    from strongroom.training.pipeline import TrainRequest
    from strongroom.training.worker import worker_preflight

    with pytest.raises(BadInput, match="single process"):
        worker_preflight(TrainRequest(dataset="d", out="m", dp_epsilon=8.0))


def test_launcher_variables_are_checked_and_multinode_needs_a_trusted_fabric(monkeypatch):
    d = DistContext.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                              "LOCAL_WORLD_SIZE": "2"})
    assert d.enabled and not d.is_main and d.local_rank == 1
    assert not DistContext.from_env({}).enabled
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(BadInput):
            DistContext.from_env(bad)
    monkeypatch.delenv("STRONGROOM_TRUSTED_FABRIC", raising=False)
    multi = DistContext(rank=0, world_size=4, local_rank=0, local_world_size=2)
    with pytest.raises(BadInput, match="unencrypted"):
        multi.init(torch.device("cpu"))


class _Wire(DistContext):
    """A two-rank 'network' in memory: what rank 0 broadcasts, rank 1 receives."""

    def __init__(self, rank: int, wire: list[bytes]):
        super().__init__(rank=rank, world_size=2)
        self.wire = wire

    def broadcast_bytes(self, data):
        if self.is_main:
            self.wire.append(bytes(data))
            return bytes(data)
        return self.wire.pop(0)


def test_rank0_failure_before_the_job_aborts_the_others_and_jobs_are_json():
    wire: list[bytes] = []
    with pytest.raises(BadInput):
        with job_guard(_Wire(0, wire)):
            raise BadInput("refused at the gate")
    with pytest.raises(DistributedAbort, match="rank 0 stopped"):
        _Wire(1, wire).receive_job()

    sender = _Wire(0, wire)
    with job_guard(sender):
        sender.send_job({"train": [{"messages": []}], "resume": False})
    # The job went out, so a later failure sends no abort (torchrun stops the ranks then).
    with pytest.raises(RuntimeError):
        with job_guard(sender):
            sender.send_job({"x": 1})
            raise RuntimeError("failed while training")
    assert len(wire) == 2 and all(w.startswith(b"\x01job{") for w in wire)
    assert _Wire(1, wire).receive_job() == {"train": [{"messages": []}], "resume": False}
