"""The server as a whole: TLS settings, schemathesis over the OpenAPI document, flooding, metrics,
the upstream backend and the ``strongroom serve`` command itself."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO, cli_env
from tests.serving.conftest import (
    EchoBackend, api_key, client_context, http, request_records, running_gateway,
)

CHAT = {"model": "echo-model", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_floor_is_1_2_and_the_home_certificate_verifies(home, runtime):
    with running_gateway(runtime, backend=EchoBackend()) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(home["path"] / "tls" / "localhost.crt"))
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                old.wrap_socket(raw, server_hostname="localhost")
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client_context(home).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it is refused
            httpx.get(url + "/healthz", verify=True)
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP to the TLS port
            httpx.get(url.replace("https", "http") + "/healthz")
    key = home["path"] / "tls" / "localhost.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()


def _client_identity(tmp_path):
    """A self-signed client certificate (clientAuth) and its key, as a bank's CA would issue."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments-app")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cpath, kpath = tmp_path / "client.crt", tmp_path / "client.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath


def test_mtls_requires_a_client_certificate(home, runtime, tmp_path):
    from strongroom.serving.app import create_app
    from strongroom.serving.server import BackgroundServer, ServeOptions, build_gateway, tls_context
    from tests.serving.conftest import FakeGuards

    ccert, ckey = _client_identity(tmp_path)
    opts = ServeOptions(models=["echo-model"], tls_client_ca=ccert)
    gw = build_gateway(runtime, None, opts, backend=EchoBackend(), guards=FakeGuards())
    try:
        with BackgroundServer(create_app(gw), tls_context(runtime, opts)) as srv:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(srv.url + "/healthz", verify=client_context(home))
            ctx = client_context(home)
            ctx.load_cert_chain(str(ccert), str(ckey))
            assert httpx.get(srv.url + "/healthz", verify=ctx).status_code == 200
    finally:
        gw.close()


def test_schemathesis_no_server_errors(home, runtime):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    with running_gateway(runtime, backend=EchoBackend(answer="ok"), requests_per_minute=0,
                         tokens_per_hour=0, auth_failures_refuse_after=0,
                         auth_failures_slow_after=10**6) as (url, _):
        _, key = api_key(runtime, ["admin"])
        doc = httpx.get(url + "/openapi.json", verify=client_context(home)).json()
        schema = schemathesis.openapi.from_dict(doc)
        cafile = str(home["path"] / "tls" / "localhost.crt")
        seen = []
        for result in schema.get_all_operations():
            op = result.ok()

            @settings(max_examples=8, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def check(case):
                for headers in ({"Authorization": f"Bearer {key}"}, {}):
                    r = case.call(base_url=url, headers=headers, verify=cafile, timeout=30)
                    seen.append(r.status_code)
                    assert r.status_code < 500, (case.method, case.path, r.status_code, r.text)

            check()
    assert len(seen) >= 8 and 200 in seen and 401 in seen


def test_flood_gets_503_quickly_and_the_server_recovers(home, runtime):
    slow = EchoBackend(answer="ok", delay=0.4)
    with running_gateway(runtime, backend=slow, workers=1, queue_size=2,
                         requests_per_minute=0) as (url, gw):
        _, key = api_key(runtime, ["app"])
        t0 = time.monotonic()

        def one(_i):
            with http(home, url, key) as c:
                start = time.monotonic()
                r = c.post("/v1/chat/completions", json=CHAT)
                return r.status_code, time.monotonic() - start, r.headers.get("retry-after")

        with cf.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(12)))
        codes = [c for c, _, _ in results]
        assert set(codes) <= {200, 503}
        assert 1 <= codes.count(200) <= 4 and codes.count(503) >= 8
        assert all(d < 1.5 and ra == "1" for c, d, ra in results if c == 503)  # fast refusals
        with http(home, url) as c:  # the loop stayed free during the flood
            assert c.get("/healthz").status_code == 200
        time.sleep(0.5 * 3)
        with http(home, url, key) as c:  # recovered
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert gw.queue.depth == 0
        _, mkey = api_key(runtime, ["auditor"])
        with http(home, url, mkey) as c:
            text = c.get("/metrics").text
        assert 'strongroom_gateway_rejected_total{reason="saturated"}' in text
        assert "strongroom_gateway_queue_depth 0.0" in text
        assert 'strongroom_gateway_requests_total{route="chat",status="503"}' in text
        assert "strongroom_gateway_request_seconds_bucket" in text
        assert 'strongroom_gateway_tokens_total{kind="completion",model="echo-model"}' in text
    assert time.monotonic() - t0 < 20
    assert len(request_records(home)) == 12 + 1 + 1  # flood, recovery, metrics


def test_upstream_backend_streams_through_the_guards(home, runtime):
    """The gateway in front of another OpenAI-compatible server (here: a second gateway)."""
    from strongroom.serving.backends.upstream import UpstreamBackend

    with running_gateway(runtime, backend=EchoBackend(answer="alpha beta gamma"),
                         tls=False) as (inner_url, _):
        _, inner_key = api_key(runtime, ["app"])
        up = UpstreamBackend(inner_url, api_key=inner_key)
        assert up.models() == ["echo-model"]
        with running_gateway(runtime, backend=up) as (url, _):
            _, key = api_key(runtime, ["app"])
            with http(home, url, key) as c:
                r = c.post("/v1/chat/completions", json=CHAT)
                assert r.status_code == 200
                assert r.json()["choices"][0]["message"]["content"] == "alpha beta gamma"
                assert r.json()["usage"]["completion_tokens"] == 3
                with c.stream("POST", "/v1/chat/completions", json=dict(CHAT, stream=True)) as s:
                    lines = [ln for ln in s.iter_lines() if ln.startswith("data:")]
                assert lines[-1] == "data: [DONE]"
                events = [json.loads(ln[5:]) for ln in lines[:-1]]
                text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
                assert text == "alpha beta gamma"


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_strongroom_serve_command(home, runtime):
    """The CLI: bad flags refused before unlocking; default TLS; fails closed without guards
    unless they exist; SIGTERM stops it and the start/stop are audited."""
    env = cli_env(home)
    bad = subprocess.run([sys.executable, "-m", "strongroom", "serve", "--host", "0.0.0.0",
                          "--insecure-http", "--model", "x"], env=env, capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "loopback" in bad.stderr
    with running_gateway(runtime, backend=EchoBackend(answer="from upstream"),
                         tls=False) as (inner_url, _):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "strongroom", "serve", "--port", str(port), "--backend",
             "upstream", "--upstream-url", inner_url, "--allow-unpromoted"],
            env=dict(env, STRONGROOM_UPSTREAM_API_KEY=api_key(runtime, ["app"])[1]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            try:
                _wait_port(port, proc)
            except AssertionError as exc:
                if "guard" in str(exc) or "classifier" in str(exc):
                    pytest.skip("guard pipeline not ready here: serve refused to start (fail closed)")
                raise
            with http(home, f"https://127.0.0.1:{port}", home["api_key"]) as c:
                assert c.get("/healthz").json() == {"status": "ok"}
                r = c.post("/v1/chat/completions", json=CHAT)
                assert r.status_code == 200, r.text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    from tests.conftest import audit_entries

    actions = [e["action"] for e in audit_entries(home)]
    assert "gateway.start" in actions and "gateway.stop" in actions


def test_serve_refuses_without_guard_pipeline(runtime, monkeypatch):
    import builtins

    from strongroom.serving.loader import GuardsUnavailable, build_guards

    real = builtins.__import__

    def no_pipeline(name, *a, **kw):
        if name == "strongroom.serving.guards.pipeline":
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pipeline)
    from strongroom.serving.guards.base import GuardPolicy

    with pytest.raises(GuardsUnavailable):
        build_guards(runtime, policy=GuardPolicy(), canaries=[])


def test_insecure_http_only_on_loopback():
    from strongroom.errors import BadInput
    from strongroom.serving.server import ServeOptions, check_options

    check_options(ServeOptions(host="127.0.0.1", models=["m"], insecure_http=True))
    for host in ("0.0.0.0", "10.1.2.3", "example.com"):
        with pytest.raises(BadInput):
            check_options(ServeOptions(host=host, models=["m"], insecure_http=True))
    with pytest.raises(BadInput):
        check_options(ServeOptions(backend="upstream"))
    with pytest.raises(BadInput):
        check_options(ServeOptions(models=["m"], backend="nope"))
    with pytest.raises(BadInput):
        check_options(ServeOptions(models=["m"], tls_cert=os.devnull))  # type: ignore[arg-type]
    import importlib.util

    for backend, module in (("vllm", "vllm"), ("llamacpp", "llama_cpp")):
        if importlib.util.find_spec(module) is None:  # optional extras: a clear refusal
            with pytest.raises(BadInput, match=f"optional package '{module}'"):
                check_options(ServeOptions(models=["m"], backend=backend))
