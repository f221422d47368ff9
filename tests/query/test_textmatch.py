"""String matching tables (gumshoe/textmatch.py): semantics, the regex guard, and tables built
once per dictionary entry and extended as the dictionary grows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gumshoe import textmatch
from gumshoe.dictionary import Dictionary


@pytest.fixture(autouse=True)
def scan_kernels() -> Iterator[None]:
    yield  # no scan here: run once, not once per kernel


@pytest.mark.parametrize(("op", "value", "ci", "s", "want"), [
    ("prefix", "ab", False, "abc", True),
    ("prefix", "AB", False, "abc", False),
    ("prefix", "AB", True, "abc", True),
    ("prefix", "STRASS", True, "Straße", True),  # Unicode case folding
    ("contains", "", False, "", True),
    ("contains", "日", False, "日本", True),
    ("contains", "Ü", True, "xüx", True),
    ("regex", "b.d", False, "abcde", True),  # search, not match
    ("regex", "^b", False, "abc", False),
    ("regex", "^A", True, "abc", True),
    ("regex", "c$", False, "abc\n", True),  # Python's $ (before a final newline)
])
def test_predicates(op: str, value: str, ci: bool, s: str, want: bool) -> None:
    assert textmatch.predicate(op, value, ci)(s) is want


@pytest.mark.parametrize(("pattern", "refused"), [
    ("(a+)+$", True), ("(a*)*", True), ("(.*,)*x", True), ("(x+y+)+", True),
    ("(?:a+)+", True), ("((a+)b)*", True), ("(a+){2,}", True), ("(a{2,})*", True),
    ("(a+)?", False), ("(a+){1}", False), ("a+b+c*", False), ("(ab)+", False),
    ("[(a+)]+", False), (r"\(a+\)+", False), ("^/blog/[^/]+$", False), ("(a|b)*c", False),
])
def test_the_nested_repeat_guard(pattern: str, refused: bool) -> None:
    assert (textmatch.nested_repeat(pattern) is not None) is refused
    assert (textmatch.check_regex(pattern) is not None) is refused


def test_bad_and_long_patterns_are_named() -> None:
    assert textmatch.check_regex("[z-a]") == "bad regex '[z-a]': bad character range z-a at " \
                                              "position 1"
    assert textmatch.check_regex("x" * 1001) == "regex longer than 1000 characters"


def test_a_table_is_extended_not_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    d = Dictionary(["apple", "banana"])
    tested: list[str] = []
    real = textmatch.predicate

    def counting(op: str, value: str, ci: bool):  # type: ignore[no-untyped-def]
        test = real(op, value, ci)
        return lambda s: tested.append(s) or test(s)

    monkeypatch.setattr(textmatch, "predicate", counting)
    assert textmatch.match_table(d, 2, "contains", "an", False).tolist() == [False, True]
    assert textmatch.match_table(d, 2, "contains", "an", False).tolist() == [False, True]
    d.extend(["mango", "kiwi"])
    assert textmatch.match_table(d, 3, "contains", "an", False).tolist() == [False, True, True]
    assert textmatch.match_table(d, 4, "contains", "an", False).tolist() == [
        False, True, True, False]
    assert textmatch.match_table(d, 1, "contains", "an", False).tolist() == [False]
    assert tested == ["apple", "banana", "mango", "kiwi"]  # each string once
