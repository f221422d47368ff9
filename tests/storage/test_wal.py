"""wal.py: record framing, payload round trip, torn tail vs mid-log corruption, group commit,
durability modes, rolling and trimming, batch-id memory."""

from __future__ import annotations

import errno
import logging
import struct
import threading
import zlib
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gumshoe import fileio
from gumshoe.block import Block
from gumshoe.errors import CorruptDataError, StorageFailedError
from gumshoe.layout import wal_filename
from gumshoe.wal import HEADER, WriteAheadLog, decode_payload, encode_payload, frame

if TYPE_CHECKING:
    from pathlib import Path


def make_block(n: int, tag: str = "x", nil_every: int = 0) -> tuple[np.ndarray, Block]:
    """Timestamps and an encoded block: string dimension "s" (codes), numeric "u", metrics."""
    nil = None
    if nil_every:
        nil = np.zeros(n, bool)
        nil[::nil_every] = True
    codes = (np.arange(n) % 3).astype(np.uint16)
    if nil is not None:
        codes[nil] = 0
    off = len(tag)
    return (np.arange(n, dtype=np.int64) + 1000,
            Block(n, np.arange(n, dtype=np.int64) + 1, {"s": codes, "u": np.arange(
                n, dtype=np.uint8)}, {"s": nil, "u": None},
                {"m": np.arange(n, dtype=np.int64) * 3 + off, "f": np.linspace(0, 1, n)}))


def put(wal: WriteAheadLog, batch_id: str | None, n: int, tag: str = "x",
        new: dict[str, list[str]] | None = None) -> int:
    ts, block = make_block(n, tag)
    return wal.append(batch_id, ts, block, new or {}, {"s": 3})


def assert_blocks_equal(a: Block, b: Block) -> None:
    assert a.n == b.n
    np.testing.assert_array_equal(a.count, b.count)
    for k in ("dims", "metrics"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.keys() == y.keys()
        for name, v in x.items():
            assert y[name].dtype == v.dtype
            np.testing.assert_array_equal(y[name], v)
    for name, v in a.nils.items():
        assert (v is None) == (b.nils[name] is None)
        if v is not None:
            np.testing.assert_array_equal(b.nils[name], v)


def open_log(d: Path, mode: str = "fsync", flushed: int = 0, **kw: object
             ) -> tuple[WriteAheadLog, list]:
    wal = WriteAheadLog(d, mode, 3600.0, **kw)  # type: ignore[arg-type]
    return wal, list(wal.recover(flushed))


def log_files(d: Path) -> list[Path]:
    return sorted(d.glob("wal.*.log"))


# -- framing ----------------------------------------------------------------------------------
@given(st.integers(0, 40), st.sampled_from([0, 2, 5]), st.one_of(st.none(), st.text(max_size=20)),
       st.dictionaries(st.sampled_from(["s", "t"]), st.lists(st.text(max_size=5), max_size=3)),
       st.dictionaries(st.sampled_from(["s", "t"]), st.integers(0, 2**32)))
def test_payload_round_trip(n: int, nil_every: int, batch_id: str | None,
                            new: dict[str, list[str]], sizes: dict[str, int]) -> None:
    ts, block = make_block(n, nil_every=nil_every)
    rec = decode_payload(7, encode_payload(batch_id, 123.5, ts, block, new, sizes))
    assert (rec.seq, rec.batch_id, rec.time, rec.new_strings, rec.dict_sizes) == (
        7, batch_id, 123.5, new, sizes)
    np.testing.assert_array_equal(rec.timestamps, ts)
    assert_blocks_equal(block, rec.block)


@given(hnp.arrays(st.sampled_from([np.dtype(t) for t in (
    "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "?")]), st.integers(0, 30),
    elements=None))
def test_column_encoding_round_trip(a: np.ndarray) -> None:
    ts, block = make_block(len(a))
    block.metrics["x"] = a
    rec = decode_payload(1, encode_payload(None, 0.0, ts, block, {}, {}))
    assert rec.block.metrics["x"].dtype == a.dtype
    np.testing.assert_array_equal(rec.block.metrics["x"], a)


def test_frame_layout() -> None:
    payload = b"hello"
    data = frame(42, payload)
    length, crc, seq, hcrc = HEADER.unpack_from(data)
    assert (length, crc, seq) == (5, zlib.crc32(payload), 42)
    assert hcrc == zlib.crc32(data[:16])
    assert data[HEADER.size:] == payload


def test_append_recover_round_trip(tmp_path: Path) -> None:
    wal, recs = open_log(tmp_path)
    assert recs == []
    sizes = (1, 5, 0, 17)
    ids = [None, "id1", "id2", None]
    tickets = [put(wal, i, n, str(n), {"s": [f"new{k}"]})
               for k, (i, n) in enumerate(zip(ids, sizes, strict=False))]
    assert tickets == [1, 2, 3, 4]  # an empty batch with an id is logged too
    assert put(wal, None, 0) == 0  # empty, no id: nothing to log
    for t in tickets:
        wal.commit(t)
    wal.close()
    wal2, recs = open_log(tmp_path)
    assert [r.seq for r in recs] == [1, 2, 3, 4]
    assert [r.batch_id for r in recs] == ids
    assert [r.new_strings for r in recs] == [{"s": [f"new{i}"]} for i in range(4)]
    for n, r in zip(sizes, recs, strict=False):
        assert_blocks_equal(make_block(n, str(n))[1], r.block)
    assert wal2.seq == 4
    assert wal2.seen("id1") == 2
    assert wal2.seen("id2") == 3
    assert wal2.seen("id0") is None
    # Replay starts after the flushed sequence number.
    wal2.close()
    _, recs = open_log(tmp_path, flushed=2)
    assert [r.seq for r in recs] == [3, 4]


# -- torn tail and corruption -------------------------------------------------------------------
def write_records(d: Path, n: int, **kw: object) -> WriteAheadLog:
    wal, _ = open_log(d, **kw)
    for i in range(n):
        wal.commit(put(wal, f"id{i}", 5 + i, tag=f"r{i}"))
    wal.close()
    return wal


@pytest.mark.parametrize("cut", [1, 10, HEADER.size, HEADER.size + 3, -1])
def test_torn_tail_is_truncated(tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
                                ) -> None:
    write_records(tmp_path, 3)
    [path] = log_files(tmp_path)
    data = path.read_bytes()
    last = len(frame(3, encode_payload("id2", 0.0, *make_block(7, tag="r2"), {}, {"s": 3})))
    good = len(data) - last
    keep = good + (cut if cut > 0 else last + cut)
    path.write_bytes(data[:keep])
    with caplog.at_level(logging.WARNING, logger="gumshoe.wal"):
        wal, recs = open_log(tmp_path)
    assert [r.seq for r in recs] == [1, 2]
    assert "torn last record" in caplog.text
    assert str(path) in caplog.text
    assert path.stat().st_size == good  # truncated
    # The log continues after the truncated record: seq 3 is reused, never acknowledged.
    assert put(wal, None, 2) == 3
    wal.close()
    _, recs = open_log(tmp_path)
    assert [r.seq for r in recs] == [1, 2, 3]


def test_torn_tail_with_bad_checksum_and_zero_fill(tmp_path: Path) -> None:
    write_records(tmp_path, 2)
    [path] = log_files(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last record's payload is damaged, and it ends the log
    path.write_bytes(bytes(data) + b"\0" * 100)  # ... and a zero-filled tail after it
    with pytest.raises(CorruptDataError):  # zeros after a bad record: not the last record
        open_log(tmp_path)
    path.write_bytes(bytes(data))
    _, recs = open_log(tmp_path)
    assert [r.seq for r in recs] == [1]
    path.write_bytes(path.read_bytes() + b"\0" * 64)  # zeros only: a torn, zero-filled tail
    _, recs = open_log(tmp_path)
    assert [r.seq for r in recs] == [1]


@pytest.mark.parametrize("where", ["payload", "header", "seq"])
def test_mid_log_corruption_stops_start_up(tmp_path: Path, where: str) -> None:
    write_records(tmp_path, 3)
    [path] = log_files(tmp_path)
    data = bytearray(path.read_bytes())
    first_len = HEADER.unpack_from(data)[0] + HEADER.size
    if where == "payload":
        off = first_len  # the second record
        data[off + HEADER.size + 3] ^= 0x01
    elif where == "header":
        off = first_len
        data[off] ^= 0x40  # its length field
    else:  # a well-formed record with the wrong sequence number
        off = first_len
        length, crc, _, _ = HEADER.unpack_from(data, off)
        head = struct.pack("<IIQ", length, crc, 9)
        data[off:off + HEADER.size] = head + struct.pack("<I", zlib.crc32(head))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as e:
        open_log(tmp_path)
    assert str(path) in str(e.value)
    assert f"offset {off}" in str(e.value)
    assert path.stat().st_size == len(data)  # nothing truncated


def test_torn_record_in_an_earlier_file_is_corruption(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path, segment_bytes=1)  # a new file for every record
    for _i in range(3):
        wal.commit(put(wal, None, 4))
    wal.close()
    files = log_files(tmp_path)
    assert [f.name for f in files] == [wal_filename(i) for i in (1, 2, 3)]
    files[1].write_bytes(files[1].read_bytes()[:-5])
    with pytest.raises(CorruptDataError, match="not a torn tail"):
        open_log(tmp_path)


def test_missing_log_file_is_a_gap(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path, segment_bytes=1)
    for _ in range(3):
        wal.commit(put(wal, None, 4))
    wal.close()
    log_files(tmp_path)[1].unlink()
    with pytest.raises(CorruptDataError, match="sequence number 3"):
        open_log(tmp_path)
    # ... but records at or before the flushed sequence number are not needed.
    _, recs = open_log(tmp_path, flushed=2)
    assert [r.seq for r in recs] == [3]


# -- rolling, trimming --------------------------------------------------------------------------
def test_roll_and_trim(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path, segment_bytes=1000)
    for _ in range(6):
        wal.commit(put(wal, None, 40))
    assert len(log_files(tmp_path)) > 2  # rolled on size
    seq = wal.rotate()  # what a flush does
    assert seq == 6
    assert wal.rotate() == 6  # nothing new: no new file
    wal.commit(put(wal, None, 3))
    before = log_files(tmp_path)
    wal.trim(seq)
    after = log_files(tmp_path)
    assert after == [tmp_path / wal_filename(7)]
    assert len(before) > len(after)
    wal.close()
    _, recs = open_log(tmp_path, flushed=6)
    assert [r.seq for r in recs] == [7]


def test_recover_removes_flushed_files(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path, segment_bytes=1)
    for _ in range(3):
        wal.commit(put(wal, None, 4))
    wal.close()
    _, recs = open_log(tmp_path, flushed=3)
    assert recs == []
    assert log_files(tmp_path) == [tmp_path / wal_filename(4)]


# -- durability modes and group commit ------------------------------------------------------
def test_modes(tmp_path: Path) -> None:
    for mode in ("fsync", "os", "none"):
        d = tmp_path / mode
        d.mkdir()
        io = fileio.FaultyIO()
        with fileio.inject(io):
            wal, _ = open_log(d, mode)
            t = put(wal, "a", 10)
            writes_before_commit = io.calls
            wal.commit(t)
            calls = io.calls - writes_before_commit
            wal.close()
        if mode == "none":
            assert t == 0
            assert wal.seen("a") == 0
            assert [p.stat().st_size for p in log_files(d)] == []
            assert io.calls == 0
        else:
            assert t == 1
            assert log_files(d)[0].stat().st_size > 0
            assert calls == (1 if mode == "fsync" else 0)  # fsync before the commit returns


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path)
    lock = threading.Lock()  # stands in for the DB's write lock
    gate = threading.Event()

    class SlowIO(fileio.FileIO):
        def fsync(self, fd: int) -> None:
            gate.wait(5)
            super().fsync(fd)

    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(5):
                with lock:
                    t = put(wal, f"{k}-{i}", 3)
                wal.commit(t)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    with fileio.inject(SlowIO()):
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        threading.Timer(0.2, gate.set).start()
        for th in threads:
            th.join(10)
    assert not errors
    assert not any(th.is_alive() for th in threads)
    assert wal.stats["records"] == 40
    assert wal.stats["fsyncs"] < 40  # shared
    wal.close()
    _, recs = open_log(tmp_path)
    assert len(recs) == 40


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_failed_fsync_never_acknowledges(tmp_path: Path, err: int) -> None:
    wal, _ = open_log(tmp_path)
    t1 = put(wal, "a", 3)
    with fileio.inject(fileio.FaultyIO(1, err, kinds=("fsync",))), \
            pytest.raises(StorageFailedError, match="fsync"):
        wal.commit(t1)
    # Fail-stop: no later success, even though the disk works again.
    with pytest.raises(StorageFailedError):
        wal.commit(t1)
    with pytest.raises(StorageFailedError):
        put(wal, "b", 3)
    wal.close()


def test_failed_write_leaves_a_torn_tail(tmp_path: Path) -> None:
    wal, _ = open_log(tmp_path)
    wal.commit(put(wal, "a", 30))
    with fileio.inject(fileio.FaultyIO(1, errno.ENOSPC, kinds=("write",))), \
            pytest.raises(StorageFailedError, match="No space"):
        put(wal, "b", 30)
    assert wal.failed
    wal.close()
    _, recs = open_log(tmp_path)
    assert [r.batch_id for r in recs] == ["a"]


# -- batch ids ----------------------------------------------------------------------------------
def test_batch_id_window(tmp_path: Path) -> None:
    now = [1000.0]
    wal = WriteAheadLog(tmp_path, "fsync", 200.0, clock=lambda: now[0])
    list(wal.recover(0, {"old": 900.0, "older": 100.0}))  # as persisted in db.json
    assert wal.seen("old") == 0
    assert wal.seen("older") is None
    put(wal, "x", 1)
    now[0] += 30
    assert wal.seen("x") == 1
    assert wal.batch_ids_json() == {"old": 900.0}  # "x" is not covered by a flush yet
    wal.rotate()
    assert wal.batch_ids_json() == {"old": 900.0, "x": 1000.0}
    now[0] += 171
    put(wal, "y", 1)
    assert wal.seen("x") is None
    assert wal.seen("old") is None
    assert wal.seen("y") == 2
    wal.rotate()
    assert wal.batch_ids_json() == {"y": 1201.0}
    assert list(wal._ids) == ["y"]  # expired ids are dropped, not just hidden
    wal.close()


def test_batch_ids_persist_only_with_their_flush(tmp_path: Path) -> None:
    for mode in ("fsync", "none"):
        (tmp_path / mode).mkdir()
        wal, _ = open_log(tmp_path / mode, mode)
        put(wal, "a", 2)
        wal.rotate()  # a flush's memtable swap: covers "a"
        put(wal, "b", 2)  # appended while that flush writes: its rows are not in it
        assert set(wal.batch_ids_json()) == {"a"}
        wal.close()
