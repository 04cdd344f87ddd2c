"""Turning a scanner's hit into the policy's decision: block, redact or flag.

One place decides, so every scanner records its finding the same way (type, count, score,
never text) and a block always raises ``GuardBlocked`` with the scanner's code.
"""

from __future__ import annotations

from typing import Any

from strongroom.errors import BadInput
from strongroom.serving.guards.base import Action, Finding, GuardBlocked, GuardPolicy, RequestContext

ACTIONS: tuple[str, ...] = ("block", "redact", "flag")
_STRICTNESS = {"flag": 0, "redact": 1, "block": 2}


def action_for(scanner: Any, ctx: RequestContext) -> Action:
    """The action the request's policy gives this scanner; an unknown action blocks (fail closed)."""
    action = ctx.policy.action_for(scanner.name, scanner.default_action)
    if action not in _STRICTNESS:
        return "block"
    return action


def record(scanner: Any, ctx: RequestContext, *, code: str, action: Action, count: int = 1,
           score: float = 1.0) -> None:
    """Append a finding (no text) for the audit record and the metrics."""
    ctx.findings.append(Finding(scanner=scanner.name, stage=scanner.stage, code=code, action=action,
                                score=round(float(score), 4), count=int(count)))


def act(scanner: Any, ctx: RequestContext, *, code: str, original: str, rewritten: str,
        count: int = 1, score: float = 1.0) -> str:
    """Record the finding and apply the policy: raise, return the rewrite, or pass the original."""
    action = action_for(scanner, ctx)
    record(scanner, ctx, code=code, action=action, count=count, score=score)
    if action == "block":
        raise GuardBlocked(code, scanner.name)
    return rewritten if action == "redact" else original


def stricter(a: Action, b: Action) -> Action:
    return a if _STRICTNESS[a] >= _STRICTNESS[b] else b


def merge_policies(model: GuardPolicy, key: GuardPolicy) -> GuardPolicy:
    """The policy a request runs under: for each scanner and limit, the stricter of the two.

    Why stricter-wins: a per-key policy may tighten what the model's owner set, never loosen
    it, so a key cannot switch off the injection guard of a model that requires it.
    """
    validate_policy(model)
    validate_policy(key)
    actions: dict[str, Action] = dict(model.actions)
    for name, act_ in key.actions.items():
        actions[name] = stricter(act_, actions[name]) if name in actions else act_
    return GuardPolicy(actions=actions,
                       max_input_chars=min(model.max_input_chars, key.max_input_chars),
                       max_input_tokens=min(model.max_input_tokens, key.max_input_tokens))


def validate_policy(policy: GuardPolicy) -> None:
    """Refuse a policy with an unknown action or a non-positive limit (a typo must not disable a guard)."""
    for name, a in policy.actions.items():
        if a not in _STRICTNESS:
            raise BadInput(f"guard policy: action for {name!r} must be one of block, redact, flag")
    if policy.max_input_chars <= 0 or policy.max_input_tokens <= 0:
        raise BadInput("guard policy: input limits must be positive")


def policy_from_dict(data: dict[str, Any], base: GuardPolicy | None = None) -> GuardPolicy:
    """Build a policy from configuration (``serving.guard_policies`` in strongroom.toml).

    Accepts ``{scanner: action}`` entries plus the optional ``max_input_chars`` and
    ``max_input_tokens``; anything else is refused so a misspelt key is not silently ignored.
    """
    base = base or GuardPolicy()
    actions = dict(base.actions)
    chars, tokens = base.max_input_chars, base.max_input_tokens
    for k, v in data.items():
        if k == "max_input_chars":
            chars = int(v)
        elif k == "max_input_tokens":
            tokens = int(v)
        elif k == "actions" and isinstance(v, dict):
            actions.update({str(n): str(a) for n, a in v.items()})  # type: ignore[misc]
        elif isinstance(v, str):
            actions[str(k)] = v  # type: ignore[assignment]
        else:
            raise BadInput(f"guard policy: unknown setting {k!r}")
    policy = GuardPolicy(actions=actions, max_input_chars=chars, max_input_tokens=tokens)
    validate_policy(policy)
    return policy
