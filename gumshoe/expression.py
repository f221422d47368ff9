"""Post-aggregation expressions: a safe parser (precedence climbing, never eval) and a
vectorised evaluator over the final groups.

Imports errors only (and numpy). Grammar:

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := "-" unary | primary
    primary := number | name | '"' quoted name '"' | "(" expr ")"

A bare name starts with a letter or "_" and goes on with letters, digits, "_" and "."
(`clicks`, `dotted.name`, `ünï`); any other output name is written in double quotes, with
`\\"` and `\\\\` inside (`"with space"`, `"a-b"`). Numbers are decimal (`2`, `0.5`, `1e3`).
Arithmetic is float64; an operation whose result is not finite (x / 0, 0 / 0, overflow) gives
null, and null operands give null. Errors say what is wrong and where: `unexpected ')' at
position 9 in 'clicks / )'` (positions count characters from 0).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping

import numpy as np

from .errors import QueryError

MAX_LENGTH = 2000
MAX_DEPTH = 64
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[^\W\d][\w.]*")
_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}


@dataclasses.dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    name: str
    position: int = dataclasses.field(compare=False, default=0)


@dataclasses.dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr


@dataclasses.dataclass(frozen=True, slots=True)
class BinOp:
    op: str
    left: Expr
    right: Expr


Expr = Num | Ref | Neg | BinOp


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> QueryError:
        at = self.pos if pos is None else pos
        return QueryError(f"{self.where}: {message} at position {at} in {self.text!r}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> Expr:
        if len(self.text) > MAX_LENGTH:
            raise QueryError(f"{self.where}: expression longer than {MAX_LENGTH} characters")
        e = self.expr(0)
        if self.peek():
            raise self.fail(f"unexpected {self.peek()!r}")
        return e

    def expr(self, depth: int) -> Expr:
        left = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            left = BinOp(op, left, self.term(depth))
        return left

    def term(self, depth: int) -> Expr:
        left = self.unary(depth)
        while self.peek() in ("*", "/"):
            op = self.text[self.pos]
            self.pos += 1
            left = BinOp(op, left, self.unary(depth))
        return left

    def unary(self, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise self.fail(f"expression nested too deeply ({MAX_DEPTH} levels at most)")
        if self.peek() == "-":
            self.pos += 1
            return Neg(self.unary(depth + 1))
        return self.primary(depth)

    def primary(self, depth: int) -> Expr:
        c = self.peek()
        start = self.pos
        if not c:
            raise self.fail("expression ends early: expected a number, a name or '('")
        if c == "(":
            self.pos += 1
            e = self.expr(depth + 1)
            if self.peek() != ")":
                got = self.peek()
                if not got:
                    raise self.fail("missing ')' for the '('", start)
                raise self.fail(f"expected ')', got {got!r}")
            self.pos += 1
            return e
        if c == '"':
            return Ref(self.quoted(), start)
        m = _NUMBER.match(self.text, self.pos)
        if m:
            value = float(m.group())
            if not math.isfinite(value):
                raise self.fail(f"number {m.group()!r} is out of range")
            self.pos = m.end()
            return Num(value)
        m = _NAME.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return Ref(m.group(), start)
        raise self.fail(f"unexpected {c!r}: expected a number, a name or '('")

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] in '"\\':
                c = self.text[self.pos + 1]
                self.pos += 1
            out.append(c)
            self.pos += 1
        raise self.fail("unterminated quoted name", start)


def parse(text: str, where: str) -> Expr:
    """Parse an expression; QueryError starting with `where` (the JSON path) otherwise."""
    if not isinstance(text, str):
        raise QueryError(f"{where}: expected an expression string")
    return _Parser(text, where).parse()


def refs(e: Expr) -> list[Ref]:
    """The names an expression uses, in order."""
    if isinstance(e, Ref):
        return [e]
    if isinstance(e, Neg):
        return refs(e.operand)
    if isinstance(e, BinOp):
        return refs(e.left) + refs(e.right)
    return []


def evaluate(e: Expr, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """float64 values of `e` over n groups; `columns` gives each name's values as float64 with
    NaN for null. Non-finite results become NaN (null)."""
    if isinstance(e, Num):
        return np.full(n, e.value)
    if isinstance(e, Ref):
        return columns[e.name]
    with np.errstate(all="ignore"):
        if isinstance(e, Neg):
            return -evaluate(e.operand, columns, n)
        out = _OPS[e.op](evaluate(e.left, columns, n), evaluate(e.right, columns, n))
    out[~np.isfinite(out)] = np.nan
    return out
