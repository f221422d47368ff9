"""Shared by the archive tests: configs with [archive] on, the rows an archive should hold
("as accepted"), and reading an archive directory back as row dicts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson

from gumshoe.rawformat import TIME_MAX, ndjson
from gumshoe.rawscan import scan_directory

from ..http.harness import SCHEMA, T0, sample_rows

__all__ = ["T0", "accepted", "archive_rows", "config", "key", "rows_in", "sample_rows",
           "sorted_rows"]


def config(directory: Path, db: Path | str, archive: str = "", durability: str = "os",
           **keys: Any) -> Path:
    """A config file over the harness SCHEMA with [archive] on (`archive`: more keys of it,
    TOML lines)."""
    settings = {"database_dir": str(db), "retention_days": 0, "flush_interval": "1h",
                "durability": durability, **keys}
    path = directory / "config.toml"
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + "\n"
                    + SCHEMA + "\n[archive]\nenabled = true\n" + archive + "\n")
    return path


def accepted(row: dict[str, Any]) -> dict[str, Any]:
    """A harness row as the archive keeps it: every column, nil dimensions null, missing
    metrics 0, timestamps whole seconds."""
    return {"at": math.floor(row["at"]), "name": row.get("name"), "country": row.get("country"),
            "age": row.get("age"), "visits": row.get("visits") or 0,
            "clicks": row.get("clicks") or 0, "score": float(row.get("score") or 0)}


def sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accepted rows in the archive's order: by timestamp, then as inserted (stable)."""
    return sorted((accepted(r) for r in rows), key=lambda r: r["at"])


def key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def archive_rows(directory: Path, lo_excl: int = -1, hi_incl: int = TIME_MAX,
                 **kw: Any) -> list[dict[str, Any]]:
    """Every row of an archive directory in the range, as GET /raw renders them."""
    scan = scan_directory(directory, lo_excl, hi_incl, **kw)
    data = b"".join(ndjson(scan.chunks()))
    return [orjson.loads(line) for line in data.splitlines()]


def rows_in(rows: list[dict[str, Any]], lo_excl: int, hi_incl: int) -> list[dict[str, Any]]:
    return [r for r in rows if lo_excl < r["at"] <= hi_incl]

