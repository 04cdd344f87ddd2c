"""Prometheus metrics of one gateway, in its own registry (no process-global state).

Labels carry routes, models, status codes, scanner names and reason codes only: never a key,
a user, a prompt or anything a client typed, so the metrics endpoint cannot leak and label
cardinality stays bounded (model names are those the gateway serves; anything else is
``other``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """Requests, latency, tokens, guard decisions, auth failures, queue depth."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, models: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models = set(models)
        r = self.registry
        self.requests = Counter("strongroom_gateway_requests", "Requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("strongroom_gateway_request_seconds", "Request latency",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("strongroom_gateway_tokens", "Tokens processed",
                              ["model", "kind"], registry=r)
        self.guard = Counter("strongroom_gateway_guard_decisions", "Guard findings",
                             ["scanner", "stage", "code", "action"], registry=r)
        self.auth_failures = Counter("strongroom_gateway_auth_failures",
                                     "Failed authentications and authorizations", ["reason"],
                                     registry=r)
        self.queue_depth = Gauge("strongroom_gateway_queue_depth",
                                 "Generations waiting or running", registry=r)
        self.rejected = Counter("strongroom_gateway_rejected", "Requests refused for capacity",
                                ["reason"], registry=r)
        self.suspensions = Counter("strongroom_gateway_key_suspensions",
                                   "Keys suspended by the anomaly rule", registry=r)

    def model_label(self, model: str) -> str:
        return model if model in self._models else "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)
