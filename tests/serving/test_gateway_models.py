"""Serving a fine-tuned model from the store: release gate, audited in-memory load, canaries."""

from __future__ import annotations

import pytest

from tests.conftest import audit_entries, principal
from tests.serving.conftest import FakeGuards, api_key, http, running_gateway  # noqa: F401


@pytest.fixture
def stored_model(runtime, tiny_base):
    from strongroom.training import toy_records
    from strongroom.training.pipeline import TrainRequest

    steward = principal(runtime, ["data-steward"])
    runtime.datasets.write_records(steward, "toy", toy_records(40), source_format="jsonl",
                                   action="dataset.import", deidentified=True,
                                   safe_for_training=True)
    eng = principal(runtime, ["ml-engineer"])
    runtime.training.train(eng, TrainRequest(
        dataset="toy", out="toy-model", base=str(tiny_base), max_steps=2, batch_size=8, lr=1e-2,
        lora_r=4, max_seq_len=48, eval_fraction=0.2, progress=False, checkpoint_every=2,
        canaries=1, canary_repeats=2))
    return eng


def test_fine_tuned_model_is_gated_loaded_through_the_store_and_served(home, runtime,
                                                                         stored_model):
    from strongroom.errors import PermissionDenied
    from strongroom.serving.app import create_app
    from strongroom.serving.loader import load_canaries
    from strongroom.serving.server import BackgroundServer, ServeOptions, build_gateway, tls_context

    eng = stored_model
    with pytest.raises(PermissionDenied):  # not promoted: the release gate refuses
        build_gateway(runtime, eng, ServeOptions(models=["toy-model"]), guards=FakeGuards())
    with pytest.raises(PermissionDenied):  # an operator without inference cannot load it
        build_gateway(runtime, principal(runtime, ["auditor"]),
                      ServeOptions(models=["toy-model"], allow_unpromoted=True),
                      guards=FakeGuards())
    before = {p for p in home["path"].rglob("*") if p.is_file()}
    opts = ServeOptions(models=["toy-model"], allow_unpromoted=True)
    gw = build_gateway(runtime, eng, opts, guards=FakeGuards())
    try:
        after = {p for p in home["path"].rglob("*") if p.is_file()}
        assert {p.name for p in after - before} <= {"log.lock"}  # nothing decrypted to disk
        assert gw.models == ["toy-model"] and gw.model_ids["toy-model"].startswith("model:m")
        with BackgroundServer(create_app(gw), tls_context(runtime, opts)) as srv:
            _, key = api_key(runtime, ["app"], ("model:toy-model",))
            with http(home, srv.url, key) as c:
                r = c.post("/v1/chat/completions", json={
                    "model": "toy-model", "max_tokens": 4,
                    "messages": [{"role": "user", "content": "what color is the dog 1 ?"}]})
                assert r.status_code == 200, r.text
    finally:
        gw.close()
    secrets = load_canaries(runtime, eng, ["toy-model"])["toy-model"]
    assert len(secrets) == 1 and secrets[0]
    log = audit_entries(home)
    loads = [e for e in log if e["action"] == "gateway.load"]
    assert [e["outcome"] for e in loads] == ["denied", "success"]
    assert loads[1]["principal"] == eng.id and loads[1]["resource"].startswith("model:")
    chat = [e for e in log if e["action"] == "gateway.chat"]
    assert len(chat) == 1 and chat[0]["resource"] == gw.model_ids["toy-model"]
    assert secrets[0] not in (home["path"] / "audit" / "log.jsonl").read_text()
