"""Queue sources ([[collect.sources]]): Redis lists and streams consumed into the app's sink
(the server's database, the funnel's spool), losing nothing and counting nothing twice.

Imports formats, templates, coalesce, config, batch, schema and errors, plus the `redis`
client (imported when a source starts). A list is read with the reliable-queue pattern: one
Lua script moves up to `batch_size` items from the tail of `key` (the oldest, for LPUSH
producers) onto `<key>:gumshoe:<group>:processing` with LMOVE and gives the batch a number
from `<key>:gumshoe:<group>:seq` (started at the current time in ms, so a flushed Redis never
reuses one); when a crashed consumer comes back, the same script hands it the same items under
the same number first. The items are removed (DEL of the processing list) only after the sink
said the batch is durable; the batch id `redis-<key>-<group>-<number>` makes a re-delivery after
a crash between the two a duplicate the database drops. A stream is read with a consumer group
(XREADGROUP): this consumer's pending entries first, XACK after the batch is durable, batch id
`redis-<key>-<group>-<first id>-<last id>`. Items that do not parse are set aside on
`<key>:gumshoe:<group>:rejected` (the rest of their batch goes in), and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..batch import Batch
from ..config import CollectSource, Config
from ..errors import ClientError, InsertError
from ..schema import Schema
from .coalesce import Sink
from .formats import json_objects
from .templates import ItemTemplate

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
# KEYS: queue, processing, batch number of the processing list, counter; ARGV: count, now (ms)
_TAKE = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
if #items > 0 then return {redis.call('GET', KEYS[3]) or '0', items} end
for i = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'RIGHT') then break end
end
items = redis.call('LRANGE', KEYS[2], 0, -1)
if #items == 0 then return {false, items} end
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], ARGV[2]) end
local n = redis.call('INCR', KEYS[4])
redis.call('SET', KEYS[3], n)
return {tostring(n), items}
"""


class Parser:
    """Queue items -> a Batch, setting aside the ones that do not parse."""

    def __init__(self, src: CollectSource, schema: Schema, where: str) -> None:
        self.schema = schema
        self.template = (None if src.format == "json"
                         else ItemTemplate(src.format, schema, f"{where}.format"))

    def _batch(self, items: list[bytes], now: int) -> Batch:
        if self.template is None:
            return json_objects(items, self.schema, now, lambda i: f"item {i}")
        try:
            texts = [item.decode("utf-8") for item in items]  # bytes -> str, per item in C
        except UnicodeDecodeError:
            i = next(i for i, b in enumerate(items) if not _utf8(b))
            raise InsertError(f"item {i}: not valid UTF-8") from None
        return self.template.batch(texts, now, lambda i, c: f"item {i}" + (
            f", column {c}" if c else ""))

    def parse(self, items: list[bytes]) -> tuple[Batch | None, list[tuple[int, str]]]:
        """(the batch of the good items or None, [(index, error) of the bad ones])."""
        now = int(time.time())
        try:
            return self._batch(items, now), []
        except InsertError:
            pass
        good, bad = [], []
        for i, item in enumerate(items):  # the error path: item by item
            try:
                self._batch([item], now)
            except InsertError as e:
                bad.append((i, str(e).replace("item 0", f"item {i}", 1)))
            else:
                good.append(item)
        return (self._batch(good, now) if good else None), bad


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class RedisSource:
    """One [[collect.sources]] entry of type redis, feeding `sink`."""

    def __init__(self, src: CollectSource, schema: Schema, sink: Sink, index: int) -> None:
        self.src = src
        self.sink = sink
        self.where = f"collect.sources[{index}]"
        self.parser = Parser(src, schema, self.where)
        base = f"{src.key}:gumshoe:{src.group}"
        self.processing, self.number, self.counter = (f"{base}:processing", f"{base}:batch",
                                                      f"{base}:seq")
        self.rejected = f"{base}:rejected"
        tag = hashlib.sha1(f"{src.key}\0{src.group}".encode()).hexdigest()[:12]
        self.id_prefix = f"redis-{tag}"
        self.consumer = "gumshoe"
        self.stats = {"batches": 0, "items": 0, "rejected": 0}
        self._bad: list[bytes] = []  # items of the batch being delivered that were set aside

    async def run(self) -> None:
        """Consume until cancelled; connection and sink failures are retried with backoff."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        delay = 0.1
        while True:
            client = aioredis.from_url(self.src.url, socket_timeout=30,
                                       socket_connect_timeout=5)
            try:
                step = self._stream_step if self.src.stream else self._list_step
                if self.src.stream:
                    await self._create_group(client)
                while True:
                    if not await step(client):
                        await asyncio.sleep(self.src.poll_interval)
                    delay = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ClientError) as e:
                log.warning("%s (%s %s): %s; retrying in %.1fs", self.where, self.src.url,
                            self.src.key, e, delay)
            except Exception as e:  # the sink failed (storage, upstream): keep the items
                log.warning("%s: the batch was not stored (%s); retrying in %.1fs", self.where,
                            e, delay)
            finally:  # bounded: when cancelled mid-command, closing may otherwise wait out
                with contextlib.suppress(Exception):  # the 30 s socket timeout (a stop hangs)
                    await asyncio.wait_for(client.aclose(), 2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _deliver(self, items: list[bytes], batch_id: str) -> None:
        """Insert the items' batch (durable when this returns); set aside bad items."""
        batch, bad = await asyncio.to_thread(self.parser.parse, items)
        for i, error in bad:
            log.error("%s: item set aside on %s: %s", self.where, self.rejected, error)
        self.stats["rejected"] += len(bad)
        self._bad = [items[i] for i, _ in bad]
        if batch is not None:
            try:
                await self.sink.insert(batch, batch_id)
            except ClientError as e:  # never storable as it is (e.g. a dictionary is full)
                log.error("%s: batch %s refused (%s); its items are set aside on %s",
                          self.where, batch_id, e, self.rejected)
                self._bad = items
        self.stats["batches"] += 1
        self.stats["items"] += len(items)

    # -- lists ----------------------------------------------------------------------------
    async def _list_step(self, client: Any) -> bool:
        take = client.register_script(_TAKE)
        number, items = await take(keys=[self.src.key, self.processing, self.number,
                                          self.counter],
                                    args=[self.src.batch_size, int(time.time() * 1000)])
        if not items:
            return False
        number = number.decode() if isinstance(number, bytes) else str(number)
        await self._deliver(list(items), f"{self.id_prefix}-{number}")
        async with client.pipeline(transaction=True) as p:
            if self._bad:
                p.lpush(self.rejected, *self._bad)
            p.delete(self.processing, self.number)
            await p.execute()
        return True

    # -- streams --------------------------------------------------------------------------
    async def _create_group(self, client: Any) -> None:
        from redis.exceptions import ResponseError

        try:
            await client.xgroup_create(self.src.key, self.src.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _stream_step(self, client: Any) -> bool:
        # our own unacknowledged entries first (a crash after reading them), then new ones
        for start in ("0", ">"):
            reply = await client.xreadgroup(
                self.src.group, self.consumer, {self.src.key: start},
                count=self.src.batch_size,
                block=None if start == "0" else int(self.src.poll_interval * 1000))
            entries = reply[0][1] if reply else []
            if entries:
                break
        else:
            return True  # the blocking read waited poll_interval already
        ids = [e[0] for e in entries]
        items = [next(iter(fields.values()), b"") for _, fields in entries]
        first, last = (i.decode() if isinstance(i, bytes) else i for i in (ids[0], ids[-1]))
        await self._deliver(items, f"{self.id_prefix}-{first}-{last}")
        async with client.pipeline(transaction=True) as p:
            if self._bad:
                p.lpush(self.rejected, *self._bad)
            p.xack(self.src.key, self.src.group, *ids)
            await p.execute()
        return True


def sources(config: Config, schema: Schema, sink: Sink) -> list[RedisSource]:
    """The app's queue consumers (checked against the schema now: a bad format is a
    ConfigError at start-up)."""
    return [RedisSource(s, schema, sink, i) for i, s in enumerate(config.collect.sources)]


@contextlib.asynccontextmanager
async def running(consumers: list[RedisSource]) -> AsyncIterator[None]:
    """Run the consumers as tasks while the context is open; cancel them at its end (a
    batch being inserted is then retried by the next start, under the same batch id)."""
    tasks = [asyncio.create_task(c.run(), name=c.where) for c in consumers]
    try:
        yield
    finally:
        await _stop(tasks)


STOP_WAIT = 2.0  # seconds a cancelled consumer gets to finish, twice


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the consumers and wait for them, boundedly: a consumer cancelled inside
    `async with client.pipeline()` awaits the pipeline's reset on its socket in `__aexit__`
    (up to the 30 s socket timeout: a SIGTERM was once ignored that long), so one still
    running after STOP_WAIT is cancelled again, and after that left behind (its batch is
    retried under the same batch id at the next start)."""
    for _ in range(2):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            break
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=STOP_WAIT)
    for t in tasks:
        if not t.done():
            log.warning("%s: still stopping after %.0fs; left behind", t.get_name(),
                        2 * STOP_WAIT)
        elif not t.cancelled() and t.exception() is not None:
            log.warning("%s: stopped with %r", t.get_name(), t.exception())


Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


def with_sources(config: Config, schema: Schema, sink: Sink, lifespan: Lifespan) -> Lifespan:
    """`lifespan` with the queue consumers running inside it (started after the app's own
    start-up, stopped before its shutdown)."""
    consumers = sources(config, schema, sink)
    if not consumers:
        return lifespan

    @contextlib.asynccontextmanager
    async def combined(app: Any) -> AsyncIterator[None]:
        async with lifespan(app), running(consumers):
            yield

    return combined

