"""Collect benchmark: beacons/s through `gumshoe serve` and through a funnel in front of it,
driven by `wrk` (Debian package) with keep-alive connections, with p50/p99 latency and CPU
per event; then rows/s of `POST /track` CSV and NDJSON next to `PUT /insert` JSON for the
same 10k-row bodies.

    python -m synthetic.bench_collect [--seconds 10] [--connections 64] [--durability fsync]

Everything runs on loopback, every run is bounded by --seconds. The server and funnel log at
warning level (an access-log line per beacon would be the bottleneck). CPU per event is the
user+system time of the gumshoe processes (not wrk's) over the events they answered. On a
2-core machine wrk takes one core's worth of the budget: the figures are for the whole box.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from gumshoe.config import config_toml

from . import data
from .http_insert import free_port, wait_ready

BEACON_LUA = """
local names = {"home", "cart", "signup", "search", "checkout"}
local countries = {"US", "CA", "DE", "JP"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/pixel.gif?name=" .. names[i % 5 + 1] .. "&country=" ..
    countries[i % 4 + 1] .. "&device=" .. (i % 3) .. "&visits=1&clicks=" .. (i % 7))
end
"""

BODY_LUA = """
wrk.method = "{method}"
wrk.headers["Content-Type"] = "{ctype}"
local f = io.open("{path}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(argv: list[str], port: int, what: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "gumshoe", *argv, "--listen",
                             f"127.0.0.1:{port}", "--log-level", "warning"],
                            stdin=subprocess.DEVNULL)
    wait_ready(proc, port, what)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wrk(url: str, lua: str, seconds: int, connections: int, workdir: Path) -> dict[str, Any]:
    script = workdir / f"wrk{random.randrange(10**6)}.lua"
    script.write_text(lua)
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s",
                          "--latency", "-s", str(script), url], capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def latency(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        return float(m.group(1)) * unit[m.group(2)] if m else float("nan")

    m = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    assert m, out
    requests = int(m.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)",
                                                          out).group(1)),  # type: ignore[union-attr]
            "p50": latency("50"), "p99": latency("99"),
            "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else ""}


def count_rows(port: int) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/query", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return int(orjson.loads(r.read())["results"][0]["rowCount"])


def funnel_drained(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/statusz", timeout=10) as r:
        return bool(orjson.loads(r.read())["spooled_batches"] == 0)


def rows_bodies(n: int, workdir: Path) -> dict[str, Path]:
    rnd = random.Random(7)
    t0 = int(time.time()) - 3600
    rows = [{"at": t0 + rnd.randrange(3600), "name": rnd.choice(["home", "cart", "signup"]),
             "country": rnd.choice(["US", "CA", "DE"]), "device": rnd.randrange(3),
             "visits": 1, "clicks": rnd.randrange(7), "bytes": rnd.randrange(100_000)}
            for _ in range(n)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(rows[0])
    w.writerows(r.values() for r in rows)
    bodies = {"csv": buf.getvalue().encode(), "ndjson": b"\n".join(map(orjson.dumps, rows)),
              "json": orjson.dumps(rows)}
    out = {}
    for name, body in bodies.items():
        out[name] = workdir / f"body.{name}"
        out[name].write_bytes(body)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--durability", default="fsync", choices=["fsync", "os", "none"])
    p.add_argument("--rows", type=int, default=10_000, help="rows per /track and /insert body")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    lines = [(f"# Collect benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
             f"durability {args.durability}, {args.connections} keep-alive connections, "
             f"{args.seconds} s per run)"), "",
             "| run | events/s | p50 ms | p99 ms | CPU us/event | stored | errors |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="gumshoe-bench-collect-") as tmp:
        work = Path(tmp)
        config = work / "server.toml"
        config.write_text(data.config_toml(str(work / "db"), durability=args.durability))
        sport = free_port()
        server = start(["serve", "--config", str(config), "--insert-workers", "0"], sport,
                       "server")
        try:
            c0 = cpu_seconds(server.pid)
            r = wrk(f"http://127.0.0.1:{sport}", BEACON_LUA, args.seconds, args.connections,
                    work)
            cpu = cpu_seconds(server.pid) - c0
            stored = count_rows(sport)
            lines.append(f"| beacons -> serve | {r['rps']:,.0f} | {r['p50']:.2f} | "
                         f"{r['p99']:.2f} | {cpu / max(r['requests'], 1) * 1e6:.0f} | "
                         f"{stored:,} of {r['requests']:,} answered | "
                         f"{r['non2xx']} non-2xx {r['socket_errors']} |")
            fconfig = work / "funnel.toml"
            fcfg = data.config(str(work / "fdb"), durability=args.durability)
            fconfig.write_text(config_toml(fcfg.replace(funnel=dataclasses.replace(
                fcfg.funnel, batch_rows=20_000, batch_wait=0.1))))
            fport = free_port()
            funnel = start(["funnel", "--config", str(fconfig), "--upstream",
                            f"127.0.0.1:{sport}"], fport, "funnel")
            try:
                before = count_rows(sport)
                c0, s0 = cpu_seconds(funnel.pid), cpu_seconds(server.pid)
                r = wrk(f"http://127.0.0.1:{fport}", BEACON_LUA, args.seconds,
                        args.connections, work)
                fcpu = cpu_seconds(funnel.pid) - c0
                deadline = time.monotonic() + 120
                while not funnel_drained(fport) and time.monotonic() < deadline:
                    time.sleep(0.2)
                scpu = cpu_seconds(server.pid) - s0
                stored = count_rows(sport) - before
                n = max(r["requests"], 1)
                lines.append(f"| beacons -> funnel -> serve | {r['rps']:,.0f} | "
                             f"{r['p50']:.2f} | {r['p99']:.2f} | {fcpu / n * 1e6:.0f} funnel + "
                             f"{scpu / n * 1e6:.0f} server | {stored:,} of {r['requests']:,} "
                             f"answered | {r['non2xx']} non-2xx {r['socket_errors']} |")
            finally:
                stop(funnel)
            lines += ["", (f"Row bodies of {args.rows:,} rows, 2 keep-alive connections "
                      "(server decodes in-process: --insert-workers 0):"), "",
                      "| route | format | body bytes | rows/s | p50 ms | p99 ms |",
                      "|---|---|---|---|---|---|"]
            bodies = rows_bodies(args.rows, work)
            for route, method, fmt, ctype in (
                    ("/insert", "PUT", "json", "application/json"),
                    ("/track", "POST", "csv", "text/csv"),
                    ("/track", "POST", "ndjson", "application/x-ndjson"),
                    ("/insert", "PUT", "csv", "text/csv")):
                lua = BODY_LUA.format(method=method, ctype=ctype, path=bodies[fmt])
                r = wrk(f"http://127.0.0.1:{sport}{route}", lua, args.seconds, 2, work)
                lines.append(f"| {method} {route} | {fmt} | {bodies[fmt].stat().st_size:,} | "
                             f"{r['rps'] * args.rows:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} |")
        finally:
            stop(server)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
