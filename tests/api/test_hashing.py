"""api/hashing.py: a bounded, ordered password hasher; old hashes upgraded on login."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from argon2 import PasswordHasher

from api.hashing import BoundedHasher, Overloaded, hasher

from .conftest import Harness


async def test_no_more_than_concurrency_hashes_run_at_once() -> None:
    bounded = BoundedHasher(concurrency=2, budget_s=60)
    running, peak, order = 0, 0, []
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            order.append(i)
        time.sleep(0.02)
        with lock:
            running -= 1
        return i

    try:
        results = await asyncio.gather(*(bounded.run(lambda i=i: work(i)) for i in range(12)))
    finally:
        bounded.close()
    assert results == list(range(12))
    assert peak == 2
    assert order == sorted(order)  # waiting in order


async def test_a_queue_longer_than_the_budget_is_refused_at_once_with_a_retry_after() -> None:
    bounded = BoundedHasher(concurrency=1, budget_s=0.5)
    bounded.seconds_per_hash = 0.2  # as if measured
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(bounded.run(gate.wait))
        second = asyncio.ensure_future(bounded.run(gate.wait))
        await asyncio.sleep(0.05)
        # Two ahead: a newcomer would be done after 3 x 0.2 s > 0.5 s.
        assert bounded.expected_wait_s() == pytest.approx(0.6)
        started = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            await bounded.run(lambda: None)
        assert time.perf_counter() - started < 0.05
        assert refused.value.retry_after_s == 1
        gate.set()
        await asyncio.gather(first, second)
        await bounded.run(lambda: None)  # the queue drained: admitted again
    finally:
        gate.set()
        bounded.close()


async def test_an_unknown_email_costs_one_hash_like_a_wrong_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounded = BoundedHasher(concurrency=1)
    stored = hasher.hash("right-password")
    verified: list[str] = []

    class Counting:
        def verify(self, password_hash: str, password: str) -> bool:
            verified.append(password_hash)
            return hasher.verify(password_hash, password)

        def check_needs_rehash(self, password_hash: str) -> bool:
            return hasher.check_needs_rehash(password_hash)

    monkeypatch.setattr("api.hashing.hasher", Counting())
    try:
        assert await bounded.verify(stored, "wrong-password") == (False, None)
        assert await bounded.verify(None, "wrong-password") == (False, None)
        assert await bounded.verify(stored, "right-password") == (True, None)
    finally:
        bounded.close()
    # One real argon2 verification each; the unknown email's against the dummy hash.
    assert len(verified) == 3
    assert verified[1] != stored and verified[1].startswith("$argon2id$")


async def test_a_hash_with_old_parameters_is_upgraded_on_the_next_successful_login(
    h: Harness,
) -> None:
    user = await h.user(password="pw-old-params")
    old = PasswordHasher(time_cost=3, memory_cost=65_536, parallelism=4).hash("pw-old-params")
    await h.ctx.pool.execute(
        "UPDATE users SET password_hash = $2 WHERE user_id = $1", int(user["user_id"]), old
    )
    wrong = await h.client.post(
        "/auth/login", json={"email": user["email"], "password": "not-it-at-all"}
    )
    assert wrong.status_code == 401
    assert await _stored_hash(h, user["user_id"]) == old  # only a right password upgrades

    r = await h.client.post(
        "/auth/login", json={"email": user["email"], "password": "pw-old-params"}
    )
    assert r.status_code == 200, r.text
    upgraded = await _stored_hash(h, user["user_id"])
    assert upgraded != old
    assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not hasher.check_needs_rehash(upgraded)
    again = await h.client.post(
        "/auth/login", json={"email": user["email"], "password": "pw-old-params"}
    )
    assert again.status_code == 200
    assert await _stored_hash(h, user["user_id"]) == upgraded  # current: left alone


async def _stored_hash(h: Harness, user_id: str) -> str:
    value: str = await h.ctx.pool.fetchval(
        "SELECT password_hash FROM users WHERE user_id = $1", int(user_id)
    )
    return value
