"""``strongroom serve``: the secure inference gateway (OpenAI-compatible API over HTTPS)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from strongroom.cli.common import acting


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8443, "--port", help="TCP port."),
    model: list[str] = typer.Option([], "--model", help="Model to serve (repeatable): a registry "
                                    "base model or a stored fine-tuned model."),
    backend: str = typer.Option("transformers", "--backend",
                                help="transformers | upstream | vllm | llamacpp."),
    upstream_url: Optional[str] = typer.Option(None, "--upstream-url",
                                               help="OpenAI-compatible server for --backend upstream."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="Your certificate (PEM)."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="Its private key (PEM)."),
    tls_client_ca: Optional[Path] = typer.Option(None, "--tls-client-ca",
                                                 help="Require client certificates from this CA (mTLS)."),
    insecure_http: bool = typer.Option(False, "--insecure-http",
                                       help="Plain HTTP, loopback only, with a warning."),
    allow_unpromoted: bool = typer.Option(False, "--allow-unpromoted",
                                          help="Development: serve models not promoted for serving."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Generation threads."),
    queue_size: Optional[int] = typer.Option(None, "--queue-size",
                                             help="Waiting requests before 503."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Default max new tokens per request."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="CPU threads of the backend (torch or llama.cpp); "
                                               "default: the free cores, all but one."),
) -> None:
    """Serve models over an OpenAI-compatible HTTPS API with keys, RBAC, guards and audit."""
    from strongroom.serving.server import ServeOptions, check_options, serve_forever

    opts = ServeOptions(host=host, port=port, models=list(model), backend=backend,
                        upstream_url=upstream_url, tls_cert=tls_cert, tls_key=tls_key,
                        tls_client_ca=tls_client_ca, insecure_http=insecure_http,
                        allow_unpromoted=allow_unpromoted, workers=workers,
                        queue_size=queue_size, max_tokens=max_tokens, threads=threads)
    check_options(opts)  # bad flags fail before the home is unlocked
    with acting() as (rt, p):
        serve_forever(rt, p, opts)
