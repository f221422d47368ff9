"""DuckDB in-process over the same rolled-up rows gumshoe stored (threads = cores).

The table is built from the ideal Table (itself concatenated from a gumshoe snapshot): `at` is
the interval start, string dimensions are ENUMs of their sorted values (DuckDB's dictionary
encoding, the closest match of gumshoe's codes and DuckDB's fastest way to group by a
low-cardinality string; `strings="varchar"` gives plain VARCHAR), NULL for nil, metrics and
`count` BIGINT, rows in time order (so DuckDB's zone maps can prune time ranges as gumshoe
prunes intervals).
"""

from __future__ import annotations

import os
from typing import Any

import duckdb
import numpy as np

from .ideal import Table
from .queries import Query, Row, normalize, to_sql


class Duck:
    def __init__(self, tbl: Table, threads: int | None = None, strings: str = "enum") -> None:
        self.threads = threads or os.cpu_count() or 1
        self.con = duckdb.connect(config={"threads": self.threads})
        src: dict[str, np.ndarray] = {
            "at": np.repeat(tbl.starts, np.diff(tbl.offsets)).astype(np.uint32)}
        params: dict[str, Any] = {}
        select = ['"at"']
        for name, codes in tbl.cols.items():
            src[name] = codes
            if name in tbl.decode:
                card = tbl.cards[name]
                values = tbl.decode[name](np.arange(card))
                if codes.dtype.kind == "u" and all(isinstance(v, str) or v is None
                                                   for v in values):
                    params[name] = values
                    cast = ""
                    if strings == "enum" and any(v is not None for v in values):
                        lit = ", ".join("'" + v.replace("'", "''") + "'"
                                        for v in sorted(v for v in values if v is not None))
                        self.con.execute(f'CREATE TYPE "{name}_enum" AS ENUM ({lit})')
                        cast = f'::"{name}_enum"'
                    select.append(f'${name}[("{name}" + 1)::BIGINT]{cast} AS "{name}"')
                else:
                    select.append(f'CASE WHEN "{name}" = {card - 1} THEN NULL ELSE "{name}" END'
                                  f' AS "{name}"')
            else:
                select.append(f'"{name}"')
        self.con.register("src", src)
        self.con.execute(f"CREATE TABLE t AS SELECT {', '.join(select)} FROM src", params)
        self.con.unregister("src")
        self.rows = tbl.n
        self.strings = strings

    def sql(self, q: Query) -> str:
        return to_sql(q, "t")

    def run(self, q: Query, sql: str | None = None) -> list[Row]:
        cur = self.con.execute(sql or self.sql(q))
        names = [d[0] for d in cur.description]
        return normalize(q, (dict(zip(names, r)) for r in cur.fetchall()))

    def close(self) -> None:
        self.con.close()
