"""Post-aggregation expressions (gumshoe/expression.py): precedence, associativity, quoting,
null and division-by-zero semantics, and errors that name the position."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gumshoe import expression
from gumshoe.errors import QueryError

from .. import reference
from ..strategies import expressions


@pytest.fixture(autouse=True)
def scan_kernels() -> Iterator[None]:
    yield  # no scan here: run once, not once per kernel


def value(text: str, **columns: float | None) -> float | None:
    arrays = {k: np.array([math.nan if v is None else v], np.float64) for k, v in
              columns.items()}
    out = expression.evaluate(expression.parse(text, "e"), arrays, 1)[0]
    return None if math.isnan(out) else float(out)


@pytest.mark.parametrize(("text", "want"), [
    ("1 + 2 * 3", 7.0),
    ("(1 + 2) * 3", 9.0),
    ("10 - 4 - 3", 3.0),  # left-associative
    ("64 / 4 / 2", 8.0),
    ("-2 * 3", -6.0),
    ("--2", 2.0),
    ("2 - -2", 4.0),
    ("-(1 + 2)", -3.0),
    (" 1.5e1+.5 ", 15.5),
    ("1/4", 0.25),
    ("7", 7.0),
    ("1 / 0", None),
    ("0 / 0", None),
    ("-1 / 0", None),
    ("1e300 * 1e300", None),  # overflow is null, not infinity
    ("1 / (1e300 * 1e300)", None),  # null propagates
])
def test_arithmetic(text: str, want: float | None) -> None:
    assert value(text) == want


def test_names_bare_dotted_quoted_and_unicode() -> None:
    assert value('clicks / "a-b"', clicks=6, **{"a-b": 3}) == 2.0
    assert value("dotted.name * 2", **{"dotted.name": 4}) == 8.0
    assert value("ünï + _x1", **{"ünï": 1, "_x1": 2}) == 3.0
    assert value('"with \\"quote\\" and \\\\" + 1', **{'with "quote" and \\': 1}) == 2.0
    assert value("x + 1", x=None) is None
    assert value("x * 0", x=None) is None


def test_positions_are_recorded_for_names() -> None:
    e = expression.parse('a + "b c" * d', "e")
    assert [(r.name, r.position) for r in expression.refs(e)] == [("a", 0), ("b c", 4),
                                                                  ("d", 12)]


@pytest.mark.parametrize(("text", "message"), [
    ("", "expression ends early: expected a number, a name or '(' at position 0 in ''"),
    ("a +", "expression ends early: expected a number, a name or '(' at position 3"),
    ("a b", "unexpected 'b' at position 2 in 'a b'"),
    ("(a", "missing ')' for the '(' at position 0 in '(a'"),
    ("(a b)", "expected ')', got 'b' at position 3"),
    ("a)", "unexpected ')' at position 1"),
    ('"abc', "unterminated quoted name at position 0"),
    ("a % b", "unexpected '%' at position 2"),
    ("a ** b", "unexpected '*': expected a number, a name or '(' at position 3"),
    ("1.2.3", "unexpected '.' at position 3"),
    ("+1", "unexpected '+': expected a number, a name or '(' at position 0"),
    ("os.system('x')", "unexpected '('"),
])
def test_errors_name_the_position(text: str, message: str) -> None:
    with pytest.raises(QueryError) as e:
        expression.parse(text, "postAggregations[2].expression")
    assert str(e.value).startswith("postAggregations[2].expression: ")
    assert message in str(e.value)


def test_vectorised_over_groups() -> None:
    cols = {"a": np.array([1.0, 2.0, math.nan, 4.0]), "b": np.array([0.0, 2.0, 1.0, -4.0])}
    out = expression.evaluate(expression.parse("a / b + 1", "e"), cols, 4)
    assert out[0] != out[0] and out[2] != out[2]  # 1/0 and null: null
    assert out[1:2].tolist() == [2.0] and out[3] == 0.0


NAMES = ["clicks", "visits", "a-b", "with space", "dotted.name", "ünï", "rowCount"]


@given(text=expressions(NAMES),
       values=st.lists(st.sampled_from([0, 1, 2, -3, 0.5, 2**53 + 1, None]),
                       min_size=len(NAMES), max_size=len(NAMES)))
def test_agrees_with_pythons_own_parser(text: str, values: list[float | None]) -> None:
    """The reference evaluates the same text with Python's ast module."""
    row = dict(zip(NAMES, values))
    assert value(text, **row) == reference.expression_value(text, row)
