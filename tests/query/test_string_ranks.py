"""block.string_ranks: dense ranks of strings in code point order, exact also for the strings
numpy's fixed-width unicode cannot tell apart (trailing NULs), and for the fallback path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gumshoe import block
from gumshoe.block import dense_codes, string_ranks

ALPHABET = st.sampled_from(["", "a", "b", "\x00", "é", "Z", " ", "\U0001f642", "\ud7ff"])


def objects(values: list[str]) -> np.ndarray:
    arr = np.empty(len(values), object)
    arr[:] = values
    return arr


@given(st.lists(st.lists(ALPHABET, max_size=4).map("".join), max_size=60))
def test_ranks_follow_python_string_order(values: list[str]) -> None:
    ranks, n = string_ranks(objects(values))
    distinct = sorted(set(values))
    assert ranks.tolist() == [distinct.index(v) for v in values]
    assert n == len(distinct)


@given(st.lists(st.lists(ALPHABET, max_size=4).map("".join), min_size=1, max_size=30))
def test_the_object_fallback_agrees(values: list[str]) -> None:
    fast = string_ranks(objects(values))
    saved = block._STRING_SORT_BYTES
    block._STRING_SORT_BYTES = 0
    try:
        slow = string_ranks(objects(values))
    finally:
        block._STRING_SORT_BYTES = saved
    assert fast[0].tolist() == slow[0].tolist() and fast[1] == slow[1]


def test_dense_codes_of_strings_put_nil_first() -> None:
    codes, card = dense_codes(objects(["b", "", "a", "b"]), np.array([False, True, False, False]))
    assert codes.tolist() == [3, 0, 2, 3] and card == 4


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n: int) -> None:
    ranks, k = string_ranks(objects(["x"] * n))
    assert ranks.tolist() == [0] * n and k == n
