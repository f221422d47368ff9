"""Router benchmark: HTTP insert rows/s and query latency through `gumshoe router` over two
shard servers, beside one lone server holding the same rows, in the same run.

    python -m synthetic.bench_router [--rows 2000000] [--threads 1,2] [--repeats 5]

Each query's answer through the router is checked against the lone server's (exit 1 if one
differs). Shards and the lone server run with durability "os" on disk. Loopback only; every
wait is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from . import data, queries
from .http_insert import free_port, run, start_server, wait_ready

FLUSH_WAIT_S = 12.0


def start_router(workdir: Path, shard_ports: list[int]) -> tuple[subprocess.Popen, int]:
    config = workdir / "router.toml"
    config.write_text(data.config_toml("MEMORY"))
    port = free_port()
    shards = ",".join(f"127.0.0.1:{p}" for p in shard_ports)
    proc = subprocess.Popen([sys.executable, "-m", "gumshoe", "router", "--config", str(config),
                             "--shards", shards, "--listen", f"127.0.0.1:{port}",
                             "--log-level", "warning"], stdin=subprocess.DEVNULL)
    return proc, wait_ready(proc, port, "router")


def query(port: int, q: dict, repeats: int) -> tuple[list[float], list[dict]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = orjson.dumps(q)
    times, rows = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conn.request("POST", "/query", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = r.read()
        times.append(time.perf_counter() - t0)
        if r.status != 200:
            raise RuntimeError(f"query failed: {r.status} {payload[:300]!r}")
        rows = orjson.loads(payload)["results"]
    conn.close()
    return times, rows


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    spec = data.Spec(rows=args.rows, hours=48)
    bodies = [orjson.dumps(data.to_rows(c)) for c in data.generate(spec)]
    print(f"router vs lone server: {args.rows:,} rows in {len(bodies)} JSON batches of 10k")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="gumshoe-bench-router-") as tmp:
        root = Path(tmp)
        for threads in (int(t) for t in args.threads.split(",")):
            rates = {}
            for setup in ("lone", "router"):
                work = root / f"{setup}-{threads}"
                work.mkdir()
                procs, port = [], 0
                if setup == "lone":
                    lone, port = start_server(work, "os", memory=False)
                    procs = [lone]
                else:
                    shard_ports = []
                    for i in range(2):
                        d = work / f"shard{i}"
                        d.mkdir()
                        proc, sp = start_server(d, "os", memory=False)
                        procs.append(proc)
                        shard_ports.append(sp)
                    router, port = start_router(work, shard_ports)
                    procs.insert(0, router)
                try:
                    n, seconds = run(port, bodies, threads)
                    rates[setup] = n / seconds
                    if threads == 1:
                        rates[setup + "_port"] = port
                        rates[setup + "_procs"] = procs
                        continue  # keep serving for the queries below
                finally:
                    if threads != 1:
                        stop(*procs)
            print(f"  insert, {threads} client thread(s): lone {rates['lone']:>10,.0f} rows/s, "
                  f"router {rates['router']:>10,.0f} rows/s "
                  f"({rates['router'] / rates['lone']:.0%} of lone)")
            if threads != 1:
                continue
            # Both sides flushed (the default flush_interval is 10 s): compare the same layout.
            time.sleep(FLUSH_WAIT_S)
            print(f"  {'query':<18}{'lone ms':>10}{'router ms':>11}{'overhead':>10}")
            for q in queries.queries(spec):
                qj = queries.to_json(q)
                lt, lrows = query(rates["lone_port"], qj, args.repeats)
                rt, rrows = query(rates["router_port"], qj, args.repeats)
                lm, rm = statistics.median(lt) * 1000, statistics.median(rt) * 1000
                ok = lrows == rrows
                failures += not ok
                print(f"  {q.name:<18}{lm:>10.1f}{rm:>11.1f}{rm / lm - 1:>+10.0%}"
                      f"{'' if ok else '  WRONG ANSWER'}")
            stop(*rates["lone_procs"], *rates["router_procs"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
