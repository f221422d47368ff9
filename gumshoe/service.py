"""The query service of a shard: parse, admit, run and stop queries over a DB's snapshots.

Imports config, errors, jsonio, query and engine (the DB is duck-typed: `.schema`,
`.snapshot()`, `.try_snapshot()`).
It owns the scan thread pool (`query_parallelism` threads) and the bounds on queries:

- **time**: `query_timeout`, or a query's own `"timeout"` (ms, only lower). Past it the
  caller gets QueryTimeoutError (504) at once; the scan threads stop at their next block and
  the query's memory is freed.
- **memory**: each query's need is estimated before anything is allocated (groups x row
  width, the scan's working set, the result rows). Over `query_memory` it is a QueryError
  (400) naming the key and the estimate; otherwise the estimate is reserved from a pool of
  `query_memory_pool` bytes shared by running queries, waiting up to a few seconds for room
  (then OverloadedError: 503 with Retry-After). A reservation is released when the scan
  threads are done, not when the caller gives up, so the pool tracks real use.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

from . import jsonio
from .config import Config
from .engine import Prepared, QueryCancelled
from .errors import OverloadedError, QueryError, QueryTimeoutError
from .query import Query, parse_query
from .partials import Partial

ADMISSION_WAIT = 5.0  # seconds a query waits for room in the memory pool
COORDINATORS = 16  # queries planned, merged and finished at once (each also uses scan threads)
# A query is answered on the event loop, without a thread hand-off, when its plan is cheap (a
# snapshot of at most INLINE_INTERVALS intervals, no text matching over dictionaries) and the
# plan leaves at most INLINE_ROWS rows to scan: waking a coordinator thread costs more than such
# a query (~50-300 us, most under load), and the loop is held for well under a millisecond.
INLINE_ROWS = 32_768
INLINE_INTERVALS = 1_024
# Parsed queries by request body: dashboards repeat the same few queries. Query objects are
# immutable and depend only on the schema, which does not change while a server runs.
PARSE_CACHE = 256
PARSE_CACHE_BODY = 4_096  # bytes: larger bodies are parsed every time
# After a query that reserved at least this much, the C allocator is asked to give its free
# memory back to the system (glibc's malloc_trim). Queries run on up to COORDINATORS threads and
# glibc gives each thread its own arena, which keeps a large query's freed buffers: without the
# trim a server's RSS climbs by a large query's size for every thread that ever ran one, and a
# timed-out query's memory would look retained. The trim walks the free lists (~1 ms).
TRIM_AFTER = 16 * 2**20


def _trimmer() -> Callable[[], None]:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only: musl and macOS have none
    except (AttributeError, OSError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def give_back() -> None:
        trim(0)
    return give_back


_give_back_memory = _trimmer()


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class MemoryPool:
    """Estimated bytes of running queries (thread-safe; waiters poll briefly)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def try_reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit and self.used > 0:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads,
                                                        thread_name_prefix="gumshoe-scan")
        return pool


def query_rows(db: Any, obj: Any, executor: Executor | None = None) -> list[dict[str, Any]]:
    """The result rows of a JSON query over a fresh snapshot of `db`, blocking and without
    the server's time and memory bounds: for tests, tools and benchmarks (servers use
    QueryService). Scans on `query_parallelism` shared threads unless `executor` is given."""
    threads = db.config.query_parallelism
    prepared = Prepared(parse_query(obj, db.schema), db.snapshot(), threads,
                        db.config.max_groups)
    return prepared.rows(executor or _shared_pool(threads))


def query_partial(db: Any, obj: Any, executor: Executor | None = None) -> Partial:
    """The decoded mergeable partial of a JSON query (what a shard sends a router)."""
    threads = db.config.query_parallelism
    prepared = Prepared(parse_query(obj, db.schema), db.snapshot(), threads,
                        db.config.max_groups)
    return prepared.decoded_partial(executor or _shared_pool(threads))


class QueryService:
    """Runs queries for the HTTP layer (async) and for tests and tools (`run_sync`)."""

    def __init__(self, db: Any, config: Config) -> None:
        self.db = db
        self.config = config
        self.threads = config.query_parallelism
        self.scan_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="gumshoe-scan")
        self.coordinators = ThreadPoolExecutor(COORDINATORS, thread_name_prefix="gumshoe-query")
        self.memory = MemoryPool(config.query_memory_pool)
        self.stats = {"timeouts": 0, "refused_memory": 0, "overloaded": 0, "inline": 0}
        self._parsed: dict[bytes, Query] = {}

    def parse(self, obj: Any) -> Query:
        return parse_query(obj, self.db.schema)

    def parse_body(self, body: bytes) -> Query:
        """The query of a JSON request body (QueryError naming the part), from the cache of
        recent bodies when it is there."""
        query = self._parsed.get(body)
        if query is not None:
            return query
        obj = jsonio.loads(body, "query")
        if not isinstance(obj, dict):
            raise QueryError(f"query must be a JSON object, got {type(obj).__name__}")
        query = self.parse(obj)
        if len(body) <= PARSE_CACHE_BODY:
            if len(self._parsed) >= PARSE_CACHE:
                del self._parsed[next(iter(self._parsed))]  # the oldest entry
            self._parsed[body] = query
        return query

    def timeout_of(self, query: Query) -> float:
        """Seconds the query may run: query_timeout, lowered by its own `timeout` (ms)."""
        limit = self.config.query_timeout
        if query.timeout_ms is not None:
            limit = min(limit, query.timeout_ms / 1000)
        return limit

    def prepare(self, query: Query, cancel: threading.Event | None = None,
                snapshot: Any = None) -> Prepared:
        """Plan over a fresh snapshot (or `snapshot`) and check the memory estimate."""
        prepared = Prepared(query, snapshot if snapshot is not None else self.db.snapshot(),
                            self.threads,
                            self.config.max_groups, cancel)
        need, groups = prepared.memory_estimate()
        if need > self.config.query_memory:
            self.stats["refused_memory"] += 1
            raise QueryError(
                f"query needs an estimated {_size(need)} (up to {groups:,} groups) which is "
                f"over the per-query budget of {_size(self.config.query_memory)} "
                "(query_memory); add filters, coarser groupings or a limit")
        return prepared

    async def result(self, obj: Any) -> tuple[Query, list[dict[str, Any]]]:
        """The parsed query and its result rows (400/503/504 as the module docstring says)."""
        query, rows, _ = await self.answer(obj)
        return query, rows

    async def answer(self, obj: Any) -> tuple[Query, list[dict[str, Any]], dict[str, Any]]:
        """The parsed query, its result rows and the response's other fields
        (`Prepared.extra`: the granularity when coarser than asked)."""
        return await self.answer_query(self.parse(obj))

    async def answer_query(self, query: Query
                           ) -> tuple[Query, list[dict[str, Any]], dict[str, Any]]:
        """`answer` for a parsed query (`parse_body`)."""
        rows, extra = await self._run(query, lambda p: (p.rows(self.scan_pool), p.extra()))
        return query, rows, extra

    async def rows(self, obj: Any) -> list[dict[str, Any]]:
        """Result rows of a JSON query."""
        return (await self.result(obj))[1]

    async def partial(self, query: Query) -> Partial:
        """The decoded mergeable partial of a parsed query (a shard's answer to a router)."""
        partial: Partial = await self._run(query, lambda p: p.decoded_partial(self.scan_pool))
        return partial

    async def _run(self, query: Query, work: Callable[[Prepared], Any]) -> Any:
        """Plan, admit and run `work` in one coordinator thread (one hand-off: a small query's
        whole server time is a fraction of a millisecond), bounded by the query's time; a
        small query of a cheap plan runs right here instead (INLINE_ROWS)."""
        limit = self.timeout_of(query)
        deadline = time.monotonic() + limit
        cancel = threading.Event()
        prepared: Prepared | None = None
        snapshot = self.db.try_snapshot() if self._cheap_query(query) else None
        if snapshot is not None and len(snapshot.intervals) <= INLINE_INTERVALS:
            prepared = self.prepare(query, cancel, snapshot)
            need = prepared.memory_estimate()[0]
            if prepared.rows_to_scan() <= INLINE_ROWS and self.memory.try_reserve(need):
                self.stats["inline"] += 1
                try:
                    return work(prepared)
                finally:
                    self.memory.release(need)
        future: Future[Any] = self.coordinators.submit(self._admit_and_run, query, work,
                                                       deadline, cancel, prepared)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          max(0.0, deadline - time.monotonic()))
        except (TimeoutError, QueryCancelled):
            cancel.set()
            self.stats["timeouts"] += 1
            raise QueryTimeoutError(f"query timed out after {round(limit * 1000)} ms "
                                    "(query_timeout)") from None

    def _cheap_query(self, query: Query) -> bool:
        """Whether planning `query` may be cheap enough for the event loop: no text matching
        over dictionaries, no metric filter (it rolls unflushed rows up while planning)."""
        return not query.matches_text() and not query.has_metric_filter(self.db.schema)

    def _admit_and_run(self, query: Query, work: Callable[[Prepared], Any], deadline: float,
                       cancel: threading.Event, prepared: Prepared | None = None) -> Any:
        if prepared is None:
            prepared = self.prepare(query, cancel)
        need = prepared.memory_estimate()[0]
        give_up = min(deadline, time.monotonic() + ADMISSION_WAIT)
        while not self.memory.try_reserve(need):
            if time.monotonic() > give_up or cancel.is_set():
                self.stats["overloaded"] += 1
                raise OverloadedError(
                    f"the running queries use the query memory pool ({_size(self.memory.used)}"
                    f" of {_size(self.memory.limit)}; query_memory_pool); retry later")
            time.sleep(0.02)
        try:
            return work(prepared)
        finally:
            self.memory.release(need)
            if need >= TRIM_AFTER:
                _give_back_memory()

    def run_sync(self, obj: Any) -> list[dict[str, Any]]:
        """Result rows, blocking, without the time limit (tests, tools, benchmarks)."""
        return self.prepare(self.parse(obj)).rows(self.scan_pool)

    def close(self) -> None:
        self.coordinators.shutdown(wait=False, cancel_futures=True)
        self.scan_pool.shutdown(wait=False, cancel_futures=True)
