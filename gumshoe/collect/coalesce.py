"""The sink seam, and the coalescer: one-event requests (beacons, URL routes) that arrive
together are validated and inserted as one batch.

Imports values, batch, schema and errors. A *sink* is the app's way in (`await
sink.insert(batch, batch_id) -> {"inserted": n, "rejected": m, ...}`): the server applies the
batch to its database, the router splits and sends it, the funnel spools it. Every one-event
request waits for the insert of the group it joined, so its 200 means what an /insert 200
means; while one group is being inserted (an fsync, a round trip) the next one gathers. One
insert per group instead of per event is what makes 10,000 beacons/s possible: the group
commit of the write-ahead log, one level up.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np

from ..batch import Batch
from ..errors import InsertError
from ..schema import Schema
from .values import Where, check_columns, text_batch

MAX_GROUP = 10_000  # events in one insert
# Groups inserted at once: the next group is appended (and waits in the write-ahead log's group
# commit) while the previous one's fsync runs, so an fsync never waits for a group to form.
IN_FLIGHT = 2


class Sink(Protocol):
    def insert(self, batch: Batch, batch_id: str | None, /) -> Awaitable[dict[str, Any]]:
        """Apply (or durably accept) a validated batch; raise a GumshoeError on failure."""
        ...


class FunctionSink:
    """A sink made of a coroutine function `insert(batch, batch_id) -> dict`."""

    def __init__(self, insert: Callable[[Batch, str | None], Awaitable[dict[str, Any]]]
                 ) -> None:
        self.insert = insert


def event_batch(schema: Schema, events: list[dict[str, str]], now: int, where: Where) -> Batch:
    """Events given as {column: text} (columns already checked) -> one Batch, typed column by
    column with C-level iterators."""
    names: set[str] = set().union(*events) if events else set()
    columns = {name: list(map(dict.get, events, itertools.repeat(name), itertools.repeat("")))
               for name in names}
    return text_batch(schema, columns, len(events), now, where)  # type: ignore[arg-type]


def check_event(schema: Schema, event: dict[str, str], what: str = "parameter") -> None:
    check_columns(schema, list(event), lambda name: f"{what} {name}")


class Coalescer:
    """Gathers one-event requests into groups and inserts each group through the sink."""

    def __init__(self, schema: Schema, sink: Sink, max_group: int = MAX_GROUP,
                 in_flight: int = IN_FLIGHT) -> None:
        self.schema = schema
        self.sink = sink
        self.max_group = max_group
        self.in_flight = in_flight
        self._pending: list[tuple[dict[str, str], asyncio.Future[bool]]] = []
        self._running = 0  # groups being inserted

    async def add(self, event: dict[str, str], where: Where) -> bool:
        """Insert one event (its columns checked by the caller) with those arriving
        alongside. True: inserted; False: rejected (outside retention). Raises the event's
        own InsertError (`where` names its parts), or the group's insert failure."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.where = where  # type: ignore[attr-defined]
        self._pending.append((event, future))
        if self._running < self.in_flight:
            self._running += 1
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                group = self._pending[:self.max_group]
                del self._pending[:self.max_group]
                await self._insert(group)
        finally:
            self._running -= 1

    async def _insert(self, group: list[tuple[dict[str, str], asyncio.Future[bool]]]) -> None:
        now = int(time.time())
        try:
            batch = event_batch(self.schema, [e for e, _ in group], now, lambda i, c: c)
        except InsertError:  # some event is bad: find which, and insert the others
            good = []
            for event, future in group:
                try:
                    event_batch(self.schema, [event], now, future.where)  # type: ignore[attr-defined]
                except InsertError as e:
                    if not future.done():  # done: the client went away
                        future.set_exception(e)
                else:
                    good.append((event, future))
            group = good
            if not group:
                return
            batch = event_batch(self.schema, [e for e, _ in group], now, lambda i, c: c)
        try:
            result = await self.sink.insert(batch, None)
        except BaseException as e:
            for _, future in group:
                if not future.done():
                    future.set_exception(e if isinstance(e, Exception) else
                                         RuntimeError("insert cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        rejected = _rejected(self.schema, batch, int(result.get("rejected", 0)))
        for (_, future), was_rejected in zip(group, rejected, strict=True):
            if not future.done():
                future.set_result(not was_rejected)


def _rejected(schema: Schema, batch: Batch, k: int) -> list[bool]:
    """Which rows a sink rejected, given how many: retention drops the rows of the oldest
    intervals, so they are the k rows with the earliest interval starts."""
    if k <= 0:
        return [False] * batch.n
    if k >= batch.n:
        return [True] * batch.n
    starts = schema.interval_start(batch.timestamps)
    out = np.zeros(batch.n, bool)
    out[np.argsort(starts, kind="stable")[:k]] = True
    return out.tolist()
