"""A realistic sale for locust: `make bench-locust HOST=http://127.0.0.1:8000`.

Each simulated user logs in once as a user of its own, polls availability, holds
one unit of a slot that has some left (one Idempotency-Key per attempt; a network
error is retried with the same key, so a retry can never make a second hold), then
confirms (70 %), cancels (20 %) or walks away and lets the hold expire (10 %).

Credentials: the bench users of `slotkeeper seed --bench-users N`
(bench-user-1..N@example.com, password bench-passw0rd!); locust user k logs in as
bench user k (cycling when there are more locust users than BENCH_USERS, default 100),
so per-user caps do not turn the sale into 409s. BENCH_EMAIL / BENCH_PASSWORD log
every locust user in as that one account instead.

At the end it prints a Markdown summary: per route requests, req/s, p50/p99 ms and
failures, then the failures by kind (docs/perf.md quotes it).
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from collections import Counter
from typing import Any

from locust import HttpUser, between, events, task

BENCH_USERS = int(os.environ.get("BENCH_USERS", "100"))
BENCH_PASSWORD = os.environ.get("BENCH_PASSWORD", "bench-passw0rd!")
SINGLE_EMAIL = os.environ.get("BENCH_EMAIL")
RETRIES = 3
_numbers = itertools.count()


def _credentials() -> dict[str, str]:
    if SINGLE_EMAIL:
        return {"email": SINGLE_EMAIL, "password": BENCH_PASSWORD}
    n = next(_numbers) % BENCH_USERS + 1
    return {"email": f"bench-user-{n}@example.com", "password": BENCH_PASSWORD}


class Buyer(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        answer = self.client.post("/auth/login", json=_credentials())
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


def _kind(error: Any) -> str:
    """An error's kind: its class and, for HTTP errors, the status ("HTTPError 503")."""
    text = str(error)
    name = type(error).__name__ if isinstance(error, BaseException) else text.split("(")[0]
    for word in text.replace(":", " ").split():
        if word.isdigit() and len(word) == 3:
            return f"{name} {word}"
    return name


@events.quitting.add_listener
def _summary(environment: Any, **_: Any) -> None:
    stats = environment.stats
    lines = [
        "",
        "| route | requests | req/s | p50 ms | p99 ms | failures |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for entry in sorted(stats.entries.values(), key=lambda e: (e.name, e.method)):
        lines.append(
            f"| {entry.method} {entry.name} | {entry.num_requests} | {entry.total_rps:.1f}"
            f" | {entry.get_response_time_percentile(0.5):.0f}"
            f" | {entry.get_response_time_percentile(0.99):.0f} | {entry.num_failures} |"
        )
    total = stats.total
    lines.append(
        f"| all | {total.num_requests} | {total.total_rps:.1f}"
        f" | {total.get_response_time_percentile(0.5):.0f}"
        f" | {total.get_response_time_percentile(0.99):.0f} | {total.num_failures} |"
    )
    kinds: Counter[tuple[str, str]] = Counter()
    for error in stats.errors.values():
        kinds[(f"{error.method} {error.name}", _kind(error.error))] += error.occurrences
    lines += ["", "| failure kind | route | count |", "|---|---|---:|"]
    if not kinds:
        lines.append("| none | | 0 |")
    for (route, kind), count in kinds.most_common():
        lines.append(f"| {kind} | {route} | {count} |")
    print("\n".join(lines), flush=True)
