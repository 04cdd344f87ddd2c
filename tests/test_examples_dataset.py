"""The bundled synthetic dataset: reproducible, intact, well-formed and fit for its evaluations.

Why: demos, de-identification checks and the fine-tuning evaluation all read examples/data; if
the files drift from their generator, lose their schema, or leak held-out questions into the
training text, every later result built on them is wrong without anyone noticing.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import faker
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
GENERATOR = ROOT / "examples" / "generate_dataset.py"

CARD_RE = re.compile(r"(?<![\w-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}|3[47]\d{2}([ -]?)\d{6}\2\d{5})(?![\w-])")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("strongroom_examples_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _load_generator()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((DATA / "MANIFEST.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def support() -> list[dict]:
    with (DATA / "support.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_generator_is_deterministic(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(tmp_path / "a", records=60, seed=7)
    gen.generate(tmp_path / "b", records=60, seed=7)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert set(a) == {"support.jsonl", "patient_notes.jsonl", "claims.csv", "policy_qa.jsonl",
                      "facts.json", "MANIFEST.json"}
    assert a == b
    gen.generate(tmp_path / "c", records=60, seed=8)
    assert _tree_bytes(tmp_path / "c")["support.jsonl"] != a["support.jsonl"]


def test_records_option_scales_output(gen: ModuleType, tmp_path: Path) -> None:
    m = gen.generate(tmp_path, records=30, seed=1)
    assert m["files"]["support.jsonl"]["records"] == 30
    assert m["files"]["patient_notes.jsonl"]["records"] == 6
    assert m["files"]["claims.csv"]["records"] == 10
    with pytest.raises(ValueError):
        gen.generate(tmp_path / "bad", records=0)


def test_shipped_files_match_manifest(manifest: dict) -> None:
    assert manifest["seed"] == 20250611
    assert set(manifest["files"]) == {"support.jsonl", "patient_notes.jsonl", "claims.csv",
                                      "policy_qa.jsonl", "facts.json"}
    total = 0
    for name, info in manifest["files"].items():
        data = (DATA / name).read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
        assert len(data) == info["bytes"], name
    assert total < 5_000_000


def test_shipped_files_regenerate_byte_identical(gen: ModuleType, manifest: dict,
                                                 tmp_path: Path) -> None:
    if manifest["faker_version"] != faker.VERSION:
        pytest.skip("Faker version differs from the one that produced the shipped files")
    gen.main(["--out", str(tmp_path), "--records", str(manifest["records"]),
              "--seed", str(manifest["seed"])])
    assert _tree_bytes(tmp_path) == _tree_bytes(DATA)


def test_record_counts(manifest: dict, support: list[dict]) -> None:
    files = manifest["files"]
    assert files["support.jsonl"]["records"] == len(support) >= 1000
    with (DATA / "claims.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert files["claims.csv"]["records"] == len(rows) >= 400
    notes = (DATA / "patient_notes.jsonl").read_text(encoding="utf-8").splitlines()
    assert files["patient_notes.jsonl"]["records"] == len(notes)


def test_support_schema(support: list[dict]) -> None:
    institutions = {"bank": "Harbor Federal Bank", "clinic": "Riverside Family Clinic",
                    "insurer": "Northstar Mutual Insurance"}
    ids = set()
    for i, rec in enumerate(support):
        assert set(rec) == {"id", "subject_id", "institution", "domain", "messages"}, i
        assert isinstance(rec["id"], str) and rec["id"] not in ids, i
        ids.add(rec["id"])
        assert re.fullmatch(r"subj-\d{6}", rec["subject_id"]), i
        assert rec["domain"] in institutions, i
        assert rec["institution"] == institutions[rec["domain"]], i
        msgs = rec["messages"]
        assert len(msgs) >= 3 and msgs[0]["role"] == "system", i
        for j, m in enumerate(msgs):
            assert set(m) == {"role", "content"}, (i, j)
            assert isinstance(m["content"], str) and m["content"].strip(), (i, j)
            if j > 0:
                assert m["role"] == ("user" if j % 2 == 1 else "assistant"), (i, j)
        assert msgs[-1]["role"] == "assistant", i


def test_each_fact_taught_in_at_least_three_conversations(support: list[dict]) -> None:
    facts = json.loads((DATA / "facts.json").read_text(encoding="utf-8"))
    assert 35 <= len(facts) <= 45
    assert len({f["fact_id"] for f in facts}) == len(facts)
    assistant_text = ["\n".join(m["content"] for m in r["messages"] if m["role"] == "assistant")
                      for r in support]
    for f in facts:
        n = sum(f["statement"] in t for t in assistant_text)
        assert n >= 3, f["fact_id"]


def test_policy_qa_is_held_out(support: list[dict]) -> None:
    facts = {f["fact_id"]: f for f in json.loads((DATA / "facts.json").read_text(encoding="utf-8"))}
    qa = [json.loads(line) for line in (DATA / "policy_qa.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {row["fact_id"] for row in qa} == set(facts)
    corpus = "\n".join(m["content"] for r in support for m in r["messages"])
    for i, row in enumerate(qa):
        assert set(row) == {"question", "answer", "institution", "fact_id"}, i
        assert row["answer"] == facts[row["fact_id"]]["statement"], i
        assert row["institution"] == facts[row["fact_id"]]["institution"], i
        assert row["question"] not in corpus, i


def test_card_numbers_pass_luhn(support: list[dict]) -> None:
    corpus = "\n".join(m["content"] for r in support for m in r["messages"])
    cards = [m.group(0) for m in CARD_RE.finditer(corpus)]
    assert len(cards) >= 50
    bad = [i for i, c in enumerate(cards) if not _luhn_ok(c)]
    assert not bad, f"{len(bad)} card-shaped numbers fail Luhn (first match index {bad[0]})"


def test_luhn_helper_rejects_corruption() -> None:
    assert _luhn_ok("4111 1111 1111 1111")
    assert not _luhn_ok("4111 1111 1111 1112")


def test_claims_columns_and_identifiers() -> None:
    with (DATA / "claims.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["claim_id", "subject_id", "policy_number", "member_name", "dob",
                                 "ssn", "email", "phone", "street", "city", "state", "zip", "sex",
                                 "diagnosis_code", "amount", "adjuster_notes"]
    assert len({r["claim_id"] for r in rows}) == len(rows)
    for i, r in enumerate(rows):
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", r["ssn"]), i
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["dob"]), i
        assert r["sex"] in {"F", "M", "X"}, i
        assert r["adjuster_notes"], i


def test_names_are_diverse_and_ages_over_89_present() -> None:
    with (DATA / "claims.csv").open(encoding="utf-8", newline="") as fh:
        names = [r["member_name"] for r in csv.DictReader(fh)]
    assert len({n.split()[0] for n in names}) > 150
    assert sum(not n.isascii() for n in names) > 25  # non-English locales carry diacritics
    notes = (DATA / "patient_notes.jsonl").read_text(encoding="utf-8")
    assert re.search(r"\b(?:9\d|10\d)-year-old\b", notes)


# ------------------------------------------------------------------ the demo's fine-tune (#4)

@pytest.fixture(scope="module")
def demo_train() -> ModuleType:
    """examples/demo_train.py, imported the way examples/demo.py imports it."""
    examples = str(ROOT / "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    import demo_train as module  # noqa: PLC0415 - examples/ is not a package

    return module


def test_demo_slice_teaches_every_bank_fact_often(demo_train: ModuleType, support: list[dict]) -> None:
    """The bank's slice the demo trains on states each of its policies many times, so a short
    run can learn them; a dataset change that thins it out should fail here, not in the demo."""
    bank = [r for r in support if r["domain"] == demo_train.DOMAIN]
    assert len(bank) >= 100
    facts = [f for f in json.loads((DATA / "facts.json").read_text(encoding="utf-8"))
             if f["domain"] == demo_train.DOMAIN]
    text = ["\n".join(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in bank]
    for f in facts:
        assert sum(f["statement"] in t for t in text) >= 8, f["fact_id"]


def test_demo_questions_are_scorable_and_held_out(demo_train: ModuleType, support: list[dict]) -> None:
    qa = [json.loads(line) for line in (DATA / "policy_qa.jsonl").read_text(encoding="utf-8").splitlines()]
    inst = demo_train.institution_of(demo_train.DOMAIN)
    picked = demo_train.pick_questions(qa, inst)
    assert len(picked) == demo_train.QUESTIONS
    assert len({q["fact_id"] for q in picked}) == demo_train.QUESTIONS
    corpus = "\n".join(m["content"] for r in support for m in r["messages"])
    for q in picked:
        assert q["institution"] == inst and q["question"] not in corpus
        assert demo_train.figures(q["answer"])
        assert demo_train.states_the_fact(q["answer"], q["answer"])


def test_demo_score_needs_every_figure(demo_train: ModuleType) -> None:
    ref = "Harbor Federal's overdraft fee is $27, and it is waived within 24 hours."
    assert demo_train.states_the_fact("The fee is $27; restore the balance within 24 hours.", ref)
    assert not demo_train.states_the_fact("The fee is $27; restore it within 48 hours.", ref)
    assert not demo_train.states_the_fact("The fee is $27.", ref)
    # de-identification placeholders carry numbers that are not figures
    assert not demo_train.states_the_fact("Hello <PERSON_27>, <DATE_24> is fine.", ref)
