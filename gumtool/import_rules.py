"""km-db's rules for `gumtool import`: ignored users, whitelisted events, and alias records that
tie identities together (one canonical identity per person).

Imports gumtool.import_mapping (its error type) and numpy. Alias resolution is a union-find
over every alias record of the import, done before any row is imported (so an alias record
late in the input re-maps rows before it): identities become dense integers, components are
found by vectorised label propagation with pointer jumping (each round halves the distance to
the root: a few dozen numpy passes even for long chains, never a Python statement per record),
and each component's canonical identity is the numeric one if any (the smallest number; ties
by text), otherwise the lexicographically lowest (by code point).
"""

from __future__ import annotations

import dataclasses
import operator
from pathlib import Path

import numpy as np

from .import_mapping import ImportFailed


@dataclasses.dataclass(frozen=True)
class Rules:
    """What the workers apply to every record (canonical identities throughout)."""

    aliases: dict[str, str] = dataclasses.field(default_factory=dict)  # identity -> canonical
    ignored: frozenset[str] = frozenset()  # canonical identities whose events are skipped
    only_events: frozenset[str] | None = None  # None: every event

    def canonical(self, identity: str) -> str:
        return self.aliases.get(identity, identity)


def read_list(path: str | Path, what: str) -> list[str]:
    """One entry per line (surrounding whitespace and empty lines ignored)."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ImportFailed(f"{what} {path}: {e}") from None
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def is_numeric(identity: str) -> bool:
    return identity.isascii() and identity.isdigit()


def resolve_aliases(left: list[str], right: list[str]) -> dict[str, str]:
    """identity -> canonical identity for every identity of an alias pair whose canonical
    identity is another one (see the module docstring)."""
    if not left:
        return {}
    names = list(dict.fromkeys(left + right))
    index = dict(zip(names, range(len(names))))
    a = np.fromiter(map(index.__getitem__, left), np.int64, len(left))
    b = np.fromiter(map(index.__getitem__, right), np.int64, len(right))
    label = np.arange(len(names), dtype=np.int64)
    for _ in range(200):  # converges in O(log n) rounds; the bound is a safety net
        m = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]  # pointer jumping
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    else:  # pragma: no cover - unreachable for any input (label propagation converges)
        raise AssertionError("alias resolution did not converge")
    rank = _ranks(names)  # canonical = the best-ranked member of each component
    best = np.full(len(names), len(names), np.int64)
    np.minimum.at(best, label, rank)
    by_rank = np.empty(len(names), np.int64)
    by_rank[rank] = np.arange(len(names), dtype=np.int64)
    winner = by_rank[best[label]]
    moved = np.flatnonzero(winner != np.arange(len(names)))
    return dict(zip(map(names.__getitem__, moved.tolist()),
                    map(names.__getitem__, winner[moved].tolist())))


def _text_rank(strings: list[str]) -> np.ndarray:
    """Dense ranks in code point order: equal strings get equal ranks."""
    n = len(strings)
    order = sorted(range(n), key=strings.__getitem__)
    in_order = [strings[i] for i in order] if n < 2 else list(
        operator.itemgetter(*order)(strings))
    step = np.fromiter(map(operator.ne, in_order[1:], in_order[:-1]), bool, max(n - 1, 0))
    rank = np.empty(n, np.int64)
    rank[np.asarray(order, np.int64)] = np.concatenate(([0], np.cumsum(step)))[:n]
    return rank


def _ranks(names: list[str]) -> np.ndarray:
    """Each identity's rank (0 = best): numeric identities first, by value (fewer significant
    digits, then digit text), ties by text; then the others by text (code point order)."""
    n = len(names)
    numeric = (np.fromiter(map(str.isascii, names), bool, n) &
               np.fromiter(map(str.isdigit, names), bool, n))
    stripped = list(map(str.lstrip, names, ["0"] * n))
    digits = np.fromiter(map(len, stripped), np.int64, n)
    text = _text_rank(names)
    value = _text_rank(stripped)
    order = np.lexsort((text, np.where(numeric, value, 0), np.where(numeric, digits, 0),
                        ~numeric))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    return rank


def make_rules(aliases: dict[str, str], ignore_file: str | None,
               only_events_file: str | None) -> Rules:
    ignored = frozenset(aliases.get(s, s) for s in read_list(ignore_file, "--ignore-users")
                        ) if ignore_file else frozenset()
    only = None
    if only_events_file:
        events = read_list(only_events_file, "--only-events")
        only = frozenset(events) if events else None  # empty means every event (km-db)
    return Rules(aliases, ignored, only)
