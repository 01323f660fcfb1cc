"""Availability served from ready-made bytes, kept warm by one background task.

- Staleness is bounded: a copy older than ``max_age_s`` is never served.
- One rebuild at a time per process; a cold or invalidated copy is filled by
  one rebuild that every waiting request shares (no stampede).
- The warmer refreshes at half the bound while requests keep coming, so under
  steady traffic no request waits; with no readers it stays idle.
- ``invalidate()`` (called after every change this node makes) makes the copy
  stale at once, so a client reads its own writes on the node it wrote to; it
  costs nothing until someone reads.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import orjson

from engine import Slot
from engine.tasks import cancel_and_wait

from .http import slot_body
from .representation import Representation

__all__ = ["AvailabilityCache", "Page", "Pages", "Snapshot", "select"]

PAGES_PER_SNAPSHOT = 64  # distinct queries kept per snapshot; a page is at most the full list


@dataclass(frozen=True, slots=True)
class Page:
    representation: Representation
    link: bytes | None  # the Link header to the next page, if there is one


class Pages:
    """A small LRU of rendered pages, keyed by the raw query string.

    It lives in one snapshot, so a rebuild (after a change or at the age bound)
    starts an empty one: nothing here is ever stale.
    """

    def __init__(self, size: int = PAGES_PER_SNAPSHOT) -> None:
        self._size = size
        self._pages: OrderedDict[bytes, Page] = OrderedDict()

    def get(self, key: bytes) -> Page | None:
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def put(self, key: bytes, page: Page) -> Page:
        self._pages[key] = page
        if len(self._pages) > self._size:
            self._pages.popitem(last=False)
        return page


@dataclass(frozen=True, slots=True)
class Snapshot:
    slots: Sequence[Slot]
    ids: Sequence[int]
    fragments: Sequence[bytes]  # each slot pre-encoded
    full: Representation  # every slot, the most common answer
    built_at: float
    generation: int
    pages: Pages = field(default_factory=Pages)


class AvailabilityCache:
    def __init__(self, load: Callable[[], Awaitable[list[Slot]]], max_age_s: float) -> None:
        self._load = load
        self.max_age_s = max_age_s
        self._snapshot: Snapshot | None = None
        self._generation = 0
        self._inflight: asyncio.Future[Snapshot] | None = None
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rebuilds = 0

    def invalidate(self) -> None:
        # Only marks the copy stale: the next reader rebuilds it. Waking the
        # warmer here would rebuild after every hold even with nobody reading.
        self._generation += 1

    async def get(self) -> Snapshot:
        snap = self._snapshot
        self._wanted.set()
        if (
            snap is not None
            and snap.generation == self._generation
            and time.monotonic() - snap.built_at <= self.max_age_s
        ):
            return snap
        target = self._generation
        while True:
            # A rebuild already under way may have read before the change that
            # invalidated us; wait for one that started after it.
            snap = await self._rebuild()
            if snap.generation >= target:
                return snap

    def _rebuild(self) -> asyncio.Future[Snapshot]:
        # A finished rebuild whose done-callback has not run yet counts as none:
        # awaiting it would not yield, and get() would spin on it forever.
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._build())
            self._inflight.add_done_callback(self._done)
        return asyncio.shield(self._inflight)

    def _done(self, fut: asyncio.Future[Snapshot]) -> None:
        self._inflight = None
        if not fut.cancelled():
            fut.exception()  # mark retrieved; waiters see it themselves

    async def _build(self) -> Snapshot:
        generation = self._generation
        started = time.monotonic()
        slots = await self._load()
        fragments = [orjson.dumps(slot_body(s)) for s in slots]
        full = b"[" + b",".join(fragments) + b"]"
        snap = Snapshot(
            slots=slots,
            ids=[s.slot_id for s in slots],
            fragments=fragments,
            full=Representation(full),
            built_at=started,
            generation=generation,
        )
        self.rebuilds += 1
        if self._snapshot is None or self._snapshot.generation <= generation:
            self._snapshot = snap
        return snap

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._warm())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _warm(self) -> None:
        period = self.max_age_s / 2
        while True:
            await self._wanted.wait()  # idle until someone reads or a change happens
            self._wanted.clear()
            with contextlib.suppress(Exception):  # a failed warm-up is retried next round
                await self._rebuild()
            await asyncio.sleep(period)


def select(
    snap: Snapshot, after_id: int, limit: int, keep: Callable[[Slot], bool] | None
) -> tuple[list[int], int | None]:
    """Indices of the slots after ``after_id`` that pass ``keep``; and the next cursor id."""
    start = bisect.bisect_right(snap.ids, after_id)
    out: list[int] = []
    last = None
    for index in range(start, len(snap.slots)):
        slot = snap.slots[index]
        if keep is not None and not keep(slot):
            continue
        if len(out) == limit:
            return out, last
        out.append(index)
        last = slot.slot_id
    return out, None
