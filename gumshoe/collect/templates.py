"""Templates whose {placeholders} are columns: URL routes (`/add_event/{appid}/{name}/{value}`)
and queue items (`{appid}/{name}/{at:date}/{value}`).

Imports values, config, batch, schema and errors. A queue batch is matched in one pass: the
items are joined by newlines and one multi-line regular expression finds every item's fields
(re.findall, in C); the columns are then typed by values.text_batch. Items that do not match or
hold a bad value are found one by one, only when there are some, and reported with their index
so the caller can set them aside and insert the rest.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from ..batch import Batch
from ..config import CollectRoute
from ..errors import ConfigError, InsertError
from ..schema import Schema
from .values import Where, text_batch

# First path segments of the apps' own routes: a template may not shadow them.
RESERVED_SEGMENTS = frozenset({"insert", "query", "partial", "dimension_tables", "statusz",
                               "schema", "metricz", "metrics", "debug", "pixel.gif", "track",
                               "script.js", "console", "static", "openapi.json", "sql"})


def placeholders(template: str, where: str) -> list[tuple[str, str]]:
    """[(literal text before, column)] of a template, plus a last (literal, "") pair."""
    out = []
    try:
        for literal, field, spec, conversion in string.Formatter().parse(template):
            if conversion:
                raise ConfigError(f"{where}: bad placeholder {{{field}!{conversion}}}")
            out.append((literal, field or ""))
            if spec and (field is None or spec != "date"):
                raise ConfigError(f"{where}: unknown placeholder format {{{field}:{spec}}} "
                                  "(only :date)")
    except ValueError as e:
        raise ConfigError(f"{where}: bad template {template!r}: {e}") from None
    return out


def _check(schema: Schema, columns: Sequence[str], where: str, template: str) -> None:
    if not [c for c in columns if c]:
        raise ConfigError(f"{where}: template {template!r} has no {{column}} placeholder")
    seen: set[str] = set()
    for c in columns:
        if c and schema.column(c) is None:
            raise ConfigError(f"{where}: {{{c}}} is not a column of the schema")
        if c in seen:
            raise ConfigError(f"{where}: {{{c}}} appears twice")
        seen.add(c)


class RouteTemplate:
    """A [[collect.routes]] entry checked against the schema: its Starlette path, the columns
    of its placeholders and the fixed values of `set` (as text, typed like the rest)."""

    def __init__(self, route: CollectRoute, schema: Schema, index: int) -> None:
        where = f"collect.routes[{index}]"
        parts = placeholders(route.path, f"{where}.path")
        if any(c and ":" in route.path.split("{" + c, 1)[1][:1] for _, c in parts):
            raise ConfigError(f"{where}.path: route placeholders take no format")
        self.columns = [c for _, c in parts if c]
        _check(schema, self.columns, f"{where}.path", route.path)
        first = route.path.split("/")[1]
        if not first or "{" in first or first in RESERVED_SEGMENTS:
            raise ConfigError(f"{where}.path: must start with a fixed segment other than "
                              f"the built-in routes ({', '.join(sorted(RESERVED_SEGMENTS))}), "
                              f"got {route.path!r}")
        self.path = route.path
        self.fixed: dict[str, str] = {}
        for name, value in route.set:
            if schema.column(name) is None:
                raise ConfigError(f"{where}.set: {name!r} is not a column of the schema")
            if name in self.columns:
                raise ConfigError(f"{where}.set: {name!r} is also a placeholder of the path")
            self.fixed[name] = (str(value).lower() if isinstance(value, bool) else str(value))


class ItemTemplate:
    """A queue item format such as `{appid}/{name}/{at:date}/{value}`."""

    def __init__(self, template: str, schema: Schema, where: str) -> None:
        parts = placeholders(template, where)
        self.columns = [c for _, c in parts if c]
        _check(schema, self.columns, where, template)
        for _, c in parts:
            if c and f"{{{c}:date}}" in template and c != schema.timestamp.name:
                raise ConfigError(f"{where}: {{{c}:date}}: only the timestamp column "
                                  f"({schema.timestamp.name}) reads dates")
        # a value runs up to the next literal's first character (so it cannot hold it)
        pattern = "".join(
            re.escape(literal) + (f"([^\n{re.escape(parts[k + 1][0][:1])}]*)"
                                  if c and k + 1 < len(parts) and parts[k + 1][0] else
                                  "([^\n]*)" if c else "")
            for k, (literal, c) in enumerate(parts))
        self.one = re.compile(pattern + r"\Z", re.DOTALL)
        self.many = re.compile("^" + pattern + "$", re.MULTILINE)
        self.schema = schema

    def batch(self, items: Sequence[str], now: int, where: Where) -> Batch:
        """All items as one batch, or InsertError naming the first bad item."""
        text = "\n".join(items)
        found = self.many.findall(text) if "\n" not in "".join(items) else None
        if found is None or len(found) != len(items):
            for i, item in enumerate(items):  # the error path (or items holding newlines)
                if self.one.match(item) is None:
                    raise InsertError(f"{where(i, '')}: {item[:200]!r} does not match the "
                                      "format")
            found = [self.one.match(item).groups() for item in items]  # type: ignore[union-attr]
        if len(self.columns) == 1:
            found = [(v,) for v in found] if found and isinstance(found[0], str) else found
        columns: dict[str, Sequence[str]] = (
            dict(zip(self.columns, zip(*found), strict=True)) if found
            else {c: () for c in self.columns})
        return text_batch(self.schema, columns, len(items), now, where)
