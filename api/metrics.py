"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "slotkeeper_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "slotkeeper_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.holds = Counter(
            "slotkeeper_holds_total",
            "Hold attempts by outcome (created, replayed, capacity, closed, ...).",
            ["outcome"],
            registry=self.registry,
        )
        self._hold_outcomes: dict[str, Any] = {}
        self.waitlist_joins = Counter(
            "slotkeeper_waitlist_joins_total",
            "Waitlist joins by outcome (waiting, offered, replayed, WaitingLimit, ...).",
            ["outcome"],
            registry=self.registry,
        )
        self.waitlist = Gauge(
            "slotkeeper_waitlist",
            "Waitlist counts from the durable record: entries waiting now, offers made,"
            " offers taken (their hold confirmed), offers lapsed (their hold expired).",
            ["count"],
            registry=self.registry,
        )
        self.groups = Counter(
            "slotkeeper_groups_total",
            "Hold group calls by command (hold, confirm, cancel) and outcome.",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.hold_changes = Counter(
            "slotkeeper_hold_changes_total",
            "Extends and confirms by action and outcome (extended, confirmed, replayed,"
            " or the refusal's error name).",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.sync_lag = Gauge(
            "slotkeeper_sync_lag_seconds",
            "Age of the oldest event not yet written to PostgreSQL.",
            registry=self.registry,
        )
        self.drift = Gauge(
            "slotkeeper_sync_drift",
            "Differences between Redis and PostgreSQL found by the worker's last drift check.",
            registry=self.registry,
        )
        self.expired = Gauge(
            "slotkeeper_holds_expired_by_sweep",
            "Holds expired by the background sweep, all workers, since the counter began.",
            registry=self.registry,
        )

    def count_hold(self, outcome: str, n: int = 1) -> None:
        """One more hold attempt with ``outcome``; the labelled child is looked up
        once per outcome (``labels()`` takes a lock and builds a tuple each call)."""
        child = self._hold_outcomes.get(outcome)
        if child is None:
            child = self._hold_outcomes[outcome] = self.holds.labels(outcome)
        child.inc(n)
