"""Membership inference: can an attacker tell training records from held-out ones?

Two attacks on per-record losses (Yeom et al. 2018; Carlini et al. 2022, "LiRA" in its simplest
offline form):

* loss-threshold: score = -loss under the fine-tuned model (members fit better);
* reference-calibrated: score = loss under the base model - loss under the fine-tuned model,
  which removes how hard a record is in itself and leaves what fine-tuning added.

Each is summarised as ROC AUC (0.5 = chance) and TPR at 1 % FPR (what matters for a privacy
attack: confident hits at a low false-alarm rate). With few held-out records the 1 % point is
reached only at FPR = 0, which the report states.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from strongroom.errors import BadInput


def roc_points(member_scores: np.ndarray, nonmember_scores: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the threshold attack 'score >= t means member', over every threshold."""
    m = np.asarray(member_scores, dtype=np.float64)
    n = np.asarray(nonmember_scores, dtype=np.float64)
    if m.size == 0 or n.size == 0:
        raise BadInput("membership inference needs members and non-members")
    thresholds = np.unique(np.concatenate([m, n]))[::-1]
    tpr = [0.0] + [float(np.mean(m >= t)) for t in thresholds]
    fpr = [0.0] + [float(np.mean(n >= t)) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """ROC AUC = P(score of a random member > score of a random non-member), ties count half."""
    m = np.asarray(member_scores, dtype=np.float64)[:, None]
    n = np.asarray(nonmember_scores, dtype=np.float64)[None, :]
    if m.size == 0 or n.size == 0:
        raise BadInput("membership inference needs members and non-members")
    return float(np.mean((m > n) + 0.5 * (m == n)))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray,
               max_fpr: float = 0.01) -> float:
    """Highest TPR among thresholds whose FPR does not exceed ``max_fpr``."""
    fpr, tpr = roc_points(member_scores, nonmember_scores)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def auc_interval(a: float, n_members: int, n_nonmembers: int) -> tuple[float, float]:
    """95 % interval for an AUC (Hanley & McNeil 1982): small samples deserve a wide band."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_members - 1) * (q1 - a * a)
           + (n_nonmembers - 1) * (q2 - a * a)) / max(1, n_members * n_nonmembers)
    half = 1.96 * math.sqrt(max(var, 0.0))
    return max(0.0, a - half), min(1.0, a + half)


def attack_summary(name: str, member_scores: np.ndarray, nonmember_scores: np.ndarray
                   ) -> dict[str, Any]:
    """AUC (with interval), TPR at 1 % and 0.1 % FPR, and a thinned ROC curve for the plot."""
    a = auc(member_scores, nonmember_scores)
    lo, hi = auc_interval(a, len(member_scores), len(nonmember_scores))
    fpr, tpr = roc_points(member_scores, nonmember_scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
    return {
        "attack": name, "auc": a, "auc_95ci": [lo, hi],
        "tpr_at_1pct_fpr": tpr_at_fpr(member_scores, nonmember_scores, 0.01),
        "tpr_at_0_1pct_fpr": tpr_at_fpr(member_scores, nonmember_scores, 0.001),
        "fpr_resolution": 1.0 / len(nonmember_scores),
        "roc": {"fpr": [float(x) for x in fpr[keep]], "tpr": [float(x) for x in tpr[keep]]},
    }


def membership_report(ft_members: np.ndarray, ft_nonmembers: np.ndarray,
                      base_members: np.ndarray | None, base_nonmembers: np.ndarray | None
                      ) -> dict[str, Any]:
    """Both attacks from per-record losses (NaN rows, i.e. nothing learnable, are dropped)."""
    fm, fn = np.asarray(ft_members, float), np.asarray(ft_nonmembers, float)
    attacks = []
    okm, okn = np.isfinite(fm), np.isfinite(fn)
    attacks.append(attack_summary("loss-threshold", -fm[okm], -fn[okn]))
    if base_members is not None and base_nonmembers is not None:
        bm, bn = np.asarray(base_members, float), np.asarray(base_nonmembers, float)
        okm2, okn2 = okm & np.isfinite(bm), okn & np.isfinite(bn)
        attacks.append(attack_summary("reference-calibrated", bm[okm2] - fm[okm2],
                                      bn[okn2] - fn[okn2]))
    return {
        "members": int(okm.sum()), "nonmembers": int(okn.sum()), "attacks": attacks,
        "max_auc": max(a["auc"] for a in attacks),
        "max_tpr_at_1pct_fpr": max(a["tpr_at_1pct_fpr"] for a in attacks),
    }
