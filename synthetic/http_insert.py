"""HTTP insert benchmark: rows/s of `PUT /insert` with 10k-row batches against the real server
process (`python -m gumshoe serve`), with 1 and 2 client threads, per body format: a JSON array
(the original's), NDJSON or CSV.

    python -m synthetic.http_insert [--batches 60] [--threads 1,2] [--durability fsync]
                                    [--formats json,ndjson,csv] [--repeat 1]

Bodies are JSON-encoded before the clock starts (the client's encoding is not the server's
cost); each client thread keeps one keep-alive connection (http.client, little overhead).
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from . import data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workdir: Path, durability: str, memory: bool,
                 insert_workers: int | None = None) -> tuple[subprocess.Popen, int]:
    db = "MEMORY" if memory else str(workdir / "db")
    config = workdir / "config.toml"
    config.write_text(data.config_toml(db, durability=durability))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gumshoe", "serve", "--config", str(config),
                             "--listen", f"127.0.0.1:{port}", "--log-level", "warning",
                             *([] if insert_workers is None
                               else ["--insert-workers", str(insert_workers)])],
                            stdin=subprocess.DEVNULL)
    return proc, wait_ready(proc, port, "server")


def wait_ready(proc: subprocess.Popen, port: int, what: str, timeout: float = 30.0) -> int:
    """Wait (bounded) until `proc` answers GET / on `port`; returns the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                conn.close()
                return port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{what} not ready after {timeout:g} s")


CONTENT_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson",
                 "csv": "text/csv"}


def encode(rows: list[dict[str, object]], fmt: str) -> bytes:
    """One batch's body in `fmt` (before the clock: the client's encoding is not timed)."""
    if fmt == "json":
        return orjson.dumps(rows)
    if fmt == "ndjson":
        return b"\n".join(map(orjson.dumps, rows)) + b"\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def put(conn: http.client.HTTPConnection, body: bytes, fmt: str = "json") -> int:
    conn.request("PUT", "/insert", body, {"Content-Type": CONTENT_TYPES[fmt]})
    r = conn.getresponse()
    payload = r.read()
    if r.status != 200:
        raise RuntimeError(f"insert failed: {r.status} {payload[:200]!r}")
    return int(orjson.loads(payload)["inserted"])


def run(port: int, bodies: list[bytes], threads: int, fmt: str = "json") -> tuple[int, float]:
    """Send every body once, split over `threads` client threads; (rows, seconds)."""
    parts = [bodies[i::threads] for i in range(threads)]
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        barrier.wait(30)
        for body in parts[i]:
            counts[i] += put(conn, body, fmt)
        conn.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait(30)
    t0 = time.perf_counter()
    for w in workers:
        w.join(600)
    return sum(counts), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=60, help="10k-row batches per run")
    p.add_argument("--threads", default="1,2", help="client thread counts, comma-separated")
    p.add_argument("--durability", default="fsync", choices=["fsync", "os", "none"])
    p.add_argument("--memory", action="store_true", help="database_dir = MEMORY")
    p.add_argument("--insert-workers", type=int, default=None,
                   help="the server's --insert-workers (default: its own default)")
    p.add_argument("--formats", default="json", help="body formats, comma-separated: "
                   + ", ".join(CONTENT_TYPES))
    p.add_argument("--repeat", type=int, default=1, help="runs per format and thread count")
    args = p.parse_args(argv)

    spec = data.Spec(rows=(args.batches + 4) * 10_000, hours=24)
    batches = [data.to_rows(c) for c in data.generate(spec)]
    print(f"HTTP insert: {len(batches) - 4} batches of 10k rows, durability={args.durability}, "
          f"{'MEMORY' if args.memory else 'on disk'}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for fmt in args.formats.split(","):
        bodies = [encode(rows, fmt) for rows in batches]
        warmup, bodies = bodies[:4], bodies[4:]
        mb = sum(map(len, bodies)) / len(bodies) / 1e6
        print(f" {fmt} ({mb:.2f} MB per batch):")
        for threads in (int(t) for t in args.threads.split(",")):
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="gumshoe-http-insert-") as tmp:
                    proc, port = start_server(Path(tmp), args.durability, args.memory,
                                              args.insert_workers)
                    try:
                        run(port, warmup, 1, fmt)
                        rows, seconds = run(port, bodies, threads, fmt)
                    finally:
                        proc.send_signal(signal.SIGTERM)
                        status = proc.wait(120)
                print(f"  {threads} client thread(s): {rows / seconds:>10,.0f} rows/s "
                      f"({rows:,} rows in {seconds:.2f} s; server exit {status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
