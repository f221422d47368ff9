"""gumshoe._jsonl (the C scanner of JSON lines) against gumtool's reference decoders (pyarrow's
JSON reader and the msgspec path): on any chunk it either declines or gives exactly their
columns; a chunk with a bad line is always declined, so the references name it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gumshoe import native
from gumshoe.config import load_config
from gumshoe.schema import Schema
from gumtool.import_decode import CsvDecoder, Decoded, JsonDecoder, count_lines
from gumtool.import_mapping import Mapping, load_mapping, resolve

from .helpers import write_config

pytestmark = pytest.mark.skipif(native.jsonl is None, reason="gumshoe._jsonl is not built")

KEYS = ["at", "name", "country", "age", "visits", "clicks", "score", "bogus", "dropped"]
VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(-5, 300), st.integers(-2**65, 2**65), st.sampled_from([1_700_000_000, 0, -0]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1.5, 1e300, -0.0, 2.0]),
    st.text(max_size=6), st.sampled_from(["a", "b", "é", "日本", "", "x\"y", "a\\b", "\t",
                                          "\ud800", "line\nbreak", "\x7f", "ab" * 9]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=1))
RAW = st.sampled_from([b"", b" ", b"{", b"{}", b"[1]", b'{"at": 1}{"at": 2}', b'{"at": 01}',
                       b'{"at": 1.}', b'{"at": 1e}', b'{"at": -}', b'{"at" 1}', b'{"at": 1,}',
                       b'{"at": nul}', b'{"at": 1700000000, "name": "a"} x', b'\xff',
                       b'{"at": 1700000000, "at": 5}', b'{"at": 1700000000.5e1}',
                       b'{"at": 1700000000, "name": "\xc3\x28"}', b'{"a\\u0074": 1}',
                       b'  {"at":1700000000 ,"visits":\t3 }\r'])


PLAIN = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                              blacklist_characters='"\\'), max_size=5)
GOOD = {"at": st.one_of(st.integers(1_600_000_000, 1_800_000_000),
                        st.floats(1.6e9, 1.8e9)),
        "name": st.one_of(st.none(), PLAIN), "country": st.one_of(st.none(), PLAIN),
        "age": st.one_of(st.none(), st.integers(0, 255)),
        "visits": st.one_of(st.none(), st.integers(0, 255)),
        "clicks": st.integers(0, 2**32 - 1),
        "score": st.one_of(st.none(), st.integers(-10**20, 10**20), st.floats(allow_nan=False,
                                                                             allow_infinity=False)),
        "bogus": VALUES}


@st.composite
def good_line(draw: Any) -> bytes:
    """A line every decoder takes (but for `bogus` under unknown = "error")."""
    keys = draw(st.lists(st.sampled_from(sorted(GOOD)), unique=True))
    obj = {"at": draw(GOOD["at"]), **{k: draw(GOOD[k]) for k in keys}}
    order = draw(st.permutations(sorted(obj)))
    sep = draw(st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :  ")]))
    text = json.dumps({k: obj[k] for k in order}, separators=sep,
                      ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def odd_line(draw: Any) -> bytes:
    """Anything: raw text, or an object of random keys and values."""
    if draw(st.booleans()):
        return draw(RAW)
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=8))
    obj = {k: draw(VALUES) for k in keys}
    if draw(st.booleans()):
        obj["at"] = draw(st.integers(1_600_000_000, 1_800_000_000))
    sep = draw(st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :  ")]))
    text = json.dumps(obj, separators=sep, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def chunks(draw: Any) -> bytes:
    """Good lines with, half the time, an odd one among them."""
    out = draw(st.lists(good_line(), min_size=1, max_size=10))
    if draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), draw(odd_line()))
    return b"\n".join(out) + (b"\n" if draw(st.booleans()) else b"")


def decoder(tmp_path: Path, mapping: str) -> JsonDecoder:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    schema = Schema.from_config(load_config(cfg).schema)
    (tmp_path / "m.toml").write_text(mapping)
    m = load_mapping(str(tmp_path / "m.toml")) if mapping else Mapping()
    return JsonDecoder(resolve(m, schema, "m.toml"))


def columns(d: Decoded) -> dict[str, list[Any]]:
    out = {}
    for f, v in d.values.items():
        if v is None:
            out[f] = None
            continue
        if hasattr(v, "dictionary_decode") and hasattr(v, "dictionary"):
            v = v.dictionary_decode()
        out[f] = v.to_pylist() if hasattr(v, "to_pylist") else list(v)
    return out


def assert_agrees(scanned: Any, want: Any, chunk: bytes, exact_types: bool) -> None:
    """A chunk the scanner took decodes as the reference path decodes it: no bad line, the
    same counts and values (`exact_types`: the same Python types too, except that the
    reference's msgspec path keeps JSON integers in a float field as int)."""
    assert not want.bad and want.bad_count == 0, (chunk, want.bad)
    assert (scanned.n, scanned.n_lines) == (want.n, want.n_lines)
    got_cols, want_cols = columns(scanned), columns(want)
    assert got_cols.keys() == want_cols.keys()
    for f in got_cols:
        g, w = got_cols[f], want_cols[f]
        assert g == w, (f, chunk)
        if exact_types and [type(x) for x in g] != [type(x) for x in w]:
            assert all((x is None) == (y is None) for x, y in zip(g, w)), (f, g, w)


MAPPINGS = ["", 'unknown = "error"\n', '[timestamp]\nfield = "at"\nformat = "unix_ms"\n']


@pytest.mark.parametrize("mapping", MAPPINGS)
@settings(max_examples=300, deadline=None)
@given(chunk=chunks())
def test_the_scanner_declines_or_agrees(tmp_path_factory: pytest.TempPathFactory,
                                        mapping: str, chunk: bytes) -> None:
    tmp = tmp_path_factory.mktemp("scan")
    dec = decoder(tmp, mapping)
    assert count_lines(chunk) == chunk.count(b"\n") + (not chunk.endswith(b"\n"))
    scanned = dec._scan(chunk) if dec.scan_fields else None
    dec.use_scan = False
    want = dec.decode(chunk)
    if scanned is not None:
        assert_agrees(scanned, want, chunk, exact_types=True)


def test_the_scanner_takes_the_benchmark_lines(tmp_path: Path) -> None:
    dec = decoder(tmp_path, "")
    chunk = b"".join(json.dumps({"at": 1_700_000_000 + i, "name": f"/page/{i % 7}",
                                 "country": None if i % 5 == 0 else "DE", "age": i % 90,
                                 "visits": 1, "clicks": i, "score": i / 4}).encode() + b"\n"
                     for i in range(1000))
    got = dec._scan(chunk)
    assert got is not None
    dec.use_scan = False
    assert columns(got) == columns(dec.decode(chunk))


# -- CSV ---------------------------------------------------------------------------------------
CSV_HEADER = ["at", "name", "bogus", "visits", "clicks", "score", "country"]
CELLS = st.one_of(st.sampled_from(["", '""', '"a"', '"a,b"', '"a""b"', 'a"b', " 1", "1 ", "+1",
                                   "-0", "01", "1.", ".5", "1e5", "1.5", "-1", "300", "x",
                                   "é", "\xff", "1" * 20, "18446744073709551616", "nan", "inf",
                                   "4294967295", "4294967296"]),
                  PLAIN.filter(lambda t: "," not in t and "\r" not in t),
                  st.integers(-10, 2**33).map(str),
                  st.floats(allow_nan=False, allow_infinity=False).map(repr))


@st.composite
def csv_good_line(draw: Any) -> str:
    cells = [str(draw(st.integers(1_600_000_000, 1_800_000_000))),
             draw(st.one_of(st.just(""), PLAIN.filter(lambda t: "," not in t))),
             draw(CELLS).replace(",", "").replace('"', "").replace("\r", ""),
             draw(st.one_of(st.just(""), st.integers(0, 255).map(str))),
             str(draw(st.integers(0, 2**32 - 1))),
             draw(st.one_of(st.just(""), st.floats(-1e6, 1e6).map(repr),
                            st.integers(-10**6, 10**6).map(str))),
             draw(st.one_of(st.just(""), st.just('"DE"'), st.just("FR")))]
    return ",".join(cells)


@st.composite
def csv_chunks(draw: Any) -> bytes:
    out = draw(st.lists(csv_good_line(), min_size=1, max_size=10))
    if draw(st.booleans()):
        odd = draw(st.lists(CELLS, min_size=0, max_size=8)) if draw(st.booleans()) else None
        line = ",".join(odd) if odd is not None else draw(csv_good_line())
        if odd is None:  # a good line with one cell replaced
            cells = line.split(",")
            cells[draw(st.integers(0, len(cells) - 1))] = draw(CELLS)
            line = ",".join(cells)
        out.insert(draw(st.integers(0, len(out))), line)
    sep = "\r\n" if draw(st.booleans()) else "\n"
    text = sep.join(out) + (sep if draw(st.booleans()) else "")
    return text.encode("utf-8", "surrogateescape")


@settings(max_examples=400, deadline=None)
@given(chunk=csv_chunks())
def test_the_csv_scanner_declines_or_agrees(tmp_path_factory: pytest.TempPathFactory,
                                            chunk: bytes) -> None:
    tmp = tmp_path_factory.mktemp("csv")
    cfg = write_config(tmp / "c.toml", tmp / "db")
    plan = resolve(Mapping(), Schema.from_config(load_config(cfg).schema), "mapping")
    dec = CsvDecoder(plan, CSV_HEADER)
    scanned = dec._scan(chunk)
    dec.use_scan = False
    want = dec.decode(chunk)
    if scanned is not None:  # (a time may be an int on one side, a float on the other)
        assert_agrees(scanned, want, chunk, exact_types=False)
