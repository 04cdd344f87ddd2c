"""Who may do what: RBAC matrix over every route and role, scopes, key states, throttling,
rate limits, token quotas, OIDC tokens and the anomaly rule; one audit record per request."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from tests.conftest import cli_env, run_cli
from tests.serving.conftest import INJECTION, EchoBackend, api_key, http, request_records, running_gateway

CHAT = {"model": "echo-model", "messages": [{"role": "user", "content": "hello"}]}
COMPLETION = {"model": "echo-model", "prompt": "hello"}
ROUTES = [("GET", "/v1/models", None), ("POST", "/v1/chat/completions", CHAT),
          ("POST", "/v1/completions", COMPLETION), ("GET", "/metrics", None),
          ("GET", "/healthz", None)]
# Written out, not derived from roles.py, so a change to the role table has to be deliberate.
ALLOWED = {
    "admin": {"/v1/models", "/v1/chat/completions", "/v1/completions", "/metrics", "/healthz"},
    "data-steward": {"/healthz"},
    "ml-engineer": {"/v1/models", "/v1/chat/completions", "/v1/completions", "/healthz"},
    "analyst": {"/v1/models", "/v1/chat/completions", "/v1/completions", "/healthz"},
    "auditor": {"/metrics", "/healthz"},
    "app": {"/v1/models", "/v1/chat/completions", "/v1/completions", "/healthz"},
}


def _send(c, method, path, body):
    return c.request(method, path, json=body) if body is not None else c.request(method, path)


def test_rbac_matrix_every_route_and_role(home, runtime):
    from strongroom.identity import ROLE_NAMES

    assert set(ALLOWED) == set(ROLE_NAMES)
    sent = 0
    with running_gateway(runtime, backend=EchoBackend(answer="ok")) as (url, _):
        for role in ROLE_NAMES:
            _, key = api_key(runtime, [role])
            with http(home, url, key) as c:
                for method, path, body in ROUTES:
                    r = _send(c, method, path, body)
                    sent += path != "/healthz"
                    want = 200 if path in ALLOWED[role] else 403
                    assert r.status_code == want, (role, path, r.text)
                    if want == 403:
                        assert r.json()["error"]["type"] == "permission_error"
        with http(home, url) as anon:  # no key at all: 401 everywhere but /healthz
            for method, path, body in ROUTES:
                r = _send(anon, method, path, body)
                sent += path != "/healthz"
                assert r.status_code == (200 if path == "/healthz" else 401), path
                if r.status_code == 401:
                    assert r.headers["www-authenticate"].startswith("Bearer")
    recs = request_records(home)
    assert len(recs) == sent
    assert sum(r["outcome"] == "denied" for r in recs) == sum(
        len(ROUTES) - len(ALLOWED[role]) for role in ALLOWED)


def test_scope_key_states_and_invalid_bodies(home, runtime):
    with running_gateway(runtime, backend=EchoBackend(answer="ok")) as (url, _):
        _, other = api_key(runtime, ["app"], ("model:other-model",))
        _, datasets_only = api_key(runtime, ["app"], ("dataset:*",))
        _, mine = api_key(runtime, ["app"], ("model:echo-model",))
        expired_id, expired = api_key(runtime, ["app"], expires_in=timedelta(minutes=1))
        revoked_id, revoked = api_key(runtime, ["app"])
        suspended_id, suspended = api_key(runtime, ["app"])
        runtime.identity.revoke_api_key(revoked_id)
        runtime.identity.suspend_api_key(suspended_id, "test")
        from strongroom.identity.models import ApiKey

        from datetime import UTC, datetime
        with runtime.sessions() as s:
            s.get(ApiKey, expired_id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
            s.commit()
        with http(home, url, other) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 403
            assert c.get("/v1/models").json()["data"] == []
        with http(home, url, datasets_only) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 403
        with http(home, url, mine) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
            assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["echo-model"]
            r = c.post("/v1/chat/completions", json={"model": "nope", "messages": []})
            assert r.status_code == 400
            assert c.post("/v1/chat/completions", content=b"{not json").status_code == 400
            assert c.post("/v1/chat/completions", json=dict(CHAT, n=3)).status_code == 400
        for key in (expired, revoked, suspended, "sr_live_" + "x" * 43, "garbage"):
            with http(home, url, key) as c:
                r = c.post("/v1/chat/completions", json=CHAT)
                assert r.status_code == 401, key[:12]
                assert r.json()["error"]["type"] == "authentication_error"
        with http(home, url) as c:  # unauthenticated + invalid body: 401, not a schema hint
            assert c.post("/v1/chat/completions", json={"bad": 1}).status_code == 401
    recs = request_records(home)
    assert len(recs) == 14  # 2 + 1 + 5 + 5 + 1 requests above
    assert not any("sr_live_" in json.dumps(r) for r in recs)


def test_failed_auth_from_one_origin_is_slowed_then_refused(home, runtime):
    with running_gateway(runtime, backend=EchoBackend(answer="ok"), auth_failures_slow_after=2,
                         auth_failures_refuse_after=5) as (url, _):
        _, good = api_key(runtime, ["app"])
        with http(home, url, "sr_live_" + "y" * 43) as bad:
            fast = time.monotonic()
            assert bad.get("/v1/models").status_code == 401
            fast = time.monotonic() - fast
            for _ in range(3):
                assert bad.get("/v1/models").status_code == 401
            slow = time.monotonic()
            assert bad.get("/v1/models").status_code == 401  # 5th failure: delayed
            slow = time.monotonic() - slow
            assert slow > fast + 0.3
            r = bad.get("/v1/models")
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        with http(home, url, good) as c:  # same origin: refused even with a valid key
            r = c.get("/v1/models")
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_auth_failures"


def test_rate_limit_and_token_quota_give_429_with_retry_after(home, runtime):
    with running_gateway(runtime, backend=EchoBackend(answer="one two three four five six"),
                         requests_per_minute=3, tokens_per_hour=0) as (url, _):
        _, a = api_key(runtime, ["app"])
        _, b = api_key(runtime, ["app"])
        with http(home, url, a) as c:
            assert [c.post("/v1/chat/completions", json=CHAT).status_code for _ in range(3)] == \
                [200] * 3
            r = c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
            assert r.json()["error"]["type"] == "rate_limit_error"
        with http(home, url, b) as c:  # limits are per key
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    with running_gateway(runtime, backend=EchoBackend(answer="one two three four five six"),
                         requests_per_minute=0, tokens_per_hour=5) as (url, _):
        _, q = api_key(runtime, ["app"])
        with http(home, url, q) as c:
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200  # uses 7 tokens
            r = c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 429 and r.json()["error"]["code"] == "token_quota_exceeded"
            assert int(r.headers["retry-after"]) > 3000


def test_burst_of_guard_blocks_suspends_the_key_visible_in_keys_list(home, runtime):
    with running_gateway(runtime, backend=EchoBackend(answer="ok"), anomaly_threshold=3) as (url, _):
        key_id, key = api_key(runtime, ["app"])
        attack = {"model": "echo-model", "messages": [{"role": "user", "content": INJECTION}]}
        with http(home, url, key) as c:
            assert [c.post("/v1/chat/completions", json=attack).status_code for _ in range(3)] == \
                [400] * 3
            r = c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 401 and "suspended" in r.json()["error"]["message"]
    from tests.conftest import audit_entries

    susp = [e for e in audit_entries(home) if e["action"] == "gateway.key.suspend"]
    assert len(susp) == 1 and susp[0]["resource"] == f"key:{key_id}" and susp[0]["severity"] == "high"
    res = run_cli(["keys", "list", "--json"], cli_env(home))
    assert res.returncode == 0, res.stderr
    (row,) = [k for k in json.loads(res.stdout) if k["id"] == key_id]
    assert row["state"] == "suspended"


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    """Two signing keys (RSA, EC P-256) in a local JWKS file, as an IdP would publish them."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, k, alg in (("r1", rsa_key, "RS256"), ("e1", ec_key, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(k.public_key()))
        keys.append(dict(jwk, kid=kid, alg=alg, use="sig"))
    path = tmp_path_factory.mktemp("idp") / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return {"jwks": path, "rsa": rsa_key, "ec": ec_key}


def _token(idp, *, alg="RS256", kid="r1", key=None, **claims):
    import jwt

    now = int(time.time())
    body = {"iss": "https://idp.bank.example", "aud": "strongroom", "sub": "u-4711",
            "exp": now + 300, "iat": now, "groups": ["ml-team"]}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    key = key if key is not None else (idp["rsa"] if alg == "RS256" else idp["ec"])
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def _hs256_with(secret: bytes) -> str:
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode())
    body = b64(json.dumps({"iss": "https://idp.bank.example", "aud": "strongroom", "sub": "x",
                           "exp": int(time.time()) + 60, "groups": ["ml-team"]}).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_oidc_tokens(home, runtime, idp):
    import jwt
    from cryptography.hazmat.primitives import serialization

    oidc = {"issuer": "https://idp.bank.example", "audience": "strongroom",
            "jwks_file": str(idp["jwks"]), "group_roles": {"ml-team": ["analyst"],
                                                           "observers": "auditor"}}
    pub_pem = idp["rsa"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    cases = [
        (_token(idp), 200),
        (_token(idp, alg="ES256", kid="e1"), 200),
        (_token(idp, aud="someone-else"), 401),
        (_token(idp, iss="https://evil.example"), 401),
        (_token(idp, exp=int(time.time()) - 600), 401),
        (_token(idp, exp=None), 401),
        (_token(idp, kid="unknown"), 401),
        (_token(idp, groups=["observers"]), 403),  # auditor: no inference
        (_token(idp, groups=["nobody"]), 403),
        (_hs256_with(pub_pem), 401),  # key confusion: the public key used as HMAC secret
        (jwt.encode({"iss": "https://idp.bank.example", "aud": "strongroom", "sub": "x",
                     "exp": int(time.time()) + 60}, None, algorithm="none"), 401),
    ]
    with running_gateway(runtime, backend=EchoBackend(answer="ok"), oidc=oidc) as (url, _):
        for token, want in cases:
            with http(home, url, token) as c:
                assert c.post("/v1/chat/completions", json=CHAT).status_code == want, token[:20]
    recs = request_records(home)
    assert len(recs) == len(cases)
    assert recs[0]["principal"] == "oidc:u-4711" and recs[0]["outcome"] == "success"
