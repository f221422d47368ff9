"""dictionary.py: staged encoding, overflow of the code type, snapshot views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gumshoe.config import SchemaConfig
from gumshoe.batch import Factor
from gumshoe.dictionary import Dictionary
from gumshoe.errors import InsertError
from gumshoe.schema import Column, Schema


def column(type_name: str = "string:uint8", name: str = "s") -> Column:
    schema = Schema.from_config(SchemaConfig(10**6, 3600, ("at", "uint32"),
                                             ((name, type_name),), (("m", "uint8"),)))
    return schema.dimensions[0]


def nil_mask(values: list[str | None]) -> np.ndarray | None:
    mask = np.array([v is None for v in values], dtype=bool)
    return mask if mask.any() else None


def test_encode_stages_new_strings_without_changing_anything() -> None:
    d = Dictionary(["a", "b"])
    values = ["b", "c", None, "a", "d", "c"]
    codes, new = d.encode(values, nil_mask(values), column())
    assert codes.dtype == np.uint8
    assert codes.tolist() == [1, 2, 0, 0, 3, 2]  # nil -> 0; new strings in first-seen order
    assert new == ["c", "d"]
    assert d.values == ["a", "b"] and len(d) == 2 and d.lookup("c") is None
    d.extend(new)
    assert d.values == ["a", "b", "c", "d"] and d.lookup("d") == 3
    again, more = d.encode(values, nil_mask(values), column())
    assert again.tolist() == codes.tolist() and more == []


def test_encode_all_nil() -> None:
    d = Dictionary()
    codes, new = d.encode([None, None], np.array([True, True]), column())
    assert codes.tolist() == [0, 0] and new == [] and len(d) == 0


def test_empty_string_is_a_value() -> None:
    d = Dictionary()
    codes, new = d.encode(["", "x", ""], None, column())
    assert codes.tolist() == [0, 1, 0] and new == ["", "x"]


@pytest.mark.parametrize("type_name", ["string:uint8", "string:uint16"])
def test_filling_the_code_type_exactly_is_fine(type_name: str) -> None:
    col = column(type_name)
    values = [str(i) for i in range(col.capacity)]
    d = Dictionary()
    codes, new = d.encode(values, None, col)
    assert codes[-1] == col.capacity - 1 and len(new) == col.capacity
    d.extend(new)
    assert d.encode(["0", str(col.capacity - 1)], None, col)[0].tolist() == [0,
                                                                              col.capacity - 1]


def test_overflow_names_the_row_and_changes_nothing() -> None:
    col = column("string:uint8", "country")
    d = Dictionary([f"s{i}" for i in range(250)])
    values = ["s1", "n0", None, "n1", "n0", "n2", "n3", "n4", "n5", "n5", "n6", "n7"]
    with pytest.raises(InsertError) as e:
        d.encode(values, nil_mask(values), col)
    # codes 250..255 go to n0..n5; n6 (rows[10]) is the 257th distinct string
    assert str(e.value).startswith("rows[10].country:")
    assert "'n6'" in str(e.value) and "256" in str(e.value)
    assert len(d) == 250 and d.lookup("n0") is None


def test_full_dictionary_still_encodes_known_strings() -> None:
    col = column("string:uint8")
    d = Dictionary([str(i) for i in range(256)])
    assert d.encode(["0", "255", None], np.array([False, False, True]), col)[0].tolist() == [
        0, 255, 0]
    with pytest.raises(InsertError, match=r"rows\[1\]\.s: adding the new value 'another'"):
        d.encode(["0", "another"], None, col)


def test_extend_refuses_duplicates() -> None:
    d = Dictionary(["a"])
    with pytest.raises(AssertionError):
        d.extend(["a"])


def test_strings_view_respects_the_snapshot_size() -> None:
    d = Dictionary(["x", "y"])
    view = d.strings(2)
    assert view.dtype == object and view.tolist() == ["x", "y"]
    d.extend(["z"])
    assert d.strings(2).tolist() == ["x", "y"]  # an older snapshot's size
    assert d.strings(3)[np.array([2, 0, 2])].tolist() == ["z", "x", "z"]
    assert d.strings(0).tolist() == []


@given(st.lists(st.text(max_size=5), unique=True, max_size=30))
def test_ranks_are_code_point_order(values: list[str]) -> None:
    d = Dictionary(values)
    ranks = d.ranks(len(values))
    assert sorted(range(len(values)), key=lambda c: ranks[c]) == sorted(
        range(len(values)), key=lambda c: values[c])
    assert sorted(ranks.tolist()) == list(range(len(values)))


def test_ranks_for_a_smaller_snapshot() -> None:
    d = Dictionary(["b", "a", "c"])
    assert d.ranks(3).tolist() == [1, 0, 2]
    assert d.ranks(2).tolist() == [1, 0]
    d.extend(["0"])
    assert d.ranks(4).tolist() == [2, 1, 3, 0]


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "é", "", "日"])), max_size=40))
def test_encode_decode_round_trip(values: list[str | None]) -> None:
    d = Dictionary(["b"])
    codes, new = d.encode(values, nil_mask(values), column())
    d.extend(new)
    table = d.strings(len(d))
    assert [None if v is None else table[c] for v, c in zip(values, codes.tolist())] == values
    assert len(set(d.values)) == len(d.values)


def test_lone_surrogates_are_rejected() -> None:
    """JSON can carry "\\ud800"; such a string cannot be stored or logged as UTF-8."""
    d = Dictionary(["ok"])
    values = ["ok", "fine", None, "bad\ud800", "bad\ud800"]
    with pytest.raises(InsertError, match=r"rows\[3\]\.s: 'bad\\ud800' is not valid Unicode"):
        d.encode(values, nil_mask(values), column())
    with pytest.raises(InsertError, match=r"rows\[7\]\.s:"):
        d.encode(values, nil_mask(values), column(), row_index=np.arange(5) + 4)
    assert d.values == ["ok"]
    codes, new = d.encode(["\U0001F600", "é"], None, column())  # astral and accented: fine
    assert new == ["\U0001F600", "é"]


def factor_of(values: list[str | None], extra: list[str]) -> Factor:
    """`values` factorised (nil rows code 0), with unused strings `extra` among the uniques."""
    uniques = list(dict.fromkeys([*extra, *(v for v in values if v is not None)]))[::-1]
    index = {s: i for i, s in enumerate(uniques)}
    return Factor(uniques, np.array([0 if v is None else index[v] for v in values], np.int64))


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "é", "", "日", "x"])),
                max_size=40),
       st.lists(st.sampled_from(["b", "zz", "y"]), max_size=3))
def test_a_factor_encodes_like_its_strings(values: list[str | None], extra: list[str]) -> None:
    """A Factor (distinct strings + codes, from bulk loaders) encodes exactly like the list of
    its strings: the same codes, the same new strings in the same order, unused ones left
    out; positions taken from it (Batch.take) too."""
    d = Dictionary(["b", "q"])
    f = factor_of(values, extra)
    want = d.encode(values, nil_mask(values), column())
    got = d.encode(f, nil_mask(values), column())
    assert got[0].dtype == want[0].dtype
    assert got[0].tolist() == want[0].tolist() and got[1] == want[1]
    pos = np.arange(len(values))[::2]
    sub = [values[i] for i in pos]
    assert d.encode(f[pos], nil_mask(sub), column())[1] == d.encode(sub, nil_mask(sub),
                                                                       column())[1]


def test_a_factor_overflow_and_surrogates_name_the_row() -> None:
    col = column("string:uint8", "country")
    d = Dictionary([f"s{i}" for i in range(250)])
    values = ["s1", "n0", None, "n1", "n0", "n2", "n3", "n4", "n5", "n5", "n6", "n7"]
    with pytest.raises(InsertError) as e:
        d.encode(factor_of(values, ["s7"]), nil_mask(values), col)
    assert str(e.value).startswith("rows[10].country:") and "'n6'" in str(e.value)
    values = ["ok", "fine", None, "bad\ud800", "bad\ud800"]
    with pytest.raises(InsertError, match=r"rows\[7\]\.s: 'bad\\ud800' is not valid Unicode"):
        Dictionary(["ok"]).encode(factor_of(values, []), nil_mask(values), column(),
                                  row_index=np.arange(5) + 4)
