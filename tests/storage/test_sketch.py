"""Distinct-count sketches (gumshoe/sketch.py, gumshoe/_sketch.c) against exact Python sets.

Every property runs over both paths: the C kernel (when built) and the numpy path; and the two
must give identical columns."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gumshoe import native, sketch
from gumshoe.sketch import N_REGISTERS, SPARSE_MAX, SketchColumn

PATHS: list[tuple[str, ModuleType | None]] = (
    [("native", native.sketch)] if native.sketch is not None else []) + [("numpy", None)]
POOL = ThreadPoolExecutor(4, thread_name_prefix="test-sketch")  # a union's helpers (a Job)


@contextlib.contextmanager
def use(ext: ModuleType | None) -> Iterator[None]:
    saved = native.sketch
    native.sketch = ext
    try:
        yield
    finally:
        native.sketch = saved


@pytest.fixture(params=PATHS, ids=[name for name, _ in PATHS])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    with use(request.param[1]):
        yield request.param[0]


def test_the_extension_is_loaded() -> None:
    if os.environ.get("GUMSHOE_NATIVE") != "0":
        assert native.sketch is not None, native.why_missing()


# -- hashing ------------------------------------------------------------------------------------
# XXH64, seed 0: the published test values ("" and "a"), the rest checked against libxxhash.
EXPECTED = {"": 0xEF46DB3751D8E999, "a": 0xD24EC4F1A98C6E5B, "abc": 0x44BC2CF5AD770999,
            "5": 0x6A81B47405B648ED, "héllo wörld": 0x60041BFEC530413C,
            "y" * 32: 0x64DA1F1D3495CE66, "q" * 100: 0x9A081E2D827F6447}


def test_hashes_are_xxh64_of_the_utf8_bytes(path: str) -> None:
    hashes, present = sketch.hash_strings(list(EXPECTED))
    assert present.all()
    assert hashes.tolist() == list(EXPECTED.values())
    assert sketch.hash_array(np.array(list(EXPECTED))).tolist() == list(EXPECTED.values())
    assert [sketch._xxh64_py(k.encode()) for k in EXPECTED] == list(EXPECTED.values())


def test_an_integer_is_its_decimal_text(path: str) -> None:
    hashes, present = sketch.hash_strings([5, "5", -17, "-17", 2**70, str(2**70), None])
    assert hashes[0] == hashes[1] == EXPECTED["5"] == sketch.hash_ints(np.array([5]))[0]
    assert hashes[2] == hashes[3] == sketch.hash_ints(np.array([-17]))[0]
    assert hashes[4] == hashes[5]
    assert present.tolist() == [True] * 6 + [False] and hashes[6] == 0


@pytest.mark.parametrize("bad", [1.5, True, b"x", [1]])
def test_other_identities_are_refused_by_position(path: str, bad: object) -> None:
    with pytest.raises(TypeError, match="item 1: an identity must be a string or an integer"):
        sketch.hash_strings(["a", bad])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=70),
                          st.integers(-2**63, 2**63 - 1), st.integers())))
def test_native_hashing_equals_the_python_reference(values: list[object]) -> None:
    results = []
    for _, ext in PATHS:
        with use(ext):
            results.append(sketch.hash_strings(values))
    for hashes, present in results[1:]:
        assert np.array_equal(hashes, results[0][0]) and np.array_equal(present, results[0][1])
    # numpy's fixed-width strings cannot hold a trailing NUL (they are padded with NULs), so
    # such a string never reaches hash_array as itself
    strings = [v for v in values if isinstance(v, str) and not v.endswith("\x00")]
    ints = np.array([v for v in values if isinstance(v, int) and -2**63 <= v < 2**63], np.int64)
    for _, ext in PATHS:
        with use(ext):
            assert sketch.hash_array(np.array(strings, dtype=str)).tolist() == \
                [sketch._xxh64_py(s.encode()) for s in strings]
            assert sketch.hash_ints(ints).tolist() == \
                [sketch._xxh64_py(str(v).encode()) for v in ints.tolist()]


def test_dictionary_hashing_gathers_by_code(path: str) -> None:
    words = np.array(["x", "yy", "zzz"])
    codes = np.array([2, 0, 0, 1])
    assert sketch.hash_array(words)[codes].tolist() == \
        sketch.hash_strings(["zzz", "x", "x", "yy"])[0].tolist()


def test_hashes_are_the_same_in_another_process() -> None:
    code = ("from gumshoe import sketch; print(sketch.hash_strings(['visitor-1', 7])[0].tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}
    assert outs == {str(sketch.hash_strings(["visitor-1", 7])[0].tolist()) + "\n"}


# -- sketches -----------------------------------------------------------------------------------
def reference(groups: np.ndarray, hashes: np.ndarray, n_groups: int) -> list[set[int]]:
    sets: list[set[int]] = [set() for _ in range(n_groups)]
    for g, h in zip(groups.tolist(), hashes.tolist()):
        sets[g].add(h)
    return sets


@st.composite
def pairs(draw: st.DrawFn, big: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(group, hash) pairs: a few groups, identities from a pool (repeats within and across
    groups); with `big`, one group sees more than SPARSE_MAX identities."""
    n_groups = draw(st.integers(1, 6))
    n = draw(st.integers(0, 300))
    pool = draw(st.integers(1, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = rng.integers(0, n_groups, n)
    ids = rng.integers(0, pool, n)
    if big:
        extra = draw(st.integers(SPARSE_MAX - 5, 3 * SPARSE_MAX))
        groups = np.concatenate([groups, np.zeros(extra, np.int64)])
        ids = np.concatenate([ids, rng.integers(0, 10**9, extra)])
    return groups.astype(np.int64), sketch.hash_ints(ids), n_groups


def sparse_sets(col: SketchColumn) -> list[set[int] | None]:
    off = col.offsets()
    dense = set(col.dense_rows.tolist())
    return [None if i in dense else set(col.hashes[off[i]:off[i + 1]].tolist())
            for i in range(len(col))]


@settings(max_examples=40, deadline=None)
@given(pairs())
def test_small_sets_are_exact(p: tuple[np.ndarray, np.ndarray, int]) -> None:
    groups, hashes, n_groups = p
    expected = reference(groups, hashes, n_groups)
    for _, ext in PATHS:
        with use(ext):
            col = SketchColumn.from_identities(groups, hashes, n_groups)
            assert sparse_sets(col) == expected
            for i in range(n_groups):  # sorted, unique
                assert col.row_hashes(i).tolist() == sorted(expected[i])
            est, exact = col.estimate()
            assert est.tolist() == [len(s) for s in expected] and exact.all()


@settings(max_examples=25, deadline=None)
@given(pairs(big=True), st.data())
def test_union_of_parts_is_the_sketch_of_the_whole(p: tuple[np.ndarray, np.ndarray, int],
                                                   data: st.DataObject) -> None:
    """Split the pairs into rows (parts) any way, sketch the rows, unite them in any order:
    the same representation as sketching the whole at once (associative, commutative)."""
    groups, hashes, n_groups = p
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n_rows = data.draw(st.integers(1, 20))
    row_of_pair = rng.integers(0, n_rows, len(hashes))
    # each row belongs to one group: row r's pairs are those of one group
    key = groups * n_rows + row_of_pair
    uniq, row = np.unique(key, return_inverse=True)
    group_of_row = uniq // n_rows
    results = []
    for _, ext in PATHS:
        with use(ext):
            whole = SketchColumn.from_identities(groups, hashes, n_groups)
            rows = SketchColumn.from_identities(row.ravel(), hashes, len(uniq))
            perm = rng.permutation(len(uniq))
            shuffled = rows.take(perm)
            assert shuffled.union_rows(group_of_row[perm], n_groups) == whole
            # in two steps: rows -> halves -> groups
            half = np.arange(len(uniq)) % 2
            mid = rows.union_rows(group_of_row * 2 + half, 2 * n_groups)
            assert mid.union_rows(np.arange(2 * n_groups) // 2, n_groups) == whole
            # the query form: selected rows and their groups
            assert sketch.union(rows, perm, group_of_row[perm], n_groups) == whole
            results.append(whole)
    assert all(r == results[0] for r in results)
    assert 0 in results[0].dense_rows.tolist() or len(set(hashes[groups == 0].tolist())) \
        <= SPARSE_MAX
    est, exact = results[0].estimate()
    expected = reference(groups, hashes, n_groups)
    for g in range(n_groups):
        if exact[g]:
            assert est[g] == len(expected[g])
        else:
            assert abs(est[g] / len(expected[g]) - 1) < 0.05


@pytest.mark.parametrize("n", [2049, 5000, 50_000, 1_000_000])
def test_dense_estimates_are_within_tolerance(path: str, n: int) -> None:
    hashes = sketch.hash_ints(np.arange(n) + 10**12)
    col = SketchColumn.from_identities(np.zeros(n, np.int64), hashes, 1)
    est, exact = col.estimate()
    assert not exact[0] and col.dense_rows.tolist() == [0] and len(col.hashes) == 0
    assert abs(est[0] / n - 1) < 4 * 0.0081  # 4 standard errors at p = 14


def test_estimator_at_the_ends() -> None:
    assert sketch.estimate_registers(np.zeros((1, N_REGISTERS), np.uint8)).tolist() == [0.0]
    full = np.full((1, N_REGISTERS), 51, np.uint8)  # saturated: Ertl's estimator says infinity
    assert sketch.estimate_registers(full).tolist() == [np.inf]


def test_empty_and_none(path: str) -> None:
    hashes, present = sketch.hash_strings([None, "a", None])
    col = SketchColumn.from_identities(np.array([0, 1, 1])[present], hashes[present], 3)
    est, exact = col.estimate()
    assert est.tolist() == [0, 1, 0] and exact.all()
    nothing = SketchColumn.from_identities(np.zeros(0, np.int64), np.zeros(0, np.uint64), 2)
    assert nothing == SketchColumn.empty(2)
    assert sketch.union(col, np.zeros(3, np.bool_), np.zeros(0, np.int64), 1) == \
        SketchColumn.empty(1)
    assert SketchColumn.concat([]) == SketchColumn.empty(0)


def test_bad_groups_are_refused(path: str) -> None:
    col = SketchColumn.from_identities(np.array([0, 1]), sketch.hash_ints(np.array([1, 2])), 2)
    with pytest.raises(ValueError, match="out of range"):
        col.union_rows(np.array([0, 5]), 2)
    with pytest.raises(ValueError, match="group ids"):
        col.union_rows(np.array([0]), 2)


def mixed_column() -> SketchColumn:
    rng = np.random.default_rng(7)
    groups = np.concatenate([rng.integers(0, 50, 3000), np.full(5000, 3), np.full(3000, 40)])
    ids = np.concatenate([rng.integers(0, 400, 3000), rng.integers(0, 10**9, 8000)])
    return SketchColumn.from_identities(groups, sketch.hash_ints(ids), 50)


def test_serialisation_round_trip(path: str, tmp_path: object) -> None:
    col = mixed_column()
    assert col.dense_rows.tolist() == [3, 40] and col.lens.dtype == np.uint8
    arrays = col.to_arrays()
    assert set(arrays) == {"len", "hash", "rows", "reg"}
    assert SketchColumn.from_arrays(arrays) == col
    assert SketchColumn.from_arrays({k: v.copy() for k, v in arrays.items()}) == col
    assert col.nbytes == sum(a.nbytes for a in arrays.values())
    bad = dict(arrays, len=arrays["len"][:-1])
    with pytest.raises(ValueError, match="inconsistent"):
        SketchColumn.from_arrays(bad)


def test_take_concat_and_masks(path: str) -> None:
    col = mixed_column()
    a, b = col.take(np.arange(0, 25)), col.take(np.arange(25, 50))
    assert SketchColumn.concat([a, b]) == col
    rows = np.array([40, 3, 3, 7, 12])
    taken = col.take(rows)
    assert taken.dense_rows.tolist() == [0, 1, 2]
    assert taken.union_rows(np.array([0, 1, 1, 0, 2]), 3) == \
        sketch.union(col, rows, np.array([0, 1, 1, 0, 2]), 3)
    mask = np.zeros(50, np.bool_)
    mask[[3, 7, 12, 40]] = True
    assert sketch.union(col, mask, np.zeros(4, np.int64), 1) == \
        sketch.union(col, np.array([3, 7, 12, 40]), np.zeros(4, np.int64), 1)


def test_keep_is_take_of_the_rows_that_are_not_empty() -> None:
    """`keep` (a union's groups that have rows) answers as `take`, sharing the hashes and
    registers when every other row is empty, gathering them (take) when not."""
    col = mixed_column().take(np.repeat(np.arange(50), 2))  # rows 2i and 2i + 1 the same
    # rows 3i and 3i + 1 (dense: 9, 10, 120, 121)
    spread = col.union_rows(np.arange(100) * 3 // 2, 150)
    assert spread.dense_rows.tolist() == [9, 10, 120, 121]
    full = np.flatnonzero((spread.lens > 0) | np.isin(np.arange(150), spread.dense_rows))
    for rows in (full, np.union1d(full, [2, 5, 149]), full[full != 9], full[1:],
                 np.zeros(0, np.int64)):
        got = spread.keep(rows)
        assert got == spread.take(rows) and len(got) == len(rows)
    assert np.shares_memory(spread.keep(full).hashes, spread.hashes)


@pytest.mark.parametrize("lo, hi", [(0, 50), (0, 25), (25, 50), (3, 4), (4, 40), (41, 50),
                                    (10, 10), (0, 0), (45, 99)])
def test_slice_is_take_of_the_range(lo: int, hi: int) -> None:
    col = mixed_column()  # dense rows 3 and 40
    want = col.take(np.arange(lo, min(hi, len(col))))
    got = col.slice(lo, hi)
    assert got == want and len(got) == len(want)
    assert np.shares_memory(got.hashes, col.hashes) or len(got.hashes) == 0  # views


def test_native_and_numpy_columns_are_identical() -> None:
    if len(PATHS) < 2:
        pytest.skip("gumshoe._sketch is not loaded")
    cols = []
    for _, ext in PATHS:
        with use(ext):
            col = mixed_column()
            groups = np.random.default_rng(3).integers(0, 4, len(col))
            cols.append((col, col.union_rows(groups, 4)))
    assert cols[0][0] == cols[1][0] and cols[0][1] == cols[1][1]


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_union_of_blocks_in_place_is_the_union_of_their_concatenation(data: st.DataObject) -> None:
    """The query kernel: several blocks (row ranges of a column with dense rows, light and
    heavy groups, rows left out with key -1, whole blocks under one key) united in place: the
    same sketches as uniting the concatenation."""
    seed = data.draw(st.integers(0, 2**32 - 1))
    n_groups = data.draw(st.integers(1, 5))
    cuts = sorted(data.draw(st.lists(st.integers(0, 50), max_size=4)))
    results = []
    for _, ext in PATHS:
        with use(ext):
            rng = np.random.default_rng(seed)
            col = mixed_column()  # 50 rows, dense rows 3 and 40, rows of 1 to 5,000 hashes
            bounds = [0, *cuts, len(col)]
            parts: list[tuple[SketchColumn, np.ndarray | int]] = []
            key = np.empty(len(col), np.int64)
            for lo, hi in itertools.pairwise(bounds):
                if rng.random() < 0.3:  # one key for the block
                    k: np.ndarray | int = int(rng.integers(-1, n_groups))
                    key[lo:hi] = k
                else:
                    k = rng.integers(-1, n_groups, hi - lo)
                    key[lo:hi] = k
                parts.append((col.slice(lo, hi), k))
            got = sketch.union_blocks(parts, n_groups)
            rows = np.flatnonzero(key >= 0)
            assert got == sketch.union(col, rows, key[rows], n_groups)
            results.append(got)
    results += threaded(lambda ex, t: sketch.union_blocks(parts, n_groups, ex, t))
    assert all(r == results[0] for r in results)


def test_union_of_blocks_refuses_bad_keys(path: str) -> None:
    col = mixed_column()
    for keys in (np.full(len(col), 7), np.full(len(col), -2), 9):
        with pytest.raises(ValueError, match="out of range|inconsistent"):
            sketch.union_blocks([(col, keys)], 4)
    with pytest.raises(ValueError, match="inconsistent"):
        sketch.union_blocks([(col, np.zeros(3, np.int64))], 4)


def test_union_of_groups_on_both_sides_of_the_paths() -> None:
    """Groups whose rows hold a few thousand hashes take the partitioned path, many thousands
    the streamed one; either may end sparse (repeats) or dense: the same sketches as the numpy
    path, exact where sparse."""
    rng = np.random.default_rng(11)
    plan = [(0, 6, 2048), (1, 6, 100_000), (2, 20, 2000), (3, 20, 10**9), (4, 1, 50)]
    rows, groups = [], []
    for g, n_rows, pool in plan:
        for _ in range(n_rows):
            rows.append(np.unique(sketch.hash_ints(rng.integers(0, pool, 500))))
            groups.append(g)
    col = SketchColumn(np.array([len(r) for r in rows], np.uint16), np.concatenate(rows),
                       np.zeros(0, np.int64), np.zeros((0, N_REGISTERS), np.uint8))
    order = rng.permutation(len(rows))  # the groups' rows interleaved
    col, keys = col.take(order), np.array(groups)[order]
    results = []
    parts = [(col.slice(0, 30), keys[:30]), (col.slice(30, len(col)), keys[30:])]
    for _, ext in PATHS:
        with use(ext):
            results.append(sketch.union_blocks(parts, 5))
    results += threaded(lambda ex, t: sketch.union_blocks(parts, 5, ex, t))
    assert all(r == results[0] for r in results)
    got = results[0]
    assert got.dense_rows.tolist() == [1, 3]
    for g in (0, 2, 4):
        want = set(np.concatenate([r for r, k in zip(rows, groups) if k == g]).tolist())
        assert got.row_hashes(g).tolist() == sorted(want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.int64])
def test_keys_from_grouping_codes(path: str, dtype: type) -> None:
    """Keys given as (base, parts of stored codes) -- the engine's mixed-radix group key,
    computed in C (in 32-bit lanes for 8/16-bit codes, else 64-bit) -- unite as the same keys
    given as an array; a key outside the groups is refused (parts select every row: no -1)."""
    col = mixed_column()
    rng = np.random.default_rng(5)
    a = rng.integers(3, 6, len(col)).astype(dtype)  # offset 2: codes 1..3
    b = rng.integers(0, 4, len(col)).astype(np.uint8)
    nil = rng.random(len(col)) < 0.3
    parts = [(a, 2, 5, None), (b, -1, 1, nil)]  # key = 1 + (a - 2) * 5 + (b + 1 | 0 where nil)
    want = 1 + (a.astype(np.int64) - 2) * 5 + np.where(nil, 0, b.astype(np.int64) + 1)
    assert sketch.key_array((1, parts, None), len(col)).tolist() == want.tolist()

    def cut(lo: int, hi: int, mask: np.ndarray | None) -> sketch.Keys:
        return (1, [(x[lo:hi], o, s, None if m is None else m[lo:hi]) for x, o, s, m in parts],
                None if mask is None else mask[lo:hi])

    got = sketch.union_blocks([(col.slice(0, 20), cut(0, 20, None)),
                               (col.slice(20, 50), cut(20, 50, None))], 25)
    assert got == sketch.union(col, None, want, 25)
    keep = rng.random(len(col)) < 0.6  # a filter's rows
    got = sketch.union_blocks([(col.slice(0, 20), cut(0, 20, keep)),
                               (col.slice(20, 50), cut(20, 50, keep))], 25)
    rows = np.flatnonzero(keep)
    assert got == sketch.union(col, rows, want[rows], 25)
    with pytest.raises(ValueError, match="out of range"):
        sketch.union_blocks([(col, (-20, parts, None))], 25)
    with pytest.raises(ValueError, match="out of range"):
        sketch.union_blocks([(col, (30, parts, keep))], 25)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_union_summing_adds_each_selected_rows_weight(data: st.DataObject) -> None:
    """union_summing (a query of uniques alone: its row counts from the union's pass): the
    sketches of union_blocks, and per group the sum of its selected rows' weights, for blocks
    keyed by an array, by one int (-1: none of its rows) and by grouping codes with a filter's
    mask, with weights of any integer type; the two paths agree."""
    seed = data.draw(st.integers(0, 2**32 - 1))
    wtype = data.draw(st.sampled_from([np.int8, np.uint8, np.int16, np.uint32, np.int64]))
    cuts = sorted(data.draw(st.lists(st.integers(0, 50), max_size=4)))
    results = []
    for _, ext in PATHS:
        with use(ext):
            rng = np.random.default_rng(seed)
            col = mixed_column()  # 50 rows, dense rows 3 and 40
            codes = rng.integers(0, 3, len(col)).astype(np.uint8)
            info = np.iinfo(wtype)  # any value of the type (far from int64's overflow)
            weights = rng.integers(max(info.min, -2**40), min(info.max, 2**40), len(col),
                                   endpoint=True).astype(wtype)
            key = np.empty(len(col), np.int64)
            parts: list[tuple[SketchColumn, sketch.Keys]] = []
            for lo, hi in itertools.pairwise([0, *cuts, len(col)]):
                kind = rng.integers(0, 3)
                if kind == 0:  # one key for the block
                    k: sketch.Keys = int(rng.integers(-1, 4))
                    key[lo:hi] = k
                elif kind == 1:
                    k = rng.integers(-1, 4, hi - lo)
                    key[lo:hi] = k
                else:  # 1 + code, where the mask keeps the row
                    mask = rng.random(hi - lo) < 0.7
                    k = (1, [(codes[lo:hi], 0, 1, None)], mask)
                    key[lo:hi] = np.where(mask, 1 + codes[lo:hi].astype(np.int64), -1)
                parts.append((col.slice(lo, hi), k))
            bounds = [0, *cuts, len(col)]
            got, sums = sketch.union_summing(
                parts, 4, [weights[lo:hi] for lo, hi in itertools.pairwise(bounds)])
            assert got == sketch.union_blocks(parts, 4)
            sel = key >= 0
            want = np.zeros(4, np.int64)
            np.add.at(want, key[sel], weights[sel].astype(np.int64))
            assert sums.dtype == np.int64 and sums.tolist() == want.tolist()
            results.append((got, sums.tolist()))
            weighed = [weights[lo:hi] for lo, hi in itertools.pairwise(bounds)]
    results += [(u, w.tolist()) for u, w in threaded(
        lambda ex, t: sketch.union_summing(parts, 4, weighed, ex, t))]
    assert all(r[0] == results[0][0] and r[1] == results[0][1] for r in results)


def test_union_summing_refuses_bad_weights(path: str) -> None:
    col = mixed_column()
    for bad in (np.ones(len(col)), np.ones(3, np.int64)):
        with pytest.raises(ValueError, match="weights"):
            sketch.union_summing([(col, 0)], 1, [bad])
    with pytest.raises(ValueError, match="one weights array per part"):
        sketch.union_summing([(col, 0)], 1, [])


def test_union_outputs_outlive_later_unions() -> None:
    """The C union's outputs (hashes, registers) live in buffers it keeps for later calls: one
    goes back only when nothing reads it any more -- a held result is unchanged by the unions
    after it, which reuse the buffers of the dropped ones -- and Python cannot write to it."""
    if native.sketch is None:
        pytest.skip("gumshoe._sketch is not loaded")
    col = mixed_column()
    rng = np.random.default_rng(8)
    held = []
    for i in range(12):
        keys = rng.integers(-1, 6, len(col))
        held.append((keys, sketch.union_blocks([(col, keys)], 6)))
        for _ in range(3):  # unions whose outputs are dropped at once
            sketch.union_blocks([(col, rng.integers(-1, 6, len(col)))], 6)
    for keys, got in held:
        with use(None):
            assert got == sketch.union_blocks([(col, keys)], 6)
    with pytest.raises(ValueError, match="read-only"):
        held[0][1].hashes[:1] = 0
    with pytest.raises(ValueError, match="read-only"):
        held[0][1].registers[:1] = 0


def test_union_outputs_keep_little_more_than_their_bytes() -> None:
    """An output's buffer is sized to a bound of what the union may write (a group's rows'
    hashes, up to 4,096): one that fills less than half of it moves to a buffer near its size,
    so a memtable's roll-up of many repeats keeps its output's bytes, not the bound's."""
    if native.sketch is None:
        pytest.skip("gumshoe._sketch is not loaded")
    rng = np.random.default_rng(4)
    cases = [  # (lens, hashes, keys, n_groups)
        (np.ones(3000, np.uint8), np.full(3000, 12345, np.uint64), 0, 1),  # one hash, repeated
        (np.ones(20000, np.uint8), sketch.hash_ints(rng.integers(0, 50, 20000)),
         rng.integers(0, 40, 20000), 40),  # 40 groups of ~500 rows, 50 identities
    ]
    col = mixed_column()
    cases.append((col.lens, col.hashes, rng.integers(-1, 6, len(col)), 6))
    for lens, hashes, keys, n_groups in cases:
        dense = (col.dense_rows, col.registers) if lens is col.lens else (
            np.zeros(0, np.int64), np.zeros((0, N_REGISTERS), np.uint8))
        out = native.sketch.union([(lens, hashes, *dense, keys)], n_groups, SPARSE_MAX)
        for pooled in (out[1], out[3]):
            used = len(memoryview(pooled))
            assert used <= pooled.held <= 2 * used + 8 * 513, (used, pooled.held)


def test_many_large_groups_partly_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """More groups past the streaming cut than may stream (max_streamed in _sketch.c, 32-256):
    the largest stream, the others are partitioned; sparse or dense either way, the same
    sketches as the numpy path. (A small sparse_max keeps it quick: cut 4 x 16 hashes.)"""
    if len(PATHS) < 2:
        pytest.skip("gumshoe._sketch is not loaded")
    monkeypatch.setattr(sketch, "SPARSE_MAX", 16)
    rng = np.random.default_rng(3)
    n_groups = 300
    size = rng.integers(50, 400, n_groups)  # hashes per group: all past the cut of 64
    pool = np.where(rng.random(n_groups) < 0.5, 12, 10**9)  # half stay sparse (repeats)
    groups = np.repeat(np.arange(n_groups), size)
    ids = (rng.integers(0, 10**9, len(groups)) % pool[groups]) + groups * 10**9
    col = SketchColumn(np.ones(len(groups), np.uint8), sketch.hash_ints(ids),
                       np.zeros(0, np.int64), np.zeros((0, N_REGISTERS), np.uint8))
    order = rng.permutation(len(groups))
    col, keys = col.take(order), groups[order]
    parts = [(col.slice(lo, lo + 1000), keys[lo:lo + 1000]) for lo in range(0, len(col), 1000)]
    results = []
    for _, ext in PATHS:
        with use(ext):
            results.append(sketch.union_blocks(parts, n_groups))
    results += threaded(lambda ex, t: sketch.union_blocks(parts, n_groups, ex, t))
    assert all(r == results[0] for r in results)
    assert 0 < len(results[0].dense_rows) < n_groups


def both_paths_rng(data: st.DataObject) -> np.random.Generator:
    """For a test comparing the C and numpy paths (skipped without the extension): a generator
    seeded by hypothesis, so a failing example replays."""
    if len(PATHS) < 2:
        pytest.skip("gumshoe._sketch is not loaded")
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))


def threaded(unite: Callable[[ThreadPoolExecutor | None, int], Any]) -> list[Any]:
    """unite(executor, threads) by the C union on 2, 3 and 5 threads of POOL (runs of the
    blocks, then of the groups, per thread; at most one per block), and on 2 threads of an
    executor of one (the helper runs only after the union, which takes every unit itself);
    however small the input (PARALLEL_MIN 0). Empty without the extension."""
    if native.sketch is None:
        return []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sketch, "PARALLEL_MIN", 0)
        out = [unite(POOL, t) for t in (2, 3, 5)]
        with ThreadPoolExecutor(1) as one:
            out.append(unite(one, 2))
    return out


def unite_small(parts: Sequence[tuple[SketchColumn, sketch.Keys]], n_groups: int) -> SketchColumn:
    """union_blocks with sparse_max 16 (quick) on the C and numpy paths, and on several
    threads (`threaded`), which must all agree."""
    results = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sketch, "SPARSE_MAX", 16)
        for _, ext in PATHS:
            with use(ext):
                results.append(sketch.union_blocks(parts, n_groups))
        results += threaded(lambda ex, t: sketch.union_blocks(parts, n_groups, ex, t))
    assert all(r == results[0] for r in results)
    return results[0]


def assert_exact_where_sparse(got: SketchColumn, want: list[set[int]]) -> None:
    """Group g is dense only past sparse_max (16) distinct hashes, else exactly want[g]."""
    dense = set(got.dense_rows.tolist())
    for g, w in enumerate(want):
        if g in dense:
            assert len(w) > 16
        else:
            assert got.row_hashes(g).tolist() == sorted(w)


def rows_column(rows: list[np.ndarray], lens_dtype: type) -> SketchColumn:
    """A sparse column of the given rows (sorted sets)."""
    return SketchColumn(np.array([len(r) for r in rows], lens_dtype), np.concatenate(rows),
                        np.zeros(0, np.int64), np.zeros((0, N_REGISTERS), np.uint8))


def group_sets(rows: list[np.ndarray], keys: np.ndarray, n_groups: int) -> list[set[int]]:
    return [set(np.concatenate([r for r, k in zip(rows, keys) if k == g]).tolist())
            for g in range(n_groups)]


def unite_in_two_blocks(data: st.DataObject, order: np.ndarray, rows: list[np.ndarray],
                        groups: list[int], n_groups: int) -> None:
    """The rows (group groups[i] each) in `order`, as one column cut in two blocks at a drawn
    row, united with unite_small: exact where sparse (a group of at most 16 distinct is never
    dense)."""
    rows, keys = [rows[i] for i in order], np.array(groups, np.int64)[order]
    col = rows_column(rows, np.uint8)
    cut = data.draw(st.integers(0, len(rows)))
    got = unite_small([(col.slice(0, cut), keys[:cut]), (col.slice(cut, len(rows)), keys[cut:])],
                      n_groups)
    assert_exact_where_sparse(got, group_sets(rows, keys, n_groups))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_union_of_sorted_sets_merges_them(data: st.DataObject) -> None:
    """Rows that are sorted sets (a partial's rows, as merged across threads and shards): one,
    two or three per group, overlapping or not, short and long (past LONG_ROW, copied as a
    run), the hash 0 among them, united sparse or past sparse_max dense: the same sketches as
    the numpy path, and exact where sparse. (sparse_max 16 keeps it quick.)"""
    rng = both_paths_rng(data)
    n_groups = data.draw(st.integers(1, 8))
    rows: list[np.ndarray] = []
    groups: list[int] = []
    for g in range(n_groups):
        pool = int(rng.choice([8, 20, 60, 10**9]))
        for _ in range(data.draw(st.integers(1, 3))):
            ids = rng.integers(0, pool, int(rng.integers(1, 50)))
            h = np.unique(sketch.hash_ints(ids + g * 10**9))
            if rng.random() < 0.2:
                h = np.unique(np.concatenate([h, np.zeros(1, np.uint64)]))
            rows.append(h)
            groups.append(g)
    order = rng.permutation(len(rows)) if data.draw(st.booleans()) else np.arange(len(rows))
    rows, keys = [rows[i] for i in order], np.array(groups, np.int64)[order]
    got = unite_small([(rows_column(rows, np.uint16), keys)], n_groups)
    assert_exact_where_sparse(got, group_sets(rows, keys, n_groups))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_union_of_rows_in_group_runs(data: st.DataObject) -> None:
    """Rows that come in runs of one group (a segment sorted by the grouped dimension), runs of
    rows left out (-1) among them, groups light and streamed, sparse and dense: the same
    sketches as the numpy path, and exact where sparse. (sparse_max 16 keeps it quick.)"""
    rng = both_paths_rng(data)
    n_groups = data.draw(st.integers(1, 6))
    runs = data.draw(st.lists(st.tuples(st.integers(-1, n_groups - 1), st.integers(1, 30)),
                              min_size=1, max_size=25))
    keys = np.concatenate([np.full(n, g, np.int64) for g, n in runs])
    lens = rng.integers(0, 6, len(keys))
    pool = np.where(rng.random(n_groups) < 0.5, 10, 10**9)[np.maximum(keys, 0)]
    ids = np.repeat(rng.integers(0, 10**9, len(keys)) % pool + keys * 10**9, lens)
    hashes = sketch.hash_ints(ids + rng.integers(0, 3, len(ids)))
    col = SketchColumn(lens.astype(np.uint8), hashes, np.zeros(0, np.int64),
                       np.zeros((0, N_REGISTERS), np.uint8))
    cut = data.draw(st.integers(0, len(keys)))
    got = unite_small([(col.slice(0, cut), keys[:cut]), (col.slice(cut, len(keys)), keys[cut:])],
                      n_groups)
    row_of_hash = np.repeat(keys, lens)
    assert_exact_where_sparse(got, [set(hashes[row_of_hash == g].tolist())
                                    for g in range(n_groups)])


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_union_of_streamed_groups_near_sparse_max(data: st.DataObject) -> None:
    """Groups of more than 4 x sparse_max hashes stream into registers; one with at most
    sparse_max of them set is read again into a set. Groups of 15, 16 and 17 distinct hashes,
    repeated, whose register indices are all different, two the same (17 distinct in 16
    registers: read again, and dense) or random, the hash 0 among them, rows interleaved or in
    runs: the same sketches as the numpy path, exact where sparse, and 16 distinct stays
    sparse. (sparse_max 16 keeps it quick: streamed past 64 hashes. Planted bugs in the bound
    of registers set, in the set's bound and in what a row read again adds fail it.)"""
    rng = both_paths_rng(data)
    n_groups = data.draw(st.integers(1, 6))
    rows: list[np.ndarray] = []
    groups: list[int] = []
    for g in range(n_groups):
        k = int(rng.choice([15, 16, 17, 40]))
        if rng.random() < 0.5:  # one register each (index i in the top 14 bits), or two share
            idx = rng.choice(N_REGISTERS, k, replace=False).astype(np.uint64)
            if rng.random() < 0.5:  # so 17 distinct set only 16 registers: read again, dense
                idx[-1] = idx[0]
            pool = (idx << np.uint64(50)) | rng.integers(0, 2**50, k).astype(np.uint64)
        else:
            pool = sketch.hash_ints(rng.integers(0, 10**9, k) + g * 10**9)
        if rng.random() < 0.3:
            pool[0] = 0
        for _ in range(int(rng.integers(20, 60))):  # rows of 1-6 of the pool: > 64 hashes
            rows.append(np.unique(rng.choice(pool, int(rng.integers(1, 7)))))
            groups.append(g)
    order = rng.permutation(len(rows)) if data.draw(st.booleans()) else np.arange(len(rows))
    unite_in_two_blocks(data, order, rows, groups, n_groups)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_union_of_blocks_of_one_streamed_group(data: st.DataObject) -> None:
    """Blocks whose rows all fall in one group (keys as one int: a total, a block in one time
    bucket) or none (-1), more than 4 x sparse_max hashes streamed into the group's registers,
    of up to 16 distinct (read again into a set, each block's last row a hash of its own) or
    many: the same sketches as the numpy path, exact where sparse. (A planted bug in what a
    block read again adds to the set fails this test.)"""
    rng = both_paths_rng(data)
    n_groups = 2
    parts: list[tuple[SketchColumn, int]] = []
    want: list[set[int]] = [set(), set()]
    for b in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.integers(-1, n_groups - 1))
        k = data.draw(st.sampled_from([2, 4, 1000]))
        pool = sketch.hash_ints(rng.integers(0, 10**9, k) + b * 10**9)
        if rng.random() < 0.3:
            pool[0] = 0
        rows = [np.unique(rng.choice(pool[:-1], int(rng.integers(1, 4))))
                for _ in range(int(rng.integers(20, 40)))] + [pool[-1:]]
        parts.append((rows_column(rows, np.uint8), key))
        if key >= 0:
            want[key] |= set(np.concatenate(rows).tolist())
    assert_exact_where_sparse(unite_small(parts, n_groups), want)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_union_of_scanned_rows_of_small_groups(data: st.DataObject) -> None:
    """A scan's rows (sets of a few hashes, the groups interleaved) of groups small enough to
    be partitioned: each group's hashes sorted where they lie, or, past sparse_max of them, a
    bitmap telling the surely dense from the rest; groups of exactly sparse_max distinct among
    them, and the hash 0: the same sketches as the numpy path, exact where sparse. (sparse_max
    16 keeps it quick: partitioned up to 64 hashes.)"""
    rng = both_paths_rng(data)
    n_groups = data.draw(st.integers(1, 10))
    rows: list[np.ndarray] = []
    groups: list[int] = []
    for g in range(n_groups):
        pool = int(rng.choice([3, 15, 16, 17, 40, 10**9]))
        total = 0
        while total < int(rng.integers(1, 64)):
            ids = rng.integers(0, pool, int(rng.integers(1, 6)))
            h = np.unique(sketch.hash_ints(ids + g * 10**9))
            if rng.random() < 0.05:
                h = np.unique(np.concatenate([h, np.zeros(1, np.uint64)]))
            rows.append(h)
            groups.append(g)
            total += len(h)
    unite_in_two_blocks(data, rng.permutation(len(rows)), rows, groups, n_groups)


def test_a_job_helps_one_union_and_its_helpers_return() -> None:
    """A Job lends threads to one union call: its helpers return when the union does, also
    when it fails; a union nobody helps takes every unit itself; a helper that starts after it
    finds nothing to do; a second union on the same job is refused."""
    if native.sketch is None:
        pytest.skip("gumshoe._sketch is not loaded")
    col = mixed_column()
    block = (*col.native_arrays(), np.zeros(len(col), np.int64))
    def outputs(blocks: list[tuple[Any, ...]], *threads_and_job: Any) -> list[bytes]:
        return [bytes(memoryview(x)) for x in native.sketch.union(blocks, 1, SPARSE_MAX,
                                                                   *threads_and_job)
                if x is not None]

    assert outputs([block] * 3, 3, native.sketch.Job()) == outputs([block] * 3)
    job = native.sketch.Job()
    helpers = [POOL.submit(job.help) for _ in range(2)]
    out = outputs([block, block], 2, job)
    assert all(h.result(timeout=30) is None for h in helpers)
    assert job.help() is None  # late: returns at once
    assert out == outputs([block, block])
    with pytest.raises(ValueError, match="one union"):
        native.sketch.union([block], 1, SPARSE_MAX, 2, job)
    failing = native.sketch.Job()
    helpers = [POOL.submit(failing.help) for _ in range(2)]
    bad = (*col.native_arrays(), np.full(len(col), 7, np.int64))
    with pytest.raises(ValueError, match="out of range"):
        native.sketch.union([block, bad], 1, SPARSE_MAX, 2, failing)
    assert all(h.result(timeout=30) is None for h in helpers)
    with pytest.raises(TypeError, match="Job"):
        native.sketch.union([block], 1, SPARSE_MAX, 2, object())


def test_the_union_refuses_malformed_blocks() -> None:
    """The C union's arguments are the engine's, never a user's; still, a malformed one is a
    Python error naming it, not a crash (the blocks are unpacked without a format when they
    are tuples of the expected size)."""
    if native.sketch is None:
        pytest.skip("gumshoe._sketch is not loaded")
    col = mixed_column().native_arrays()
    codes = np.zeros(len(col[0]), np.uint8)
    for block, error, match in [
            ([*col, 0], TypeError, "block must be a tuple"),
            ((*col, (0, [[codes, 0, 1, None]])), TypeError, "key part must be a tuple"),
            ((*col, (0, [(codes, 0, 1)])), TypeError, "4 arguments"),
            ((*col, (0, [(codes, 2**70, 1, None)])), OverflowError, "too big"),
            ((*col, (0, [(codes, "x", 1, None)])), TypeError, "integer"),
            ((*col[:3],), TypeError, "at least 5")]:
        with pytest.raises(error, match=match):
            native.sketch.union([block], 4, SPARSE_MAX)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_union_to_be_estimated_brings_its_histograms(threads: int) -> None:
    """A query's union (histograms=True) makes each dense group's register histogram on its
    threads: the same as `histogram` of its registers, carried by `keep`, used by `estimate`
    (the same estimates); `take` makes a column without them."""
    if native.sketch is None:
        pytest.skip("gumshoe._sketch is not loaded")
    rng = np.random.default_rng(4)
    # group 0: 3,000 hashes of 10 identities (bound for registers, ends sparse: the outputs
    # of the groups after it move down), then dense groups, and the mixed column's rows
    few = [sketch.hash_ints(rng.integers(0, 10, 1)) for _ in range(3000)]
    many = [np.unique(sketch.hash_ints(rng.integers(0, 10**9, 50))) for _ in range(300)]
    rows = rows_column(few + many, np.uint8)
    keys = np.concatenate([np.zeros(3000, np.int64), rng.integers(1, 6, 300)])
    parts = [(rows.slice(lo, lo + 100), keys[lo:lo + 100]) for lo in range(0, len(rows), 100)]
    col = mixed_column()  # dense rows, and rows of up to 5,000 hashes
    parts += [(col.slice(lo, lo + 10), rng.integers(0, 8, 10)) for lo in range(0, len(col), 10)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sketch, "PARALLEL_MIN", 0)
        got = sketch.union_blocks(parts, 8, POOL, threads, histograms=True)
    assert got == sketch.union_blocks(parts, 8) and len(got.dense_rows) >= 2
    want = np.empty((len(got.dense_rows), sketch.Q + 2), np.int64)
    native.sketch.histogram(got.registers, want)
    assert np.array_equal(got.__dict__["_histograms"], want)
    present = np.flatnonzero(got.lens.astype(bool) | np.isin(np.arange(8), got.dense_rows))
    kept = got.keep(present)
    assert "_histograms" in kept.__dict__
    plain = sketch.SketchColumn(kept.lens, kept.hashes, kept.dense_rows, kept.registers)
    assert [a.tolist() for a in kept.estimate()] == [a.tolist() for a in plain.estimate()]
    assert "_histograms" not in got.take(present).__dict__
