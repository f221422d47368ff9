"""The funnel's spool (collect/spool.py): replay after a stop or a crash, cuts that survive
restarts unchanged, trimming of forwarded files, torn tails, a full spool, the lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gumshoe.collect.spool import Spool
from gumshoe.errors import CorruptDataError, DBLockedError, OverloadedError


def spool(path: Path, **kw: object) -> Spool:
    s = Spool(path, kw.pop("limit", 10**9), **kw)  # type: ignore[arg-type]
    s.open()
    return s


def add(s: Spool, payload: bytes, rows: int = 1, client_id: str | None = None) -> int:
    seq = s.append(payload, rows, client_id)
    asyncio.run(s.commit(seq))
    return seq


def test_replay_gives_back_what_is_not_forwarded(tmp_path: Path) -> None:
    s = spool(tmp_path)
    fid = s.funnel
    for i in range(5):
        add(s, b"p%d" % i, rows=i + 1)
    cut = asyncio.run(s.cut(s.pending[1].seq))
    s.ack(cut)
    assert [e.rows for e in s.pending] == [3, 4, 5]
    s.close()  # (a kill -9 leaves the same files: every append was fsync'd)
    s = spool(tmp_path)
    assert s.funnel == fid
    assert [e.rows for e in s.pending] == [3, 4, 5]
    assert s.read(list(s.pending)) == [b"p2", b"p3", b"p4"]
    assert s.planned is None and s.next_batch == cut.k + 1
    s.close()


def test_a_cut_not_acknowledged_is_replayed_with_the_same_rows_and_number(tmp_path: Path
                                                                         ) -> None:
    s = spool(tmp_path)
    for i in range(4):
        add(s, b"x", rows=1)
    cut = asyncio.run(s.cut(s.pending[2].seq))  # batch k = the first three, then a crash
    add(s, b"late")
    s.close()
    s = spool(tmp_path)
    assert s.planned is not None
    assert (s.planned.k, s.planned.last, s.planned.funnel) == (cut.k, cut.last, cut.funnel)
    assert len(s.pending) == 5
    s.ack(s.planned)
    assert s.read(list(s.pending)) == [b"x", b"late"]
    s.close()


def test_forwarded_files_are_deleted_oldest_first(tmp_path: Path) -> None:
    s = spool(tmp_path, segment_bytes=200)
    for _ in range(20):
        add(s, b"y" * 50)
    files = sorted(tmp_path.glob("spool.*.log"))
    assert len(files) > 5
    s.ack(asyncio.run(s.cut(s.pending[9].seq)))
    left = sorted(tmp_path.glob("spool.*.log"))
    assert 0 < len(left) < len(files) and left == files[-len(left):]
    s.ack(asyncio.run(s.cut(s.pending[-1].seq)))
    assert not s.pending and s.pending_bytes == 0
    s.close()
    s = spool(tmp_path, segment_bytes=200)
    assert not s.pending
    s.close()


def test_client_batch_ids_outlive_trimmed_files(tmp_path: Path) -> None:
    s = spool(tmp_path, segment_bytes=100)
    add(s, b"z" * 80, client_id="client-1")
    for _ in range(3):
        add(s, b"z" * 80)
    s.ack(asyncio.run(s.cut(s.pending[-1].seq)))
    s.close()
    s = spool(tmp_path, segment_bytes=100)
    assert s.seen("client-1") is not None and s.seen("client-2") is None
    s.close()


def test_torn_tail_is_cut_off_and_damage_elsewhere_stops(tmp_path: Path) -> None:
    s = spool(tmp_path)
    add(s, b"ok")
    s.close()
    active = max(tmp_path.glob("spool.*.log"))
    with open(active, "ab") as f:
        f.write(b"\x07\x00\x00\x00garbage")  # a record cut short by a crash
    s = spool(tmp_path)
    assert [e.rows for e in s.pending] == [1]
    add(s, b"after")
    s.close()
    first = min(tmp_path.glob("spool.*.log"))
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # a flipped byte in a file that is not the last one
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="corrupt spool"):
        spool(tmp_path)


def test_full_spool_refuses_with_retry_after(tmp_path: Path) -> None:
    s = spool(tmp_path, limit=300)
    add(s, b"a" * 200)
    with pytest.raises(OverloadedError, match=r"spool is full.*funnel.spool_size") as e:
        s.append(b"b" * 200, 1, None)
    assert e.value.headers["Retry-After"] == "5"
    s.ack(asyncio.run(s.cut(s.pending[-1].seq)))
    add(s, b"b" * 200)
    s.close()


def test_one_funnel_per_spool(tmp_path: Path) -> None:
    s = spool(tmp_path)
    with pytest.raises(DBLockedError, match="in use by another funnel"):
        spool(tmp_path)
    s.close()
