"""segment.py: the checksummed, memory-mapped segment file format."""

from __future__ import annotations

import json
import mmap
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gumshoe.block import Block, empty_block
from gumshoe.config import SchemaConfig
from gumshoe.errors import CorruptDataError
from gumshoe.schema import NUMERIC_TYPES, Schema
from gumshoe.segment import MAGIC, Segment, encode_segment, write_segment
from tests.storage.contents import block_rows, encode, strings_of
from tests.strategies import METRIC_TYPES

ALL_DIMS = [(f"d_{t}", t) for t in (*NUMERIC_TYPES, "string:uint8", "string:uint16",
                                    "string:uint32")]
ALL_METS = [(f"m_{t}", t) for t in NUMERIC_TYPES]


def make(dims: Any = ALL_DIMS, mets: Any = ALL_METS) -> Schema:
    return Schema.from_config(SchemaConfig(10**6, 3600, ("at", "uint32"), tuple(dims),
                                           tuple(mets)))


SCHEMA = make()


def sample_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"at": 0}]  # every dimension nil, every metric 0
    for i, extreme in enumerate(("lo", "hi", "mid")):
        r: dict[str, Any] = {"at": 0}
        for c in (*SCHEMA.dimensions, *SCHEMA.metrics):
            if c.is_string:
                r[c.name] = ["", "naïve", "日本"][i]
            else:
                lo, hi = c.value_range
                r[c.name] = {"lo": lo, "hi": hi, "mid": 1 if c.dtype.kind in "ui" else 0.5}[
                    extreme]
        rows.append(r)
    return rows


def sample_block() -> tuple[Block, dict[str, list[str]]]:
    dictionaries: dict[str, Any] = {}
    block = encode(SCHEMA, sample_rows(), dictionaries)[0]
    return block, strings_of(dictionaries)


@pytest.fixture
def seg_file(tmp_path: Path) -> tuple[Path, Block, dict[str, list[str]]]:
    block, strings = sample_block()
    path = tmp_path / "s.seg"
    write_segment(path, SCHEMA, block, fsync=False)
    return path, block, strings


def test_round_trip_every_column_type(seg_file: tuple[Path, Block, dict[str, list[str]]]
                                      ) -> None:
    path, block, strings = seg_file
    seg = Segment.open(path, SCHEMA, verify=True)
    assert seg.rows == block.n == 4 and seg.path == path
    assert seg.nbytes == path.stat().st_size and seg.nbytes % 64 == 0
    assert block_rows(SCHEMA, seg.block, strings) == block_rows(SCHEMA, block, strings)
    for d in SCHEMA.dimensions:
        assert seg.block.dims[d.name].dtype == d.dtype
        assert seg.block.nils[d.name].tolist() == [True, False, False, False]
    # stats: min/max of each metric and of each dimension's non-nil values
    for m in SCHEMA.metrics:
        values = block.metrics[m.name]
        assert tuple(seg.stats["m:" + m.name]) == (values.min().item(), values.max().item())
    for d in SCHEMA.dimensions:
        values = block.dims[d.name][1:]
        assert tuple(seg.stats["d:" + d.name]) == (values.min().item(), values.max().item())


def test_columns_are_read_only_views_of_the_mapping(
        seg_file: tuple[Path, Block, dict[str, list[str]]]) -> None:
    path, _, _ = seg_file
    seg = Segment.open(path, SCHEMA)
    arrays = [seg.block.count, *seg.block.dims.values(), *seg.block.metrics.values()]
    for arr in arrays:
        assert not arr.flags.writeable and not arr.flags.owndata
        base = arr
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.obj if isinstance(base, memoryview) else base.base
        assert isinstance(base, mmap.mmap)  # mapped, not read into memory


def test_layout_is_aligned_and_described(seg_file: tuple[Path, Block, dict[str, list[str]]]
                                         ) -> None:
    path, block, _ = seg_file
    data = path.read_bytes()
    assert data[:8] == MAGIC
    (hlen,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12:12 + hlen])
    assert header["version"] == 3 and header["rows"] == block.n
    assert struct.unpack_from("<I", data, 12 + hlen)[0] == zlib.crc32(data[8:12 + hlen])
    names = [c["name"] for c in header["columns"]]
    assert names[0] == "count"
    assert {"d:d_uint8", "n:d_uint8", "m:m_float32"} <= set(names)
    for c in header["columns"]:
        assert c["offset"] % 64 == 0 and c["offset"] >= 12 + hlen


def test_count_and_integer_metrics_are_stored_in_the_narrowest_type(tmp_path: Path) -> None:
    schema = make(dims=[("d", "uint8")], mets=[("u", "uint32"), ("i", "int16"), ("f", "float32"),
                                               ("big", "uint64")])
    rows = [{"at": 0, "d": k, "u": 300 * k, "i": -5 * k, "f": 0.5, "big": 2**40 * k}
            for k in range(4)]
    block = encode(schema, rows)[0]
    path = tmp_path / "n.seg"
    write_segment(path, schema, block, fsync=False)
    seg = Segment.open(path, schema, verify=True)
    stored = {"count": seg.block.count.dtype,
              **{m: a.dtype for m, a in seg.block.metrics.items()}}
    assert stored == {"count": np.dtype(np.int8), "u": np.dtype(np.int16),  # sums: int64
                      "i": np.dtype(np.int8), "f": np.dtype(np.float64),
                      "big": np.dtype(np.uint64)}
    assert seg.block.metrics["u"].tolist() == [0, 300, 600, 900]
    assert seg.block.metrics["i"].tolist() == [0, -5, -10, -15]
    assert seg.block.metrics["big"].tolist() == [2**40 * k for k in range(4)]


def test_version_2_files_with_full_width_columns_still_open(tmp_path: Path) -> None:
    """Before version 3 every count and metric was stored at its full width."""
    import gumshoe.segment as segment_module

    block, strings = sample_block()
    path = tmp_path / "v2.seg"
    narrowest, version = segment_module.narrowest, segment_module.VERSION
    try:
        segment_module.narrowest = lambda a: a
        segment_module.VERSION = 2
        write_segment(path, SCHEMA, block, fsync=False)
    finally:
        segment_module.narrowest, segment_module.VERSION = narrowest, version
    seg = Segment.open(path, SCHEMA, verify=True)
    assert seg.block.count.dtype == np.int64
    assert block_rows(SCHEMA, seg.block, strings) == block_rows(SCHEMA, block, strings)


@pytest.mark.parametrize("stored", ["<i8", "<u2", "<f8"])
def test_a_count_of_the_wrong_kind_or_width_is_corrupt(tmp_path: Path, stored: str) -> None:
    """The count may be narrower than int64, never unsigned, wider or a float."""
    block, _ = sample_block()
    path = tmp_path / "c.seg"
    write_segment(path, SCHEMA, block, fsync=False)
    data = bytearray(path.read_bytes())
    (hlen,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12:12 + hlen])
    count = header["columns"][0]
    assert count["name"] == "count" and count["dtype"] == "|i1"
    count["dtype"] = stored
    text = json.dumps(header).encode().ljust(hlen)
    assert len(text) == hlen
    data[12:12 + hlen] = text
    struct.pack_into("<I", data, 12 + hlen, zlib.crc32(bytes(data[8:12 + hlen])))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="column 'count'"):
        Segment.open(path, SCHEMA)


def test_no_nil_mask_without_nil_rows(tmp_path: Path) -> None:
    schema = make(dims=[("s", "string:uint8"), ("n", "int8")], mets=[("m", "uint8")])
    block = encode(schema, [{"at": 0, "s": "a", "n": 1, "m": 1}, {"at": 0, "s": "b", "n": -1}])[0]
    path = tmp_path / "s.seg"
    write_segment(path, schema, block, fsync=False)
    head, _ = encode_segment(schema, block)
    assert b'"n:s"' not in head and b'"n:n"' not in head
    seg = Segment.open(path, schema, verify=True)
    assert seg.block.nils == {"s": None, "n": None}
    assert seg.block.dims["n"].tolist() == [1, -1] and seg.block.metrics["m"].tolist() == [1, 0]


def test_empty_segment(tmp_path: Path) -> None:
    path = tmp_path / "e.seg"
    write_segment(path, SCHEMA, empty_block(SCHEMA), fsync=False)
    seg = Segment.open(path, SCHEMA, verify=True)
    assert seg.rows == 0 and seg.block.count.tolist() == [] and seg.stats == {}


def test_in_memory_segment_matches_disk_stats(
        seg_file: tuple[Path, Block, dict[str, list[str]]]) -> None:
    path, block, _ = seg_file
    mem = Segment.in_memory(SCHEMA, block)
    disk = Segment.open(path, SCHEMA)
    assert mem.rows == disk.rows and mem.nbytes == SCHEMA.row_bytes * block.n
    for name, stat in mem.stats.items():
        assert tuple(disk.stats[name]) == tuple(stat)
    bounds = {k: v for k, v in mem.scan_stats.items() if k.startswith("bound:")}
    assert bounds == {k: v for k, v in disk.scan_stats.items() if k.startswith("bound:")}
    for name, bound in bounds.items():  # n * max(|min|, |max|) of each integer metric
        lo, hi = mem.stats[name[len("bound:"):]]
        assert bound == block.n * max(abs(lo), abs(hi))
    assert bounds.keys() == {"bound:" + k for k, (lo, _) in mem.stats.items()
                             if k.startswith("m:") and isinstance(lo, int)}


@pytest.mark.parametrize("without_values", [False, True])
def test_min_max_columns_narrow_unless_a_row_has_no_value(tmp_path: Path,
                                                          without_values: bool) -> None:
    """docs/storage.md §2: min/max are narrowed as sums are; the identity of a row without a
    value (int64 max for a min, int64 min for a max) keeps its column wide."""
    schema = make(dims=[("d", "uint8")], mets=[("lo", "min:uint8"), ("hi", "max:int32")])
    raw: list[dict[str, Any]] = [{"at": 0, "d": 1, "lo": 3, "hi": -4},
                                 {"at": 0, "d": 2, "lo": 200, "hi": 5}]
    if without_values:
        raw.append({"at": 0, "d": 3})
    dictionaries: dict[str, Any] = {}
    block = encode(schema, raw, dictionaries)[0]
    path = tmp_path / "m.seg"
    write_segment(path, schema, block, fsync=False)
    seg = Segment.open(path, schema, verify=True)
    wide = np.dtype(np.int64)
    assert seg.block.metrics["lo"].dtype == (wide if without_values else np.int16)
    assert seg.block.metrics["hi"].dtype == (wide if without_values else np.int8)
    rows = block_rows(schema, seg.block, strings_of(dictionaries))
    assert rows == block_rows(schema, block, strings_of(dictionaries))
    assert [(e["lo"], e["hi"]) for _, e in rows] == [(3, -4), (200, 5)] + (
        [(None, None)] if without_values else [])


def test_a_narrow_min_max_column_holds_its_types_extremes_as_values(tmp_path: Path) -> None:
    """A min/max column narrowed in a segment (no row without a value) may hold its narrow
    type's extreme, the value that is the identity in that type (-128 for an int8 max, 32767
    for an int16 min): a value, not a missing one, wherever a block's values are read
    (kinds.missing; a filter `= -128` on a max:int8 matched no flushed row). The 64-bit
    identity stays missing where the narrow type holds it: a max:uint64 without a value (0)
    narrowed to uint8."""
    from gumshoe.config import load_config
    from gumshoe.db import DB
    from gumshoe.service import query_rows

    cfg = load_config().replace(database_dir=str(tmp_path / "db"), retention_days=0,
                                durability="none")
    cfg = cfg.replace(schema=SchemaConfig(
        timestamp_column=("at", "uint32"), dimension_columns=(("d", "uint8"),),
        metric_columns=(("hi", "max:int8"), ("lo", "min:int16"), ("top", "max:uint64")),
        interval_duration=3600,
        segment_size=cfg.schema.segment_size))
    db = DB(cfg)
    db.insert([{"at": 0, "d": 1, "hi": -128, "lo": 32767},
               {"at": 0, "d": 2, "hi": 7, "lo": 3, "top": 5}])
    db.flush()
    (block,) = db.snapshot().intervals[0].blocks
    assert block.metrics["hi"].dtype == np.int8 and block.metrics["lo"].dtype == np.int16
    assert block.metrics["top"].dtype == np.uint8
    assert db.schema.column("hi").kind.missing(block.metrics["hi"]) is None
    assert db.schema.column("top").kind.missing(block.metrics["top"]).tolist() == [True, False]
    for f, want in [({"type": "=", "column": "hi", "value": -128}, [1]),
                    ({"type": "=", "column": "lo", "value": 32767}, [1]),
                    ({"type": "!=", "column": "hi", "value": -128}, [2]),
                    ({"type": "<", "column": "lo", "value": 32767}, [2]),
                    ({"type": ">", "column": "top", "value": -1}, [2])]:
        rows = query_rows(db, {"filters": [f], "groupings": ["d"],
                               "aggregates": [{"type": "max", "column": "hi"},
                                              {"type": "min", "column": "lo"}]})
        assert [r["d"] for r in rows] == want, f
        assert all(r["hi"] is not None and r["lo"] is not None for r in rows)
    rows = query_rows(db, {"groupings": ["d"], "aggregates": [{"type": "max", "column": "top"}]})
    assert [r["top"] for r in rows] == [None, 5]
    db.close()


@st.composite
def blocks(draw: st.DrawFn) -> tuple[Schema, Block]:
    """Arbitrary column contents (any bit patterns, incl. NaN and -0.0 for floats)."""
    n_dims = draw(st.integers(0, 3))
    dims = [(f"d{i}", draw(st.sampled_from([*NUMERIC_TYPES, "string:uint8", "string:uint32"])))
            for i in range(n_dims)]
    mets = [(f"m{i}", draw(st.sampled_from(METRIC_TYPES))) for i in range(draw(st.integers(1,
                                                                                          3)))]
    schema = make(dims=dims, mets=mets)
    n = draw(st.integers(0, 50))
    count = draw(hnp.arrays(np.int64, n))
    dims_a = {d.name: draw(hnp.arrays(d.dtype, n)) for d in schema.dimensions}
    nils = {d.name: draw(st.none() | hnp.arrays(np.bool_, n)) for d in schema.dimensions}
    mets_a = {m.name: draw(hnp.arrays(m.store_dtype, n)) for m in schema.metrics}
    return schema, Block(n, count, dims_a, nils, mets_a)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks())
def test_round_trip_bytes(tmp_path: Path, sb: tuple[Schema, Block]) -> None:
    schema, block = sb
    path = tmp_path / "h.seg"
    write_segment(path, schema, block, fsync=False)
    seg = Segment.open(path, schema, verify=True)
    got = seg.block
    assert got.n == block.n
    for a, b in [(got.dims[k], v) for k, v in block.dims.items()]:
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    # the count and metrics come back in the narrowest type of their kind holding the values
    for a, b in [(got.count, block.count)] + [(got.metrics[k], v)
                                                for k, v in block.metrics.items()]:
        assert a.dtype.kind == b.dtype.kind and a.dtype.itemsize <= b.dtype.itemsize
        assert a.astype(b.dtype).tobytes() == b.tobytes()
        if a.dtype.kind in "iu" and a.dtype.itemsize > 1 and len(a):  # none narrower fits
            half = np.iinfo(np.dtype(f"{a.dtype.kind}{a.dtype.itemsize // 2}"))
            assert a.min() < half.min or a.max() > half.max
    for k, v in block.nils.items():
        assert (got.nils[k] is None) == (v is None)
        if v is not None:
            assert got.nils[k].tolist() == v.tolist()


# -- corruption ----------------------------------------------------------------------------

def test_bad_magic(seg_file: tuple[Path, Block, dict[str, list[str]]]) -> None:
    path, _, _ = seg_file
    data = bytearray(path.read_bytes())
    data[0:8] = b"GUMSEG\x00\x02"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="bad magic"):
        Segment.open(path, SCHEMA)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CorruptDataError, match="bad magic"):
        Segment.open(path, SCHEMA)


@pytest.mark.parametrize("size", [0, 5, 11, 12, 15, 40, 200, -64, -1])
def test_truncated_file(seg_file: tuple[Path, Block, dict[str, list[str]]], size: int) -> None:
    """Cut anywhere before the end of the last column (size -1: one byte into it)."""
    path, _, _ = seg_file
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    last = json.loads(data[12:12 + hlen])["columns"][-1]
    if size < 0:
        size += last["offset"] + last["nbytes"]
    path.write_bytes(data[:size])
    with pytest.raises(CorruptDataError):
        Segment.open(path, SCHEMA, verify=True)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorruptDataError, match="missing"):
        Segment.open(tmp_path / "nope.seg", SCHEMA)


def raw_segment(header: bytes) -> bytes:
    """A file with a well-checksummed but arbitrary header."""
    head = struct.pack("<I", len(header)) + header
    return MAGIC + head + struct.pack("<I", zlib.crc32(head)) + bytes(2048)


COLUMN = {"name": "count", "dtype": "<i8", "offset": 64, "nbytes": 8, "crc32": 0}


@pytest.mark.parametrize("header", [
    b"not json", b"[1, 2]", b'{"version": 2}', b'{"version": 2, "rows": 4, "columns": [{}]}',
    b'{"version": 1, "rows": 1, "columns": []}', b'{"version": 2, "rows": "x", "columns": []}',
    *(json.dumps({"version": 2, "rows": 1, "columns": [{**COLUMN, **change}]}).encode()
      for change in ({"dtype": "nonsense"}, {"dtype": 5}, {"offset": -64}, {"offset": "x"},
                     {"nbytes": None}, {"offset": 10**6})),
    json.dumps({"version": 2, "rows": 1, "columns": [
        {k: v for k, v in COLUMN.items() if k != "offset"}]}).encode(),
])
def test_bad_header(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "b.seg"
    path.write_bytes(raw_segment(header))
    with pytest.raises(CorruptDataError):
        Segment.open(path, make(dims=[], mets=[("m", "uint8")]))


def test_well_formed_raw_segment_opens(tmp_path: Path) -> None:
    """The raw_segment helper itself is right: a correct header opens."""
    schema = make(dims=[], mets=[("m", "uint8")])
    cols = [{**COLUMN, "offset": 1024, "crc32": zlib.crc32(bytes(8))},
            {**COLUMN, "name": "m:m", "offset": 1088, "crc32": zlib.crc32(bytes(8))}]
    path = tmp_path / "ok.seg"
    path.write_bytes(raw_segment(json.dumps({"version": 2, "rows": 1, "columns": cols}).encode()))
    seg = Segment.open(path, schema, verify=True)
    assert seg.block.count.tolist() == [0] and seg.block.metrics["m"].tolist() == [0]


def test_header_length_past_the_end(seg_file: tuple[Path, Block, dict[str, list[str]]]) -> None:
    path, _, _ = seg_file
    data = bytearray(path.read_bytes())
    data[8:12] = struct.pack("<I", 2**31)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError):
        Segment.open(path, SCHEMA)


def test_schema_mismatch_is_corrupt(seg_file: tuple[Path, Block, dict[str, list[str]]]) -> None:
    path, _, _ = seg_file
    other = make(dims=[("d_uint8", "uint16")], mets=[("m_uint8", "uint8")])
    with pytest.raises(CorruptDataError, match="d:d_uint8"):
        Segment.open(path, other)
    missing = make(dims=[("zzz", "uint8")], mets=[("m_uint8", "uint8")])
    with pytest.raises(CorruptDataError, match="missing"):
        Segment.open(path, missing)


def test_checksum_mismatch_names_the_column(
        seg_file: tuple[Path, Block, dict[str, list[str]]]) -> None:
    path, _, _ = seg_file
    data = bytearray(path.read_bytes())
    (hlen,) = struct.unpack_from("<I", data, 8)
    col = next(c for c in json.loads(data[12:12 + hlen])["columns"] if c["name"] == "m:m_uint64")
    data[col["offset"] + 3] ^= 0x10
    path.write_bytes(bytes(data))
    Segment.open(path, SCHEMA)  # not verified: opens (reads never scan whole files)
    with pytest.raises(CorruptDataError, match="checksum mismatch in column 'm:m_uint64'"):
        Segment.open(path, SCHEMA, verify=True)


def test_every_single_byte_flip_is_detected_or_harmless(tmp_path: Path) -> None:
    """Flip each byte of a small segment in turn: open(verify=True) raises CorruptDataError,
    or (alignment padding) the segment reads back exactly as written, stats included."""
    schema = make(dims=[("s", "string:uint8"), ("n", "int16")], mets=[("m", "uint32")])
    dictionaries: dict[str, Any] = {}
    block = encode(schema, [{"at": 0, "s": "a", "n": -5, "m": 7}, {"at": 0, "n": 300, "m": 1},
                            {"at": 0, "s": "b"}], dictionaries)[0]
    strings = strings_of(dictionaries)
    path = tmp_path / "f.seg"
    write_segment(path, schema, block, fsync=False)
    original = path.read_bytes()
    stats = {k: tuple(v) for k, v in Segment.open(path, schema).stats.items()}
    assert stats["m:m"] == (0, 7) and stats["d:n"] == (-5, 300)
    want = block_rows(schema, block, strings)
    harmless = 0
    for pos in range(len(original)):
        for mask in (0x01, 0x80):
            data = bytearray(original)
            data[pos] ^= mask
            path.write_bytes(bytes(data))
            try:
                seg = Segment.open(path, schema, verify=True)
            except CorruptDataError:
                continue
            harmless += 1
            assert block_rows(schema, seg.block, strings) == want, pos
            assert {k: tuple(v) for k, v in seg.stats.items()} == stats, pos
    assert 0 < harmless < len(original)  # padding only
