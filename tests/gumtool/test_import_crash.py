"""kill -9 of a real `gumtool import` process at random moments, then a re-run with the same
arguments: every line is imported exactly once (the database equals one holding the rows
inserted once), and no worker process outlives the killed import."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gumshoe.bulk import DirLock
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.errors import DBLockedError

from .helpers import dump, make_rows, write_config


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.update(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _write_inputs(tmp_path: Path, rows: list[dict[str, Any]]) -> list[Path]:
    paths = []
    for k in range(4):
        body = b"".join(json.dumps(r).encode() + b"\n" for r in rows[k::4])
        path = tmp_path / f"part{k}.jsonl" if k % 2 else tmp_path / f"part{k}.jsonl.gz"
        path.write_bytes(gzip.compress(body, 1) if path.suffix == ".gz" else body)
        paths.append(path)
    return paths


def _kill_and_rerun(tmp_path: Path, n_rows: int, kills: int, seed: int,
                    interrupt_first: bool = False) -> None:
    rows = make_rows(n_rows, seed)
    paths = _write_inputs(tmp_path, rows)
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    argv = [sys.executable, "-m", "gumtool", "import", "--config", str(cfg),
            *map(str, paths), "--parallelism", "2", "--chunk-size", "48KB",
            "--flush-rows", "7000", "-q"]
    rnd = random.Random(seed)
    killed = 0
    for round_ in range(kills):
        sig = signal.SIGINT if interrupt_first and round_ == 0 else signal.SIGKILL
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + rnd.uniform(0.3 if sig == signal.SIGKILL else 0.9, 1.5)
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            workers |= _children(proc.pid)
            time.sleep(0.02)
        if proc.poll() is not None:  # finished before the kill: nothing left to test
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            break
        proc.send_signal(sig)
        status = proc.wait(60)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if sig == signal.SIGINT and status == 130:  # Ctrl-C: a clean stop between batches
            assert "re-run with the same arguments to go on" in err, err
        killed += 1
        end = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "a worker outlived the killed import"
        if (tmp_path / "db").exists():
            try:
                DirLock(tmp_path / "db").release()
            except DBLockedError:
                pytest.fail("the killed import's lock is still held")
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    ref = write_config(tmp_path / "ref.toml", tmp_path / "ref")
    with DB(load_config(ref)) as db:
        for i in range(0, len(rows), 10_000):
            db.insert(rows[i:i + 10_000])
    got = dump(cfg)
    assert sum(r["rowCount"] for r in got) == n_rows
    assert got == dump(ref)
    print(f"killed {killed} times")


def test_kill_9_then_rerun_imports_each_line_once(tmp_path: Path) -> None:
    _kill_and_rerun(tmp_path, 60_000, kills=3, seed=31, interrupt_first=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [32, 33, 34])
def test_kill_9_many_times(tmp_path: Path, seed: int) -> None:
    _kill_and_rerun(tmp_path, 200_000, kills=5, seed=seed)
