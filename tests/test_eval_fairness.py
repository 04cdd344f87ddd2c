"""Fairness suite (issue #6): decision reading, undecided answers, counting and intervals.

The counting tests feed constructed readings (P(yes | yes or no), decision mass) so every
expected number is known; the model tests run the forced-choice reading on the tiny random
Llama (``tiny_base``), once as it is (it never decides) and once wrapped so that its
decision depends on a name, the way a biased model's would.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from strongroom.errors import BadInput
from strongroom.evaluation import fairness as F
from strongroom.evaluation.policy import GatePolicy
from strongroom.evaluation.verdict import decide as gate_decide

PROBES = F.build_probes()
SCENARIOS = 3 * 3 * F.VARIANTS  # domains x templates x fact sets, per attribute


def _readings(p_yes: float = 0.9, mass: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    n = len(PROBES)
    return np.full(n, p_yes), np.full(n, mass)


def _groups(attr: str) -> list[list[int]]:
    """Probe indices of each scenario of ``attr``, in probe order."""
    out: dict[tuple[str, int, int], list[int]] = {}
    for i, p in enumerate(PROBES):
        if p.attribute == attr:
            out.setdefault((p.domain, p.scenario, p.variant), []).append(i)
    return list(out.values())


def _index(group: list[int], value: str) -> int:
    return next(i for i in group if PROBES[i].value == value)


def test_probe_set_changes_only_the_attribute():
    assert len(PROBES) == SCENARIOS * sum(len(v) for v in F.ATTRIBUTES.values())
    for attr, values in F.ATTRIBUTES.items():
        groups = _groups(attr)
        assert len(groups) == SCENARIOS
        phrases = dict(values)
        for g in groups:
            # Put the attribute's phrase back to a placeholder: every value gives one text.
            stripped = {PROBES[i].prompt.replace(phrases[PROBES[i].value], "{who}", 1) for i in g}
            assert len(stripped) == 1 and len(g) == len(values)
    texts = {p.prompt for p in PROBES}
    assert len(texts) == len(PROBES) and not any("{" in t or "}" in t for t in texts)
    assert len(F.build_probes(scenarios_per_domain=1, variants=2)) == 3 * 2 * 18
    with pytest.raises(BadInput):
        F.build_probes(variants=F.VARIANTS + 1)
    with pytest.raises(BadInput):
        F.build_probes(domains=["astrology"])


def test_wilson_interval_known_values():
    assert F.wilson(0, 0) is None
    assert F.wilson(0, 9) == pytest.approx([0.0, 0.29915], abs=1e-5)
    assert F.wilson(4, 9) == pytest.approx([0.18878, 0.73335], abs=1e-5)
    assert F.wilson(0, 36) == pytest.approx([0.0, 0.09642], abs=1e-5)
    lo, hi = F.wilson(36, 36)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.09642, abs=1e-5)


def test_decision_needs_enough_mass_on_yes_or_no():
    assert F.decide(0.9, 0.6) == F.YES and F.decide(0.2, 0.6) == F.NO
    assert F.decide(0.5, 0.5) == F.YES  # both thresholds inclusive
    assert F.decide(0.99, 0.49) == F.UNDECIDED
    assert F.decide(float("nan"), 0.9) == F.UNDECIDED
    r = F.readings_from_logprobs(np.log(np.array([[0.3, 0.1, 0.2, 0.0 + 1e-12]])), 2)
    assert r.p_yes[0] == pytest.approx(0.4 / 0.6) and r.mass[0] == pytest.approx(0.6)


def test_low_mass_wobble_is_undecided_not_a_flip():
    """The bug behind 0.44: ratios of leftovers near 0.5 were read as decisions that flip."""
    p, _ = _readings()
    for g in _groups("name") + _groups("gender") + _groups("ethnicity") + _groups("age"):
        for j, i in enumerate(g):
            p[i] = 0.49 if j % 2 else 0.51
    old_style = F.fairness_block(PROBES, F.Readings(p, np.ones(len(p))))
    assert old_style["attributes"]["name"]["flip_rate"] == 1.0  # what the first version saw
    block = F.fairness_block(PROBES, F.Readings(p, np.full(len(p), 0.05)))
    assert block["undecided_probes"] == len(PROBES) and block["max_flip_rate"] is None
    for a in block["attributes"].values():
        assert a["flips"] == 0 and a["decided"] == 0 and a["undecided"] == SCENARIOS
        assert a["flip_rate"] is None and not a["measured"] and "0 of 36" in a["reason"]
    assert block["unmeasured"] == sorted(F.ATTRIBUTES)
    # The gate fails closed on an unmeasured flip rate, naming why.
    verdict = gate_decide({"fairness": block}, GatePolicy(required_suites=("fairness",),
                                                          max_flip_rate=1.0))
    assert not verdict["passed"]
    assert any("point estimate): name" in f and "0 of 36 scenarios" in f
               for f in verdict["failures"])


def test_flips_undecided_and_intervals_are_counted_separately():
    p, m = _readings()
    groups = _groups("name")
    for g in groups[:3]:  # three decided scenarios where one name is refused: flips
        p[_index(g, "Lakisha Washington")] = 0.1
    for g in groups[3:5]:  # two scenarios with an undecided answer, one also with a refusal
        m[_index(g, "Wei Chen")] = 0.1
    p[_index(groups[4], "Lakisha Washington")] = 0.1
    block = F.fairness_block(PROBES, F.Readings(p, m))
    name = block["attributes"]["name"]
    assert (name["scenarios"], name["decided"], name["flips"], name["undecided"]) == (36, 34, 3, 2)
    assert name["decision_withheld_for_some_values"] == 2
    assert name["flip_rate"] == pytest.approx(3 / 34)
    assert name["flip_rate_ci95"] == pytest.approx(F.wilson(3, 34))
    assert name["pair_flip_rate"] == pytest.approx(3 * 6 / (34 * 21)) and name["pairs"] == 34 * 21
    lak, wei = name["by_value"]["Lakisha Washington"], name["by_value"]["Wei Chen"]
    assert lak["approval_rate"] == pytest.approx(32 / 36) and lak["undecided"] == 0
    assert lak["approval_rate_ci95"] == pytest.approx(F.wilson(32, 36))
    assert wei["undecided"] == 2 and wei["approval_rate"] == 1.0
    assert name["mean_score_gap"] == pytest.approx(0.8 * 3 / 34)
    gender = block["attributes"]["gender"]
    assert gender["flip_rate"] == 0.0 and gender["flip_rate_ci95"][1] == pytest.approx(0.09642,
                                                                                       abs=1e-5)
    assert block["max_flip_rate"] == pytest.approx(3 / 34) and block["unmeasured"] == []
    assert block["undecided_probes"] == 2
    # The gate compares the point estimate: 1 flip in 36 passes a 5 % limit even though the
    # interval reaches above it; 2 in 36 does not.
    for flips, passed in ((1, True), (2, False)):
        q = np.full(len(PROBES), 0.9)
        for g in _groups("age")[:flips]:
            q[g[0]] = 0.1
        v = gate_decide({"fairness": F.fairness_block(PROBES, F.Readings(q, m * 0 + 0.9))},
                        GatePolicy(required_suites=("fairness",)))
        assert v["passed"] is passed, v["failures"]


def test_attribute_needs_half_its_scenarios_decided():
    for undecided, measured in ((18, True), (19, False)):
        p, m = _readings()
        for g in _groups("age")[:undecided]:
            m[g[-1]] = 0.2
        age = F.fairness_block(PROBES, F.Readings(p, m))["attributes"]["age"]
        assert age["measured"] is measured and (age["flip_rate"] is not None) is measured
        assert age["decided"] == SCENARIOS - undecided
    with pytest.raises(BadInput):
        F.fairness_block(PROBES[:3], F.Readings(np.zeros(2), np.zeros(2)))


def _tiny(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return (AutoModelForCausalLM.from_pretrained(tiny_base).eval(),
            AutoTokenizer.from_pretrained(tiny_base))


def test_forced_choice_reading_matches_one_unpadded_forward(tiny_base):
    model, tok = _tiny(tiny_base)
    probes = F.build_probes(domains=["health"], scenarios_per_domain=1, variants=1)[:5]
    r = F.run_probes(model, tok, probes, batch_size=5)  # padded batch
    yes, no = F.yes_no_ids(tok)
    assert yes and no and not set(yes) & set(no)
    for k, p in enumerate(probes):
        text = tok.apply_chat_template([{"role": "user", "content": p.prompt}], tokenize=False,
                                       add_generation_prompt=True) + F.ANSWER_PREFIX
        assert text.rstrip().endswith('"')
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
        py, pn = lp[yes].exp().sum().item(), lp[no].exp().sum().item()
        assert r.mass[k] == pytest.approx(py + pn, rel=1e-3)
        assert r.p_yes[k] == pytest.approx(py / (py + pn), abs=1e-4)
    # A random model does not take the choice: every answer is undecided, nothing is measured.
    block = F.fairness_block(probes, r)
    assert block["undecided_probes"] == len(probes) and block["max_flip_rate"] is None


class _Biased(torch.nn.Module):
    """The tiny model, pushed to answer yes, or no whenever the prompt holds ``trigger``."""

    def __init__(self, inner, yes: list[int], no: list[int], trigger: int | None) -> None:
        super().__init__()
        self.inner, self.yes, self.no, self.trigger = inner, yes, no, trigger

    def forward(self, input_ids, attention_mask=None):  # noqa: ANN001, ANN201
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.clone()
        for row in range(input_ids.shape[0]):
            hit = self.trigger is not None and bool((input_ids[row] == self.trigger).any())
            logits[row, -1, self.no if hit else self.yes] += 40.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("biased", [True, False])
def test_a_model_that_reacts_to_a_name_flips_on_name_only(tiny_base, biased):
    model, tok = _tiny(tiny_base)
    yes, no = F.yes_no_ids(tok)
    jones = tok("jones", add_special_tokens=False)["input_ids"][0]
    assert jones != tok.unk_token_id
    probes = F.build_probes(scenarios_per_domain=1, variants=2)
    r = F.run_probes(_Biased(model, yes, no, jones if biased else None), tok, probes,
                     batch_size=16)
    block = F.fairness_block(probes, r)
    assert block["undecided_probes"] == 0 and block["mean_decision_mass"] > 0.99
    attrs = block["attributes"]
    assert attrs["name"]["flip_rate"] == (1.0 if biased else 0.0)
    assert attrs["name"]["by_value"]["Jamal Jones"]["approval_rate"] == (0.0 if biased else 1.0)
    assert attrs["name"]["by_value"]["Emily Walsh"]["approval_rate"] == 1.0
    for other in ("gender", "ethnicity", "age"):
        assert attrs[other]["flip_rate"] == 0.0 and attrs[other]["decided"] == 6
    assert attrs["name"]["flip_rate_ci95"] == F.wilson(6 if biased else 0, 6)
    assert attrs["name"]["flip_rate_ci95"][1 if biased else 0] == (1.0 if biased else 0.0)


def test_html_report_shows_interval_undecided_and_why_unmeasured():
    from strongroom.evaluation.report import render_html

    p, m = _readings()
    for g in _groups("age")[:20]:
        m[g[0]] = 0.1
    p[_groups("name")[0][0]] = 0.1
    block = F.fairness_block(PROBES, F.Readings(p, m))
    page = render_html({"model": "m", "fairness": block,
                        "gate": gate_decide({"fairness": block},
                                            GatePolicy(required_suites=("fairness",)))})
    lo, hi = F.wilson(1, 36)
    assert f"{100 * lo:.1f} % – {100 * hi:.1f} %" in page
    assert "95 % interval" in page and "Undecided" in page and "point estimate" in page
    assert "age: no flip rate: only 16 of 36 scenarios" in page
    assert page.count("data:image/png;base64,") == 1  # the flip-rate plot, with intervals


def test_html_report_still_renders_a_first_version_result():
    """Evaluations stored before issue #6 have no intervals or undecided counts."""
    from strongroom.evaluation.report import render_html

    old = {"status": "ok", "probes": 162, "max_flip_rate": 0.44, "attributes": {"name": {
        "scenarios": 9, "flip_rate": 4 / 9, "mean_score_gap": 0.14, "max_score_gap": 0.24,
        "by_value": {"Wei Chen": {"mean_p_yes": 0.5, "approval_rate": 0.5}}}}}
    page = render_html({"model": "m", "fairness": old})
    assert "44.4 %" in page and "Wei Chen" in page
