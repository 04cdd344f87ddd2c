"""DP-SGD: hand-checked clipping and averaging, noise scale, subject units, learning, #820."""

from __future__ import annotations

import json
import math

import pytest
import torch

from strongroom.errors import BadInput
from strongroom.training.checkpoint import CrashingCheckpointStore, SimulatedCrash
from strongroom.training import (
    DPConfig, DPEngine, TrainConfig, TrainingGuardError, apply_lora,
    encode_records, split_records, tiny_llama, toy_records, train,
)
from strongroom.training.lora import (
    check_on_device, check_optimizer_params, check_update_direction, snapshot_trainable,
    trainable_named_parameters,
)
from strongroom.training.trainer import _forward_loss

LR = 0.5
C = 0.05  # small enough that every example is clipped


def lora_model(seed=0):
    model, tok = tiny_llama()
    torch.manual_seed(seed)
    pm = apply_lora(model, TrainConfig(lora_r=4, lora_dropout=0.0), "cpu")
    pm.train()
    return pm, tok


def flat_grads(pm):
    return torch.cat([p.grad.reshape(-1) for _, p in trainable_named_parameters(pm)])


def flat_params(pm):
    return torch.cat([p.detach().reshape(-1) for _, p in trainable_named_parameters(pm)])


def loss_fn(module, rows):
    per_ex, summed, count, _ = _forward_loss(module, rows, 0, torch.device("cpu"))
    return per_ex.mean(), float(summed.detach().sum()), int(count.sum())


def manual_unit_grads(pm, units):
    """Gradient of each unit's summed per-row mean loss, computed one row at a time."""
    out = []
    for rows in units:
        pm.zero_grad(set_to_none=True)
        for row in rows:
            per_ex, _, _, _ = _forward_loss(pm, [row], 0, torch.device("cpu"))
            per_ex.sum().backward()
        out.append(flat_grads(pm).clone())
    pm.zero_grad(set_to_none=True)
    return out


def dp_step(units, noise_multiplier, seed=0, unit="record"):
    pm, _ = lora_model()
    opt = torch.optim.SGD([p for _, p in trainable_named_parameters(pm)], lr=LR)
    eng = DPEngine(pm, opt, len(units), DPConfig(
        noise_multiplier=noise_multiplier, max_grad_norm=C, expected_batch_size=len(units),
        noise_seed=seed), total_steps=1, unit=unit)
    before = flat_params(pm)
    eng.step(units, physical_units=2, loss_fn=loss_fn)  # 2 per chunk: exercises accumulation
    applied = flat_grads(pm).clone()
    return pm, eng, before, applied, flat_params(pm)


@pytest.fixture(scope="module")
def rows():
    _, tok = tiny_llama()
    exs, _ = encode_records(tok, toy_records(5, seed=2), 64)
    return exs


@pytest.mark.parametrize("subject_level", [False, True])
def test_clipped_average_matches_hand_computation(rows, subject_level):
    units = ([[rows[0], rows[1]], [rows[2]], [rows[3], rows[4]]] if subject_level
             else [[r] for r in rows])
    pm, _ = lora_model()
    g = manual_unit_grads(pm, units)
    norms = torch.stack([x.norm() for x in g])
    assert (norms > C).all()  # clipping must bite for this test to mean anything
    clipped = [x * min(1.0, C / (float(x.norm()) + 1e-6)) for x in g]
    assert all(float(x.norm()) <= C * (1 + 1e-5) for x in clipped)
    expected = torch.stack(clipped).sum(0) / len(units)

    _, eng, before, applied, after = dp_step(units, noise_multiplier=0.0)
    assert eng.sample_rate == 1.0 and eng.expected_batch_size == len(units)
    assert torch.allclose(applied, expected, rtol=1e-4, atol=1e-7)
    assert torch.allclose(after - before, -LR * expected, rtol=1e-4, atol=1e-7)
    # Without the per-unit clip the update would be the (much larger) plain mean.
    assert not torch.allclose(applied, torch.stack(g).mean(0), rtol=1e-2)


def test_noise_has_the_expected_std(rows):
    units = [[r] for r in rows]
    sigma = 2.0
    _, _, _, clean, _ = dp_step(units, noise_multiplier=0.0)
    _, _, _, noisy, _ = dp_step(units, noise_multiplier=sigma, seed=11)
    _, _, _, noisy2, _ = dp_step(units, noise_multiplier=sigma, seed=11)
    assert torch.equal(noisy, noisy2)  # seeded noise generator is honoured
    noise = (noisy - clean) * len(units)  # undo the division by the expected batch size
    assert noise.numel() > 4000
    assert abs(float(noise.mean())) < 4 * sigma * C / math.sqrt(noise.numel())
    assert float(noise.std()) == pytest.approx(sigma * C, rel=0.06)


def test_dp_training_learns_and_spends_budget():
    train_r, eval_r = split_records(toy_records(260), 0.15)
    model, tok = tiny_llama()
    r = train(model, tok, train_r, eval_r, TrainConfig(
        max_steps=20, batch_size=32, learning_rate=3e-2, lora_r=8, lora_dropout=0.0,
        num_threads=1, dp=DPConfig(target_epsilon=8.0, expected_batch_size=32, noise_seed=1)),
        progress=False)
    evals = [m["eval_loss"] for m in r.metrics if "eval_loss" in m]
    assert r.final_eval_loss < 0.7 * evals[0], evals
    assert 7.0 < r.epsilon_spent <= 8.0 + 1e-6
    assert r.dp["noise_multiplier"] > 0.5 and r.dp["unit"] == "record"
    assert all(m["epsilon"] <= r.epsilon_spent + 1e-9 for m in r.metrics if "epsilon" in m)


def test_dp_resume_equals_uninterrupted():
    data = split_records(toy_records(80, subjects=30), 0.15)
    conf = dict(max_steps=6, batch_size=8, learning_rate=1e-2, lora_r=4, lora_dropout=0.1,
                num_threads=1, checkpoint_every=3,
                dp=DPConfig(noise_multiplier=1.0, expected_batch_size=16, noise_seed=7))
    model, tok = tiny_llama()
    full = train(model, tok, *data, TrainConfig(**conf), progress=False)

    store = CrashingCheckpointStore(crash_at=3)
    model, tok = tiny_llama()
    with pytest.raises(SimulatedCrash):
        train(model, tok, *data, TrainConfig(**conf), checkpoint_store=store, progress=False)
    model, tok = tiny_llama()
    res = train(model, tok, *data, TrainConfig(**conf), checkpoint_store=store, resume=True,
                progress=False)
    assert res.resumed_from == 3
    assert all(torch.equal(full.adapter_state[k], res.adapter_state[k])
               for k in full.adapter_state)
    assert res.epsilon_spent == pytest.approx(full.epsilon_spent, rel=1e-12)
    assert res.dp["unit"] == "subject" and res.dp["units"] < len(data[0])


def test_opacus_820_guards():
    pm, _ = lora_model()
    # Optimizer over stale copies of the LoRA parameters (what #820 amounts to) is refused.
    stale = [p.detach().clone().requires_grad_(True) for _, p in trainable_named_parameters(pm)]
    with pytest.raises(TrainingGuardError):
        check_optimizer_params(pm, torch.optim.AdamW(stale))
    # A step that does not move the LoRA weights (optimizer not wired to them) is caught.
    before = snapshot_trainable(pm)
    grads = {n: torch.ones_like(p) for n, p in trainable_named_parameters(pm)}
    with pytest.raises(TrainingGuardError):
        check_update_direction(pm, before, grads)
    # A step along (not against) the gradient is caught.
    with torch.no_grad():
        for n, p in trainable_named_parameters(pm):
            p.add_(0.01 * grads[n])
    with pytest.raises(TrainingGuardError):
        check_update_direction(pm, before, grads)
    # A parameter left on another device is caught.
    name, p = trainable_named_parameters(pm)[0]
    mod_name, attr = name.rsplit(".", 1)
    setattr(pm.get_submodule(mod_name), attr, torch.nn.Parameter(p.detach().to("meta")))
    with pytest.raises(TrainingGuardError):
        check_on_device(pm, torch.device("cpu"))


def test_dp_step_moves_lora_against_the_noised_gradient(rows):
    """The real #820 symptom: LoRA weights must change by exactly -lr * applied gradient."""
    units = [[r] for r in rows]
    pm, _, before, applied, after = dp_step(units, noise_multiplier=1.0, seed=3)
    assert float(applied.norm()) > 0
    assert torch.allclose(after - before, -LR * applied, rtol=1e-5, atol=1e-8)
    names = [n for n, _ in trainable_named_parameters(pm)]
    assert any("lora_B" in n for n in names) and all("lora_" in n for n in names)


def test_prv_accountant_calibrates_to_target():
    data = split_records(toy_records(60), 0.1)
    model, tok = tiny_llama()
    r = train(model, tok, *data, TrainConfig(
        max_steps=4, batch_size=16, lora_r=4, num_threads=1, eval_at_start=False,
        dp=DPConfig(target_epsilon=3.0, expected_batch_size=16, accountant="prv",
                    noise_seed=0)), progress=False)
    assert r.dp["accountant"] == "prv" and 2.0 < r.epsilon_spent <= 3.0 + 0.05


def test_group_units_by_subject():
    from strongroom.training.dp import group_units

    keys = ["subject:a", "id:1", "subject:a", "subject:b", "subject:a", "id:2"]
    assert group_units(keys, subject_level=True) == [[0, 2, 4], [1], [3], [5]]
    assert group_units(keys, subject_level=False) == [[i] for i in range(6)]


def test_dp_defaults_use_large_poisson_batches_and_a_higher_learning_rate():
    """The measured lesson (batch ~8 at eps 8 learns nothing) is in the defaults."""
    from strongroom.training.config import auto_dp_batch
    from strongroom.training.dp import loader_batch_size
    from strongroom.training.pipeline import DEFAULT_DP_LR, DEFAULT_LR, TrainRequest

    dp_cfg = TrainRequest(dataset="d", out="m", dp_epsilon=8.0).train_config()
    assert dp_cfg.learning_rate == DEFAULT_DP_LR and dp_cfg.dp.expected_batch_size is None
    assert TrainRequest(dataset="d", out="m").train_config().learning_rate == DEFAULT_LR
    assert [auto_dp_batch(n) for n in (10, 200, 1500, 10_000)] == [10, 64, 75, 256]
    assert loader_batch_size(1500, dp_cfg.dp) == 75
    acc = TrainRequest(dataset="d", out="m", dp_epsilon=8.0, batch_size=8,
                       grad_accumulation=16).train_config()
    assert acc.dp.expected_batch_size == 128
    explicit = TrainRequest(dataset="d", out="m", dp_epsilon=8.0, dp_batch_size=96,
                            lr=5e-4).train_config()
    assert explicit.dp.expected_batch_size == 96 and explicit.learning_rate == 5e-4
    with pytest.raises(BadInput, match="need --dp-epsilon"):
        TrainRequest(dataset="d", out="m", dp_batch_size=96).train_config()


# ------------------------------------------------------------------ subject-level DP

def clip(g):
    return g * min(1.0, C / (float(g.norm()) + 1e-6))


def test_subject_level_clips_the_sum_of_a_subjects_gradients(rows):
    """Two subjects, A with 3 records and B with 1: the step is (clip(gA1+gA2+gA3) + clip(gB))/2.

    Physical batch 2, so A's three records span two forwards: the per-unit sum must be
    accumulated across forwards before the clip.
    """
    pm, _ = lora_model()
    g = manual_unit_grads(pm, [[r] for r in rows[:4]])
    g_a, g_b = g[0] + g[1] + g[2], g[3]
    assert float(g_a.norm()) > C and float(g_b.norm()) > C  # the clip must bite
    hand = (clip(g_a) + clip(g_b)) / 2
    per_record = (clip(g[0]) + clip(g[1]) + clip(g[2]) + clip(g[3])) / 2

    units = [[rows[0], rows[1], rows[2]], [rows[3]]]
    _, eng, before, applied, after = dp_step(units, noise_multiplier=0.0, unit="subject")
    assert torch.allclose(applied, hand, rtol=1e-4, atol=1e-7)
    assert torch.allclose(after - before, -LR * hand, rtol=1e-4, atol=1e-7)
    # Subject A's whole influence is C, not 3 C: it is the sum that was clipped ...
    assert float((2 * applied - clip(g_b)).norm()) == pytest.approx(C, rel=1e-4)
    # ... which differs from clipping each of A's records on its own (record-level).
    assert not torch.allclose(applied, per_record, rtol=1e-2)
    assert eng.describe()["unit"] == "subject" and eng.describe()["level"] == "subject-level"


def _spy_steps(eng, units, n_steps, physical=2):
    """Run ``n_steps`` DP steps; per step the record indices the forwards saw, per forward."""
    steps = []
    for _ in range(n_steps):
        forwards = []

        def spy(module, rs, forwards=forwards):
            forwards.append([r.record_index for r in rs])
            return loss_fn(module, rs)

        info = eng.step(units, physical, spy)
        steps.append((forwards, info))
    return steps


def test_poisson_sampling_takes_a_subjects_records_together(rows):
    units = [[rows[0], rows[1]], [rows[2]], [rows[3], rows[4]]]
    members = [frozenset(r.record_index for r in u) for u in units]
    pm, _ = lora_model()
    opt = torch.optim.SGD([p for _, p in trainable_named_parameters(pm)], lr=0.0)
    eng = DPEngine(pm, opt, len(units), DPConfig(noise_multiplier=1.0, sample_rate=0.5,
                                                 noise_seed=5), total_steps=40, unit="subject")
    assert eng.sample_rate == 0.5
    seen = []
    for forwards, info in _spy_steps(eng, units, 14):
        got = [i for f in forwards for i in f]
        assert len(got) == len(set(got)) == info["rows"]
        picked = [m for m in members if m & set(got)]
        assert all(m <= set(got) for m in picked), (got, picked)  # all of a subject, or none
        assert set(got) == set().union(*picked) and len(picked) == info["units"]
        assert all(len(f) <= 2 for f in forwards)  # physical batch bounds each forward
        seen.append(frozenset(got))
    assert len(set(seen)) >= 3  # the draw really varies (including partial batches)


def test_records_per_subject_are_capped_per_step_by_a_fresh_random_subset():
    _, tok = tiny_llama()
    exs, _ = encode_records(tok, toy_records(7, seed=4), 64)
    units = [exs[:6], exs[6:]]  # subject A has 6 records, B has 1
    pm, _ = lora_model()
    opt = torch.optim.SGD([p for _, p in trainable_named_parameters(pm)], lr=0.0)
    eng = DPEngine(pm, opt, 2, DPConfig(noise_multiplier=1.0, expected_batch_size=2,
                                        max_records_per_subject=2, noise_seed=1),
                   total_steps=10, unit="subject")
    subsets = set()
    a_rows = {e.record_index for e in units[0]}
    for forwards, info in _spy_steps(eng, units, 8, physical=8):
        got = [i for f in forwards for i in f]
        a = [i for i in got if i in a_rows]
        assert len(a) == 2 and info["rows"] == 3 and units[1][0].record_index in got
        subsets.add(frozenset(a))
    assert len(subsets) >= 3  # a fresh subset each step, so every record gets used
    assert eng.describe()["capped_subject_draws"] == 8
    assert eng.describe()["max_records_per_subject_per_step"] == 2


def test_subject_level_run_accounts_with_the_subject_sampling_rate():
    from opacus.accountants import RDPAccountant

    from strongroom.training import build_model_card
    from strongroom.training.dp import RDP_ALPHAS

    train_r, eval_r = split_records(toy_records(90, subjects=24), 0.15)
    n_sub = len({r["subject_id"] for r in train_r})
    assert n_sub < len(train_r)
    model, tok = tiny_llama()
    r = train(model, tok, train_r, eval_r, TrainConfig(
        max_steps=3, batch_size=8, lora_r=4, num_threads=1, eval_at_start=False,
        dp=DPConfig(target_epsilon=4.0, expected_batch_size=6, noise_seed=0)), progress=False)
    assert r.dp["unit"] == "subject" and r.dp["units"] == r.dp["subjects"] == n_sub
    q_subject = 1 / math.ceil(n_sub / 6)  # Opacus: q = 1 / number of batches of units
    q_record = 1 / math.ceil(len(train_r) / 6)
    assert q_subject != q_record
    assert r.dp["sample_rate"] == pytest.approx(q_subject)
    sigma = r.dp["noise_multiplier"]
    acc = RDPAccountant()
    acc.history = [(sigma, q_subject, 3)]
    assert r.epsilon_spent == pytest.approx(
        acc.get_epsilon(r.dp["delta"], alphas=RDP_ALPHAS), rel=1e-9)
    assert 3.5 < r.epsilon_spent <= 4.0 + 1e-6 and r.dp["epsilon_spent"] == r.epsilon_spent
    # Opacus' default orders give a valid but looser bound for the same sigma.
    assert acc.get_epsilon(r.dp["delta"]) >= r.epsilon_spent - 1e-9
    acc.history = [(sigma, q_record, 3)]  # the record-level rate would spend another epsilon
    assert acc.get_epsilon(r.dp["delta"], alphas=RDP_ALPHAS) != pytest.approx(
        r.epsilon_spent, rel=1e-3)

    card = build_model_card(r, model_name="m", base_model={"name": "tiny"}, deid_report={})
    assert "subject-level" in card.markdown and f"{n_sub} subjects" in card.markdown
    priv = card.data["privacy"]
    assert priv["unit"] == "subject" and priv["level"] == "subject-level"
    assert priv["subjects"] == n_sub and priv["records_without_subject"] == 0


def test_dp_unit_choice_and_fail_closed():
    from strongroom.training import plant_canaries
    from strongroom.training.dp import resolve_unit

    assert resolve_unit("auto", [True, True]) == "subject"
    assert resolve_unit("auto", [False, False]) == "record"
    assert resolve_unit("record", [True, True]) == "record"
    assert resolve_unit("subject", [True, True]) == "subject"
    with pytest.raises(BadInput, match="1 of 2 training records name no subject"):
        resolve_unit("subject", [True, False])
    with pytest.raises(BadInput, match="dp.unit"):
        DPConfig(unit="person").validate()

    conf = dict(max_steps=1, batch_size=8, lora_r=4, num_threads=1, eval_at_start=False)
    plain = toy_records(40, seed=3)  # no subject ids
    model, tok = tiny_llama()
    with pytest.raises(BadInput, match="name no subject"):
        train(model, tok, plain, [], TrainConfig(**conf, dp=DPConfig(
            noise_multiplier=1.0, expected_batch_size=8, unit="subject")), progress=False)
    # Planted canaries carry a subject, but must not make record-level data "subject-level".
    with_canaries, _ = plant_canaries(plain, 2, 3, __import__("random").Random(0))
    model, tok = tiny_llama()
    r = train(model, tok, with_canaries, [], TrainConfig(**conf, dp=DPConfig(
        noise_multiplier=1.0, expected_batch_size=8)), progress=False)
    assert r.dp["unit"] == "record" and r.dp["units"] == len(with_canaries)
    assert r.dp["subjects"] is None
    # Records that name subjects, trained record-level on request: one unit per record.
    subj = toy_records(40, seed=3, subjects=10)
    model, tok = tiny_llama()
    r = train(model, tok, subj, [], TrainConfig(**conf, dp=DPConfig(
        noise_multiplier=1.0, expected_batch_size=8, unit="record")), progress=False)
    assert r.dp["unit"] == "record" and r.dp["units"] == 40


def test_pipeline_uses_the_datasets_subject_field_as_hmac_refs(runtime, home, tiny_base):
    from strongroom.training.pipeline import TrainRequest
    from tests.conftest import audit_entries, principal

    recs = [dict(r, customer=f"cust-{i % 12:03d}") for i, r in enumerate(toy_records(72))]
    steward = principal(runtime, ["data-steward"])
    runtime.datasets.write_records(steward, "bank", recs, source_format="jsonl",
                                   action="dataset.import", deidentified=True,
                                   safe_for_training=True, subject_field="customer")
    runtime.datasets.write_records(steward, "flat", toy_records(40), source_format="jsonl",
                                   action="dataset.import", deidentified=True,
                                   safe_for_training=True)
    eng = principal(runtime, ["ml-engineer"])
    req = dict(base=str(tiny_base), max_steps=2, batch_size=8, lora_r=4, max_seq_len=64,
               eval_fraction=0.2, progress=False, dp_epsilon=8.0, dp_batch_size=4)
    info = runtime.training.train(eng, TrainRequest(dataset="bank", out="m", **req))
    priv = info.privacy
    assert priv["unit"] == "subject" and priv["level"] == "subject-level"
    assert 1 <= priv["subjects"] == priv["units"] < 12  # 12 customers, some held out
    with pytest.raises(BadInput, match="name no subject"):
        runtime.training.train(eng, TrainRequest(dataset="flat", out="m2", dp_unit="subject",
                                                 **req))
    with pytest.raises(BadInput, match="need --dp-epsilon"):
        TrainRequest(dataset="flat", out="m2", dp_unit="record").train_config()
    entries = audit_entries(home)
    fin = [e for e in entries if e["action"] == "model.train.finish"]
    assert len(fin) == 1 and "cust-" not in json.dumps(entries)
    pub = json.dumps(fin[0])
    assert '"dp_unit": "subject"' in pub and f'"dp_subjects": {priv["subjects"]}' in pub


# ------------------------------------------------------------------ opacus#820, for real

def test_apply_lora_moves_the_model_before_injecting_peft(monkeypatch):
    """Fails if apply_lora ever injects PEFT before moving the model (the #820 order)."""
    import peft

    events = []
    model, _ = tiny_llama()
    real_to, real_peft = model.to, peft.get_peft_model
    monkeypatch.setattr(model, "to", lambda *a, **k: (events.append("to"), real_to(*a, **k))[1])
    monkeypatch.setattr(peft, "get_peft_model",
                        lambda *a, **k: (events.append("peft"), real_peft(*a, **k))[1])
    apply_lora(model, TrainConfig(lora_r=4), "cpu")
    assert events[:2] == ["to", "peft"], events


def _peft_then_late_move(model, config, device=None):
    """The #820 order: PEFT first, the "device move" only at the first forward, after the
    optimizer and Opacus were set up. On CPU the move is simulated by PyTorch's
    overwrite-on-conversion mode, which (like a lazy/meta materialisation) gives every
    parameter a new object: the optimizer then holds stale LoRA parameters."""
    from peft import get_peft_model

    from strongroom.training.lora import lora_config

    for p in model.parameters():
        p.requires_grad_(False)
    pm = get_peft_model(model, lora_config(config))
    moved = []

    def move_late(module, args, kwargs):
        if not moved:
            moved.append(True)
            prev = torch.__future__.get_overwrite_module_params_on_conversion()
            torch.__future__.set_overwrite_module_params_on_conversion(True)
            try:
                module._apply(lambda t: t.clone())
            finally:
                torch.__future__.set_overwrite_module_params_on_conversion(prev)

    pm.register_forward_pre_hook(move_late, with_kwargs=True)
    return pm


@pytest.mark.parametrize("dp", [True, False])
def test_training_refuses_a_model_moved_after_peft(monkeypatch, dp):
    import strongroom.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "apply_lora", _peft_then_late_move)
    train_r = toy_records(40, seed=1)
    model, tok = tiny_llama()
    conf = TrainConfig(max_steps=2, batch_size=8, lora_r=4, num_threads=1, eval_at_start=False,
                       dp=DPConfig(noise_multiplier=1.0, expected_batch_size=8, noise_seed=0)
                       if dp else None)
    with pytest.raises(TrainingGuardError):
        train(model, tok, train_r, [], conf, progress=False)


def _engine(pm, n_units, max_grad_norm, unit="subject"):
    opt = torch.optim.SGD([p for _, p in trainable_named_parameters(pm)], lr=LR)
    return DPEngine(pm, opt, n_units, DPConfig(noise_multiplier=0.0, max_grad_norm=max_grad_norm,
                                               expected_batch_size=n_units, noise_seed=0),
                    total_steps=1, unit=unit)


@pytest.mark.parametrize("max_grad_norm", [1e3, C])
def test_identical_records_of_a_subject_share_one_forward_and_count_k_times(rows, max_grad_norm):
    """A planted canary's repeats: subject A holds three identical records. They take one
    forward, and A's gradient is still 3 g (the sum) before the clip: with a clip that does
    not bite the step is (3 g_A + g_B) / 2 exactly; with one that bites, clip(3 g_A) + ..."""
    pm, _ = lora_model()
    g = manual_unit_grads(pm, [[rows[0]], [rows[3]]])
    bound = lambda x: x * min(1.0, max_grad_norm / (float(x.norm()) + 1e-6))  # noqa: E731
    hand = (bound(3 * g[0]) + bound(g[1])) / 2
    units = [[rows[0], rows[0], rows[0]], [rows[3]]]
    pm, _ = lora_model()
    eng = _engine(pm, 2, max_grad_norm)
    forwards = []

    def spy(module, rs):
        forwards.append([r.record_index for r in rs])
        per_ex, summed, count, _ = _forward_loss(module, rs, 0, torch.device("cpu"))
        return per_ex.mean(), summed.detach(), count

    info = eng.step(units, 8, spy)
    assert sorted(i for f in forwards for i in f) == sorted([rows[0].record_index,
                                                             rows[3].record_index])
    assert info["rows"] == 4 and info["duplicate_rows"] == 2
    assert torch.allclose(flat_grads(pm), hand, rtol=1e-4, atol=1e-7)
    # The reported loss counts A's record three times, as if each copy had its own forward.
    per_ex, summed, count, _ = _forward_loss(pm, [rows[0], rows[3]], 0, torch.device("cpu"))
    assert info["tokens"] == 3 * int(count[0]) + int(count[1])


def test_identical_records_are_not_merged_under_dropout(rows):
    model, _ = tiny_llama()
    torch.manual_seed(0)
    pm = apply_lora(model, TrainConfig(lora_r=4, lora_dropout=0.1), "cpu")
    pm.train()
    eng = _engine(pm, 1, 1.0)
    seen = []

    def spy(module, rs):
        seen.extend(r.record_index for r in rs)
        return loss_fn(module, rs)

    info = eng.step([[rows[0], rows[0]]], 8, spy)
    assert len(seen) == 2 and info["duplicate_rows"] == 0


@pytest.mark.parametrize("history", [[(0.9, 0.05, 37)], [(0.9, 0.05, 10), (1.3, 0.2, 4)]])
def test_cached_rdp_epsilon_equals_opacus(history):
    """The engine's memoised RDP curve gives Opacus' epsilon exactly (same orders)."""
    from opacus.accountants import RDPAccountant

    from strongroom.training.dp import RDP_ALPHAS

    pm, _ = lora_model()
    eng = _engine(pm, 20, 1.0, unit="record")
    eng.noise_multiplier = 0.9
    eng.engine.accountant.history = list(history)
    ref = RDPAccountant()
    ref.history = list(history)
    want = ref.get_epsilon(delta=eng.delta, alphas=RDP_ALPHAS)
    assert eng.epsilon() == want and eng.epsilon() == want  # cold and memoised
    eng.engine.accountant.history = [(s, q, n + 5) for s, q, n in history]
    ref.history = list(eng.engine.accountant.history)
    assert eng.epsilon() == ref.get_epsilon(delta=eng.delta, alphas=RDP_ALPHAS)


def test_attention_dropout_in_the_config_also_prevents_merging(rows):
    model, _ = tiny_llama()
    model.config.attention_dropout = 0.1  # functional dropout: no nn.Dropout module shows it
    pm = apply_lora(model, TrainConfig(lora_r=4, lora_dropout=0.0), "cpu")
    pm.train()
    info = _engine(pm, 1, 1.0).step([[rows[0], rows[0]]], 8, loss_fn)
    assert info["duplicate_rows"] == 0
