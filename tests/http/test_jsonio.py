"""jsonio: the nesting guard in front of orjson and the encoder's handling of numpy and NaN."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gumshoe import jsonio

SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(
    alphabet=st.sampled_from('ab[]{}"\\ ,:'), max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(alphabet="[]{}\"\\x", max_size=3), inner,
                                        max_size=3), max_leaves=20)


def depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max(map(depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(depth, v.values()), default=0)
    return 0


@given(VALUES)
def test_nesting_depth_ignores_brackets_in_strings(value: Any) -> None:
    assert jsonio.nesting_depth(json.dumps(value).encode()) == depth(value)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_nesting_is_a_client_error_not_a_crash(opener: bytes) -> None:
    body = opener * 500_000
    with pytest.raises(jsonio.JSONBodyError, match="nested too deeply"):
        jsonio.loads(body, "insert body", strict=False)


def test_moderate_nesting_passes_only_when_not_strict() -> None:
    body = b"[" * 1000 + b"]" * 1000
    assert jsonio.loads(body, strict=False) is not None
    with pytest.raises(jsonio.JSONBodyError, match="nested too deeply"):
        jsonio.loads(body)


def test_dumps_converts_numpy_and_non_finite_floats() -> None:
    out = jsonio.dumps({"b": [np.float64("nan"), np.inf, -np.inf], "a": np.int8(-3),
                        "c": np.bool_(True), "d": 2**80})
    assert out == b'{"a":-3,"b":[null,null,null],"c":true,"d":1208925819614629174706176}\n'


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "rowCount"]),
                                st.one_of(st.none(), st.integers(-2**63, 2**63 - 1),
                                          st.text(max_size=5))), max_size=60),
       st.integers(1, 7), st.booleans())
def test_chunked_result_encoding_is_byte_identical(rows: list[dict[str, object]], chunk: int,
                                                    extra: bool) -> None:
    payload: dict[str, object] = {"duration_ms": 3}
    if extra:
        payload["missingShards"] = ["h:1"]
    assert jsonio.dumps_result(payload, rows, chunk) == jsonio.dumps({**payload,
                                                                      "results": rows})
