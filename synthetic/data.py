"""A deterministic, seeded synthetic analytics data set and the gumshoe schema that holds it.

Rows arrive in time order (as from a live stream) in batches of `batch_size`. Row k's hour is
fixed by the hourly row counts, which follow a daily cycle; everything else in a batch comes from
a generator seeded with (seed, batch index), so any batch can be regenerated on its own.

Columns: `at` (uint32 Unix seconds), `name` (string:uint16, 1000 values, Zipf), `country`
(string:uint8, 50 values, skewed, ~5% nil), `device` (uint8, 0..9), metrics `visits` (uint8),
`clicks` (uint16), `bytes` (uint32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from gumshoe import config as gumshoe_config
from gumshoe.config import Config, load_config

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a day boundary
HOUR = 3600
DAY = 86400
N_NAMES = 1000
N_COUNTRIES = 50
N_DEVICES = 10
NIL_COUNTRY = N_COUNTRIES  # generator code of a nil country
NAMES = [f"/page/{i:04d}" for i in range(N_NAMES)]
COUNTRIES = ("US GB DE FR IN BR CA JP AU ES IT NL MX KR SE PL TR RU ID CH BE AR AT NO DK IE FI "
             "PT CZ IL ZA NZ SG HK TW TH MY PH VN CO CL PE EG NG KE SA AE GR HU RO").split()
assert len(COUNTRIES) == N_COUNTRIES
DIMENSIONS = (("name", "string:uint16"), ("country", "string:uint8"), ("device", "uint8"))
METRICS = (("visits", "uint8"), ("clicks", "uint16"), ("bytes", "uint32"))
METRIC_NAMES = tuple(m for m, _ in METRICS)

_NAME_P = 1.0 / np.arange(1, N_NAMES + 1) ** 1.1
_NAME_CDF = np.cumsum(_NAME_P / _NAME_P.sum())
_COUNTRY_P = 0.93 ** np.arange(N_COUNTRIES)
_COUNTRY_CDF = np.cumsum(_COUNTRY_P / _COUNTRY_P.sum())
_VISITS_CDF = np.cumsum([0.1, 0.7, 0.15, 0.05])
NIL_FRACTION = 0.05

_NAME_OBJ = np.array(NAMES, dtype=object)
_COUNTRY_OBJ = np.array([*COUNTRIES, None], dtype=object)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to generate: `rows` input rows over `hours` hours from T0, in batches."""

    rows: int
    hours: int = 168
    seed: int = 8
    batch_size: int = 10_000

    @property
    def hour_counts(self) -> np.ndarray:
        """Rows per hour: a daily cycle (peak around 15:00 UTC, trough around 03:00)."""
        h = np.arange(self.hours)
        w = 1.0 + 0.6 * np.sin(2 * np.pi * ((h % 24) - 9) / 24)
        counts = np.floor(self.rows * w / w.sum()).astype(np.int64)
        counts[: self.rows - int(counts.sum())] += 1
        return counts

    @property
    def n_batches(self) -> int:
        return -(-self.rows // self.batch_size)


@dataclasses.dataclass
class Columns:
    """One batch in generator codes: name 0..999, country 0..49 or NIL_COUNTRY, device 0..9."""

    at: np.ndarray  # int64
    hour: np.ndarray  # int64 hour index since T0
    name: np.ndarray  # int16
    country: np.ndarray  # int8
    device: np.ndarray  # uint8
    metrics: dict[str, np.ndarray]  # int64

    @property
    def n(self) -> int:
        return len(self.at)


def generate(spec: Spec, first: int = 0, stop: int | None = None) -> Iterator[Columns]:
    """Batches `first` .. `stop`-1 of the data set, as columns."""
    bounds = np.cumsum(spec.hour_counts)
    stop = spec.n_batches if stop is None else stop
    for i in range(first, stop):
        lo, hi = i * spec.batch_size, min((i + 1) * spec.batch_size, spec.rows)
        n = hi - lo
        rng = np.random.default_rng([spec.seed, i])
        hour = np.searchsorted(bounds, np.arange(lo, hi), side="right").astype(np.int64)
        at = T0 + hour * HOUR + rng.integers(0, HOUR, n)
        name = np.searchsorted(_NAME_CDF, rng.random(n)).clip(0, N_NAMES - 1).astype(np.int16)
        country = np.searchsorted(_COUNTRY_CDF, rng.random(n)).clip(0, N_COUNTRIES - 1)
        country[rng.random(n) < NIL_FRACTION] = NIL_COUNTRY
        device = rng.integers(0, N_DEVICES, n).astype(np.uint8)
        visits = np.searchsorted(_VISITS_CDF, rng.random(n)).clip(0, 3)
        clicks = rng.poisson(2.0, n).clip(0, 65535)
        nbytes = rng.integers(200, 60_000, n)
        yield Columns(at, hour, name, country.astype(np.int8), device,
                      {"visits": visits.astype(np.int64), "clicks": clicks.astype(np.int64),
                       "bytes": nbytes.astype(np.int64)})


def to_rows(c: Columns) -> list[dict[str, Any]]:
    """The batch as JSON-like row objects (a nil country is None)."""
    return [{"at": a, "name": nm, "country": co, "device": d, "visits": v, "clicks": k,
             "bytes": b}
            for a, nm, co, d, v, k, b in zip(
                c.at.tolist(), _NAME_OBJ[c.name].tolist(), _COUNTRY_OBJ[c.country].tolist(),
                c.device.tolist(), c.metrics["visits"].tolist(), c.metrics["clicks"].tolist(),
                c.metrics["bytes"].tolist())]


def config(database_dir: str = "MEMORY", segment_size: int | None = None,
           durability: str | None = None) -> Config:
    """The gumshoe config for this data set (defaults elsewhere; retention off)."""
    cfg = load_config(None)
    schema = dataclasses.replace(cfg.schema, dimension_columns=DIMENSIONS,
                                 metric_columns=METRICS, interval_duration=HOUR)
    if segment_size is not None:
        schema = dataclasses.replace(schema, segment_size=segment_size,
                                     segment_size_text=str(segment_size))
    changes: dict[str, Any] = {"schema": schema, "database_dir": database_dir,
                               "retention_days": 0}
    if durability is not None:
        changes["durability"] = durability
    return cfg.replace(**changes)


def config_toml(database_dir: str, segment_size: int | None = None,
                durability: str | None = None) -> str:
    """The same config as TOML text, for a server started with --config."""
    return gumshoe_config.config_toml(config(database_dir, segment_size, durability))
