"""String matching filters (prefix, contains, regex) as look-up tables over dictionary codes.

Imports dictionary (and numpy, re). A match is decided once per dictionary entry, never per
row: `match_table` gives a bool table indexed by code, and the filter compiler turns it into
a LUT leaf of the predicate program. Dictionaries are append-only, so a table is kept (for
the last TABLE_CACHE filters) and extended with the entries added since, not recomputed.

Case-insensitive prefix/contains compare Unicode case folds (`str.casefold`: "STRASSE"
matches "Straße"); a case-insensitive regex uses `re.IGNORECASE`. A regex matches anywhere in
the string (`re.search`: anchor it with ^ and $).

Regular expressions are Python's `re`, which backtracks. The guard against catastrophic
patterns is deliberately modest: patterns are at most MAX_PATTERN characters, and a repeated
group that itself holds an unbounded repeat (`(a+)+`, `(x*y*)*`, `(.*,)*`) is refused, the
classic exponential case. Other slow patterns (overlapping alternatives under a repeat, such as
`(a|aa)*b`, or backreferences) are not detected; their cost is still bounded by the
dictionary (it is paid per distinct string, once per string ever added).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from .dictionary import Dictionary

MATCH_TYPES = ("prefix", "contains", "regex")
MAX_PATTERN = 1000
TABLE_CACHE = 64
_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")


def nested_repeat(pattern: str) -> int | None:
    """The position of a repeat applied to a group holding an unbounded repeat (the classic
    catastrophic-backtracking shape), or None. A light scan of the pattern text: escapes and
    character classes are skipped."""
    stack: list[bool] = [False]  # per open group: does it hold an unbounded repeat?
    last_group: bool | None = None  # the group just closed (its flag), if the last atom was one
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        unbounded: bool | None = None  # set when pattern[i] starts a repeat
        width, most = 1, 1
        if c == "\\":
            i += 2
            last_group = None
            continue
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            last_group = None
            continue
        if c == "(":
            stack.append(False)
            last_group = None
        elif c == ")":
            inner = stack.pop() if len(stack) > 1 else False
            stack[-1] = stack[-1] or inner
            last_group = inner
            i += 1
            continue
        elif c in "*+":
            unbounded, most = True, 2
        elif c == "?":
            unbounded = False
        elif c == "{":
            m = _QUANTIFIER.match(pattern, i)
            if m and (m.group(1) or m.group(3)):
                unbounded = bool(m.group(2)) and not m.group(3)
                width = m.end() - i
                most = int(m.group(3) or m.group(1))
        if unbounded is not None:
            if last_group and (unbounded or most > 1):
                return i
            if unbounded:
                stack[-1] = True
            i += width
            if i < n and pattern[i] in "?+":  # lazy or possessive modifier
                i += 1
            last_group = None
            continue
        if c != "(":
            last_group = None
        i += 1
    return None


def check_regex(pattern: str, case_insensitive: bool = False) -> str | None:
    """Why `pattern` is refused (a message), or None when it compiles and passes the guard."""
    if len(pattern) > MAX_PATTERN:
        return f"regex longer than {MAX_PATTERN} characters"
    try:
        re.compile(pattern, re.IGNORECASE if case_insensitive else 0)
    except re.error as e:
        return f"bad regex {pattern!r}: {e}"
    at = nested_repeat(pattern)
    if at is not None:
        return (f"regex {pattern!r} repeats a group that holds an unbounded repeat (position "
                f"{at}): refused, it can take exponential time")
    return None


def predicate(op: str, value: str, case_insensitive: bool) -> Callable[[str], bool]:
    """str -> bool for one match filter (value already checked)."""
    if op == "regex":
        search = re.compile(value, re.IGNORECASE if case_insensitive else 0).search
        return lambda s: search(s) is not None
    if case_insensitive:
        folded = value.casefold()
        if op == "prefix":
            return lambda s: s.casefold().startswith(folded)
        return lambda s: folded in s.casefold()
    if op == "prefix":
        return lambda s: s.startswith(value)
    return lambda s: value in s


_cache: OrderedDict[tuple[int, str, str, bool], tuple[Dictionary, np.ndarray]] = OrderedDict()
_lock = threading.Lock()


def match_table(d: Dictionary, size: int, op: str, value: str,
                case_insensitive: bool) -> np.ndarray:
    """bool table over the first `size` codes of `d`: does the string match? Each string is
    tested once: a cached table is extended with the strings added since it was made."""
    key = (id(d), op, value, case_insensitive)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    table = hit[1] if hit is not None else np.zeros(0, bool)
    if len(table) >= size:
        return table[:size]
    test = predicate(op, value, case_insensitive)
    new = np.fromiter(map(test, d.values[len(table):size]), bool, size - len(table))
    table = np.concatenate((table, new))
    with _lock:
        current = _cache.get(key)
        if current is None or len(current[1]) < len(table):
            _cache[key] = (d, table)  # holding d keeps its id from being reused
            _cache.move_to_end(key)
        while len(_cache) > TABLE_CACHE:
            _cache.popitem(last=False)
    return table
