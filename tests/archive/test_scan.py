"""Reading a time range back (gumshoe/rawscan.py) against a naive reference: for random
batches (late data, batches spanning days, ties), ranges, window sizes and alignments, the
rows come out exactly once, in (timestamp, arrival) order, however the range is cut into
windows and however many rows are set aside for later windows."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe.archive import list_files
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.rawformat import TIME_MAX
from gumshoe.rawscan import scan_directory

from .helpers import T0, archive_rows, config, sorted_rows


def make_batches(seed: int, count: int, wide: float) -> list[list[dict[str, Any]]]:
    rnd = random.Random(seed)
    out = []
    for b in range(count):
        n = rnd.randrange(1, 40)
        base = T0 + rnd.choice([0, 3600, rnd.randrange(0, 10 * 86400)])  # ties across batches
        spread = rnd.randrange(0, 20 * 86400) if rnd.random() < wide else rnd.randrange(0, 120)
        out.append([{"at": base + rnd.randrange(0, spread + 1) if rnd.random() < 0.9 else base,
                     "name": rnd.choice(["a", "b", None, "ü"]), "visits": rnd.randrange(3),
                     "clicks": b} for _ in range(n)])
    return out


def writer(directory: Path, rotate: int) -> DB:
    """A database that keeps no rows of its own (MEMORY) and writes its archive there (its
    config file beside it)."""
    return DB(load_config(config(directory.parent, "MEMORY",
                                 archive=f'dir = "{directory}"\nrotate = "{rotate}B"')))


def write_archive(directory: Path, batches: list[list[dict[str, Any]]], rotate: int) -> None:
    with writer(directory, rotate) as db:
        for rows in batches:
            db.insert(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), count=st.integers(1, 30),
       wide=st.sampled_from([0.0, 0.3, 1.0]), window=st.integers(1, 300),
       align=st.sampled_from([1, 60, 3600, 86400]), rotate=st.sampled_from([500, 5000, 10**6]),
       bounds=st.tuples(st.integers(-1, 30 * 86400), st.integers(0, 30 * 86400)))
def test_a_range_reads_back_in_order_exactly_once(seed: int, count: int, wide: float,
                                                  window: int, align: int, rotate: int,
                                                  bounds: tuple[int, int]) -> None:
    batches = make_batches(seed, count, wide)
    lo, hi = sorted(bounds)
    lo_excl = lo if lo < 0 else T0 + lo
    hi_incl = T0 + hi
    with tempfile.TemporaryDirectory() as d:
        a = Path(d) / "a"
        write_archive(a, batches, rotate)
        got = archive_rows(a, lo_excl, hi_incl, window_rows=window, align=align)
        everything = archive_rows(a, window_rows=window)
    every_row = [r for rows in batches for r in rows]
    assert got == [r for r in sorted_rows(every_row) if lo_excl < r["at"] <= hi_incl]
    assert everything == sorted_rows(every_row)


def test_rows_set_aside_go_through_temporary_files(tmp_path: Path) -> None:
    """Batches that each span the whole range: every batch but the first windows' is read
    once and its later rows spilled; the scratch directory is gone afterwards."""
    batches = make_batches(1, 40, 1.0)
    write_archive(tmp_path / "a", batches, 4000)
    assert len(list_files(tmp_path / "a")[0]) > 1
    scan = scan_directory(tmp_path / "a", -1, TIME_MAX, scratch=tmp_path, window_rows=20)
    assert len(scan.windows()) > 10
    n = 0
    spilled = False
    for chunk in scan.chunks():
        n += chunk.n
        spilled |= any(p.name.startswith(".raw-") for p in tmp_path.iterdir())
    assert spilled and n == sum(map(len, batches))
    assert not any(p.name.startswith(".raw-") for p in tmp_path.iterdir())


def test_a_reader_beside_a_writer_sees_whole_records_only(tmp_path: Path) -> None:
    """An archive being written (a torn record at the end of its active file): a reader from
    outside stops before it and changes nothing."""
    batches = make_batches(2, 5, 0.0)
    db = writer(tmp_path / "a", 10**6)
    try:
        for rows in batches:
            db.insert(rows)
        (active,) = list_files(tmp_path / "a")[1]
        size = active.path.stat().st_size
        with open(active.path, "ab") as f:
            f.write(b"\x10\x00\x00\x00partial")
        assert archive_rows(tmp_path / "a") == sorted_rows([r for b in batches for r in b])
        assert active.path.stat().st_size == size + 11
    finally:
        db.close()
