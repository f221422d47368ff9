"""The archive across kill -9: a real server process (`python -m gumshoe serve`, durability
fsync, flushes every 20 ms, archive files rotating every 64 KB) takes numbered batches from
several clients and is SIGKILLed at random moments (during start-up replay too). After each
kill, before any restart, the archive read from outside holds every acknowledged batch exactly
once and no batch in part; after the database recovers (log replay), the archive holds exactly
the batches the database holds, each once."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from gumshoe.config import load_config
from gumshoe.db import DB

from ..crash.helpers import config_text, problems, totals
from ..crash.test_crash import (
    ENV,
    REPO,
    Ledger,
    free_port,
    http_clients,
    kill_delay,
    kill_group,
    wait_listening,
)
from .helpers import archive_rows

ARCHIVE = '\n[archive]\nenabled = true\nrotate = "64KB"\n'


def archive_totals(directory: Path) -> dict[str, tuple[int, int]]:
    """Per batch value: (rows, summed v) in the archive, read as GET /raw reads it."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in archive_rows(directory) if directory.exists() else []:
        t = out[row["batch"]]
        t[0] += 1
        t[1] += row["v"]
    return {k: (a, b) for k, (a, b) in out.items()}


def check(ledger: Ledger, cfg: Path, arch: Path) -> None:
    bad = problems(archive_totals(arch), ledger.acked, ledger.attempted)
    assert bad == [], f"archive after the kill: {bad[:5]}"
    db = DB(load_config(cfg))  # recovery: the log's unarchived batches are archived now
    try:
        held = totals(db)
    finally:
        db.close(flush=False)
    assert archive_totals(arch) == held, "the archive and the database disagree"


def crash_server(tmp_path: Path, cycles: int, seed: int, max_delay: float) -> Ledger:
    rng = random.Random(seed)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path / "db", "fsync", flush_interval="20ms",
                               segment_size="64KB") + ARCHIVE)
    arch = tmp_path / "db" / "archive"
    ledger = Ledger()
    for _ in range(cycles):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "gumshoe", "serve", "--config", str(cfg),
                                 "--listen", f"127.0.0.1:{port}"], env=ENV, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        clients: list[threading.Thread] = []
        stop = threading.Event()
        try:
            early, delay = kill_delay(rng, max_delay)
            if not early:
                if not wait_listening(port, proc):
                    kill_group(proc)
                    raise AssertionError("server did not start: " +
                                         proc.communicate(timeout=30)[1].decode())
                before = len(ledger.acked)
                clients = http_clients(port, ledger.plan(300), ledger, 4, stop)
                deadline = time.monotonic() + 30
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
        check(ledger, cfg, arch)
    return ledger


def test_crash_archive_quick(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    ledger = crash_server(tmp_path, cycles=4, seed=seed, max_delay=0.8)
    print(f"seed={seed} acked={len(ledger.acked)} attempted={len(ledger.attempted)}")
    assert ledger.acked


@pytest.mark.slow
def test_crash_archive_long(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    ledger = crash_server(tmp_path, cycles=25, seed=seed, max_delay=1.5)
    print(f"seed={seed} acked={len(ledger.acked)} attempted={len(ledger.attempted)}")
    assert len(ledger.acked) > 100
