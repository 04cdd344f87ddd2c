"""bf16 mixed precision (``TrainConfig.precision``): detection, autocast only around forwards,
fp32 master weights / optimizer / DP clipping, exact resume, and the precision on the card."""

from __future__ import annotations

import math

import pytest
import torch

from strongroom.errors import BadInput
from strongroom.training.checkpoint import CrashingCheckpointStore, SimulatedCrash
from strongroom.training import (
    DPConfig, DPEngine, TrainConfig, apply_lora, build_model_card,
    encode_records, split_records, tiny_llama, toy_records, train,
)
from strongroom.training import precision as prec
from strongroom.training.lora import trainable_named_parameters
from strongroom.training.trainer import _forward_loss

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return split_records(toy_records(120), 0.15)


def cfg(**kw) -> TrainConfig:
    base = dict(max_steps=6, batch_size=8, learning_rate=1e-2, lora_r=8, lora_dropout=0.0,
                warmup_steps=1, num_threads=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------ detection

def test_native_bf16_is_read_from_cpu_flags(tmp_path):
    assert prec.cpu_native_bf16({"avx512f", "amx_bf16", "amx_tile"})
    assert prec.cpu_native_bf16({"avx512f", "avx512_bf16"})
    assert not prec.cpu_native_bf16({"avx512f", "avx2", "amx_int8"})
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2\n")
    assert prec._cpuinfo_flags(info) == {"fpu", "sse2", "avx512f", "avx512_bf16", "amx_tile"}
    assert prec._cpuinfo_flags(tmp_path / "absent") == set()


def test_resolve_precision(monkeypatch):
    monkeypatch.setattr(prec, "cpu_native_bf16", lambda flags=None: True)
    assert prec.resolve_precision("auto", CPU) == "bf16"
    assert prec.resolve_precision("fp32", CPU) == "fp32"
    monkeypatch.setattr(prec, "cpu_native_bf16", lambda flags=None: False)
    assert prec.resolve_precision("auto", CPU) == "fp32"  # emulated bf16 would be slower
    assert prec.resolve_precision("bf16", CPU) == "bf16"  # asked for: correct, only slower
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert prec.resolve_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(BadInput):
        prec.resolve_precision("bf16", torch.device("cuda"))
    for bad in ("fp16", "BF16", ""):
        with pytest.raises(BadInput):
            prec.resolve_precision(bad, CPU)
    with pytest.raises(BadInput):
        TrainConfig(precision="half").validate()


# ------------------------------------------------------------------------------ training

def _matmul_dtypes(model) -> list[torch.dtype]:
    """Output dtypes of every Linear forward (the base layers' and the LoRA layers')."""
    seen: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_autocast_only_around_forwards_and_everything_kept_fp32(data, precision):
    model, tok = tiny_llama()
    seen = _matmul_dtypes(model)
    r = train(model, tok, *data, cfg(precision=precision), progress=False)
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    assert seen and set(seen) == {want}
    # Master weights, LoRA parameters and the adapter handed back stay fp32.
    assert {p.dtype for p in r.peft_model.parameters()} == {torch.float32}
    assert {v.dtype for v in r.adapter_state.values()} == {torch.float32}
    assert r.config["precision"] == precision and r.data["precision"] == precision
    assert all(math.isfinite(m["loss"]) for m in r.metrics if "loss" in m)


def test_auto_is_resolved_before_it_is_recorded(data, monkeypatch):
    monkeypatch.setattr(prec, "cpu_native_bf16", lambda flags=None: False)
    model, tok = tiny_llama()
    r = train(model, tok, *data, cfg(max_steps=2), progress=False)
    assert r.config["precision"] == "fp32"  # what ran, never "auto"


def test_optimizer_state_is_fp32_under_bf16(data):
    model, tok = tiny_llama()
    seen: list[torch.dtype] = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **kw):
        out = real_step(self, *a, **kw)
        for st in self.state.values():
            seen.extend(v.dtype for k, v in st.items() if k in ("exp_avg", "exp_avg_sq"))
        for g in self.param_groups:
            seen.extend(p.grad.dtype for p in g["params"] if p.grad is not None)
        return out

    torch.optim.AdamW.step = spy
    try:
        train(model, tok, *data, cfg(max_steps=2, precision="bf16"), progress=False)
    finally:
        torch.optim.AdamW.step = real_step
    assert seen and set(seen) == {torch.float32}


def test_bf16_learns_like_fp32(data):
    """Same seed and data: the bf16 run's losses track the fp32 run's, and both learn."""
    runs = {}
    for p in ("fp32", "bf16"):
        model, tok = tiny_llama()
        runs[p] = train(model, tok, *data, cfg(max_steps=20, precision=p, eval_every=10),
                        progress=False)
    a, b = ([m["loss"] for m in runs[p].metrics if "loss" in m] for p in ("fp32", "bf16"))
    assert a != b  # bf16 really changed the arithmetic
    assert all(abs(x - y) <= 0.05 * x + 0.05 for x, y in zip(a[:5], b[:5])), (a[:5], b[:5])
    ev = {p: [m["eval_loss"] for m in r.metrics if "eval_loss" in m] for p, r in runs.items()}
    for p in ev:
        assert ev[p][-1] < 0.6 * ev[p][0], ev
    assert abs(ev["fp32"][-1] - ev["bf16"][-1]) < 0.25 * ev["fp32"][-1], ev


def test_bf16_resume_is_exact_and_refuses_another_precision(data):
    conf = dict(max_steps=6, checkpoint_every=3, precision="bf16")
    model, tok = tiny_llama()
    full = train(model, tok, *data, cfg(**conf), progress=False)

    store = CrashingCheckpointStore(crash_at=3)
    model, tok = tiny_llama()
    with pytest.raises(SimulatedCrash):
        train(model, tok, *data, cfg(**conf), checkpoint_store=store, progress=False)
    model, tok = tiny_llama()
    with pytest.raises(BadInput, match="different training config"):
        train(model, tok, *data, cfg(**dict(conf, precision="fp32")), checkpoint_store=store,
              resume=True, progress=False)
    model, tok = tiny_llama()
    resumed = train(model, tok, *data, cfg(**conf), checkpoint_store=store, resume=True,
                    progress=False)
    assert resumed.resumed_from == 3
    assert all(torch.equal(full.adapter_state[k], resumed.adapter_state[k])
               for k in full.adapter_state)


def test_card_states_the_precision(data):
    model, tok = tiny_llama()
    r = train(model, tok, *data, cfg(max_steps=1, precision="bf16"), progress=False)
    card = build_model_card(r, model_name="m", base_model={"name": "tiny"},
                            deid_report={"note": "test"})
    proc = card.data["training_procedure"]
    assert proc["precision"] == "bf16" and proc["config"]["precision"] == "bf16"
    assert "**Precision:** bf16 mixed precision" in card.markdown
    assert "optimizer state" in proc["precision_detail"]


# ------------------------------------------------------------------------------ DP

def test_dp_under_bf16_clips_fp32_per_unit_gradients():
    """Opacus computes per-sample gradients from bf16 activations; what it norms and clips
    must be fp32, each unit's clipped gradient within C, and the applied gradient the fp32
    hand computation up to bf16 rounding."""
    C = 0.05
    model, tok = tiny_llama()
    rows, _ = encode_records(tok, toy_records(6, seed=2), 64)
    units = [rows[0:2], rows[2:3], rows[3:6]]  # subjects with 2, 1 and 3 records

    def loss_fn(precision):
        def f(module, rs):
            per_ex, summed, count, _ = _forward_loss(module, rs, 0, CPU, precision)
            return per_ex.mean(), float(summed.detach().sum()), int(count.sum())
        return f

    def fresh():
        m, _ = tiny_llama()
        torch.manual_seed(0)
        pm = apply_lora(m, TrainConfig(lora_r=4, lora_dropout=0.0), "cpu")
        pm.train()
        return pm

    # fp32 hand computation: each subject's summed gradient, clipped to C, averaged.
    pm = fresh()
    expect = []
    for u in units:
        pm.zero_grad(set_to_none=True)
        for r in u:
            _forward_loss(pm, [r], 0, CPU)[0].sum().backward()
        g = torch.cat([p.grad.reshape(-1) for _, p in trainable_named_parameters(pm)])
        expect.append(g * min(1.0, C / float(g.norm())))
    expect = torch.stack(expect).sum(0) / len(units)

    pm = fresh()
    opt = torch.optim.SGD([p for _, p in trainable_named_parameters(pm)], lr=0.1)
    eng = DPEngine(pm, opt, len(units), DPConfig(noise_multiplier=0.0, max_grad_norm=C,
                                                 expected_batch_size=len(units), noise_seed=0),
                   total_steps=1, unit="subject")
    clipped_dtypes, unit_norms = [], []
    real = type(eng.optimizer).clip_and_accumulate

    def spy(self):
        gs = self.grad_samples
        clipped_dtypes.extend(g.dtype for g in gs)
        norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in gs], 1).norm(2, 1)
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        unit_norms.extend((norms * factor).tolist())
        return real(self)

    type(eng.optimizer).clip_and_accumulate = spy
    try:
        eng.step(units, physical_units=2, loss_fn=loss_fn("bf16"))
    finally:
        type(eng.optimizer).clip_and_accumulate = real
    applied = torch.cat([p.grad.reshape(-1) for _, p in trainable_named_parameters(pm)])
    assert clipped_dtypes and set(clipped_dtypes) == {torch.float32}
    assert len(unit_norms) == len(units) and max(unit_norms) <= C * (1 + 1e-5)
    assert applied.dtype == torch.float32
    cos = float(applied @ expect / (applied.norm() * expect.norm()))
    assert cos > 0.99 and float(applied.norm()) == pytest.approx(float(expect.norm()), rel=0.03)


def test_dp_training_runs_under_bf16():
    train_r, eval_r = split_records(toy_records(120), 0.15)
    model, tok = tiny_llama()
    r = train(model, tok, train_r, eval_r, cfg(
        max_steps=3, batch_size=16, learning_rate=3e-2, precision="bf16",
        dp=DPConfig(target_epsilon=8.0, expected_batch_size=16, noise_seed=1)), progress=False)
    assert r.config["precision"] == "bf16" and 0 < r.epsilon_spent <= 8.0 + 1e-6
    assert {v.dtype for v in r.adapter_state.values()} == {torch.float32}
