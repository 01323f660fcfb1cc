"""A realistic sale for locust: `make bench-locust HOST=http://127.0.0.1:8000`.

Each simulated user logs in once, polls availability, holds one unit of a slot
that has some left (one Idempotency-Key per attempt; a network error is retried
with the same key, so a retry can never make a second hold), then confirms
(70 %), cancels (20 %) or walks away and lets the hold expire (10 %).

Credentials: BENCH_EMAIL / BENCH_PASSWORD (default: the demo user of `make run`).
Run many users against one account by raising SLOTKEEPER_MAX_HELD_PER_USER_SLOT and
SLOTKEEPER_HOLD_RATE_PER_MINUTE on the server, or seed more users.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import HttpUser, between, task

EMAIL = os.environ.get("BENCH_EMAIL", "example@mail.ru")
PASSWORD = os.environ.get("BENCH_PASSWORD", "passw0rd!")
RETRIES = 3


class Buyer(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        answer = self.client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
        answer.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    @task
    def buy(self) -> None:
        slots = self.client.get("/slots/availability?available=true", name="/slots/availability")
        if slots.status_code != 200 or not slots.json():
            return
        slot = random.choice(slots.json())
        key = uuid.uuid4().hex
        hold = None
        for _ in range(RETRIES):
            with self.client.post(
                f"/slots/{slot['slot_id']}/hold",
                json={"quantity": 1},
                headers={"Idempotency-Key": key},
                name="/slots/{slot_id}/hold",
                catch_response=True,
            ) as answer:
                if answer.status_code == 0:  # connection error: same key again
                    answer.failure("network error, retried with the same key")
                    continue
                if answer.status_code in (409, 429):  # sold out or slowed down: expected
                    answer.success()
                    return
                if answer.status_code == 201:
                    hold = answer.json()
                break
        if hold is None:
            return
        roll = random.random()
        if roll < 0.7:
            self.client.post(f"/holds/{hold['hold_id']}/confirm", name="/holds/{hold_id}/confirm")
        elif roll < 0.9:
            self.client.delete(f"/holds/{hold['hold_id']}", name="/holds/{hold_id}")
        # else: abandon it; it expires on its own
