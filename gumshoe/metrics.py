"""Server-side metrics: a per-app Prometheus registry, and the storage statistics behind
/metrics, /metricz and /statusz.

Imports config (durations as text) and prometheus_client (the DB is duck-typed: `.snapshot()`, `.stats`, `.memtable`,
`.failed`, `.last_updated`). Each app gets its own CollectorRegistry, so several apps in one
process (tests) never clash. Storage gauges are read at scrape time by a custom collector.
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .config import format_duration

__all__ = ["CONTENT_TYPE_LATEST", "IntervalStats", "Metrics", "RouterMetrics", "StorageStats",
           "storage_stats"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)


@dataclasses.dataclass(frozen=True, slots=True)
class IntervalStats:
    start: int
    segments: int
    # physical rows in flushed segments: rolled up within each run; with several runs (not
    # yet merged, docs/storage.md section 6) a key may be stored once per run, so an upper
    # bound of the interval's rolled-up rows
    rows: int
    bytes: int  # bytes of flushed segments
    unflushed_rows: int  # rows in the memtable (not yet rolled up with the segments)
    duration: int = 0  # seconds (with tiers, re-rolled intervals are coarser)
    runs: int = 0  # flushed runs (0: nothing flushed yet)


@dataclasses.dataclass(frozen=True, slots=True)
class StorageStats:
    intervals: tuple[IntervalStats, ...]  # ascending start
    dictionary_sizes: dict[str, int]

    @property
    def segments(self) -> int:
        return sum(iv.segments for iv in self.intervals)

    @property
    def rows(self) -> int:
        return sum(iv.rows for iv in self.intervals)

    @property
    def bytes(self) -> int:
        return sum(iv.bytes for iv in self.intervals)

    @property
    def runs(self) -> int:
        return sum(iv.runs for iv in self.intervals)

    @property
    def unflushed_rows(self) -> int:
        return sum(iv.unflushed_rows for iv in self.intervals)

    @property
    def oldest_interval(self) -> int | None:
        return self.intervals[0].start if self.intervals else None

    def tiers(self) -> dict[int, tuple[int, int, int]]:
        """Per interval duration: (intervals, rows, bytes) of flushed segments, finest first."""
        out: dict[int, tuple[int, int, int]] = {}
        for iv in self.intervals:
            n, rows, size = out.get(iv.duration, (0, 0, 0))
            out[iv.duration] = (n + 1, rows + iv.rows, size + iv.bytes)
        return dict(sorted(out.items()))


def storage_stats(snapshot: Any) -> StorageStats:
    """Per-interval counts from a DB snapshot (cheap: no column data is read)."""
    out = []
    for iv in snapshot.intervals:
        out.append(IntervalStats(
            start=int(iv.start),
            segments=len(iv.segments),
            rows=sum(s.rows for s in iv.segments),
            bytes=sum(s.nbytes for s in iv.segments),
            unflushed_rows=sum(b.n for b in iv.mem),
            duration=int(iv.duration or snapshot.schema.interval_duration),
            runs=iv.runs,
        ))
    return StorageStats(tuple(out), dict(snapshot.dict_sizes))


def logical_rows(snapshot: Any) -> int:
    """Input rows represented by a snapshot (sums every count column: reads data)."""
    return sum(int(block.count.sum()) for iv in snapshot.intervals for block in iv.blocks)


class _StorageCollector:
    """Gauges read from the database at scrape time (none while it is still opening)."""

    def __init__(self, db: Callable[[], Any]) -> None:
        self.db = db

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        db = self.db()
        yield GaugeMetricFamily("gumshoe_ready", "1 once the database is open and serving.",
                                value=0 if db is None else 1)
        if db is None:
            return
        stats = storage_stats(db.snapshot())
        for name, doc, value in (
            ("gumshoe_intervals", "Intervals held (flushed or not).", len(stats.intervals)),
            ("gumshoe_segments", "Flushed segments.", stats.segments),
            ("gumshoe_rows", "Physical rows in flushed segments (rolled up per run; an "
             "upper bound of rolled-up rows while runs are unmerged).", stats.rows),
            ("gumshoe_bytes", "Bytes of flushed segments.", stats.bytes),
            ("gumshoe_runs", "Flushed runs (one per flushed interval once merged).",
             stats.runs),
            ("gumshoe_unflushed_rows", "Rows waiting in the memtable for the next flush.",
             stats.unflushed_rows),
            ("gumshoe_storage_failed", "1 when a storage failure made the DB refuse writes.",
             1 if db.failed else 0),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        dims = GaugeMetricFamily("gumshoe_dictionary_size", "Distinct strings of each string "
                                 "dimension.", labels=["dimension"])
        for name, size in sorted(stats.dictionary_sizes.items()):
            dims.add_metric([name], size)
        yield dims
        if db.last_updated is not None:
            yield GaugeMetricFamily("gumshoe_last_updated_timestamp_seconds", "Largest row "
                                    "timestamp ever inserted (kept across restarts).",
                                    value=db.last_updated)
        yield CounterMetricFamily("gumshoe_flushes", "Flushes completed.",
                                  value=db.stats.get("flushes", 0))
        yield CounterMetricFamily("gumshoe_merges", "Merges of runs committed (docs/storage.md "
                                  "section 6).", value=db.stats.get("merges", 0))
        yield CounterMetricFamily("gumshoe_merged_rows", "Stored rows of runs merged.",
                                  value=db.stats.get("merged_rows", 0))
        if getattr(db, "tiers", None) is not None:
            yield from _tier_metrics(db, stats)


def _tier_metrics(db: Any, stats: StorageStats) -> Iterator[Metric]:
    """With tiers: rows, bytes and intervals per tier, and the compactor's progress."""
    per = stats.tiers()
    families = [GaugeMetricFamily(f"gumshoe_tier_{what}", doc, labels=["tier"]) for what, doc in (
        ("intervals", "Flushed intervals of each tier (by interval duration)."),
        ("rows", "Physical (rolled-up) rows in flushed segments of each tier."),
        ("bytes", "Bytes of flushed segments of each tier."))]
    for duration in db.schema.durations:
        values = per.get(duration, (0, 0, 0))
        for family, value in zip(families, values):
            family.add_metric([format_duration(duration)], value)
    yield from families
    yield GaugeMetricFamily("gumshoe_compaction_lag_seconds", "Seconds of data older than its "
                            "tier's keep not yet re-rolled into the next tier (0: up to date).",
                            value=db.compaction_lag())
    yield CounterMetricFamily("gumshoe_compactions", "Compaction steps committed (re-rolls "
                              "and drops).", value=db.stats.get("compactions", 0))
    yield CounterMetricFamily("gumshoe_compacted_rows", "Stored rows re-rolled into a coarser "
                              "tier.", value=db.stats.get("compacted_rows", 0))


class _QueryBoundsCollector:
    """The query service's bounds at scrape time: memory reserved by running queries out of
    query_memory_pool, and the queries each bound stopped (none while the database opens)."""

    def __init__(self, service: Callable[[], Any]) -> None:
        self.service = service

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        service = self.service()
        if service is None:
            return
        yield GaugeMetricFamily("gumshoe_query_memory_reserved_bytes", "Estimated bytes "
                                "reserved by running queries (released when their scans stop).",
                                value=service.memory.used)
        yield GaugeMetricFamily("gumshoe_query_memory_pool_bytes", "query_memory_pool.",
                                value=service.memory.limit)
        stopped = CounterMetricFamily("gumshoe_query_bounds", "Queries stopped by a bound, by "
                                      "reason (timeout: 504, memory: 400 over query_memory, "
                                      "overloaded: 503 no room in query_memory_pool).",
                                      labels=["reason"])
        for reason, key in (("timeout", "timeouts"), ("memory", "refused_memory"),
                            ("overloaded", "overloaded")):
            stopped.add_metric([reason], service.stats[key])
        yield stopped


class Metrics:
    """The metrics of one app: counters and histograms updated by the server, plus gauges."""

    def __init__(self, db: Callable[[], Any], service: Callable[[], Any] = lambda: None) -> None:
        """`db` returns the database, or None while it is opening; `service` likewise the
        query service."""
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.insert_rows = Counter("gumshoe_insert_rows", "Rows received by /insert, by result "
                                   "(inserted, rejected: outside retention).", ["result"],
                                   registry=r)
        self.insert_batches = Counter("gumshoe_insert_batches", "Batches applied by /insert.",
                                      registry=r)
        self.insert_errors = Counter("gumshoe_insert_errors", "Batches refused by /insert, by "
                                     "reason.", ["reason"], registry=r)
        self.queries = Counter("gumshoe_queries", "Queries answered, by result.", ["result"],
                               registry=r)
        self.query_duration = Histogram("gumshoe_query_duration_seconds", "Time to parse and "
                                        "run a query (successful queries).",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.flush_duration = Histogram("gumshoe_flush_duration_seconds", "Time of periodic "
                                        "flushes.", buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("gumshoe_http_requests", "HTTP requests, by route and status.",
                                ["method", "route", "status"], registry=r)
        self.request_duration = Histogram("gumshoe_http_request_duration_seconds", "Time to "
                                          "answer an HTTP request, by route.", ["route"],
                                          buckets=_LATENCY_BUCKETS, registry=r)
        for result in ("inserted", "rejected"):
            self.insert_rows.labels(result)
        r.register(_StorageCollector(db))
        r.register(_QueryBoundsCollector(service))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# -- /metricz: the original's debug page (HTML), or the same data as JSON -------------------
def go_duration(seconds: float) -> str:
    """Format seconds as Go's time.Duration does: "10s", "1h0m0s", "1.5s", "500ms"."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    s_text = f"{s:.9f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{s_text}"
    if m:
        return f"{int(m)}m{s_text}"
    return s_text


def si_bytes(n: int) -> str:
    """SI-humanised size as the original's page shows it: "132B", "1.0MB", "12MB"."""
    if n < 1000:
        return f"{n}B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.5 or unit == "PB":
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    raise AssertionError("unreachable")


def config_json(config: Any) -> dict[str, Any]:
    """The config with the original's (Go) field names, as its /metricz page shows it."""
    s = config.schema
    return {
        "ListenAddr": config.listen_addr,
        "StatsdAddr": config.statsd_addr,
        "OpenFileLimit": config.open_file_limit,
        "DatabaseDir": config.database_dir,
        "FlushInterval": go_duration(config.flush_interval),
        "QueryParallelism": config.query_parallelism,
        "RetentionDays": config.retention_days,
        "Durability": config.durability,
        "MaxBodySize": config.max_body_size,
        "MaxGroups": config.max_groups,
        "BatchIdWindow": go_duration(config.batch_id_window),
        "Schema": {
            "SegmentSize": s.segment_size_text or str(s.segment_size),
            "IntervalDuration": go_duration(s.interval_duration),
            "TimestampColumn": list(s.timestamp_column),
            "DimensionColumns": [list(c) for c in s.dimension_columns],
            "MetricColumns": [list(c) for c in s.metric_columns],
        },
    }


def metricz_json(config: Any, snapshot: Any) -> dict[str, Any]:
    stats = storage_stats(snapshot)
    logical = logical_rows(snapshot)
    physical = stats.rows + stats.unflushed_rows
    return {
        "config": config_json(config),
        "dimension_tables": dict(sorted(stats.dictionary_sizes.items())),
        "totals": {
            "intervals": len(stats.intervals),
            "segments": stats.segments,
            "rows": stats.rows,
            "unflushed_rows": stats.unflushed_rows,
            "logical_rows": logical,
            "bytes": stats.bytes,
            "runs": stats.runs,
            "compression_ratio": round(logical / physical, 2) if physical else None,
        },
        "intervals": [dataclasses.asdict(iv) for iv in reversed(stats.intervals)],
    }


def metricz_html(data: dict[str, Any]) -> str:
    """The original's metricz page: config, dictionary sizes, totals, intervals (newest
    first, local time)."""
    esc = html.escape
    t = data["totals"]
    ratio = "NaN" if t["compression_ratio"] is None else f"{t['compression_ratio']:.2f}"
    dims = "".join(f"<tr><td>{esc(name)}</td><td>{n}</td></tr>"
                   for name, n in data["dimension_tables"].items())
    rows = "".join(
        f"<tr><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(iv['start']))}</td>"
        f"<td>{iv['segments']}</td><td>{iv['rows']}</td><td>{iv['unflushed_rows']}</td>"
        f"<td>{si_bytes(iv['bytes'])}</td></tr>" for iv in data["intervals"])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>metricz</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
<h1>metricz</h1>
<h2>Config</h2><pre>{esc(json.dumps(data["config"], indent=2))}</pre>
<h2>Dimension tables</h2>
<table><tr><th>Name</th><th>Count</th></tr>{dims}</table>
<h2>Stat totals</h2>
<table><tr><th>Segments</th><td>{t["segments"]}</td></tr>
<tr><th>Rows</th><td>{t["rows"]}</td></tr>
<tr><th>Unflushed rows</th><td>{t["unflushed_rows"]}</td></tr>
<tr><th>Size</th><td>{si_bytes(t["bytes"])}</td></tr>
<tr><th>Compression Ratio</th><td>{ratio}</td></tr></table>
<h2>Intervals ({t["intervals"]})</h2>
<table><tr><th>Start</th><th>Segments</th><th>Rows</th><th>Unflushed rows</th><th>Size</th></tr>
{rows}</table>
</body></html>
"""


def request_hook(requests: Counter, duration: Histogram
                 ) -> Callable[[str, str, int, float], None]:
    """The edge's per-request hook: count by (method, route, status), time by route. The
    labelled children are looked up once each (labels() costs more than the increment)."""
    counters: dict[tuple[str, str, int], Any] = {}
    timers: dict[str, Any] = {}

    def on_request(method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = requests.labels(method, route, str(status))
        counter.inc()
        timer = timers.get(route)
        if timer is None:
            timer = timers[route] = duration.labels(route)
        timer.observe(seconds)
    return on_request


class RouterMetrics:
    """The router's metrics: requests, inserts and queries, per-shard call latency and
    errors, and each shard's health (set by the /metrics handler before it renders)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("gumshoe_http_requests", "HTTP requests, by route and status.",
                                ["method", "route", "status"], registry=r)
        self.request_duration = Histogram("gumshoe_http_request_duration_seconds", "Time to "
                                          "answer an HTTP request, by route.", ["route"],
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.inserts = Counter("gumshoe_router_inserts", "Insert batches acknowledged by every "
                               "shard they went to.", registry=r)
        self.queries = Counter("gumshoe_router_queries", "Queries answered.", registry=r)
        self.shard_calls = Histogram("gumshoe_router_shard_request_duration_seconds",
                                     "Time of one request to a shard, by shard and route.",
                                     ["shard", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.shard_errors = Counter("gumshoe_router_shard_errors", "Failed requests to a "
                                    "shard, by shard and kind (unreachable, timeout, status).",
                                    ["shard", "kind"], registry=r)
        self.shard_up = Gauge("gumshoe_router_shard_up", "1 when the shard answered the last "
                              "health check (GET /statusz), else 0.", ["shard"], registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
