"""DeidEngine: detection + policy + operators, for text, record streams and files.

Record streams (`deidentify_records`):
- detection runs batched over every string of a batch of records; a name found in one field
  of a record is looked for in the record's other fields (chat turns rarely repeat the cue);
- the subject field passes through unchanged (the store links records to data subjects with
  it), and id-like columns of the dataset's own opaque keys are kept (tables.is_record_key_column);
- residual scan: detection re-runs on the output. Findings inside text this engine wrote
  (tags, tokens, hashes, masks, surrogates, generalised values) are judged on their remainder
  only. What the policy removes at its own thresholds is removed by a second pass
  (report.second_pass); what it would leave but scores >= residual_threshold is a residual
  finding and makes `safe_for_training` False. Lone-word model guesses score 0.7, below every
  built-in residual_threshold, so they are removed but never flip the verdict.
  The re-scan's NER model re-reads only the sentences holding a replacement (with context words
  either side); elsewhere the first pass's raw model output is reused, shifted to the output's
  offsets. Pattern recognizers and heuristics still run on the whole output (privacy.rescan).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections import Counter
from typing import Any, Iterable, Iterator

from strongroom.errors import BadInput
from strongroom.privacy.analyzer import ALWAYS_REMOVE, Analyzer, AnalyzerConfig
from strongroom.privacy.nergate import SegmentReader
from strongroom.privacy.nlp import NerEntity, get_ner
from strongroom.privacy.operators import MARKER_RE, OperatorSpec, Transformer
from strongroom.privacy.policy import Policy, load_policy, normalise_allow
from strongroom.privacy.report import DeidReport
from strongroom.privacy.rescan import Edit, edits_of
from strongroom.privacy.tables import classify_column, hint_for, is_record_key_column
from strongroom.privacy.types import DeidResult, Span
from strongroom.privacy.vault import TokenVault

_YEAR_ONLY = re.compile(r"(?i)^\s*(?:in\s+)?(?:1[89]\d{2}|20\d{2})s?\s*$")
MAX_RECORD_CHARS = 10_000_000
KEEP_COLUMN = "\x00keep"  # column decision: pass the values through unchanged
CLASSIFY_SAMPLE = 64


class _NoStore(dict):
    """A cache that never keeps anything (see ``DeidEngine(cross_call_cache=False)``)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


class DeidEngine:
    def __init__(self, policy: Policy | str | None = None, secret: bytes | None = None,
                 vault: TokenVault | None = None, *, tag_placeholders: bool = False,
                 allow: Iterable[str] | None = None, cross_call_cache: bool = True) -> None:
        """``cross_call_cache=False``: no detection result outlives the call that made it.

        WHY: the analyzer caches raw detections per distinct text and the NER gate's reader per
        sentence, which pays off on a dataset (templated lines, repeated system prompts). An
        engine shared by many callers (the gateway's PII guard) must not: a cache hit answers
        in ~0.1 ms where a miss takes ~5 ms, so one caller could time whether another recently
        sent the same text, and the cache would keep other callers' prompts in memory. Within
        one call (one batch) identical texts are still read once.
        """
        if policy is None or isinstance(policy, str):
            policy = load_policy(policy or "hipaa-safe-harbor")
        if allow:
            # never mutate the caller's policy object: it may be shared by other engines
            policy = dataclasses.replace(policy, allow=set(policy.allow) | {normalise_allow(a) for a in allow if a.strip()},
                                         overridden=list(policy.overridden))
        if secret is None:
            from strongroom.privacy.keys import deid_secret

            secret = deid_secret()
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise BadInput("the de-identification secret must be at least 16 bytes")
        self.policy = policy
        self._secret = bytes(secret)
        self.vault = vault
        self.ner = get_ner(policy.nlp_model, policy.token_model_dir)
        raw_cache: dict = {} if cross_call_cache else _NoStore()
        reader = SegmentReader() if cross_call_cache else SegmentReader(cache_size=0)
        self.analyzer = Analyzer(self.ner, AnalyzerConfig(
            entities=set(policy.entities), default_threshold=policy.default_threshold,
            thresholds=dict(policy.thresholds), allow=set(policy.allow), deny=dict(policy.deny),
            ner_gate=policy.ner_gate), extra=policy.patterns, raw_cache=raw_cache, reader=reader)
        # the re-scan ignores per-entity policy thresholds (a policy that raised one must not hide a
        # confident finding from the verdict) and reports down to the lowest detection threshold
        # (so that the second pass can remove what the first missed); _rescan sorts them out
        floor = min([policy.default_threshold, policy.residual_threshold, *policy.thresholds.values()])
        self.residual_analyzer = Analyzer(self.ner, AnalyzerConfig(
            entities=set(policy.entities), default_threshold=floor,
            allow=set(policy.allow), deny=dict(policy.deny), ner_gate=policy.ner_gate),
            extra=policy.patterns, raw_cache=raw_cache, reader=reader)
        self.transformer = Transformer(self._secret, vault, tag_placeholders=tag_placeholders,
                                       day_first=policy.day_first)
        # record streams: the re-scan's model re-reads only edited sentences (strongroom.privacy.rescan);
        # False re-reads every edited text whole (the reference the windowed scan is checked against)
        self.windowed_rescan = True

    def _zone(self) -> contextlib.AbstractContextManager:
        """A spaCy memory zone around one unit of work (a text, a batch of records).

        Why: spaCy interns every new token string (each phone number, e-mail, card number, tag
        placeholder) in the shared vocabulary and never forgets it, so a long stream grows the
        process by ~20 strings per record without bound. Inside a zone the strings added are freed
        on exit; nothing of spaCy's outlives a call here (results are plain spans), so it is safe.
        """
        nlp = getattr(self.ner, "nlp", None)
        zone = getattr(nlp, "memory_zone", None)
        return zone() if zone is not None else contextlib.nullcontext()

    # ---- metadata ----
    def detector_versions(self) -> dict[str, Any]:
        import importlib.metadata as md

        def v(p: str) -> str:
            try:
                return md.version(p)
            except md.PackageNotFoundError:
                return "absent"

        return {"ner": self.ner.describe(), "registry": "strongroom pattern registry (presidio-style)",
                "recognizers": len(self.analyzer.recognizers), "presidio-analyzer": v("presidio-analyzer"),
                "python-stdnum": v("python-stdnum"), "phonenumbers": v("phonenumbers"), "policy": self.policy.name,
                "ner_gate": self.policy.ner_gate}

    # ---- text ----
    def analyze(self, text: str) -> list[Span]:
        with self._zone():
            return self.analyzer.analyze(text)

    def deidentify_text(self, text: str, subject: str | None = None) -> DeidResult:
        if not isinstance(text, str):
            raise BadInput("deidentify_text expects a str")
        with self._zone():
            spans = self.analyzer.analyze(text)
        out, spans, _ = self._apply(text, spans, subject)
        return DeidResult(out, spans)

    def deidentify_batch(self, texts: list[str], subjects: list[str | None] | None = None) -> list[DeidResult]:
        with self._zone():
            all_spans = self.analyzer.analyze_batch(texts)
        subjects = subjects or [None] * len(texts)
        res = []
        for t, sp, subj in zip(texts, all_spans, subjects):
            out, sp2, _ = self._apply(t, sp, subj)
            res.append(DeidResult(out, sp2))
        return res

    def reidentify(self, text: str) -> str:
        """Replace tokens by their values via the vault (caller enforces permission/TOTP)."""
        if self.vault is None:
            raise BadInput("re-identification needs the TokenVault used for tokenisation")
        return re.sub(r"<tok_[A-Z_]+_[a-z2-7]{20}>", lambda m: self.vault.get(m.group()), text)  # type: ignore[union-attr]

    def _operator(self, etype: str, value: str) -> OperatorSpec:
        op = self.policy.operator_for(etype) or OperatorSpec("tag")
        if etype == "DATE" and self.policy.keep_years and _YEAR_ONLY.match(value):
            return OperatorSpec("keep")
        return op

    def _apply(self, text: str, spans: list[Span], subject: str | None) -> tuple[str, list[Span], list[tuple[int, int]]]:
        """Build the output; returns (text, spans with operator/replacement, written regions)."""
        canon = _person_canonical(text, spans)
        pieces: list[str] = []
        regions: list[tuple[int, int]] = []
        pos = 0
        out_len = 0
        for s in spans:
            value = text[s.start:s.end]
            op = self._operator(s.entity_type, value)
            rep = self.transformer.apply(op, s.entity_type, value, canon.get((s.start, s.end)), subject)
            s.operator = op.name
            s.replacement = rep
            pieces.append(text[pos:s.start])
            out_len += s.start - pos
            pieces.append(rep)
            if rep != value:
                regions.append((out_len, out_len + len(rep)))
            out_len += len(rep)
            pos = s.end
        pieces.append(text[pos:])
        return "".join(pieces), spans, regions

    def _residual(self, out: str, spans: list[Span], regions: list[tuple[int, int]]) -> list[Span]:
        """Residual findings for the verdict (see `_rescan`); kept for callers of the old name."""
        repair, residual = self._rescan(out, spans, regions)
        if not self.policy.residual_repair:
            residual = sorted(residual + [s for s in repair if s.score >= self.policy.residual_threshold],
                              key=lambda s: s.start)
        return residual

    def _rescan(self, out: str, spans: list[Span], regions: list[tuple[int, int]]) -> tuple[list[Span], list[Span]]:
        """Split re-scan findings on de-identified text into (repair, residual).

        A finding that overlaps text this engine wrote (a tag, mask, token, hash, surrogate or
        generalised value) is judged only on its remainder: it counts if that remainder alone is
        a plausible identifier (3+ alphanumerics; a capitalised non-stopword for names), so a
        model reading "<PERSON_3> VT 752" as a name does not flip the verdict, while "Roe" left
        beside a surrogate first name still does.

        repair: what the policy itself removes at its own thresholds (the first pass missed it,
        usually because the model saw less context) -> removed by the second pass.
        residual: a confident finding (score >= residual_threshold) the policy would NOT remove.
        """
        markers = [(m.start(), m.end()) for m in MARKER_RE.finditer(out)]
        covered = sorted(regions + markers)
        repair: list[Span] = []
        residual: list[Span] = []
        for s in spans:
            a, b = s.start, s.end
            if covered and any(ca < b and a < cb for ca, cb in covered):
                piece = _uncovered_piece(a, b, covered)
                if piece is None:
                    continue
                a, b = piece
                value = out[a:b].strip(" \t\n,;:.-'’")
                if not _plausible_rest(value, s.entity_type):
                    continue
                a = out.find(value, a)
                b = a + len(value)
                s = Span(s.entity_type, a, b, s.score, recognizer=s.recognizer)
            value = out[a:b]
            if not any(c.isalnum() for c in value):
                continue
            op = self._operator(s.entity_type, value)
            if op.name == "keep":
                continue
            if op.name == "generalize":
                from strongroom.privacy.operators import generalize

                if generalize(value, s.entity_type) == value:
                    continue
            if self.policy.operator_for(s.entity_type) is not None and s.score >= self.analyzer._threshold(s.entity_type):
                repair.append(s)
            elif s.score >= self.policy.residual_threshold or s.entity_type in ALWAYS_REMOVE:
                residual.append(s)
        return repair, residual

    def residual_scan(self, text: str) -> list[Span]:
        """Detection re-run on already de-identified text (markers are ignored): every confident
        identifier (score >= residual_threshold) still in it, whether or not the policy removes it."""
        with self._zone():
            found = self.residual_analyzer.analyze(text)
        repair, residual = self._rescan(text, found, [])
        th = self.policy.residual_threshold
        return sorted([s for s in repair if s.score >= th or s.entity_type in ALWAYS_REMOVE] + residual,
                      key=lambda s: s.start)

    # ---- records ----
    def deidentify_records(self, records: Iterable[dict], fields: list[str] | None = None,
                           subject_field: str | None = None, *, batch_size: int = 64,
                           residual: bool = True, qi_columns: list[str] | None = None,
                           k: int = 5, start_index: int = 0,
                           report: DeidReport | None = None,
                           columns: dict[str, str | None] | None = None) -> tuple[Iterator[dict], DeidReport]:
        """Stream records through the engine; the report fills in as the iterator is consumed.

        `columns` are column decisions made earlier (`classify_columns`): workers that each get a
        slice of one file must apply the same decisions as a single pass would, not re-decide
        them per slice from a different sample.
        """
        rep = report or DeidReport(policy=self.policy.name)
        if not rep.detector_versions:
            rep.detector_versions = self.detector_versions()
        state = _RecordState(self, fields, subject_field, rep, residual)
        if columns is not None:
            state.column_type = dict(columns)
            state.classified = True

        def gen() -> Iterator[dict]:
            t0 = time.perf_counter()
            qi_rows: list[dict] = []
            batch: list[tuple[int, Any]] = []
            for i, rec in enumerate(records, start_index + 1):
                batch.append((i, rec))
                if len(batch) >= batch_size:
                    with self._zone():
                        done = state.process(batch)
                    for r in done:
                        if qi_columns:
                            qi_rows.append({c.split(":")[-1]: r.get(c.split(":")[-1]) for c in qi_columns})
                        yield r
                    batch = []
            if batch:
                with self._zone():
                    done = state.process(batch)
                for r in done:
                    if qi_columns:
                        qi_rows.append({c.split(":")[-1]: r.get(c.split(":")[-1]) for c in qi_columns})
                    yield r
            if qi_columns:
                from strongroom.privacy.tables import k_anonymity

                rep.k_anonymity = k_anonymity(qi_rows, qi_columns, k)
            rep.elapsed_s += time.perf_counter() - t0

        return gen(), rep

    def classify_columns(self, records: list[dict], fields: list[str] | None = None,
                         subject_field: str | None = None,
                         report: DeidReport | None = None) -> dict[str, str | None]:
        """Column decisions (whole-column type, kept record key, or free text) from a sample of
        the first records, as the first batch of `deidentify_records` would make them."""
        rep = report or DeidReport(policy=self.policy.name)
        state = _RecordState(self, fields, subject_field, rep, True)
        with self._zone():
            state._classify([(i, r) for i, r in enumerate(records[:CLASSIFY_SAMPLE], 1)])
        return dict(state.column_type)

    def deidentify_file(self, in_path: str, out_path: str, fmt: str | None = None,
                        fields: list[str] | None = None, workers: int = 1, **kw: Any) -> DeidReport:
        from strongroom.privacy.fileio import deidentify_file

        return deidentify_file(self, in_path, out_path, fmt=fmt, fields=fields, workers=workers, **kw)


def _person_canonical(text: str, spans: list[Span]) -> dict[tuple[int, int], str]:
    """Map a bare "Roe" to "Jane Roe" found elsewhere in the document, so both share a tag."""
    full = [text[s.start:s.end] for s in spans if s.entity_type == "PERSON" and len(text[s.start:s.end].split()) > 1]
    out: dict[tuple[int, int], str] = {}
    if not full:
        return out
    for s in spans:
        if s.entity_type != "PERSON":
            continue
        v = text[s.start:s.end]
        if len(v.split()) == 1:
            for f in full:
                if v in f.split():
                    out[(s.start, s.end)] = f
                    break
    return out


_NAME_TYPES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "STREET_ADDRESS"})


def _uncovered_piece(a: int, b: int, covered: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The longest part of [a, b) outside every covered region."""
    cuts = [(max(a, ca), min(b, cb)) for ca, cb in covered if ca < b and a < cb]
    best: tuple[int, int] | None = None
    pos = a
    for ca, cb in sorted(cuts) + [(b, b)]:
        if ca > pos and (best is None or ca - pos > best[1] - best[0]):
            best = (pos, ca)
        pos = max(pos, cb)
    return best


def _plausible_rest(value: str, etype: str) -> bool:
    if sum(c.isalnum() for c in value) < 3:
        return False
    if etype in _NAME_TYPES:
        from strongroom.privacy.heuristics import STOP

        return any(len(w) >= 3 and w[0].isupper() and w.lower() not in STOP
                   for w in re.findall(r"[^\W\d_][\w'’-]*", value))
    return True


class _RecordState:
    """Per-stream state: column decisions and the field walk."""

    def __init__(self, eng: DeidEngine, fields: list[str] | None, subject_field: str | None,
                 rep: DeidReport, residual: bool) -> None:
        self.eng = eng
        self.fields = fields
        self.subject_field = subject_field
        self.rep = rep
        self.residual = residual
        self.column_type: dict[str, str | None] = {}
        self.classified = False

    def _leaves(self, rec: dict) -> list[tuple[str, Any, Any, Any]]:
        """(field path, container, key, value) for every string (or hinted scalar) to process."""
        out: list[tuple[str, Any, Any, Any]] = []
        if self.fields is not None:
            for f in self.fields:
                if f in rec and f != self.subject_field:
                    self._walk(f, rec, f, rec[f], out)
            return out
        for k, v in rec.items():
            # the subject field links records to data subjects (erasure, date shifts): the store
            # keeps it encrypted and needs it verbatim, so it is never transformed
            if str(k) == self.subject_field:
                continue
            self._walk(str(k), rec, k, v, out)
        return out

    def _walk(self, path: str, container: Any, key: Any, value: Any, out: list) -> None:
        if isinstance(value, str):
            out.append((path, container, key, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                self._walk(f"{path}.{k}", value, k, v, out)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._walk(f"{path}[]", value, i, v, out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if "." not in path and "[" not in path and hint_for(path, self.eng.policy.column_hints):
                out.append((path, container, key, value))

    def _classify(self, batch: list[tuple[int, Any]]) -> None:
        samples: dict[str, list[str]] = {}
        for _, rec in batch[:CLASSIFY_SAMPLE]:
            if not isinstance(rec, dict):
                continue
            for path, _c, _k, v in self._leaves(rec):
                if "." in path or "[" in path:
                    continue
                samples.setdefault(path, []).append(str(v))
        pol = self.eng.policy
        for col, vals in samples.items():
            h = hint_for(col, pol.column_hints)
            if h and h in pol.entities:
                self.column_type[col] = h
                continue
            short = [v for v in vals if len(v) <= 64]
            if len(short) < 0.8 * len(vals):
                self.column_type[col] = None  # free text column
                continue
            spans = self.eng.analyzer.analyze_batch(short)
            if pol.keep_record_keys and is_record_key_column(col, short, spans):
                self.column_type[col] = KEEP_COLUMN
                self.rep.column_types[col] = "record key (kept)"
                note = ("id-like columns holding the dataset's own opaque keys (one shared prefix + a serial "
                        "number, UUIDs or hex digests, none matching a real identifier type) are kept as-is; "
                        "set keep_record_keys = false in the policy to tag them")
                if note not in self.rep.notes:
                    self.rep.notes.append(note)
                continue
            # the generic catch-all (any 5+ digit number / mixed code) is too weak to decide a whole
            # column: such cells still go through detection one by one
            ctype = classify_column(short, spans)
            self.column_type[col] = None if ctype == "ID_NUMBER" else ctype
        self.rep.column_types.update({k: v for k, v in self.column_type.items() if v and v != KEEP_COLUMN})
        self.classified = True

    def process(self, batch: list[tuple[int, Any]]) -> list[dict]:
        eng, rep = self.eng, self.rep
        if not self.classified:
            self._classify(batch)
        kept: list[tuple[int, dict]] = []
        for i, rec in batch:
            if not isinstance(rec, dict):
                rep.skip("not an object")
                continue
            size = sum(len(v) for _p, _c, _k, v in self._leaves(rec) if isinstance(v, str))
            if size > MAX_RECORD_CHARS:
                rep.skip("record larger than 10M characters")
                continue
            kept.append((i, rec))
        jobs: list[tuple[int, str, Any, Any, str, str | None]] = []
        whole: list[tuple[int, str, Any, Any, Any, str, str | None]] = []
        for i, rec in kept:
            subj = str(rec.get(self.subject_field)) if self.subject_field and rec.get(self.subject_field) is not None else None
            for path, cont, key, val in self._leaves(rec):
                ctype = self.column_type.get(path)
                if ctype == KEEP_COLUMN:
                    continue
                if ctype:
                    whole.append((i, path, cont, key, val, ctype, subj))
                elif isinstance(val, str):
                    jobs.append((i, path, cont, key, val, subj))
        # whole-column values: the column type decides, no detection needed
        for i, path, cont, key, val, ctype, subj in whole:
            sval = str(val)
            if not sval.strip():
                continue
            op = eng._operator(ctype, sval)
            cont[key] = eng.transformer.apply(op, ctype, sval, None, subj)
            rep.counts[(path, ctype)] += 1
            rep.operators[(ctype, op.name)] += 1
        texts = [j[4] for j in jobs]
        groups = [j[0] for j in jobs]
        # the model's raw entities per text, for the windowed re-scan (this batch only)
        memo: dict[str, list[NerEntity]] = {}
        all_spans = eng.analyzer.analyze_batch(texts, groups=groups, ner_memo=memo) if texts else []
        outs: list[tuple[str, list[tuple[int, int]]]] = []
        sources: list[tuple[str, list[NerEntity], list[Edit]] | None] = []
        for (i, path, cont, key, val, subj), spans in zip(jobs, all_spans):
            out, spans, regions = eng._apply(val, spans, subj)
            cont[key] = out
            outs.append((out, regions))
            ents = memo.get(val)
            sources.append(None if ents is None or not eng.windowed_rescan else (val, ents, edits_of(val, spans)))
            for s in spans:
                rep.counts[(path, s.entity_type)] += 1
                rep.operators[(s.entity_type, s.operator or "")] += 1
        if self.residual and outs:
            pol = eng.policy
            res_spans = eng.residual_analyzer.analyze_batch([o for o, _ in outs], groups=groups, sources=sources)
            for (i, path, cont, key, _v, subj), (out, regions), spans in zip(jobs, outs, res_spans):
                repair, residual = eng._rescan(out, spans, regions)
                if repair and pol.residual_repair:
                    fixed, repair, _ = eng._apply(out, repair, subj)
                    cont[key] = fixed
                    for s in repair:
                        rep.second_pass[s.entity_type] += 1
                        rep.counts[(path, s.entity_type)] += 1
                        rep.operators[(s.entity_type, s.operator or "")] += 1
                elif repair:
                    residual += [s for s in repair if s.score >= pol.residual_threshold]
                for s in residual:
                    rep.add_residual(i, path, s.entity_type, s.score)
            rep.residual_scanned += len({j[0] for j in jobs})
        rep.records_processed += len(kept)
        return [rec for _, rec in kept]
