"""Small helpers for query tests: an in-memory DB of a given schema."""

from __future__ import annotations

import dataclasses
from typing import Any

from gumshoe.config import load_config
from gumshoe.db import DB

FIXTURE_DIMS = (("dim1", "string:uint32"),)
FIXTURE_METRICS = (("metric1", "uint32"),)


def make_db(dims: tuple[tuple[str, str], ...] = FIXTURE_DIMS,
            metrics: tuple[tuple[str, str], ...] = FIXTURE_METRICS, **config: Any) -> DB:
    cfg = load_config().replace(database_dir="MEMORY", retention_days=0, **config)
    schema = dataclasses.replace(cfg.schema, dimension_columns=dims, metric_columns=metrics,
                                 segment_size=1024)
    return DB(cfg.replace(schema=schema))


def hour(n: int) -> int:
    return n * 3600
