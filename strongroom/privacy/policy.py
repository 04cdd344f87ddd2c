"""Policies: which entity types are removed, by which operator, at which confidence.

Built-ins ship as TOML under strongroom/privacy/policies/. A custom policy is a TOML file that
may `extends = "<built-in or path>"` and override entities, thresholds, allow/deny lists and
add site patterns (an MRN or member-id format) with validators.

Invariant enforced here, not in the TOML: sensitive authentication data (CVV, PIN, track data,
card expiry) and credentials are removed under every policy. A custom policy that tries to keep,
mask or surrogate them is overridden to `redact` (tags are allowed: they carry no value).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from strongroom.errors import BadInput
from strongroom.privacy.analyzer import ALWAYS_REMOVE
from strongroom.privacy.operators import OperatorSpec
from strongroom.privacy.recognizers import Pattern, PatternRecognizer
from strongroom.privacy.validators import get_validator

BUILTIN_POLICIES = ("hipaa-safe-harbor", "pci-dss", "gdpr-pseudonymise", "training")
ALLOW_ENV = "STRONGROOM_DEID_ALLOW_FILE"  # extra allow-list file(s), os.pathsep-separated
DEFAULT_POLICY = "hipaa-safe-harbor"
_SAD_OPS = ("redact", "tag")


@dataclass
class Policy:
    name: str
    description: str = ""
    entities: dict[str, OperatorSpec] = field(default_factory=dict)
    default_threshold: float = 0.4
    thresholds: dict[str, float] = field(default_factory=dict)
    allow: set[str] = field(default_factory=set)
    deny: dict[str, str] = field(default_factory=dict)
    patterns: list[PatternRecognizer] = field(default_factory=list)
    nlp_model: str = "auto"
    token_model_dir: str | None = None
    ner_gate: bool = True  # the NER model reads only segments that could hold an entity (privacy.nergate)
    keep_years: bool = True
    day_first: bool = False
    residual_threshold: float = 0.85
    residual_repair: bool = True  # remove what the re-scan finds at the policy's own thresholds
    keep_record_keys: bool = True  # see tables.is_record_key_column
    column_hints: dict[str, str] = field(default_factory=dict)
    overridden: list[str] = field(default_factory=list)  # SAD entries the invariant replaced
    source: str | None = None  # built-in name or path it was loaded from (lets workers reload it)

    def __post_init__(self) -> None:
        self.enforce_invariants()

    def enforce_invariants(self) -> None:
        for etype in sorted(ALWAYS_REMOVE):
            op = self.entities.get(etype)
            if op is None or op.name not in _SAD_OPS:
                if op is not None:
                    self.overridden.append(f"{etype}:{op.name}->redact")
                self.entities[etype] = OperatorSpec("redact")
            self.thresholds[etype] = min(self.thresholds.get(etype, self.default_threshold), 0.4)
            self.allow = {a for a in self.allow}  # allow lists never exempt SAD (see Analyzer)

    def operator_for(self, etype: str) -> OperatorSpec | None:
        return self.entities.get(etype)

    def to_dict(self) -> dict:
        return {"name": self.name, "entities": {k: v.name for k, v in sorted(self.entities.items())},
                "default_threshold": self.default_threshold, "thresholds": dict(sorted(self.thresholds.items())),
                "allow_count": len(self.allow), "deny_count": len(self.deny),
                "patterns": [p.name for p in self.patterns], "nlp_model": self.nlp_model,
                "ner_gate": self.ner_gate,
                "keep_years": self.keep_years, "overridden": self.overridden}


def _read_toml(name_or_path: str | Path) -> tuple[dict, str]:
    s = str(name_or_path)
    if s in BUILTIN_POLICIES:
        text = resources.files("strongroom.privacy").joinpath("policies", f"{s}.toml").read_text("utf-8")
        origin = f"builtin:{s}"
    else:
        p = Path(s)
        if not p.is_file():
            raise BadInput(f"unknown policy {s!r}: not a built-in ({', '.join(BUILTIN_POLICIES)}) nor a file")
        try:
            text = p.read_text("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"policy file {p.name} is not UTF-8") from exc
        origin = str(p)
    try:
        return tomllib.loads(text), origin
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"policy {s!r} is not valid TOML: {exc}") from exc


def _op(entity: str, v: Any) -> OperatorSpec:
    if isinstance(v, str):
        return OperatorSpec(v)
    if isinstance(v, dict) and "operator" in v:
        return OperatorSpec(str(v["operator"]), {k: x for k, x in v.items() if k != "operator"})
    raise BadInput(f"policy entity {entity}: expected an operator name or a table with 'operator'")


def _pattern(d: dict) -> PatternRecognizer:
    try:
        name, entity, rx = str(d["name"]), str(d["entity"]).upper(), str(d["regex"])
    except KeyError as exc:
        raise BadInput(f"policy pattern needs name, entity and regex (missing {exc})") from None
    try:
        re.compile(rx)
    except re.error as exc:
        raise BadInput(f"policy pattern {name!r}: invalid regex: {exc}") from None
    validator = get_validator(str(d["validator"])) if d.get("validator") else None
    return PatternRecognizer(
        name=name, entity_type=entity,
        patterns=[Pattern(rx, float(d.get("score", 0.85)), int(d.get("group", 0)),
                          re.IGNORECASE if d.get("ignore_case") else 0)],
        validator=validator, valid_score=float(d["valid_score"]) if "valid_score" in d else None,
        context=[str(c) for c in d.get("context", [])], context_required=bool(d.get("context_required", False)),
    )


def load_policy(name_or_path: str | Path = DEFAULT_POLICY) -> Policy:
    """Load a built-in policy by name or a TOML file (which may `extends` another)."""
    data, origin = _read_toml(name_or_path)
    base: Policy | None = None
    if data.get("extends"):
        parent = str(data["extends"])
        if parent == str(name_or_path):
            raise BadInput("policy extends itself")
        if parent not in BUILTIN_POLICIES and not Path(parent).is_absolute():
            parent = str((Path(str(name_or_path)).parent / parent)) if Path(str(name_or_path)).is_file() else parent
        base = load_policy(parent)
    ents = dict(base.entities) if base else {}
    for k, v in (data.get("entities") or {}).items():
        ents[k.upper()] = _op(k, v)
    for k in data.get("remove_entities", []):
        ents.pop(str(k).upper(), None)
    thresholds = dict(base.thresholds) if base else {}
    thresholds.update({k.upper(): float(v) for k, v in (data.get("thresholds") or {}).items()})
    allow = set(base.allow) if base else set()
    allow_tbl = data.get("allow") or {}
    allow |= {normalise_allow(str(a)) for a in allow_tbl.get("values", []) if str(a).strip()}
    for f in allow_tbl.get("files", []):
        fp = Path(str(f))
        if not fp.is_absolute() and Path(str(name_or_path)).is_file():
            fp = Path(str(name_or_path)).parent / fp
        allow |= read_allow_file(fp)
    deny = dict(base.deny) if base else {}
    for item in data.get("deny", []) if isinstance(data.get("deny"), list) else []:
        etype = str(item.get("entity", "CUSTOM")).upper()
        for v in item.get("values", []):
            deny[str(v)] = etype
    patterns = list(base.patterns) if base else []
    patterns += [_pattern(p) for p in data.get("patterns", [])]
    hints = dict(base.column_hints) if base else {}
    hints.update({k.lower(): str(v).upper() for k, v in (data.get("column_hints") or {}).items()})

    def pick(key: str, default: Any) -> Any:
        if key in data:
            return data[key]
        return getattr(base, key) if base else default

    pol = Policy(
        name=str(data.get("name", Path(str(name_or_path)).stem)),
        description=str(data.get("description", "")),
        entities=ents,
        default_threshold=float(pick("default_threshold", 0.4)),
        thresholds=thresholds, allow=allow, deny=deny, patterns=patterns,
        nlp_model=str(pick("nlp_model", "auto")),
        token_model_dir=pick("token_model_dir", None),
        ner_gate=bool(pick("ner_gate", True)),
        keep_years=bool(pick("keep_years", True)),
        day_first=bool(pick("day_first", False)),
        residual_threshold=float(pick("residual_threshold", 0.85)),
        residual_repair=bool(pick("residual_repair", True)),
        keep_record_keys=bool(pick("keep_record_keys", True)),
        column_hints=hints,
        source=str(name_or_path),
    )
    env = os.environ.get(ALLOW_ENV, "").strip()
    if env and base is None:  # once per load, at the root of an `extends` chain
        for f in env.split(os.pathsep):
            if f.strip():
                pol.allow |= read_allow_file(Path(f.strip()))
    return pol


def normalise_allow(value: str) -> str:
    """Allow-list entries compare case-insensitively with runs of whitespace collapsed."""
    return " ".join(value.split()).casefold()


def read_allow_file(path: str | Path) -> set[str]:
    """One value per line (an institution's own names: "Harbor Federal Bank", "Harbor Federal");
    blank lines and lines starting with # are ignored. Values never exempt card security data or
    credentials (see Analyzer)."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"allow-list file not found: {p.name}")
    try:
        lines = p.read_text("utf-8").splitlines()
    except UnicodeDecodeError:
        raise BadInput(f"allow-list file {p.name} is not UTF-8") from None
    return {normalise_allow(x) for x in lines if x.strip() and not x.lstrip().startswith("#")}
