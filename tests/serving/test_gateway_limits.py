"""Rate limits, quotas, origin throttling, the anomaly counter and the work queue, on a fake clock."""

from __future__ import annotations

import pytest

from strongroom.serving.limits import (
    AnomalyDetector, FailureThrottle, Limits, RateLimited, RateLimiter,
)
from strongroom.serving.workqueue import Saturated, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_request_rate_window_slides_and_refund_gives_back():
    clock = Clock()
    rl = RateLimiter(Limits(3, 0), {"k_vip": Limits(5, 0)}, clock=clock)
    for _ in range(3):
        rl.admit("key:k_a")
    with pytest.raises(RateLimited) as err:
        rl.admit("key:k_a")
    assert err.value.retry_after == 60 and err.value.code == "rate_limit_exceeded"
    rl.refund("key:k_a")  # the server refused one of them (503): it does not count
    rl.admit("key:k_a")
    clock.t += 30
    with pytest.raises(RateLimited) as err:
        rl.admit("key:k_a")
    assert err.value.retry_after == 30
    clock.t += 30.5
    rl.admit("key:k_a")
    for _ in range(5):  # a per-key override
        rl.admit("key:k_vip")
    with pytest.raises(RateLimited):
        rl.admit("key:k_vip")


def test_token_quota_counts_spent_tokens_over_the_hour():
    clock = Clock()
    rl = RateLimiter(Limits(0, 100), clock=clock)
    rl.admit("oidc:u1")
    rl.spend_tokens("oidc:u1", 60)
    clock.t += 600
    rl.admit("oidc:u1")
    rl.spend_tokens("oidc:u1", 50)
    with pytest.raises(RateLimited) as err:
        rl.admit("oidc:u1")
    assert err.value.code == "token_quota_exceeded" and err.value.retry_after == 3000
    rl.admit("oidc:u2")  # per principal
    clock.t += 3000.5  # the first 60 tokens leave the window
    rl.admit("oidc:u1")


def test_failure_throttle_slows_then_refuses_per_origin():
    clock = Clock()
    th = FailureThrottle(slow_after=2, refuse_after=4, window_s=300, clock=clock)
    delays = [th.failed("gateway:10.0.0.9") for _ in range(3)]
    assert delays[0] == delays[1] == 0.0 and delays[2] > 0
    th.check("gateway:10.0.0.9")
    assert th.failed("gateway:10.0.0.9") > delays[2]  # doubling
    with pytest.raises(RateLimited) as err:
        th.check("gateway:10.0.0.9")
    assert err.value.code == "too_many_auth_failures"
    th.check("gateway:10.0.0.10")  # another origin is unaffected
    clock.t += 301
    th.check("gateway:10.0.0.9")


def test_anomaly_trips_once_per_key_within_the_window():
    clock = Clock()
    an = AnomalyDetector(threshold=3, window_s=60, clock=clock)
    assert [an.hit("key:k_1") for _ in range(2)] == [False, False]
    clock.t += 61  # the first two fall out of the window
    assert [an.hit("key:k_1") for _ in range(3)] == [False, False, True]
    assert an.hit("key:k_1") is False  # already suspended: not again
    assert AnomalyDetector(threshold=0, window_s=60).hit("key:k_2") is False


def test_work_queue_refuses_beyond_capacity_and_reports_depth():
    depths = []
    q = WorkQueue(workers=1, queue_size=1, on_depth=depths.append)
    q.reserve()
    q.reserve()
    with pytest.raises(Saturated):
        q.reserve()
    q.release()
    q.reserve()
    q.release()
    q.release()
    assert q.depth == 0 and depths == [1, 2, 1, 2, 1, 0]
    q.shutdown()
