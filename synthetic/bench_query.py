"""Query benchmark: every query shape through gumshoe (in-engine, and over HTTP when a server
URL is given), DuckDB and the ideal kernel, interleaved run by run; median and p90 latency,
rolled-up rows/s, ratios. Every engine's answer is compared with DuckDB's in the same run.
"""

from __future__ import annotations

import http.client
import json
import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from gumshoe.service import query_rows

from . import data, ideal, queries
from .duck import Duck
from .queries import Query, Row

Engine = Callable[[Query], list[Row]]


def p90(times: list[float]) -> float:
    s = sorted(times)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def check_stored(tbl: ideal.Table, ref_dir: Path) -> str | None:
    """Compare the stored rolled-up table with the ideal roll-up of the raw data (saved per
    hour by the ingest benchmark). None when equal, else what differs."""
    files = sorted(ref_dir.glob("hour*.npz"))
    if len(files) != len(tbl.starts):
        return f"{len(tbl.starts)} stored intervals, reference has {len(files)}"
    def lut(column: str, values: list[Any]) -> np.ndarray:  # generator code -> stored code
        codes = [tbl.encode[column](v) for v in values]
        return np.array([-1 if c is None else c for c in codes], np.int64)

    name_lut = lut("name", data.NAMES)
    country_lut = lut("country", [*data.COUNTRIES, None])
    for i, f in enumerate(files):
        lo, hi = int(tbl.offsets[i]), int(tbl.offsets[i + 1])
        with np.load(f) as z:
            ref = {k: z[k] for k in z.files}
        if len(ref["count"]) != hi - lo:
            return (f"interval {int(tbl.starts[i])}: {hi - lo} stored rows, reference "
                    f"{len(ref['count'])}")
        radix = (tbl.cards["country"], tbl.cards["device"])
        skey = ((tbl.cols["name"][lo:hi].astype(np.int64) * radix[0]
                 + tbl.cols["country"][lo:hi]) * radix[1] + tbl.cols["device"][lo:hi])
        rkey = ((name_lut[ref["name"]] * radix[0] + country_lut[ref["country"]]) * radix[1]
                + ref["device"])
        so, ro = np.argsort(skey), np.argsort(rkey)
        if not np.array_equal(skey[so], rkey[ro]):
            return f"interval {int(tbl.starts[i])}: stored dimension keys differ"
        for col in ("count", "visits", "clicks", "bytes"):
            if not np.array_equal(tbl.cols[col][lo:hi][so], ref[col][ro]):
                return f"interval {int(tbl.starts[i])}: column {col} differs"
    return None


# -- HTTP ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m gumshoe serve` on a loopback port, over an existing database directory."""

    def __init__(self, config_path: Path, log_path: Path, cwd: Path | None = None,
                 timeout: float = 120.0) -> None:
        self.port = free_port()
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gumshoe", "serve", "--config", str(config_path),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/statusz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not answer /statusz in {timeout}s")
            time.sleep(0.2)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def answer(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The whole JSON answer of POST /query (results, granularity, ...)."""
        self.conn.request("POST", "/query", body=json.dumps(obj),
                          headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
        out: dict[str, Any] = json.loads(body)
        return out

    def query(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        return self.answer(obj)["results"] or []

    def memory(self) -> dict[str, float]:
        """The server's VmRSS, VmHWM (peak), RssAnon and RssFile in MiB."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
        return out

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of GET /metrics (None: not there)."""
        self.conn.request("GET", "/metrics")
        text = self.conn.getresponse().read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- the benchmark ------------------------------------------------------------------------------
def engines(db: Any, tbl: ideal.Table, duck: Duck, pool: ThreadPoolExecutor
            ) -> dict[str, Engine]:
    """gumshoe in-engine (`DB.query`), DuckDB and the ideal kernel."""
    return {
        "gumshoe": lambda q: queries.normalize(q, query_rows(db, queries.to_json(q))),
        "duckdb": duck.run,
        "ideal": lambda q: ideal.run(q, tbl, pool),
    }


def http_engine(server: Server) -> Engine:
    """gumshoe over HTTP: `POST /query` to a running server."""
    return lambda q: queries.normalize(q, server.query(queries.to_json(q)))


def run(qs: list[Query], eng: dict[str, Engine], rows: int, repeats: int,
        budget_s: float = 60.0, progress: Any = None,
        expected: dict[str, list[Row]] | None = None
        ) -> tuple[list[dict[str, Any]], list[str]]:
    """Time every query on every engine (one warm-up run each, whose answer is checked against
    DuckDB's, then `repeats` interleaved timed runs, fewer if a query would exceed
    `budget_s`). Returns the per-query results and the list of failures. `expected` holds
    DuckDB's answers by query name: filled when "duckdb" is among the engines, else used."""
    expected = {} if expected is None else expected
    results, failures = [], []
    for q in qs:
        answers: dict[str, list[Row]] = {}
        first: dict[str, float] = {}
        for name, fn in eng.items():
            t = time.perf_counter()
            try:
                answers[name] = fn(q)
            except Exception as e:  # a crash is a failure of that engine, not of the suite
                failures.append(f"{q.name}: {name} raised {type(e).__name__}: {e}")
            first[name] = time.perf_counter() - t
        if "duckdb" in answers:
            expected[q.name] = answers["duckdb"]
        want = expected.get(q.name)
        if want is None:
            failures.append(f"{q.name}: no DuckDB answer to check against")
        entry: dict[str, Any] = {"query": q.name, "json": queries.to_json(q),
                                 "sql": queries.to_sql(q), "groups": len(want or []),
                                 "low_cardinality": q.low_cardinality, "engines": {}}
        for name, got in answers.items():
            if name != "duckdb" and want is not None:
                problem = queries.diff(q, got, want)
                if problem:
                    failures.append(f"{q.name}: {name} != duckdb: {problem}")
        per_run = sum(first.values())
        n = max(1, min(repeats, int(budget_s / max(per_run, 1e-9))))
        times: dict[str, list[float]] = {name: [] for name in answers}
        for _ in range(n):
            for name in answers:
                t = time.perf_counter()
                eng[name](q)
                times[name].append(time.perf_counter() - t)
        for name, ts in times.items():
            med = float(np.median(ts))
            entry["engines"][name] = {"median_ms": 1e3 * med, "p90_ms": 1e3 * p90(ts),
                                      "min_ms": 1e3 * min(ts),
                                      "runs": len(ts), "rows_per_s": rows / med if med else None}
        e = entry["engines"]
        if "gumshoe" in e:
            g = e["gumshoe"]["median_ms"]
            entry["duckdb_over_gumshoe"] = e["duckdb"]["median_ms"] / g if "duckdb" in e else None
            entry["gumshoe_over_ideal"] = g / e["ideal"]["median_ms"] if "ideal" in e else None
        results.append(entry)
        if progress:
            times_text = "  ".join(f"{k} {v['median_ms']:.1f}ms" for k, v in e.items())
            progress(f"  query {q.name:<16} {times_text}")
    return results, failures

