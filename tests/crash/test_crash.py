"""Crash tests with real processes: insert numbered batches from several threads, SIGKILL the
process at random moments (during start-up recovery, inserts and flushes: the flush interval is
tiny), restart, and check that every acknowledged batch is counted exactly once and no other
batch is half applied. Unacknowledged batches are retried with the same batch id on the next
run, so a batch that was durable but not acknowledged must be answered as a duplicate.

Two variants: the library (tests/crash/child.py) and the HTTP server (`python -m gumshoe serve`,
X-Batch-Id). Quick versions run by default; long ones are marked slow (--runslow).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from gumshoe.config import load_config
from gumshoe.db import DB
from tests.crash.helpers import batch_rows, config_text, problems, totals

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and any helper processes it started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class Run:
    """One child process; a reader thread collects its stdout lines."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=ENV, cwd=REPO, start_new_session=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cut off by the kill: not an acknowledgement
            line = raw.decode().strip()
            self.lines.append(line)
            if line == "READY":
                self.ready.set()

    def wait_for(self, wanted: Callable[[str], bool], timeout: float) -> bool:
        """Whether a line satisfying `wanted` came within `timeout` seconds (polled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(wanted(line) for line in list(self.lines)):
                return True
            if self.proc.poll() is not None and not self.reader.is_alive():
                return any(wanted(line) for line in list(self.lines))
            time.sleep(0.01)
        return False

    def kill(self) -> str:
        kill_group(self.proc)
        self.proc.wait(30)
        self.reader.join(30)
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


class Ledger:
    """What the clients know: batches handed out and batches acknowledged."""

    def __init__(self) -> None:
        self.attempted: set[int] = set()
        self.acked: set[int] = set()
        self.duplicates = 0
        self.next = 0

    def plan(self, new: int) -> list[int]:
        """Unacknowledged batches first (retries, same id), then new ones."""
        retry = sorted(self.attempted - self.acked)
        fresh = list(range(self.next, self.next + new))
        self.next += new
        self.attempted.update(fresh)
        return retry + fresh

    def verify(self, db_dir: Path, cfg_path: Path) -> None:
        db = DB(load_config(cfg_path))
        try:
            bad = problems(totals(db), self.acked, self.attempted)
        finally:
            db.close(flush=False)
        assert bad == [], f"{len(bad)} problems in {db_dir}, e.g. {bad[:5]}"


def write_config(tmp_path: Path, durability: str) -> tuple[Path, Path]:
    db_dir = tmp_path / "db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(db_dir, durability, flush_interval="20ms", segment_size="64KB"))
    return db_dir, cfg


def kill_delay(rng: random.Random, max_delay: float) -> tuple[bool, float]:
    """(kill before the child is ready?, seconds): sometimes during start-up recovery."""
    if rng.random() < 0.15:
        return True, rng.uniform(0.0, 0.3)
    return False, rng.uniform(0.02, max_delay)


def crash_library(tmp_path: Path, cycles: int, seed: int, durability: str = "fsync",
                  max_delay: float = 0.8) -> Ledger:
    rng = random.Random(seed)
    db_dir, cfg = write_config(tmp_path, durability)
    ledger = Ledger()
    batches_file = tmp_path / "batches.json"
    for _cycle in range(cycles):
        plan = ledger.plan(400)
        batches_file.write_text(json.dumps(plan))
        run = Run([sys.executable, str(CHILD), str(cfg), str(batches_file), "4"])
        early, delay = kill_delay(rng, max_delay)
        if not early:
            assert run.ready.wait(60), f"child not ready: {run.kill()}"
        time.sleep(delay)
        stderr = run.kill()
        acks = [line.split() for line in run.lines if line.startswith("ACK ")]
        assert "Traceback" not in stderr, stderr
        for _, b, dup in acks:
            ledger.acked.add(int(b))
            ledger.duplicates += int(dup)
        ledger.verify(db_dir, cfg)
    return ledger


def test_crash_library_quick(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    ledger = crash_library(tmp_path, cycles=6, seed=seed)
    print(f"seed={seed} acked={len(ledger.acked)} attempted={len(ledger.attempted)} "
          f"duplicates={ledger.duplicates}")
    assert ledger.acked  # the runs did something


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_crash_library_long(tmp_path: Path, durability: str) -> None:
    seed = random.randrange(1 << 30)
    ledger = crash_library(tmp_path, cycles=40, seed=seed, durability=durability,
                           max_delay=1.5)
    print(f"seed={seed} acked={len(ledger.acked)} attempted={len(ledger.attempted)} "
          f"duplicates={ledger.duplicates}")
    assert len(ledger.acked) > 100


# -- the HTTP server --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def http_clients(port: int, plan: list[int], ledger: Ledger, threads: int,
                 stop: threading.Event) -> list[threading.Thread]:
    import httpx

    it = iter(plan)
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as c:
            while not stop.is_set():
                with lock:
                    b = next(it, None)
                if b is None:
                    return
                try:
                    r = c.put("/insert", content=json.dumps(batch_rows(b)),
                              headers={"X-Batch-Id": f"b{b}"})
                except httpx.HTTPError:
                    return  # the server was killed
                if r.status_code != 200:
                    return
                body: dict[str, Any] = r.json()
                with lock:
                    ledger.acked.add(b)
                    ledger.duplicates += int(bool(body.get("duplicate")))

    ts = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


def crash_server(tmp_path: Path, cycles: int, seed: int, max_delay: float = 0.8) -> Ledger:
    rng = random.Random(seed)
    db_dir, cfg = write_config(tmp_path, "fsync")
    ledger = Ledger()
    for _ in range(cycles):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "gumshoe", "serve", "--config", str(cfg),
                                 "--listen", f"127.0.0.1:{port}"], env=ENV, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            early, delay = kill_delay(rng, max_delay)
            stop = threading.Event()
            clients: list[threading.Thread] = []
            if not early:
                if not wait_listening(port, proc):
                    kill_group(proc)
                    raise AssertionError("server did not start: " +
                                         proc.communicate(timeout=30)[1].decode())
                before = len(ledger.acked)
                clients = http_clients(port, ledger.plan(400), ledger, 4, stop)
                deadline = time.monotonic() + 30  # the random delay starts at the first ack
                while len(ledger.acked) == before and time.monotonic() < deadline and \
                        any(t.is_alive() for t in clients):
                    time.sleep(0.01)
            time.sleep(delay)
        finally:
            kill_group(proc)
            _, err = proc.communicate(timeout=30)
        stop.set()
        for t in clients:
            t.join(30)
        assert not any(t.is_alive() for t in clients)
        assert b"Traceback" not in err, err.decode()
        ledger.verify(db_dir, cfg)
    return ledger


def test_crash_server_quick(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    ledger = crash_server(tmp_path, cycles=4, seed=seed)
    print(f"seed={seed} acked={len(ledger.acked)} attempted={len(ledger.attempted)} "
          f"duplicates={ledger.duplicates}")
    assert ledger.acked


@pytest.mark.slow
def test_crash_server_long(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    ledger = crash_server(tmp_path, cycles=30, seed=seed, max_delay=1.5)
    print(f"seed={seed} acked={len(ledger.acked)} attempted={len(ledger.attempted)} "
          f"duplicates={ledger.duplicates}")
    assert len(ledger.acked) > 100
