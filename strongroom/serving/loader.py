"""What a gateway serves: the release gate, models through the store, canaries, guards.

Each ``--model`` must pass ``evaluation.gate.require_servable`` (registry base models, promoted
models, or anything with ``--allow-unpromoted`` in development). Fine-tuned models are loaded
through ``TrainingService.load_for_inference``: the store checks the operator's permission,
audits, and decrypts the adapter into memory, where it is attached to the base model; the
canaries planted at training time are read the same way so the output guard can block them.
The guard pipeline is imported lazily; without it the gateway refuses to start (fail closed).
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable

from strongroom.errors import NotFound, StrongroomError
from strongroom.identity import Principal
from strongroom.serving.guards.base import GuardPolicy, Guards


class GuardsUnavailable(StrongroomError):
    """The guard pipeline is missing or failed to build: the gateway does not serve unguarded."""


def check_servable(rt: Any, names: list[str], *, allow_unpromoted: bool) -> None:
    """Raise PermissionDenied for the first model the release gate refuses."""
    from strongroom.evaluation.gate import require_servable

    for name in names:
        require_servable(rt, name, allow_unpromoted=allow_unpromoted)


def load_transformers(rt: Any, principal: Principal, names: list[str]) -> dict[str, tuple[Any, Any]]:
    """(model, tokenizer) for every name, loaded through the store (audited as serve.load)."""
    out = {}
    for name in names:
        out[name] = rt.training.load_for_inference(principal, name, action="gateway.load",
                                                   public={"purpose": "serve"})
    return out


def model_ids(rt: Any, names: list[str]) -> dict[str, str]:
    """Opaque ids for the audit record's resource field (``model:<id>`` or ``base:<name>``)."""
    from strongroom.store import named
    from strongroom.store.model_tables import Model

    out = {}
    with rt.sessions() as s:
        for name in names:
            m = named.live(s, Model, name)
            out[name] = f"model:{m.id}" if m is not None else f"base:{name}"
    return out


def load_canaries(rt: Any, principal: Principal, names: list[str]) -> dict[str, list[str]]:
    """Per model, the canary secrets planted when it was trained (decrypted in memory)."""
    from strongroom.store.model_registry import CANARIES

    out: dict[str, list[str]] = {}
    for name in names:
        out[name] = []
        if not rt.models.exists(name):
            continue
        try:
            _, arts = rt.models.read_artifacts(principal, name, (CANARIES,),
                                               permission="inference",
                                               action="gateway.load.canaries")
        except NotFound:  # trained without canaries
            continue
        out[name] = [str(c["secret"]) for c in json.loads(arts[CANARIES]) if c.get("secret")]
    return out


def build_guards(rt: Any, *, policy: GuardPolicy, canaries: list[str],
                 count_tokens: Callable[[str], int] | None = None) -> Guards:
    """The real guard pipeline for one model, or GuardsUnavailable (never unguarded).

    ``count_tokens`` (the model's tokenizer) is passed on when the pipeline accepts it.
    """
    try:
        from strongroom.serving.guards.pipeline import build_pipeline
    except ImportError:
        raise GuardsUnavailable("the guard pipeline (strongroom.serving.guards.pipeline) is not "
                                "installed; refusing to serve without guards") from None
    try:
        if count_tokens is not None and "count_tokens" in inspect.signature(build_pipeline).parameters:
            return build_pipeline(rt, policy=policy, canaries=canaries, count_tokens=count_tokens)
        return build_pipeline(rt, policy=policy, canaries=canaries)
    except StrongroomError:
        raise
    except Exception as exc:  # noqa: BLE001 - fail closed, without the details
        raise GuardsUnavailable(f"the guard pipeline failed to build ({type(exc).__name__})") from None
