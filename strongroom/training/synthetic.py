"""Synthetic, PII-free chat records for tests, demos and benchmarks.

WHY: tests and benchmarks must never need real (even de-identified) data, and the toy task has
to be learnable by a tiny random model so 'loss falls' and 'DP learns' are meaningful checks.
"""

from __future__ import annotations

import random
from typing import Any

COLORS = ["red", "green", "blue", "black", "white"]
ANIMALS = ["cat", "dog", "bird", "fish"]


def toy_records(n: int, seed: int = 0, *, subjects: int | None = None) -> list[dict[str, Any]]:
    """``n`` chat records of a deterministic toy task ('what color is the dog 1?').

    With ``subjects``, records are assigned round-robin to that many ``subject_id`` values.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, k = rng.choice(ANIMALS), rng.randrange(3)
        color = COLORS[(ANIMALS.index(a) + k) % len(COLORS)]
        rec: dict[str, Any] = {"id": f"toy-{seed}-{i}", "messages": [
            {"role": "system", "content": "answer with the color ."},
            {"role": "user", "content": f"what color is the {a} {k} ?"},
            {"role": "assistant", "content": f"the {a} {k} is {color} ."},
        ]}
        if subjects:
            rec["subject_id"] = f"s{i % subjects}"
        out.append(rec)
    return out
