"""Turn de-identified records into token batches that only teach the assistant's words.

WHY each piece exists:
* Labels are -100 on system/user/prompt tokens: we fine-tune the model's answers, not make it
  memorise the questions (which is where most residual personal data lives).
* The train/eval split hashes a stable key (``subject_id`` if present, else ``id``, else the
  record's content) so it is the same on every machine and run, and so all records of one
  subject land on the same side: a held-out loss is meaningless if the subject leaked into train.
* Batch order is a pure function of (seed, epoch), which is what makes exact resume possible.
* Canaries are planted secrets for a later exposure (memorisation) test.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from strongroom.errors import BadInput

IGNORE_INDEX = -100
_ROLES = {"system", "user", "assistant"}


@dataclass
class Example:
    """One tokenised training unit. ``unit`` is the DP sampling unit (subject or record)."""

    input_ids: list[int]
    labels: list[int]
    record_index: int
    unit: str

    @property
    def n_learned(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class EncodeStats:
    records: int = 0
    examples: int = 0
    truncated: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    learned_tokens: int = 0


# ------------------------------------------------------------------------------------ records

def record_key(record: dict[str, Any], index: int = 0) -> str:
    """Stable identity of a record: its ``id`` if given, else a hash of its content."""
    if "id" in record and record["id"] is not None:
        return f"id:{record['id']}"
    body = {k: v for k, v in record.items() if k not in ("subject_id",)}
    canon = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
    digest = hashlib.sha256(canon).hexdigest()
    return f"sha256:{digest}"


def unit_key(record: dict[str, Any], index: int = 0) -> str:
    """The sampling/splitting unit: the subject if the record names one, else the record."""
    if record.get("subject_id") is not None:
        return f"subject:{record['subject_id']}"
    return record_key(record, index)


def to_messages(record: dict[str, Any], index: int) -> list[dict[str, str]] | None:
    """Normalise a record to chat messages; None for a plain ``text`` record."""
    if not isinstance(record, dict):
        raise BadInput(f"record {index}: not an object")
    if "messages" in record:
        msgs = record["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise BadInput(f"record {index}: field 'messages' must be a non-empty list")
        out = []
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(
                m.get("content"), str
            ):
                raise BadInput(f"record {index}: message {j} needs role in {sorted(_ROLES)} and "
                               "string content")
            out.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "assistant" for m in out):
            raise BadInput(f"record {index}: no assistant message to learn from")
        return out
    if "prompt" in record or "response" in record:
        p, r = record.get("prompt"), record.get("response")
        if not isinstance(p, str) or not isinstance(r, str):
            raise BadInput(f"record {index}: fields 'prompt' and 'response' must both be strings")
        msgs = []
        if isinstance(record.get("system"), str):
            msgs.append({"role": "system", "content": record["system"]})
        return msgs + [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
    if "text" in record:
        if not isinstance(record["text"], str):
            raise BadInput(f"record {index}: field 'text' must be a string")
        return None
    raise BadInput(f"record {index}: needs 'messages', 'prompt'+'response', or 'text'")


def _assistant_char_spans(tokenizer, msgs: list[dict[str, str]], index: int = 0
                          ) -> tuple[str, list[tuple[int, int]]]:
    """Render the chat and find the character spans produced by each assistant turn.

    We render the conversation up to each assistant turn twice (with the generation prompt, and
    including the turn); the difference is exactly what the model must generate. This works for
    any prefix-stable template, with or without ``{% generation %}`` markers.
    """
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        if i == 0:
            raise BadInput(f"record {index}: conversation starts with an assistant message")
        before = tokenizer.apply_chat_template(msgs[:i], tokenize=False,
                                               add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise BadInput("the tokenizer's chat template is not prefix-stable; cannot mask "
                           "prompt tokens")
        spans.append((len(before), len(upto)))
    return full, spans


def encode_record(tokenizer, record: dict[str, Any], max_seq_len: int, index: int = 0,
                  stats: EncodeStats | None = None) -> Example | None:
    """Tokenise one record; None if nothing learnable survives truncation."""
    msgs = to_messages(record, index)
    if msgs is None:
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        labels = list(ids)
    else:
        text, spans = _assistant_char_spans(tokenizer, msgs, index)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        labels = [IGNORE_INDEX] * len(ids)
        for t, (s, e) in enumerate(enc["offset_mapping"]):
            if e > s and any(a <= s < b for a, b in spans):
                labels[t] = ids[t]
    if stats is not None:
        stats.records += 1
    if len(ids) > max_seq_len:
        ids, labels = ids[:max_seq_len], labels[:max_seq_len]
        if stats is not None:
            stats.truncated += 1
    ex = Example(list(ids), labels, index, unit_key(record, index))
    if ex.n_learned == 0:
        if stats is not None:
            stats.dropped_no_target += 1
        return None
    if stats is not None:
        stats.examples += 1
        stats.tokens += len(ids)
        stats.learned_tokens += ex.n_learned
    return ex


def encode_records(tokenizer, records: Sequence[dict[str, Any]], max_seq_len: int
                   ) -> tuple[list[Example], EncodeStats]:
    stats = EncodeStats()
    out = []
    for i, r in enumerate(records):
        ex = encode_record(tokenizer, r, max_seq_len, i, stats)
        if ex is not None:
            out.append(ex)
    return out, stats


# -------------------------------------------------------------------------------------- split

def _unit_interval(salt: str, key: str) -> float:
    h = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_records(records: Sequence[dict[str, Any]], eval_fraction: float = 0.1,
                  salt: str = "strongroom-eval-split") -> tuple[list[dict], list[dict]]:
    """Deterministic held-out split by hashing each record's unit key (subject or record).

    If hashing puts nothing in eval although ``eval_fraction > 0`` and there are at least two
    units, the unit with the smallest hash goes to eval, so a held-out loss always exists.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise BadInput("eval_fraction must be in [0, 1)")
    keys = [unit_key(r, i) for i, r in enumerate(records)]
    score = {k: _unit_interval(salt, k) for k in set(keys)}
    eval_units = {k for k, s in score.items() if s < eval_fraction}
    if eval_fraction > 0 and not eval_units and len(score) >= 2:
        eval_units = {min(score, key=score.get)}
    train = [r for r, k in zip(records, keys) if k not in eval_units]
    held = [r for r, k in zip(records, keys) if k in eval_units]
    return train, held


# ------------------------------------------------------------------------------------ batches

def order_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool = True) -> list[list[int]]:
    """Batches of example indices for one epoch, a pure function of (seed, epoch).

    Length grouping sorts within shuffled mega-batches (16 batches) so padding stays small while
    the order stays random; the batches themselves are then shuffled again.
    """
    import numpy as np

    if batch_size < 1:
        raise BadInput("batch_size must be >= 1")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])
    perm = [int(i) for i in rng.permutation(len(lengths))]
    if not group_by_length:
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    mega = batch_size * 16
    batches = []
    for i in range(0, len(perm), mega):
        chunk = sorted(perm[i:i + mega], key=lambda j: (-lengths[j], j))
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[int(k)] for k in order]


def pack_examples(examples: Sequence[Example], max_seq_len: int) -> list[Example]:
    """Greedy packing of consecutive examples into sequences of at most ``max_seq_len`` tokens.

    Packed examples can attend to earlier examples in the same sequence (no block mask on CPU
    attention); this is the usual 'naive packing' trade-off. Packing merges several records into
    one sampling unit, so it is refused under DP by the trainer.
    """
    packed: list[Example] = []
    cur: Example | None = None
    for ex in examples:
        if cur is not None and len(cur.input_ids) + len(ex.input_ids) <= max_seq_len:
            cur.input_ids += ex.input_ids
            cur.labels += ex.labels
            cur.unit += "+" + ex.unit
        else:
            if cur is not None:
                packed.append(cur)
            cur = Example(list(ex.input_ids), list(ex.labels), ex.record_index, ex.unit)
    if cur is not None:
        packed.append(cur)
    return packed


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; padding is masked out of attention and labels."""
    import torch

    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        L = len(e.input_ids)
        ids[i, :L] = torch.tensor(e.input_ids)
        labels[i, :L] = torch.tensor(e.labels)
        mask[i, :L] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ------------------------------------------------------------------------------------ canaries

_FIRST = ("Alice Bruno Clara Dmitri Elena Farid Greta Hiro Ines Jonas Kavya Liam Mina Nadia Omar "
          "Priya Quentin Rosa Sven Tariq Uma Viktor Wanda Xavier Yara Zoltan").split()
_LAST = ("Abernathy Bergstrom Castellanos Dubois Eriksen Fitzgerald Grimaldi Horvath Iwasaki "
         "Jankowski Kowalczyk Lindqvist Moreau Nakamura Okonkwo Petrakis Quist Rasmussen "
         "Szabo Takahashi Ulrich Vasquez Whitfield Xiong Yamamoto Zielinski").split()


@dataclass
class Canary:
    """A planted secret. ``prompt`` + ``prefix`` is the context; ``secret`` the completion.

    ``candidate_space`` describes every secret the exposure test ranks this one against.
    """

    name: str
    prompt: str
    prefix: str
    secret: str
    repeats: int
    record_ids: list[str] = field(default_factory=list)
    candidate_space: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.secret}."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plant_canaries(records: Sequence[dict[str, Any]], n: int, repeats: int,
                   rng: random.Random) -> tuple[list[dict[str, Any]], list[Canary]]:
    """Insert ``n`` random secrets, each ``repeats`` times, at random positions.

    Plant into the *training* split only. Each canary's copies share ``subject_id`` so that
    subject-level DP treats them as one person, as a real repeated secret would be.
    """
    if n < 0 or repeats < 1:
        raise BadInput("canaries: n must be >= 0 and repeats >= 1")
    out = list(records)
    canaries = []
    used_names: set[str] = set()
    for k in range(n):
        while True:
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            if name not in used_names or len(used_names) >= len(_FIRST) * len(_LAST):
                break
        used_names.add(name)
        secret = "".join(rng.choice("0123456789") for _ in range(10))
        prompt = f"What is the account number of {name}?"
        prefix = f"The account number of {name} is "
        c = Canary(name=name, prompt=prompt, prefix=prefix, secret=secret, repeats=repeats,
                   candidate_space={"alphabet": "0123456789", "length": 10, "size": 10**10,
                                    "template": "The account number of {name} is {secret}."})
        for r in range(repeats):
            rid = f"canary-{k}-{r}-{rng.getrandbits(32):08x}"
            rec = {"id": rid, "subject_id": f"canary-{k}", "canary": True, "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": c.text},
            ]}
            c.record_ids.append(rid)
            out.insert(rng.randint(0, len(out)), rec)
        canaries.append(c)
    return out, canaries


def iter_records_jsonl(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Parse JSONL lines (blank lines skipped); errors name the line number only."""
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise BadInput(f"line {i}: not valid JSON") from None
